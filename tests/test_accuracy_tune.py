"""``lra --seed`` lists and ``lra --tune``: one record per seed, a grid chosen on validation
only (the test split read once, for the chosen setting), the same grid for every
implementation."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
from cli_helpers import read_records

from harness import cli
from harness.accuracy import tasks as tasks_lib
from harness.accuracy import tune
from harness.metrics.stats import mean_std
from harness.accuracy.tasks.common import Split
from harness.errors import UsageError

DATA_FIELDS = {f.name for f in fields(Split)}


@pytest.fixture(scope="module")
def listops_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    assert cli.main(["data", "listops", "--out", str(root), "--n-train", "24", "--n-val", "8",
                     "--n-test", "8", "--seed", "1", "--min-length", "5",
                     "--max-length", "40"]) == 0
    return root


def lra(data, out, *extra):
    return cli.main(["lra", "--task", "listops", "--data-dir", str(data), "--epochs", "1",
                     "--layers", "1", "--out", str(out), "--no-progress", *extra])


def test_parse_grid_from_arguments_and_toml(tmp_path):
    grid = tune.parse_grid(["lr=1e-3,3e-3", "dropout=0,0.1"])
    assert grid.as_dict() == {"lr": [1e-3, 3e-3], "dropout": [0.0, 0.1]}
    assert grid.settings() == [{"lr": 1e-3, "dropout": 0.0}, {"lr": 1e-3, "dropout": 0.1},
                               {"lr": 3e-3, "dropout": 0.0}, {"lr": 3e-3, "dropout": 0.1}]
    assert len(grid) == 4
    path = tmp_path / "grid.toml"
    path.write_text("[tune]\nlr = [1e-3, 3e-3]\ndropout = [0, 0.1]\n")
    assert tune.parse_grid([str(path)]) == grid
    path.write_text("batch_size = [8, 16]\n")
    assert tune.parse_grid([str(path)]).settings() == [{"batch_size": 8}, {"batch_size": 16}]
    for bad in (["lr"], ["momentum=0.9"], ["lr=fast"], ["lr=1e-3,1e-3"], ["lr=1", "lr=2"],
                ["batch_size=1.5"], ["lr=nan"], [str(tmp_path / "none.toml")]):
        with pytest.raises(UsageError):
            tune.parse_grid(bad)


def test_choose_takes_best_validation_and_first_on_ties():
    from harness.accuracy.train import FitResult

    def trial(acc, status="ok"):
        return tune.Trial({"lr": acc}, status=status,
                          result=FitResult(best_val_accuracy=acc),
                          state=None if status != "ok" else {})

    trials = [trial(0.5), trial(0.7), trial(0.7), trial(0.9, status="error")]
    assert tune.choose(trials) is trials[1]
    assert tune.choose([trial(0.1, status="error")]) is None


def test_sealed_test_split_raises_on_any_read(listops_dir):
    from harness.accuracy.tasks.common import Limits

    data = tasks_lib.load("listops", listops_dir, Limits(seq_len=100))
    closed = tune.sealed(data)
    assert len(closed.test) == len(data.test) and closed.sizes() == data.sizes()
    assert closed.val is data.val and closed.train is data.train
    for name in ("tokens", "lengths", "labels"):
        with pytest.raises(tune.SealedSplitError):
            getattr(closed.test, name)


class SpySplit(Split):
    """A test split that logs every read of its contents."""

    log: list = []

    def __getattribute__(self, name):
        if name in DATA_FIELDS:
            import traceback
            SpySplit.log.append(("test read", name, traceback.format_stack(limit=4)[0]))
        return object.__getattribute__(self, name)

    def __len__(self):     # the split's size is not its contents (records state split sizes)
        return int(object.__getattribute__(self, "labels").shape[0])


def test_tuner_never_reads_test_split_and_grids_are_shared(listops_dir, tmp_path,
                                                           monkeypatch):
    """The loader is instrumented: every read of the test split is logged next to the
    trials' start and end, and the one test evaluation's."""
    log = SpySplit.log = []
    real_load, real_trial, real_test = tasks_lib.load, tune.run_trial, tune.test_once

    def spying_load(*args, **kwargs):
        data = real_load(*args, **kwargs)
        split = data.test
        return replace(data, test=SpySplit(**{f: getattr(split, f) for f in DATA_FIELDS}))

    def logged_trial(impl, data, settings, setting, progress):
        log.append(("trial start", impl.name, dict(setting)))
        try:
            return real_trial(impl, data, settings, setting, progress)
        finally:
            log.append(("trial end", impl.name))

    def logged_test(impl, *args):
        log.append(("test start", impl.name))
        try:
            return real_test(impl, *args)
        finally:
            log.append(("test end", impl.name))

    monkeypatch.setattr(tasks_lib, "load", spying_load)
    monkeypatch.setattr(tune, "run_trial", logged_trial)
    monkeypatch.setattr(tune, "test_once", logged_test)
    out = tmp_path / "run"
    assert lra(listops_dir, out, "--impl", "hrr_torch,softmax_torch",
               "--tune", "lr=1e-3,3e-3", "dropout=0,0.1") == 0

    # every read of the test split happens inside the one test evaluation of each impl,
    # and that evaluation comes after all of that impl's trials
    inside, tests_seen, trials_seen = None, [], {}
    for event in log:
        if event[0] == "trial start":
            assert inside is None
            trials_seen.setdefault(event[1], []).append(event[2])
            assert event[1] not in tests_seen       # no trial after the test was read
        elif event[0] == "test start":
            inside = event[1]
            tests_seen.append(event[1])
        elif event[0] == "test end":
            inside = None
        elif event[0] == "test read":
            assert inside is not None, f"test split read outside the final evaluation: {event}"
    assert tests_seen == ["hrr_torch", "softmax_torch"]           # once each
    grid = tune.parse_grid(["lr=1e-3,3e-3", "dropout=0,0.1"]).settings()
    assert trials_seen == {"hrr_torch": grid, "softmax_torch": grid}
    assert any(e[0] == "test read" for e in log)

    records = read_records(out)
    assert [r["status"] for r in records] == ["ok", "ok"]
    for record in records:
        tuning = record["tuning"]
        assert tuning["grid"] == {"lr": [1e-3, 3e-3], "dropout": [0.0, 0.1]}
        assert [t["setting"] for t in tuning["trials"]] == grid
        assert record["config"]["tune_grid"] == tuning["grid"]
        vals = [t["best_val_accuracy"] for t in tuning["trials"]]
        chosen = grid.index(tuning["chosen"])
        assert vals[chosen] == max(vals) and vals.index(max(vals)) == chosen
        assert record["best_val_accuracy"] == vals[chosen]
        assert record["test_accuracy"] is not None
        assert "validation" in record["selection"]
    # resume: the same grid is already there; another grid is another point
    assert lra(listops_dir, out, "--impl", "softmax_torch", "--resume",
               "--tune", "lr=1e-3,3e-3", "dropout=0,0.1") == 0
    assert len(read_records(out)) == 2


def test_seed_list_one_record_each_and_resumable_per_seed(listops_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert lra(listops_dir, out, "--impl", "softmax_torch", "--seed", "0,1") == 0
    assert [(r["impl"], r["seed"]) for r in read_records(out)] == [("softmax_torch", 0),
                                                                   ("softmax_torch", 1)]
    assert "mean" in capsys.readouterr().out             # the over-seeds summary
    assert lra(listops_dir, out, "--impl", "softmax_torch", "--seed", "0,1,2", "--resume") == 0
    assert [r["seed"] for r in read_records(out)] == [0, 1, 2]
    err = capsys.readouterr().err
    assert "seed 0: already in" in err and "seed 1: already in" in err


@pytest.mark.parametrize("argv", [["--seed", "0,x"], ["--seed", "1,1"], ["--seed", "-1"],
                                  ["--seed", ","], ["--tune", "momentum=0.9"],
                                  ["--tune", "dropout=0,1.5"]])
def test_bad_seed_or_grid_is_exit_2(listops_dir, tmp_path, capsys, argv):
    out = tmp_path / "run"
    assert lra(listops_dir, out, "--impl", "softmax_torch", *argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not out.exists()


def test_mean_std():
    summary = mean_std([0.3, 0.5, 0.4])
    assert summary.n == 3 and summary.mean == pytest.approx(0.4)
    assert summary.std == pytest.approx(0.1)
    assert mean_std([0.25]).std is None and "n=1" in mean_std([0.25]).text()
    assert mean_std([1.0, float("nan"), 3.0]).n == 2
    assert mean_std([38.1, 39.0, 37.2]).text() == "38.10 ± 0.90 (n=3)"
