"""Grid expansion, list/range parsing, presets, config files: pure functions."""

from __future__ import annotations

import pytest

from harness.grid import presets
from harness.errors import UnknownNameError, UsageError
from harness.contract.records import Point
from harness.grid.spec import SweepSpec, expand, overrides_from, read_config
from harness.contract.parsers import parse_bytes, parse_int_list, parse_passes


def test_ranges_and_lists():
    assert parse_int_list("1K..8K", axis="seq_len") == (1024, 2048, 4096, 8192)
    assert parse_int_list("2^10..2^12", axis="seq_len") == (1024, 2048, 4096)
    assert parse_int_list("512..2048:+512", axis="seq_len") == (512, 1024, 1536, 2048)
    assert parse_int_list("1024, 2048,1024", axis="seq_len") == (1024, 2048)
    assert parse_int_list([64, "128"], axis="head_dim") == (64, 128)


@pytest.mark.parametrize("bad", ["0", "-5", "abc", "8K..1K", "", "1K..4K:*2"])
def test_bad_sizes_are_usage_errors(bad):
    with pytest.raises(UsageError, match="seq-len"):
        parse_int_list(bad, axis="seq_len")


def test_bytes_and_passes():
    assert parse_bytes("4GB") == 4_000_000_000
    assert parse_bytes("512MiB") == 512 * 2 ** 20
    with pytest.raises(UsageError):
        parse_bytes("lots")
    for huge in ("1e400GB", "1e30", 10 ** 30):   # an OverflowError traceback, once
        with pytest.raises(UsageError, match="more than any machine has"):
            parse_bytes(huge)
    with pytest.raises(UsageError, match="cannot read"):
        parse_bytes("1.2.3GB")
    assert parse_passes("fwd,fwd_bwd,backward") == ("forward", "forward_backward", "backward")
    with pytest.raises(UsageError, match="pass"):
        parse_passes("sideways")


def test_expand_is_the_cross_product_without_duplicates():
    spec = SweepSpec(seq_len=(1024, 2048), head_dim=(32, 64), pass_=("forward", "backward"),
                     impl=("a", "b"))
    points = expand([spec, spec], ["ignored"])
    assert len(points) == 2 * 2 * 2 * 2
    assert len(set(points)) == len(points)
    assert {p.impl for p in points} == {"a", "b"}
    # within a series, increasing T (the OOM-skip logic relies on it)
    series = [p for p in points if p.series_key() == points[0].series_key()]
    assert [p.seq_len for p in series] == [1024, 2048]


def test_impl_none_means_all():
    assert {p.impl for p in expand([SweepSpec()], ["x", "y"])} == {"x", "y"}


def test_point_ids_are_stable_and_distinct():
    a = Point("softmax_torch", 1024, 64)
    assert a.point_id == Point("softmax_torch", 1024, 64).point_id
    assert a.point_id != Point("softmax_torch", 1024, 64, causal=True).point_id
    assert a.point_id != Point("softmax_torch", 1024, 64, pass_="backward").point_id


def test_presets_exist_and_follow_reference_shapes():
    for name in ("quick", "gpu", "pythia", "hrrformer", "lra"):
        groups = presets.preset_groups(name, "cuda")
        assert groups and all(g.device == ("cuda",) for g in groups)
    hrr = expand(presets.preset_groups("hrrformer", "cuda"), ["hrr_torch"])
    assert {p.seq_len for p in hrr} == {2 ** e for e in range(8, 20)}
    assert all(p.batch * p.seq_len == 2 ** 16 or p.batch == 1 for p in hrr)
    pythia = expand(presets.preset_groups("pythia", "cpu"), ["x"])
    assert {(p.heads, p.head_dim) for p in pythia} == set(presets.PYTHIA_MODELS.values())
    gpu = expand(presets.preset_groups("gpu", "cuda"), ["x"])
    assert min(p.seq_len for p in gpu) == 1024 and max(p.seq_len for p in gpu) >= 128 * 1024
    assert {p.head_dim for p in gpu} == {32, 64, 128}
    assert {p.dtype for p in gpu} == {"float16", "bfloat16"}
    lra = expand(presets.preset_groups("lra", "cpu"), ["x"])
    assert {p.seq_len for p in lra} >= {2000, 4000, 1024, 16384}


