"""Scale-out: one sweep split across GPUs and machines.

- cost.py: the expected cost of a point (what shards are balanced by)
- shard.py: deterministic, cost-balanced shards of a grid (``sweep --shard I/N``)
- merge.py: joining run directories (``run_bench.py merge``) and gathering shards into a run
- local.py: one shard per visible GPU on this machine (``--executor local``)
- slurm.py: a Slurm job array through submitit (``--executor slurm``)
"""
