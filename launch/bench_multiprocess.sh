#!/usr/bin/env bash
# Training throughput (samples/s) of one global train step on 1 and on 2 local processes (the JAX
# distributed runtime, gloo CPU collectives), DEVICES_PER_PROCESS simulated CPU devices each.
#   bash launch/bench_multiprocess.sh [--variants tiny --batch-size 16 --patch-size 32 --steps 20]
# Each run prints "processes: N, devices: ..." and then "<variant> <dtype> ... samples/s".
set -euo pipefail
cd "$(dirname "$0")/.."
for n in ${PROCESSES:-1 2}; do
  python -m zoom_enhance.training.launcher --num_processes "$n" \
    --devices_per_process "${DEVICES_PER_PROCESS:-1}" -- \
    bench-train --variants tiny --dtypes float32 --batch-size 16 --patch-size 32 --steps 20 "$@"
done
