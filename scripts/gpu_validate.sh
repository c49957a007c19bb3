#!/usr/bin/env bash
# GPU validation: one prepared command that exercises every CUDA path of attnbench on a real GPU.
# Needs no network: the Python in use must already have torch (and jax, pandas, matplotlib, rich,
# nvidia-ml-py, pytest) installed.
#
#   scripts/gpu_validate.sh OUTDIR [--work DIR] [--fresh] [--wheels DIR] [--device cuda|cpu]
#                                  [--impl LIST] [--deadline SECONDS] [--only STEPS]
#
#   --work DIR     working folder: results, logs, caches, data (default REPO/.gpu_validate,
#                  git-ignored); OUTDIR receives only gpu_validate.tar.gz and summary.md
#   --fresh        empty the working folder first (default: resume what it holds)
#   --wheels DIR   install every *.whl found there with --no-deps --no-index (e.g. xformers)
#   --device cpu   rehearsal: the same steps at tiny CPU sizes (checks the script, not the GPU)
#   --impl LIST    limit the sweep to these implementations (default: all registered)
#   --deadline S   the whole script's time limit (default 360 s; the CPU rehearsal 3x: 1080)
#   --only STEPS   run only these steps (comma-separated names); the others are skipped
#
# Output channel: the device tool returns a handful of files from an OUTDIR that is empty at each
# call, while the repository's ignored files stay on a warm machine. So everything is written to
# the working folder, and OUTDIR gets one archive of it (results, logs, report; no caches, no
# data) and summary.md.
#
# Rerun: a second run with the same working folder (or, when that folder is missing, with the
# archive of an earlier run in OUTDIR: it is unpacked) redoes nothing that finished. The
# environment, install and wheels steps always run (they check this machine); a measurement step
# that finished complete (WORK/done/STEP) is recorded "ok ... done in an earlier run" and not
# rerun; a cut one resumes: the sweep and cudagraph runs with `sweep --resume DIR`, lra with
# --resume, gpu-tests without the tests already reported in gpu-tests.progress.tsv.
#
# Budget arithmetic (GPU; every limit x3 for the CPU rehearsal). A step gets its limit or what is
# left of the deadline less FINAL_RESERVE, whichever is less, so no step can run into the
# archive and summary; a step with under 5 s left is recorded as not started.
#   environment 40 (versions, API probe, `list`: three cold Python starts that import torch,
#              JAX and their CUDA runtimes)   install 15   wheels 40 (only with --wheels)
#   sweep 105 (runner --time-budget = its limit - 30: start-up, peaks and close; under the budget
#              no task is given a timeout beyond the budget left, compile allowance included)
#   gpu-tests 75 (harness checks first, one FlexAttention case, 20 s per test)
#   cudagraph 30 (sdpa_flash; --time-budget = limit - 20)   hrr-floor 25   profile 15
#   lra-data 10   lra 20   report 15   FINAL_RESERVE 10 (archive, summary)
#   sum: 40 + 15 + 105 + 75 + 30 + 25 + 15 + 10 + 20 + 15 + 10 = 360 s = the deadline (--wheels'
#   40 s come out of the last steps: lra, then report, are the ones cut).
#
# Each step's outcome is a line of WORK/steps.tsv (ok / failed / timeout / skipped / no-cuda);
# a step that fails or times out does not stop the script. Exit status: 0 when no step failed or
# timed out, 1 otherwise, 2 on bad arguments.
set -uo pipefail

usage() { sed -n '6,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

OUT="" WORK="" FRESH="" WHEELS="" DEVICE="cuda" IMPL="" DEADLINE_S="" ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --work) WORK="${2:?--work needs a folder}"; shift 2 ;;
    --fresh) FRESH=1; shift ;;
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
    --device) DEVICE="${2:?--device needs cuda or cpu}"; shift 2 ;;
    --impl) IMPL="${2:?--impl needs a list}"; shift 2 ;;
    --deadline) DEADLINE_S="${2:?--deadline needs seconds}"; shift 2 ;;
    --only) ONLY="${2:?--only needs step names}"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "gpu_validate: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || { echo "gpu_validate: one OUTDIR only" >&2; usage; }; OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu_validate: OUTDIR is required" >&2; usage; }
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_validate: --device must be cuda or cpu" >&2; exit 2 ;; esac
# SCALE stretches every limit: 1 on a GPU (the 6-minute budget), 3 for the CPU rehearsal, whose
# tiny steps still take longer than a GPU's on a small, shared CPU machine
SCALE=1; [ "$DEVICE" = cuda ] || SCALE=3
DEADLINE_S="${DEADLINE_S:-$((360 * SCALE))}"
case "$DEADLINE_S" in ''|*[!0-9]*) echo "gpu_validate: --deadline must be whole seconds" >&2; exit 2 ;; esac
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
  echo "gpu_validate: note: --wheels $WHEELS is not a folder; the wheels step will fail" >&2
