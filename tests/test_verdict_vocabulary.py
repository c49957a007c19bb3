"""compare and ab share one vocabulary: given the same samples, both commands, each through its
own path (compare reads run directories and bootstraps them; ab pairs rounds and takes a t
interval), reach the same class for every point and exit alike.

One set of synthetic samples feeds both: ab's rounds come from a stand-in for its round servers
(the only part replaced: no sweep runs), and ab pools every round into ``OUT/base`` and
``OUT/head`` as it always does; compare then reads those two run directories."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.contract.records import Point, SpeedRecord
from harness.store.run_dir import RunDir
from harness.verdicts import words
from harness.verdicts.ab import rounds as ab_rounds
from harness.verdicts.ab.sides import Side

ROUNDS = 4
SAMPLES = 9

# case -> (baseline status, current status, current/baseline, relative spread of the samples)
CASES = {
    "faster": ("ok", "ok", 0.7, 0.01),
    "slower": ("ok", "ok", 1.3, 0.01),
    "same": ("ok", "ok", 1.0, 0.01),
    # beyond the threshold by a little, hidden by samples spread +-80%
    "noisy": ("ok", "ok", 1.15, 0.8),
    "broken": ("ok", "oom", 1.0, 0.01),
    "repaired": ("oom", "ok", 1.0, 0.01),
    "never": ("oom", "timeout", 1.0, 0.01),
    "added": (None, "ok", 1.0, 0.01),
}
EXPECTED = {"faster": words.FASTER, "slower": words.SLOWER, "same": words.SAME,
            "noisy": words.AMBIGUOUS, "broken": words.NEWLY_FAILING,
            "repaired": words.NEWLY_RUNNING, "never": words.NOT_MEASURED,
            "added": words.ONLY_CURRENT}


def _point(case: str) -> Point:
    return Point(case, 128, 16)


def _record(case: str, side: str, index: int) -> dict | None:
    """One round's record of a case's point on one side (None: the point is not in it)."""
    before, after, ratio, spread = CASES[case]
    status = before if side == "base" else after
    if status is None:
        return None
    center = 0.002 * (ratio if side == "head" else 1.0)
    rng = np.random.default_rng([index, side == "head", sorted(CASES).index(case)])
    samples = [float(x) for x in center * (1 + spread * rng.uniform(-1, 1, SAMPLES))]
    values = dict(time_s=float(np.median(samples)), time_samples_s=samples) \
        if status == "ok" else {}
    return SpeedRecord.for_point(_point(case), framework="torch", family="exact", status=status,
                                 message="" if status == "ok" else f"{status} here",
                                 **values).to_json()


def _served_round(plan, index):
    """Stands in for ab's round servers: this round's records of every case, written and
    pooled as a served round writes and pools them."""
    records = {}
    for label in ab_rounds.LABELS:
        round_dir = plan.out / "rounds" / f"{label}-{index:02d}"
        run = RunDir.create(round_dir, {"kind": "speed"})
        records[label] = [r for r in (_record(c, label, index) for c in CASES) if r]
        for data in records[label]:
            run.append(SpeedRecord.from_json(data))
        ab_rounds.pool_round(plan.out / label, round_dir, plan.sides[label])
    return records, "synthetic round"


@pytest.fixture
def fake_sides(monkeypatch, tmp_path):
    @contextlib.contextmanager
    def checked_out(specs, cwd, same_harness=False):
        yield {label: Side(label, spec, tmp_path, commit="0" * 40)
               for label, spec in specs.items()}

    monkeypatch.setattr("harness.commands.ab.checked_out", checked_out)
    monkeypatch.setattr(ab_rounds, "has_round_server", lambda side: True)
    monkeypatch.setattr(ab_rounds, "served_round", _served_round)


def _classes(path: Path) -> dict[str, dict[str, str]]:
    return {row["impl"]: row for row in csv.DictReader(path.open())}


def test_compare_and_ab_reach_the_same_classes_on_the_same_samples(fake_sides, tmp_path):
    out = tmp_path / "ab"
    ab_exit = main(["ab", "v1", "v2", "--out", str(out), "--rounds", str(ROUNDS),
                    "--min-rounds", str(ROUNDS), "--statistic", "median"])
    compare_exit = main(["compare", str(out / "base"), str(out / "head"),
                         "--out", str(tmp_path / "cmp")])
    by_ab = _classes(out / "ab.csv")
    by_compare = _classes(tmp_path / "cmp" / "compare.csv")
    assert {case: row["verdict"] for case, row in by_ab.items()} == EXPECTED
    assert {case: row["verdict"] for case, row in by_compare.items()} == EXPECTED
    assert ab_exit == compare_exit == 1      # slower and newly failing fail both
    for rows in (by_ab, by_compare):
        assert {case for case, row in rows.items() if row["fails"] == "True"} == \
            {"slower", "broken"}
        # every judged row carries the interval and both sides' noise that decided it
        for case in ("faster", "slower", "same", "noisy"):
            row = rows[case]
            lo, hi, ratio = float(row["lo"]), float(row["hi"]), float(row["ratio"])
            assert lo <= ratio <= hi, case
            assert float(row["baseline_noise"]) > 0 and float(row["current_noise"]) > 0
        assert float(rows["slower"]["lo"]) > 1.1 and float(rows["faster"]["hi"]) < 1 / 1.1
        assert float(rows["noisy"]["lo"]) < 1.1 < float(rows["noisy"]["hi"])
        assert "straddles" in rows["noisy"]["note"]
        assert (rows["broken"]["baseline_status"], rows["broken"]["current_status"]) == \
            ("ok", "oom")
    # the tables show a status class with its pair
    for page in (out / "ab.md", tmp_path / "cmp" / "compare.md"):
        text = page.read_text()
        assert "newly failing (ok -> oom)" in text and "newly running (oom -> ok)" in text
        assert "not measured (oom -> timeout)" in text


def test_fail_on_ambiguous_fails_both_commands(fake_sides, tmp_path):
    out = tmp_path / "ab"
    common = ["--fail-on", "ambiguous"]
    assert main(["ab", "v1", "v2", "--out", str(out), "--rounds", str(ROUNDS),
                 "--min-rounds", str(ROUNDS), "--statistic", "median", *common]) == 1
    assert main(["compare", str(out / "base"), str(out / "head"), "--out",
                 str(tmp_path / "cmp"), *common]) == 1
    for path in (out / "ab.csv", tmp_path / "cmp" / "compare.csv"):
        rows = _classes(path)
        assert {case for case, row in rows.items() if row["fails"] == "True"} == \
            {"slower", "broken", "noisy"}
