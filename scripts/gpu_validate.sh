#!/usr/bin/env bash
# GPU validation: one prepared command that exercises every CUDA path of attnbench on a real GPU
# and leaves results, report and a log under OUTDIR. Needs no network: the Python in use must
# already have torch (and jax, pandas, matplotlib, rich, nvidia-ml-py, pytest) installed.
#
#   scripts/gpu_validate.sh OUTDIR [--wheels DIR] [--device cuda|cpu] [--impl LIST]
#                                  [--deadline SECONDS]
#
#   --wheels DIR   install every *.whl found there with --no-deps --no-index (e.g. xformers)
#   --device cpu   rehearsal: the same steps at tiny CPU sizes (checks the script, not the GPU)
#   --impl LIST    limit the sweep to these implementations (default: all registered)
#   --deadline S   the whole script's time limit in seconds (default 470, under 8 minutes)
#
# Steps: environment, install, wheels, gpu-tests, hrr-floor, sweep, cudagraph, profile, lra-data,
# lra, report. Each runs under
# its own time limit inside the overall deadline; a step that fails or times out is recorded in
# OUTDIR/steps.tsv and the script goes on. Without a CUDA device the GPU steps are recorded as
# "no-cuda" with the reason. OUTDIR/summary.md tells what happened; OUTDIR/log.txt has all output.
# Exit status: 0 when no step failed or timed out, 1 otherwise, 2 on bad arguments.
set -uo pipefail

usage() { sed -n '5,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

OUT="" WHEELS="" DEVICE="cuda" IMPL="" DEADLINE_S=470
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
    --device) DEVICE="${2:?--device needs cuda or cpu}"; shift 2 ;;
    --impl) IMPL="${2:?--impl needs a list}"; shift 2 ;;
    --deadline) DEADLINE_S="${2:?--deadline needs seconds}"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "gpu_validate: unknown option $1" >&2; usage ;;
    *) [ -z "$OUT" ] || { echo "gpu_validate: one OUTDIR only" >&2; usage; }; OUT="$1"; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "gpu_validate: OUTDIR is required" >&2; usage; }
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_validate: --device must be cuda or cpu" >&2; exit 2 ;; esac
case "$DEADLINE_S" in ''|*[!0-9]*) echo "gpu_validate: --deadline must be whole seconds" >&2; exit 2 ;; esac
if [ -n "$WHEELS" ] && [ ! -d "$WHEELS" ]; then
  echo "gpu_validate: note: --wheels $WHEELS is not a folder; the wheels step will fail" >&2
fi

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/log.txt" STEPS="$OUT/steps.tsv"
: >"$LOG"; printf 'step\tstatus\tseconds\tdetail\n' >"$STEPS"
START=$(date +%s); DEADLINE=$((START + DEADLINE_S))
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-$OUT/.mplconfig}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false
cd "$REPO" || exit 2

log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STEPS"; log "step $1: $2 ($3 s) $4"; }

# step NAME LIMIT RESERVE CMD...: run CMD with at most LIMIT seconds, leaving RESERVE seconds of
# the deadline for the steps after it; record ok / failed / timeout and go on whatever happens.
step() {
  local name="$1" limit="$2" reserve="$3"; shift 3
  local left=$((DEADLINE - $(date +%s) - reserve))
  if [ "$left" -lt 5 ]; then record "$name" timeout 0 "not started: the ${DEADLINE_S} s deadline"; return; fi
  [ "$limit" -le "$left" ] || limit="$left"
  local command="$*"
  log "=== $name (limit ${limit} s): ${command:0:160}"
  local t0 rc; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1; rc=$?
  local took=$(($(date +%s) - t0))
  case "$rc" in
    0) record "$name" ok "$took" "" ;;
    124|137) record "$name" timeout "$took" "killed after its ${limit} s limit" ;;
    *) record "$name" failed "$took" "exit status $rc (see log.txt)" ;;
  esac
}

# ---- 1. environment: versions, GPU, what attnbench can run here ---------------------------
environment() {
  date -u; uname -a
  command -v nvidia-smi >/dev/null && nvidia-smi || echo "nvidia-smi: not found"
  "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("torch", "jax", "jaxlib", "numpy", "pandas", "matplotlib", "rich", "pynvml",
             "pytest", "xformers", "flash_attn"):
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
try:
    import jax
    print("jax devices", jax.devices())
except Exception as exc:
    print("jax devices: failed:", exc)
EOF
  "$PY" run_bench.py list
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

# ---- 2. install attnbench without touching torch/jax ----------------------------------------
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