fi

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
WORK="${WORK:-$REPO/.gpu_validate}"
ARCHIVE="$OUT/gpu_validate.tar.gz"
[ -z "$FRESH" ] || rm -rf "$WORK"
if [ ! -f "$WORK/steps.tsv" ] && [ -f "$ARCHIVE" ]; then   # resume from an earlier run's archive
  mkdir -p "$WORK" && tar -xzf "$ARCHIVE" -C "$WORK" || exit 2
  UNPACKED=1
fi
mkdir -p "$WORK/done" || exit 2
WORK="$(cd "$WORK" && pwd)"
LOG="$WORK/log.txt" STEPS="$WORK/steps.tsv"
printf 'step\tstatus\tseconds\tdetail\n' >"$STEPS"
START=$(date +%s); DEADLINE=$((START + DEADLINE_S)); FINAL_RESERVE=$((10 * SCALE))
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-$WORK/.mplconfig}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# caches in the working folder (kept on a warm machine, never archived): JAX's persistent cache
# and attnbench's compile cache (FlexAttention, Triton), so a rerun loads what the first compiled
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$WORK/jax-cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
export ATTNBENCH_COMPILE_CACHE="${ATTNBENCH_COMPILE_CACHE:-$WORK/compile-cache}"
# what the `bash -c` steps read
export PY REPO WHEELS WORK DEVICE SCALE
cd "$REPO" || exit 2

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS"; log "step $1: $2 ($3 s) $4"; }

# effective LIMIT: the seconds a step of (unscaled) LIMIT gets now: its scaled limit, or what is
# left of the deadline before the final reserve
effective() {
  local limit=$(($1 * SCALE)) left=$((DEADLINE - $(date +%s) - FINAL_RESERVE))
  [ "$limit" -le "$left" ] && echo "$limit" || echo "$left"
}
selected() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
is_done() { [ -f "$WORK/done/$1" ]; }

# step NAME LIMIT CMD...: run CMD within its effective limit; record ok / failed / timeout and go
# on whatever happens. A measurement step (RESUMABLE) that finished complete before is not rerun;
# one that ends ok and complete (complete_NAME, when defined, agrees) is marked done.
RESUMABLE=" gpu-tests sweep cudagraph hrr-floor profile lra-data lra report "
RAN_MEASUREMENT=""
step() {
  local name="$1" limit; limit=$(effective "$2"); shift 2
  if ! selected "$name"; then record "$name" skipped 0 "not in --only $ONLY"; return; fi
  if [[ "$RESUMABLE" == *" $name "* ]] && is_done "$name" && ! redo "$name"; then
    record "$name" ok 0 "done in an earlier run ($(cat "$WORK/done/$name") s); not rerun"
    return
  fi
  if [ "$limit" -lt 5 ]; then record "$name" timeout 0 "not started: the ${DEADLINE_S} s deadline"; return; fi
  local command="$*"
  log "=== $name (limit ${limit} s): ${command:0:200}"
  local t0 rc; t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >>"$LOG" 2>&1; rc=$?
  local took=$(($(date +%s) - t0))
  [ "$name" = report ] || [[ "$RESUMABLE" != *" $name "* ]] || RAN_MEASUREMENT=1
  case "$rc" in
    0) if ! declare -F "complete_$name" >/dev/null || "complete_$name"; then
         echo "$took" >"$WORK/done/$name"; record "$name" ok "$took" ""
       else
         record "$name" ok "$took" "not complete: a rerun resumes it"
       fi ;;
    124|137) record "$name" timeout "$took" "killed after its ${limit} s limit; a rerun resumes it" ;;
    *) record "$name" failed "$took" "exit status $rc (see log.txt)" ;;
  esac
}
redo() {  # a done step that must run again all the same
  case "$1" in
    report) [ -n "$RAN_MEASUREMENT" ] ;;                       # new results to render
    lra-data) ! is_done lra && [ ! -d "$DATA" ] ;;             # data is not archived
    *) false ;;
  esac
}
run_complete() {  # a sweep run directory with no point left by its time budget
  "$PY" -c "import json, sys; sys.exit(bool(json.load(open(sys.argv[1])).get('not_tried_time_budget')))" \
    "$1/run.json" 2>/dev/null
}

