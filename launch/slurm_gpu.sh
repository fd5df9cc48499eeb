#!/usr/bin/env bash
# Multi-node GPUs through SLURM: one process per node, all of its GPUs local to that process.
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm_gpu.sh --config configs/iemocap.py \
#       --workdir /shared/runs/iemocap
# jax.distributed.initialize() (called by main before any other JAX call) reads the coordinator,
# process count and process id from SLURM's environment. The workdir must be on a file system
# every node sees (checkpoints are written collectively; shards are read by every process, each
# loading only its share of every global batch).
#SBATCH --ntasks-per-node=1
#SBATCH --job-name=lbher
set -euo pipefail
srun python -m lbher_jax.main "$@"
