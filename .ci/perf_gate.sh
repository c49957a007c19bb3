#!/usr/bin/env bash
# The cross-run performance gate (docs/regression.md, "The cross-run gate"): the committed baseline
# against this tree. .ci/run runs it after `run_bench.py ab HEAD~1 HEAD`, as a coarse backstop.
#
# Sweeps softmax_torch, sdpa_math, hrr_torch, performer_torch at T=128,256, D=64, forward, on
# the CPU (one round: about 25 s) and compares the result with the committed baseline
# results/baselines/ci-cpu/, every time divided by sdpa_math's time at the same configuration in
# the same run. If that round flags a point, two more rounds are measured and the three rounds
# decide: each round divided by sdpa_math in that round, then the median over rounds (so a load
# burst on a shared machine during one round does not fail CI, while a real slowdown, present in
# every round, does). The rounds' records are concatenated in $work/pooled.
#
#   .ci/perf_gate.sh                          gate: exit 0 ok, 1 a point slower (or newly failing, or gone), 2 bad input/failure
#   .ci/perf_gate.sh --rebaseline             re-record the baseline (three rounds; commit it)
#   .ci/perf_gate.sh --keep DIR               keep the sweeps and the comparisons in DIR
#   .ci/perf_gate.sh --impl-module impls_slow any other argument goes to run_bench.py (before the
#                                             command); tests/ is on the path, so this one injects
#                                             the deliberately 2x slower hrr_torch of
#                                             tests/impls_slow.py
#
# Environment: PYTHON (default python), PERF_GATE_THRESHOLD (default below),
# PERF_GATE_BASELINE (default results/baselines/ci-cpu), PERF_GATE_ROUNDS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python}"
BASELINE="${PERF_GATE_BASELINE:-results/baselines/ci-cpu}"
# Chosen by measurement (docs/regression.md, "Choosing the threshold"): over 12 gate runs of an
# identical tree on this loaded 2-core machine the largest ratio the rounds decided on was 1.44
# (single rounds: up to 2.07, which the confirmation rounds absorbed); the injected 2x slowdown
# of hrr_torch measured 1.93-2.27 with interval lower bounds of 1.86 or more.
THRESHOLD="${PERF_GATE_THRESHOLD:-60%}"
ROUNDS="${PERF_GATE_ROUNDS:-3}"
IMPLS=softmax_torch,sdpa_math,hrr_torch,performer_torch
REFERENCE=sdpa_math
SWEEP=(sweep --impl "$IMPLS" --seq-len 128,256 --head-dim 64 --pass fwd --device cpu
       --min-time 0.3 --max-repeats 200 --no-report)

# Small shapes and the lower quartile (--statistic p25 in compare below): every sample takes
# 1-25 ms, short enough that a good share of them run undisturbed even on a loaded machine, and
# the lower quartile of the samples tracks that undisturbed cost. With T=512,1024 the samples of
# sdpa_math took 60-500 ms, every one of them was stretched by other processes, and short and long
# samples were stretched by different factors, so even the ratio to sdpa_math drifted with the
# load (measured: hrr_torch's ratio rose from 1.0 to 1.6 as the load fell from 10 to 6).
#
# One thread per worker: on a shared 2-core machine a multi-threaded GEMM stalls whenever one of
# its threads is descheduled (measured: 15 ms samples became 500 ms ones); a single thread slows
# down roughly in proportion to the load, which --relative-to cancels. The gate therefore watches
# single-thread performance (each record's "threads" field says so).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
# Fixed glibc malloc thresholds in every process of the gate (as ab's lockstep workers hold freed
# memory): with glibc's dynamic mmap threshold, whether a call's 2 MiB score buffers come back as
# fresh pages on every call depends on each fresh worker process's allocation history. Measured
# here, quiet machine, six fresh sweeps each (softmax_torch / sdpa_math at T=256, p25 of the
# samples): dynamic thresholds gave ratios of 0.41 to 1.26 (each method 1.2 or 2.5 ms, 2.0 or
# 3.0 ms by the draw), fixed ones 0.61 to 0.64. The memory worker still sets its own thresholds.
export GLIBC_TUNABLES="glibc.malloc.mmap_threshold=67108864:glibc.malloc.trim_threshold=1073741824"
export PYTHONPATH="$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"

