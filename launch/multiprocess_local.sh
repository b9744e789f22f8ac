#!/usr/bin/env bash
# N processes on this machine on the JAX distributed runtime (gloo CPU collectives), K simulated
# CPU devices each, one global mesh of N*K devices: what a multi-host run does, on one host.
#   bash launch/multiprocess_local.sh [--config.train.num_steps=N ...]
#   NUM_PROCESSES=2 DEVICES_PER_PROCESS=2 CONFIG=configs/tiny.py WORKDIR=workdirs/mp bash launch/multiprocess_local.sh
# Output lines are prefixed with the rank; if one process dies the others are stopped. Run the same
# command again to resume from the last complete checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m zoom_enhance.training.launcher --num_processes "${NUM_PROCESSES:-2}" \
  --devices_per_process "${DEVICES_PER_PROCESS:-2}" -- \
  train --config "${CONFIG:-configs/tiny.py}" --workdir "${WORKDIR:-workdirs/multiprocess}" "$@"
