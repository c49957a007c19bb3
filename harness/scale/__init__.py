"""Scale-out: one sweep split across GPUs and machines.

- cost.py: the expected cost of a point (what shards are balanced by)
- shard.py: deterministic, cost-balanced shards of a grid (``sweep --shard I/N``)
- gather.py: joining run directories (``run_bench.py merge``) and gathering shards into a run
- executors.py: the executor protocol and the table of executors by name (``--executor``)
- inprocess.py: every point in this process (one GPU, or the CPU; each shard process)
- local.py: one shard per visible GPU on this machine (``--executor local``)
- sharded.py: a run made of shard directories, gathered into one
- slurm.py: a Slurm job array through submitit (``--executor slurm``)
"""