def test_paper_preset_has_the_form_attention_papers_report():
    """B * T = 16K tokens, hidden width 2048 (H = 2048 / D), T 512..16K, D 64 and 128, causal
    and not, fp16 and bf16, forward and forward+backward: every combination present."""
    points = expand(presets.preset_groups("paper", "cuda"), ["x"])
    assert {p.batch * p.seq_len for p in points} == {16 * 1024}
    assert {p.heads * p.head_dim for p in points} == {2048}
    assert {p.seq_len for p in points} == {512 * 2 ** e for e in range(6)}
    combos = {(p.seq_len, p.head_dim, p.causal, p.dtype, p.pass_) for p in points}
    assert len(combos) == len(points) == 6 * 2 * 2 * 2 * 2
    cpu = expand(presets.preset_groups("paper", "cpu"), ["x"])
    assert {p.dtype for p in cpu} == {"float32"} and {p.causal for p in cpu} == {False, True}
    assert max(p.seq_len for p in cpu) <= 2048
    assert presets.note("paper", {"cpu"}).startswith("CPU sizes")


def test_quick_cuda_preset_measures_throughput_causal_and_not():
    """Every point has B * T = 16K tokens (no launch-latency points at B 1, T 1K), and both
    causal settings and both passes are present."""
    points = expand(presets.preset_groups("quick", "cuda"), ["x"])
    assert {p.batch * p.seq_len for p in points} == {16 * 1024}
    assert {p.causal for p in points} == {False, True}
    assert {p.pass_ for p in points} == {"forward", "forward_backward"}


def test_a_seq_len_override_keeps_a_fixed_token_preset_fixed_and_a_batch_override_wins():
    """--seq-len on a B*T-fixed preset gives each T its batch (not every batch at every T);
    --batch replaces the token count outright."""
    groups = presets.preset_groups("paper", "cuda")
    seq = [overrides_from({"seq_len": "32K"}).apply(g) for g in groups]
    points = expand(seq, ["x"])
    assert {(p.seq_len, p.batch) for p in points} == {(32 * 1024, 1)}
    points = expand([overrides_from({"seq_len": "1K,2K"}).apply(g) for g in groups], ["x"])
    assert {(p.seq_len, p.batch) for p in points} == {(1024, 16), (2048, 8)}
    batch = [overrides_from({"batch": "3"}).apply(g) for g in groups]
    assert {p.batch for p in expand(batch, ["x"])} == {3}


def test_validate_preset_covers_every_axis_value_it_checks():
    points = expand(presets.preset_groups("validate", "cuda"), ["x", "hrr_torch"])
    assert {p.dtype for p in points} == {"float16", "bfloat16"}
    assert {p.head_dim for p in points} == {64, 128}
    assert {p.causal for p in points} == {False, True}
    assert {p.pass_ for p in points} == {"forward", "forward_backward"}
    # past softmax's OOM at H 16 fp16 (64K: 128 GiB of scores), further for the linear methods
    assert max(p.seq_len for p in points if p.impl == "x") >= 64 * 1024
    assert max(p.seq_len for p in points if p.impl == "hrr_torch") >= 256 * 1024


def test_quick_cpu_preset_is_small():
    points = expand(presets.preset_groups("quick", "cpu"), ["x"])
    assert max(p.seq_len for p in points) <= 4096


def test_unknown_preset():
    with pytest.raises(UnknownNameError, match="quick"):
        presets.preset_groups("nope", "cpu")


def test_overrides_apply_to_every_group():
    groups = presets.preset_groups("pythia", "cpu")
    override = overrides_from({"seq_len": "256", "pass": "fwd"})
    points = expand([override.apply(g) for g in groups], ["x"])
    assert {p.seq_len for p in points} == {256}
    assert {p.pass_ for p in points} == {"forward"}
    assert len({(p.heads, p.head_dim) for p in points}) == len(presets.PYTHIA_MODELS)


def test_config_file(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('[sweep]\nimpl = ["softmax_torch"]\nseq_len = "1K..4K"\npass = "fwd"\n'
                    'timeout = 30\n')
    raw = read_config(path)
    assert overrides_from(raw).values["seq_len"] == (1024, 2048, 4096)
    assert raw["timeout"] == 30
    (tmp_path / "bad.toml").write_text("seq_len = [1024\n")
    with pytest.raises(UsageError, match="cannot read"):
        read_config(tmp_path / "bad.toml")
    (tmp_path / "typo.toml").write_text('seq_lens = "1K"\n')
    with pytest.raises(UsageError, match="unknown keys seq_lens"):
        read_config(tmp_path / "typo.toml")
    with pytest.raises(UsageError, match="not found"):
        read_config(tmp_path / "missing.toml")
