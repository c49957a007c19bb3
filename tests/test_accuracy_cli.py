"""``run_bench.py lra`` and ``run_bench.py data``: records in a run directory, clear errors."""

from __future__ import annotations

import json

from accuracy_fixtures import write_bytes_folder
from cli_helpers import read_records

from harness import cli
from harness.store.run_dir import load_results, open_run


def test_lra_bytes_writes_records(tmp_path, capsys):
    data = write_bytes_folder(tmp_path / "files", per_class=12, size=80)
    out = tmp_path / "run"
    code = cli.main(["lra", "--task", "bytes", "--impl", "hrr_torch,softmax_jax",
                     "--data-dir", str(data), "--epochs", "1", "--seq-len", "32",
                     "--out", str(out), "--no-progress"])
    assert code == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["kind"] == "accuracy" and "hardware_id" in meta["machine"]
    assert isinstance(meta["command"], list) and meta["finished_at"]   # argv, as sweeps store it
    records = read_records(out)
    assert [(r["impl"], r["status"]) for r in records] == [("hrr_torch", "ok"),
                                                           ("softmax_jax", "unsupported")]
    ok = records[0]
    assert ok["data_source"] == "user folder" and ok["seq_len"] == 32
    assert ok["hardware_id"] == meta["machine"]["hardware_id"]
    assert ok["selection"] == "test accuracy at the best validation checkpoint"
    assert ok["config"]["train"]["epochs"] == 1 and ok["params"] > 0
    assert len(ok["curve"]) == 1 and ok["peak_mem_bytes"] and ok["mem_method"]
    frame = load_results(out, kind="accuracy")
    assert set(frame["impl"]) == {"hrr_torch", "softmax_jax"}
    assert "hrr_torch" in capsys.readouterr().out          # the summary table
    # --resume skips what is already there
    code = cli.main(["lra", "--task", "bytes", "--impl", "hrr_torch", "--data-dir", str(data),
                     "--epochs", "1", "--seq-len", "32", "--out", str(out), "--resume",
                     "--no-progress"])
    assert code == 0 and len(read_records(out)) == 2
    assert "already in" in capsys.readouterr().err
    # --resume with other training settings: refused before anything is written
    before = {name: (out / name).read_bytes() for name in ("run.json", "results.jsonl")}
    code = cli.main(["lra", "--task", "bytes", "--impl", "hrr_torch", "--data-dir", str(data),
                     "--epochs", "2", "--seq-len", "32", "--out", str(out), "--resume",
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "other training settings" in err and "epochs" in err, err
    assert {name: (out / name).read_bytes() for name in before} == before


def test_data_then_lra_on_generated_listops(tmp_path, capsys):
    root = tmp_path / "gen"
    assert cli.main(["data", "listops", "--out", str(root), "--n-train", "24", "--n-val", "6",
                     "--n-test", "6", "--seed", "1", "--min-length", "5",
                     "--max-length", "60"]) == 0
    files = sorted(p.name for p in (root / "listops-1000").iterdir())
    assert files == ["GENERATED.json", "basic_test.tsv", "basic_train.tsv", "basic_val.tsv"]
    assert "NON-official" in capsys.readouterr().out
    out = tmp_path / "run"
    assert cli.main(["lra", "--task", "listops", "--impl", "softmax_torch", "--data-dir",
                     str(root), "--epochs", "1", "--layers", "1", "--seed", "3", "--out",
                     str(out)]) == 0
    (record,) = open_run(out).records()
    assert record.data_source == "generated" and record.seed == 3
    assert record.config["data_notes"]["generator"]["grammar"]["max_length"] == 60
    assert record.split_sizes == {"train": 24, "val": 6, "test": 6}


def test_data_pathfinder_command(tmp_path, capsys):
    assert cli.main(["data", "pathfinder", "--out", str(tmp_path), "--n-train", "4",
                     "--n-val", "2", "--n-test", "2", "--resolution", "48",
                     "--difficulty", "easy"]) == 0
    folder = tmp_path / "pathfinder48" / "curv_baseline"
    assert len(list((folder / "imgs" / "0").glob("sample_*.png"))) == 8
    assert len((folder / "metadata" / "0.npy").read_text().splitlines()) == 8


def test_missing_data_is_one_line_and_exit_2(tmp_path, capsys):
    code = cli.main(["lra", "--task", "listops", "--impl", "softmax_torch", "--data-dir",
                     str(tmp_path), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "listops-1000/basic_train.tsv" in err and "lra_release" in err
    assert not (tmp_path / "run").exists()           # nothing created before the data loads


def test_bad_input_is_exit_2(tmp_path, capsys):
    for argv, text in (
            (["lra", "--task", "nope", "--impl", "softmax_torch"], "unknown task 'nope'"),
            (["lra", "--task", "listops", "--impl", "nope"], "unknown implementation 'nope'"),
            (["lra", "--task", "listops", "--impl", "hrr_torch", "--epochs", "0"],
             "--epochs must be at least 1"),
            (["lra", "--task", "listops", "--impl", "hrr_torch", "--resume"], "--resume needs"),
            (["data", "listops", "--out", str(tmp_path), "--resolution", "32"],
             "for pathfinder, not listops"),
            (["data", "pathfinder", "--out", str(tmp_path), "--resolution", "8"],
             "at least 16"),
            (["lra", "--task", "listops,listops", "--impl", "hrr_torch"],
             "--task: listops given twice"),
            (["lra", "--task", "listops", "--impl", "hrr_torch,hrr_torch"],
             "--impl: hrr_torch given twice"),
            (["lra", "--task", "listops", "--impl", "hrr_torch", "--lr", "nan"],
             "--lr: must be a finite number above 0, got nan"),
            (["lra", "--task", "listops", "--impl", "hrr_torch", "--lr", "-1"],
             "--lr: must be a finite number above 0, got -1"),
            (["lra", "--task", "listops", "--impl", "hrr_torch", "--lr", "inf"],
             "--lr: must be a finite number above 0"),
            (["lra", "--task", "listops", "--impl", "hrr_torch", "--dropout", "1"],
             "--dropout: must lie in [0, 1)"),
            (["lra", "--task", "listops", "--impl", "hrr_torch", "--tune", "lr=1e-3,nan"],
             "--tune lr: 'nan' is not finite"),
            (["lra", "--task", "listops", "--impl", "hrr_torch", "--tune", "lr=0"],
             "--tune lr must be above 0")):
        assert cli.main(argv) == 2, argv
        assert text in capsys.readouterr().err


def test_lra_report_shows_the_command_as_typed_and_cites_papers(tmp_path, capsys,
                                                               monkeypatch):
    """An LRA run's report: its command as typed (never spaced characters), when it finished,
    and the published numbers cited to the papers, not to files users do not have."""
    data = write_bytes_folder(tmp_path / "files", per_class=12, size=80)
    out = tmp_path / "run"
    argv = ["lra", "--task", "bytes", "--impl", "hrr_torch", "--data-dir", str(data),
            "--epochs", "1", "--seq-len", "32", "--out", str(out), "--no-progress"]
    monkeypatch.setattr("sys.argv", ["run_bench.py", *argv])
    assert cli.main(argv) == 0
    assert cli.main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "command: run_bench.py lra --task bytes --impl hrr_torch" in text
    assert "not recorded" not in text
    assert "REFERENCE" not in text and "shared/" not in text
