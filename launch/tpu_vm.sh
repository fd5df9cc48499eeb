#!/usr/bin/env bash
# All workers of a Cloud TPU VM slice run the same command; JAX finds its peers by itself.
#   launch/tpu_vm.sh TPU_NAME ZONE --config configs/iemocap.py --workdir /mnt/shared/runs/iemocap
# (the repository, its virtualenv and a shared workdir must be on every worker, at the same path).
set -euo pipefail
TPU=${1:?usage: tpu_vm.sh TPU_NAME ZONE ARGS...}
ZONE=${2:?usage: tpu_vm.sh TPU_NAME ZONE ARGS...}
shift 2
printf -v ARGS '%q ' "$@"
gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command \
  "cd $(printf %q "$PWD") && . .venv/bin/activate && LBHER_DISTRIBUTED=1 python -m lbher_jax.main $ARGS"