log "attnbench GPU validation: repo $REPO, out $OUT, device $DEVICE, deadline ${DEADLINE_S} s"
export PY REPO WHEELS OUT
step environment 60 400 bash -c "$(declare -f environment); environment 2>&1 | tee \"\$OUT/environment.txt\""
step install 90 380 bash -c "$(declare -f install); install"
if [ -n "$WHEELS" ]; then
  step wheels 90 360 bash -c "$(declare -f wheels); wheels"
else
  record wheels skipped 0 "no --wheels folder given"
fi

NO_CUDA=""
if [ "$DEVICE" = cuda ]; then NO_CUDA="$(cuda_reason)"; fi
gpu_step() {  # a step that needs the device: recorded as no-cuda (with the reason) without one
  if [ -n "$NO_CUDA" ]; then record "$1" no-cuda 0 "$NO_CUDA"; else step "$@"; fi
}

# ---- 3. GPU-marked tests: CUDA numerics, fp16/bf16 tolerances, timing/memory paths, NVML ---
gpu_step gpu-tests 120 300 "$PY" -m pytest -m gpu -rs -q -p no:cacheprovider \
  --junitxml "$OUT/gpu-tests.xml" tests

# ---- 3b. HRR forward against the memory-bandwidth floor (fp32, bf16; T 64K..1M) ---------------
floor_args=(--device "$DEVICE" --json "$OUT/hrr_floor.json" --min-time 0.1 --repeats 10)
if [ "$DEVICE" = cpu ]; then
  floor_args+=(--seq-len 1K --dtypes float32 --copy-mib 64 --min-time 0.02 --repeats 3)
fi
gpu_step hrr-floor 75 220 "$PY" benchmarks/hrr/bandwidth_floor.py "${floor_args[@]}"

# ---- 4. the sweep (preset "validate"), bounded by --time-budget -------------------------------
SWEEP="$OUT/results/sweep"
sweep_limit=$((DEADLINE - $(date +%s) - 190)); [ "$sweep_limit" -le 250 ] || sweep_limit=250
sweep_args=(sweep --preset validate --device "$DEVICE" --out "$SWEEP" --cooldown 0
            --min-time 0.2 --max-repeats 20 --timeout 60
            --time-budget "$(( sweep_limit > 60 ? sweep_limit - 40 : 20 ))")
[ -z "$IMPL" ] || sweep_args+=(--impl "$IMPL")
if [ -d "$SWEEP" ] && [ -f "$SWEEP/run.json" ]; then sweep_args+=(--resume "$SWEEP"); fi
gpu_step sweep 250 190 "$PY" run_bench.py "${sweep_args[@]}"

# ---- 4b. CUDA-graph timer (with NVML clock samples in every record) and the profile command ---
if [ "$DEVICE" = cuda ]; then
  gpu_step cudagraph 45 140 "$PY" run_bench.py sweep --impl sdpa_flash,hrr_torch,hrr_jax \
    --seq-len 1K,8K --head-dim 64 --heads 16 --dtype float16 --pass fwd --device cuda \
    --timer cudagraph --reuse-peaks --min-time 0.1 --max-repeats 10 --cooldown 0 \
    --out "$OUT/results/cudagraph" --no-report
else
  record cudagraph skipped 0 "--timer cudagraph needs a CUDA device"
fi
profile_len=4K; [ "$DEVICE" = cuda ] || profile_len=256
gpu_step profile 30 110 "$PY" run_bench.py profile --impl hrr_torch --seq-len "$profile_len" \
  --head-dim 64 --device "$DEVICE" --out "$OUT/profile"

# ---- 5. a short LRA run on generated ListOps data ----------------------------------------------
DATA="$OUT/data/listops" LRA="$OUT/results/lra"
gpu_step lra-data 40 100 "$PY" run_bench.py data listops --out "$DATA" --n-train 400 \
  --n-val 100 --n-test 100 --min-length 100 --max-length 500
gpu_step lra 90 60 "$PY" run_bench.py lra --task listops --impl hrr_torch,sdpa_flash \
  --preset smoke --data-dir "$DATA" --device "$DEVICE" --out "$LRA" --no-progress

# ---- 6. the report of whatever was measured ---------------------------------------------------
runs=()
for run in "$SWEEP" "$LRA"; do
  [ -s "$run/results.jsonl" ] && runs+=("$run")
done
if [ "${#runs[@]}" -gt 0 ]; then
  step report 60 15 "$PY" run_bench.py report "${runs[@]}" --out "$OUT/report"
else
  record report skipped 0 "no results to render"
fi

# ---- summary ------------------------------------------------------------------------------------
log "total $(($(date +%s) - START)) s"
timeout 20 "$PY" "$REPO/scripts/gpu_validate_summary.py" "$OUT" | tee -a "$LOG"
if cut -f2 "$STEPS" | grep -qxE 'failed|timeout'; then exit 1; fi
exit 0
