#!/usr/bin/env bash
# N simulated devices on this machine's CPU (checks the data-parallel code without accelerators).
#   launch/local_cpu.sh 4 --config configs/demo.py --workdir runs/demo4
# The global batch is sharded over the N devices exactly as over N GPUs.
set -euo pipefail
N=${1:?usage: local_cpu.sh NUM_DEVICES --config ... --workdir ...}
shift
export JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES="$N"
exec python -m lbher_jax.main "$@"
