#!/usr/bin/env bash
# A real single-node Slurm cluster (slurmctld + slurmd + munge) on this machine, for the
# Slurm executor's integration test. Everything lives under one folder; nothing in /etc changes.
#
#   scripts/slurm_local_cluster.sh start DIR [PORT]  # writes DIR/slurm.conf, starts the
#                                                    # daemons (slurmctld on PORT, default 16817;
#                                                    # slurmd on PORT + 1)
#   scripts/slurm_local_cluster.sh stop DIR    # stops them
#   export SLURM_CONF=DIR/slurm.conf           # then sbatch/squeue/scontrol (and submitit) use it
#
# Needs Debian's slurm-wlm and munge (apt-get install slurm-wlm munge) and root (the daemons run
# as root here). The node advertises 2 "gpu" resources (stand-in device files, no real GPU) so
# that one-GPU-per-task requests are scheduled, and CUDA_VISIBLE_DEVICES set, as on a GPU cluster.
set -euo pipefail

cmd="${1:?usage: slurm_local_cluster.sh start|stop DIR}"
dir="${2:?usage: slurm_local_cluster.sh start|stop DIR}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
node="$(hostname -s)"
port="${3:-16817}"

stop() {
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
    if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
  done
}

start() {
  for tool in munged slurmctld slurmd sbatch; do
    command -v "$tool" >/dev/null || { echo "slurm_local_cluster: $tool not found; apt-get install slurm-wlm munge" >&2; exit 3; }
  done
  stop
  rm -rf "$dir/state" "$dir/spool"   # a fresh cluster: no node or job state from an earlier start
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  chmod 700 "$dir"
  [ -f "$dir/munge.key" ] || dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge.key"
  munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed"
  local cpus mem
  cpus="$(nproc)"
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  cat >"$dir/slurm.conf" <<EOF
ClusterName=attnbench-test
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=$port
SlurmdPort=$((port + 1))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
MinJobAge=3600
GresTypes=gpu
NodeName=$node CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
  # two stand-in "GPU" device files (slurm needs a device node per GPU; nothing opens them)
  printf 'AutoDetect=off\nNodeName=%s Name=gpu File=/dev/null\nNodeName=%s Name=gpu File=/dev/zero\n' \
    "$node" "$node" >"$dir/gres.conf"
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -f "$dir/slurm.conf"
  slurmd -f "$dir/slurm.conf"
  for _ in $(seq 1 30); do
    if sinfo -h -o "%T" 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; then
      echo "slurm up: SLURM_CONF=$dir/slurm.conf"; sinfo; return 0
    fi
    sleep 1
  done
  echo "slurm_local_cluster: the node did not come up; see $dir/log" >&2
  tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
  exit 1
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: slurm_local_cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
