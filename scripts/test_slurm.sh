#!/usr/bin/env bash
# The Slurm executor's integration test against a real single-node Slurm cluster on this machine
# (tests/test_slurm_integration.py): installs Debian's slurm-wlm and munge if missing (root),
# then runs the test, which starts and stops its own slurmctld, slurmd and munged.
#   PYTHON=.venv/bin/python bash scripts/test_slurm.sh
# Exit status: the test's; 3 when Slurm could not be installed (nothing was tested).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "test_slurm: slurm-wlm and munge are not installed and this is not root" >&2; exit 3
  fi
  echo "test_slurm: installing slurm-wlm and munge (Debian packages)"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           slurm-wlm munge >/dev/null; }; then
    echo "test_slurm: could not install slurm-wlm and munge; the Slurm test did not run" >&2
    exit 3
  fi
fi
ATTNBENCH_SLURM_TEST=1 "$PY" -m pytest -m slurm -q -s -p no:cacheprovider \
  tests/test_slurm_integration.py
