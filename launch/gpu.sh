#!/usr/bin/env bash
# One GPU host (one or several GPUs, all in one mesh). Needs the CUDA build of jaxlib:
#   pip install -e '.[train]' 'jax[cuda12]==0.10.2'
#   WORKDIR=/data/ze-base bash launch/gpu.sh --config.data.source=div2k
set -euo pipefail
cd "$(dirname "$0")/.."
# Let XLA take most of the GPU memory up front and overlap communication with compute.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
exec zoom-enhance train --config "${CONFIG:-configs/base.py}" \
  --workdir "${WORKDIR:-workdirs/base}" "$@"
