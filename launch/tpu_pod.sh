#!/usr/bin/env bash
# Cloud TPU pod slice: every worker runs the same command; JAX finds its peers itself.
#   TPU=my-v5e-32 ZONE=us-west4-a WORKDIR=/mnt/shared/ze-base bash launch/tpu_pod.sh --config.data.source=div2k
# WORKDIR must be shared by all workers (NFS/Filestore or a gcsfuse mount). Assumes this repository is checked out at ~/zoom-enhance on every worker and installed with
#   pip install -e '.[train]' 'jax[tpu]==0.10.2'
set -euo pipefail
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "${TPU:?}" --zone "${ZONE:?}" --worker=all --command "
  cd ~/zoom-enhance && ZOOM_ENHANCE_DISTRIBUTED=1 zoom-enhance train \
    --config ${CONFIG:-configs/base.py} --workdir ${WORKDIR:?set WORKDIR to a directory every worker sees}$args"
