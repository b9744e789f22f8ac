#!/usr/bin/env bash
# Train on this machine (CPU or one GPU): tiny config by default.
#   bash launch/local.sh [--config.data.source=folder:PHOTOS] [--config.train.num_steps=N ...]
# CONFIG and WORKDIR may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
exec zoom-enhance train --config "${CONFIG:-configs/tiny.py}" \
  --workdir "${WORKDIR:-workdirs/$(basename "${CONFIG:-tiny}" .py)}" "$@"