# ---- environment: versions, GPU, API probe, what attnbench can run here ----------------------
environment() {
  local rc=0
  date -u; uname -a
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
  "$PY" - <<'EOF' || rc=1
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "triton", "jax", "jaxlib", "numpy", "pandas", "matplotlib", "rich",
             "pynvml", "pytest", "pytest_timeout", "xformers", "flash_attn"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except Exception as exc:
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
try:
    import torch
    print("torch cuda", torch.version.cuda, "available", torch.cuda.is_available())
    for i in range(torch.cuda.device_count()):
        print(" ", i, torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
except Exception as exc:
    print("torch cuda check failed:", exc)
EOF
  "$PY" scripts/gpu_api_probe.py --device "$DEVICE" || rc=1
  "$PY" run_bench.py list --device "$DEVICE" || rc=1
  return "$rc"
}

cuda_reason() {  # empty when a CUDA device is usable; else why not
  "$PY" - <<'EOF' 2>/dev/null || echo "no CUDA device: torch is not importable with $PY"
try:
    import torch
except Exception as exc:
    print(f"no CUDA device: torch is not importable ({exc})")
else:
    if not torch.cuda.is_available():
        print("no CUDA device: torch.cuda.is_available() is False")
EOF
}

# ---- install attnbench without touching torch/jax --------------------------------------------
install() {
  if (cd / && "$PY" -c "import harness, pathlib, sys; sys.exit(pathlib.Path(harness.__file__).resolve().parents[1] != pathlib.Path('$REPO'))"); then
    echo "attnbench is already importable from $REPO (editable install or PYTHONPATH)"
  elif "$PY" -m pip install --no-deps --no-build-isolation --no-index -e "$REPO"; then
    echo "installed attnbench with --no-deps (torch and jax untouched)"
  else
    echo "pip install -e failed; using PYTHONPATH=$REPO instead"
  fi
  "$PY" -c "import harness, torch, numpy, pandas, matplotlib, rich; print('imports ok')"
}

wheels() {
  shopt -s nullglob; local found=("$WHEELS"/*.whl)
  [ "${#found[@]}" -gt 0 ] || { echo "no *.whl in $WHEELS"; return 1; }
  "$PY" -m pip install --no-deps --no-index "${found[@]}"
}

# ---- gpu-tests: the plan of scripts/pytest_gpu_plan.py, a line per test as it ends ------------
gpu_tests() {
  local progress="$WORK/gpu-tests.progress.tsv" rc
  PYTHONPATH="$REPO/scripts:$PYTHONPATH" "$PY" -m pytest -m gpu -v -rs -p no:cacheprovider \
    -p pytest_gpu_plan --gpu-plan --test-timeout $((20 * SCALE)) \
    --progress-file "$progress" --skip-reported --junitxml "$WORK/gpu-tests.xml" \
    tests/test_gpu.py tests/test_graph_check.py tests/test_energy.py
  rc=$?
  [ "$rc" -ne 5 ] || rc=0          # 5: nothing left to run, every test reported in a run before
  if grep -qE $'^(failed|error)\t' "$progress" 2>/dev/null; then rc=1; fi
  return "$rc"
}

log "attnbench GPU validation: repo $REPO, work $WORK, out $OUT, device $DEVICE," \
    "deadline ${DEADLINE_S} s${UNPACKED:+ (resumed from $ARCHIVE)}"
step environment 40 bash -o pipefail -c "$(declare -f environment); environment 2>&1 | tee \"\$WORK/environment.txt\""
step install 15 bash -o pipefail -c "$(declare -f install); install"
if [ -n "$WHEELS" ]; then
  step wheels 40 bash -o pipefail -c "$(declare -f wheels); wheels"
else
  record wheels skipped 0 "no --wheels folder given"
fi

NO_CUDA=""
if [ "$DEVICE" = cuda ]; then NO_CUDA="$(cuda_reason)"; fi
gpu_step() {  # a step that needs the device: recorded as no-cuda (with the reason) without one
  if [ -n "$NO_CUDA" ]; then record "$1" no-cuda 0 "$NO_CUDA"; else step "$@"; fi
}

# ---- the sweep (preset "validate"), first of the long steps, bounded by --time-budget ---------
# The runner's budget counts from the start of its run (probes included) and cuts every task's
# timeout to the budget left; the step's limit adds start-up (imports, plan, peaks) and close.
SWEEP="$WORK/results/sweep"
POINT_TIMEOUT=$((20 * SCALE))
sweep_settings() {  # LIMIT_S MARGIN_S: the settings flags of a bounded sweep
  local budget=$(($1 - $2 * SCALE)); [ "$budget" -ge 5 ] || budget=5
  echo --cooldown 0 --min-time 0.1 --max-repeats 10 --timeout "$POINT_TIMEOUT" \
    --time-budget "$budget" --no-report
}
complete_sweep() { run_complete "$SWEEP"; }
if [ -f "$SWEEP/run.json" ]; then
  sweep_args=(sweep --resume "$SWEEP")
else
  sweep_args=(sweep --preset validate --device "$DEVICE" --out "$SWEEP")
  [ -z "$IMPL" ] || sweep_args+=(--impl "$IMPL")
fi
# shellcheck disable=SC2207
sweep_args+=($(sweep_settings "$(effective 105)" 30))
gpu_step sweep 105 "$PY" run_bench.py "${sweep_args[@]}"

# ---- GPU-marked tests: harness checks first, CUDA numerics, NVML ----------------------------
gpu_step gpu-tests 75 bash -o pipefail -c "$(declare -f gpu_tests); gpu_tests"

# ---- CUDA-graph timer (with NVML clock samples in every record): sdpa_flash, the point of it ---
# (JAX is not graph-captured: an hrr_jax point would be timed by its own timer, not the graph's)
CUDAGRAPH="$WORK/results/cudagraph"
complete_cudagraph() { run_complete "$CUDAGRAPH"; }
if [ "$DEVICE" = cuda ]; then
  if [ -f "$CUDAGRAPH/run.json" ]; then
    graph_args=(sweep --resume "$CUDAGRAPH")
  else
    graph_args=(sweep --impl sdpa_flash --seq-len 1K,8K --head-dim 64 --heads 16
                --dtype float16 --pass fwd --device cuda --out "$CUDAGRAPH")
  fi
  # shellcheck disable=SC2207
  graph_args+=(--timer cudagraph --reuse-peaks $(sweep_settings "$(effective 30)" 20))
  gpu_step cudagraph 30 "$PY" run_bench.py "${graph_args[@]}"
else
  record cudagraph skipped 0 "--timer cudagraph needs a CUDA device"
fi

# ---- HRR forward against the memory-bandwidth floor (rows by T across fp32 and bf16) --------
floor_args=(--device "$DEVICE" --json "$WORK/hrr_floor.json" --min-time 0.05 --repeats 5
            --seq-len 64K,1M --dtypes float32,bfloat16)
if [ "$DEVICE" = cpu ]; then
  floor_args+=(--seq-len 1K --dtypes float32 --copy-mib 64 --min-time 0.02 --repeats 3)
fi
gpu_step hrr-floor 25 "$PY" benchmarks/hrr/bandwidth_floor.py "${floor_args[@]}"

profile_len=4K; [ "$DEVICE" = cuda ] || profile_len=256
gpu_step profile 15 "$PY" run_bench.py profile --impl hrr_torch --seq-len "$profile_len" \
  --head-dim 64 --device "$DEVICE" --out "$WORK/profile"

# ---- a short LRA run on generated ListOps data --------------------------------------------------
# ListOps pads its sequences, so the exact baseline must take a key-padding mask on the device:
# sdpa_efficient on CUDA (the CUDA flash kernel takes no mask), sdpa_math in the CPU rehearsal
DATA="$WORK/data/listops" LRA="$WORK/results/lra"
LRA_EXACT=sdpa_efficient; [ "$DEVICE" = cuda ] || LRA_EXACT=sdpa_math
gpu_step lra-data 10 "$PY" run_bench.py data listops --out "$DATA" --n-train 400 \
  --n-val 100 --n-test 100 --min-length 100 --max-length 500
lra_args=(lra --task listops --impl "hrr_torch,$LRA_EXACT" --preset smoke --data-dir "$DATA"
          --device "$DEVICE" --out "$LRA" --no-progress)
# the rehearsal checks the script, not accuracy: one short epoch on a few examples
[ "$DEVICE" = cuda ] || lra_args+=(--epochs 1 --max-train 128 --max-val 32 --max-test 32)
[ ! -f "$LRA/run.json" ] || lra_args+=(--resume)
gpu_step lra 20 "$PY" run_bench.py "${lra_args[@]}"

# ---- the report of whatever was measured ---------------------------------------------------
runs=()
for run in "$SWEEP" "$LRA"; do
  [ -s "$run/results.jsonl" ] && runs+=("$run")
done
if [ "${#runs[@]}" -gt 0 ]; then
  step report 15 "$PY" run_bench.py report "${runs[@]}" --out "$WORK/report"
else
  record report skipped 0 "no results to render"
fi

# ---- summary and the archive: OUTDIR's only two files --------------------------------------
log "total $(($(date +%s) - START)) s"
timeout $((5 * SCALE)) "$PY" "$REPO/scripts/gpu_validate_summary.py" "$WORK" | tee -a "$LOG"
tar -czf "$ARCHIVE.tmp" -C "$WORK" --exclude=./jax-cache --exclude=./compile-cache \
  --exclude=./data --exclude=./.mplconfig --exclude='*/compile-cache' --exclude='*/lock' . \
  && mv "$ARCHIVE.tmp" "$ARCHIVE" || { rm -f "$ARCHIVE.tmp"; echo "gpu_validate: archive failed" >&2; }
cp "$WORK/summary.md" "$OUT/summary.md" 2>/dev/null
if cut -f2 "$STEPS" | grep -qxE 'failed|timeout'; then exit 1; fi
exit 0
