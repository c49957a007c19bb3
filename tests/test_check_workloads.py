"""``run_bench.py check --workloads`` and the workload flags: one row per (method, workload)."""

from __future__ import annotations

import argparse

import pytest

from cli_helpers import run_cli
from harness.commands import check as check_command
from harness.errors import UsageError
from harness.grid.workload_cases import builtin_cases, flag_cases


def rows(stdout: str) -> dict[tuple[str, str], str]:
    """{(impl, workload): the row's text} from the rich table."""
    out = {}
    names = {case.name for case in builtin_cases()}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) >= 3 and cells[1] in names:
            out[(cells[0], cells[1])] = line
    return out


def test_builtin_workloads_are_the_issues_list():
    cases = {case.name: case for case in builtin_cases()}
    p = {name: case.point for name, case in cases.items()}
    assert p["gqa Hkv=2"].n_kv_heads == 2 and p["mqa Hkv=1"].n_kv_heads == 1
    assert p["decode Tq=1 causal"].n_queries == 1 and p["decode Tq=1 causal"].causal
    assert p["chunk Tq=7 causal"].n_queries == 7
    assert p["window 16 one-sided causal"].window_pair == (16, 0)
    assert p["window 16 two-sided"].window_pair == (16, 16)
    assert p["alibi causal"].alibi and p["documents 3 causal"].documents == 3
    assert cases["padding + window 16"].padded and p["padding + window 16"].window == 16


def test_workloads_checked_in_workers_and_a_wrong_claim_fails():
    result = run_cli("--impl-module", "impls_workloads_wrong", "check", "--impl",
                     "softmax_torch,sdpa_math,wrong_gqa_order,hrr_torch,ignores_score_mods,"
                     "refuses_wide_values",
                     "--workloads", timeout=280)
    table = rows(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr   # wrong_gqa_order's GQA rows
    for impl in ("softmax_torch", "sdpa_math"):
        for case in builtin_cases():
            row = table[(impl, case.name)]
            if impl == "sdpa_math" and case.features() & {"softcap", "sinks"}:
                assert "unsupported" in row, row      # SDPA: no softcap, no sink term
                continue
            assert " ok " in row and "FAIL" not in row, row
    # a method that claims softcap and sinks and ignores them fails every such case
    for case in builtin_cases():
        row = table[("ignores_score_mods", case.name)]
        if case.features() & {"softcap", "sinks"}:
            assert "FAIL" in row, row
    assert "FAIL" in table[("wrong_gqa_order", "gqa Hkv=2")]
    assert " ok " in table[("wrong_gqa_order", "mqa Hkv=1")]   # MQA: h % 1 == h // 4 == 0
    assert " ok " in table[("wrong_gqa_order", "decode Tq=1 causal")]
    assert "unsupported" in table[("wrong_gqa_order", "alibi causal")]
    # a method that refuses the inputs when called (a limit only the shapes show): unsupported
    # with its reason, not a failed check; below its limit it runs and passes
    wide = table[("refuses_wide_values", "mla decode D=576 Dv=512 Hkv=1 Tq=1")]
    assert "unsupported" in wide and "D_v above 64" in wide and "FAIL" not in wide, wide
    assert " ok " in table[("refuses_wide_values", "Dv=16 (D=32)")]
    # capabilities say why, never a silent fallback
    assert "unsupported" in table[("hrr_torch", "chunk Tq=7 causal")]
    assert "Tq != Tk" in result.stdout


def test_workload_flags_parse_as_sweep_and_run_every_combination():
    from harness.measure.worker import WorkerContext, check_workloads_task
    from harness.grid.spec import overrides_from

    cases = flag_cases(overrides_from({"kv_heads": "1,2", "q_len": "1", "window": "8"}).values)
    assert len(cases) == 4        # 2 kv_heads x causal and not
    assert {(c.point.n_kv_heads, c.point.n_queries, c.point.window, c.point.causal)
            for c in cases} == {(kv, 1, 8, causal) for kv in (1, 2) for causal in (False, True)}
    items = [("softmax_torch", c.for_impl("softmax_torch", "cpu", "float32")) for c in cases]
    out = check_workloads_task(items, WorkerContext())
    gates = [r.gate for r in out.values()]
    assert all(g is not None and g.passed and g.max_error <= g.tolerance for g in gates), out


def test_score_mod_flags_run_as_sweep_builds_them():
    from harness.measure.worker import WorkerContext, check_workloads_task
    from harness.grid.spec import overrides_from

    cases = flag_cases(overrides_from({"softcap": "2,none", "sinks": "true",
                                       "kv_heads": "2"}).values)
    assert len(cases) == 4        # 2 softcaps x causal and not
    assert {(c.point.value("softcap"), c.point.value("sinks"), c.point.causal) for c in cases} \
        == {(cap, True, causal) for cap in (2.0, 0.0) for causal in (False, True)}
    assert {c.name for c in cases} >= {"Hkv=2 softcap=2 sinks causal", "Hkv=2 sinks"}
    items = [("softmax_torch", c.for_impl("softmax_torch", "cpu", "float32")) for c in cases]
    out = check_workloads_task(items, WorkerContext())
    gates = [r.gate for r in out.values()]
    assert all(g is not None and g.passed for g in gates), out


@pytest.mark.parametrize("flags, message", [
    ({"documents": "3", "q_len": "5"}, "documents need q_len == seq_len"),
    ({"kv_heads": "x"}, "--kv-heads"),
    ({"window": "wide"}, "--window"),
    ({"softcap": "-1"}, "--softcap"),
    ({"sinks": "maybe"}, "--sinks"),
])
def test_bad_workload_flags_are_one_clear_line(flags, message):
    args = argparse.Namespace(workloads=False, kv_heads=None, q_len=None, window=None,
                              alibi=None, documents=None)
    for name, value in flags.items():
        setattr(args, name, value)
    with pytest.raises(UsageError, match=message):
        check_command.workload_cases(args)


def test_the_title_gives_the_shape_the_cases_ran():
    """--kv-heads 3 builds Hq=6 (4 query heads are not a multiple of 3): the title says the
    shape the cases ran, not a fixed one."""
    result = run_cli("check", "--impl", "softmax_torch", "--kv-heads", "3", timeout=280)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "B=2, Hq=6, T=64, D=32" in result.stdout and "Hq=4" not in result.stdout