rebaseline=0
keep=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rebaseline) rebaseline=1 ;;
    --keep) keep="${2:?--keep needs a directory}"; shift ;;
    *) extra+=("$1") ;;
  esac
  shift
done

if [ -n "$keep" ]; then
  mkdir -p "$keep"
  work="$(cd "$keep" && pwd)"
  rm -rf "$work"/round* "$work"/pooled "$work"/compare*
else
  work="$(mktemp -d "${TMPDIR:-/tmp}/attnbench-gate.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
fi

sweep_round() {  # sweep_round N: one round into $work/roundN, added to $work/pooled
  local dir="$work/round$1"
  echo "perf gate: round $1: sweeping $IMPLS (T=128,256 D=64 forward, 1 thread)"
  if ! "$PYTHON" run_bench.py ${extra[@]+"${extra[@]}"} "${SWEEP[@]}" --out "$dir" \
      > "$work/round$1.log" 2>&1; then
    cat "$work/round$1.log"
    echo "perf gate: the sweep itself failed" >&2
    exit 2
  fi
  mkdir -p "$work/pooled"
  [ -f "$work/pooled/run.json" ] || cp "$dir/run.json" "$work/pooled/run.json"
  cat "$dir/results.jsonl" >> "$work/pooled/results.jsonl"
}

compare() {  # compare OUT [ARGS]: the rounds so far against the baseline
  # --any-hardware: CI's machine is "like this one" but its hardware_id (CPU model string, core
  # count) may differ, and refusing would fail CI for no code change. Dividing by sdpa_math in
  # the same run cancels a uniformly faster, slower or busier machine; compare prints both
  # machines when they differ. Re-record the baseline (--rebaseline) on CI's machine if its CPU
  # family differs, since relative speeds can shift between CPU families.
  "$PYTHON" run_bench.py compare "$BASELINE" "$work/pooled" --relative-to "$REFERENCE" \
    --statistic p25 --threshold "$THRESHOLD" --metric time --any-hardware --fail-on only-in-baseline --out "$work/$1" \
    "${@:2}"
}

if [ "$rebaseline" = 1 ]; then
  for n in $(seq 1 "$ROUNDS"); do sweep_round "$n"; done
  mkdir -p "$BASELINE"
  cp "$work/pooled/run.json" "$work/pooled/results.jsonl" "$BASELINE/"
  echo "perf gate: baseline ($ROUNDS rounds) re-recorded in $BASELINE (commit run.json and results.jsonl)"
  exit 0
fi

# Round 1 screens: with --confidence 0.5 a point is flagged as soon as the middle half of its
# bootstrap distribution lies beyond the threshold, so a real slowdown that one noisy round
# blurs still triggers the confirmation rounds. The decision is taken on all rounds with the
# full 95% rule. A clean round 1 passes at once.
sweep_round 1
set +e
if [ "$ROUNDS" -gt 1 ]; then
  compare compare-round1 --confidence 0.5
else
  compare compare
fi
status=$?
set -e
if [ "$status" = 1 ] && [ "$ROUNDS" -gt 1 ]; then
  echo "perf gate: round 1 flagged a point as slower or newly failing; measuring $((ROUNDS - 1)) more round(s) to decide"
  for n in $(seq 2 "$ROUNDS"); do sweep_round "$n"; done
  set +e
  compare compare
  status=$?
  set -e
fi
case "$status" in
  0) echo "perf gate: passed (threshold $THRESHOLD relative to $REFERENCE)" ;;
  1) where="rerun with --keep DIR to keep the sweeps and tables"
     [ -n "$keep" ] && where="sweeps and tables in $work"
     echo "perf gate: FAILED: a point slower beyond $THRESHOLD relative to $REFERENCE, newly failing or gone ($where)" >&2 ;;
  *) echo "perf gate: compare could not run (exit $status)" >&2 ;;
esac
exit "$status"
