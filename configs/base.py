"""Base SR3-style upscaler for one GPU/TPU host or a pod slice (global batch 64, 128px crops).

  # one GPU host:
  zoom-enhance train --config configs/base.py --workdir /data/ze-base \
      --config.data.source=div2k
  # smaller machine: --config.train.batch_size=16 --config.data.patch_size=96
See launch/ for SLURM and Cloud TPU pod commands (every host runs the same command).
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """The schema's defaults with GPU/TPU-sized values."""
  del arg
  c = config.defaults()
  # DIV2K's 800 2K training photos (downloaded by tensorflow-datasets on first use).
  c.data.source = 'div2k'
  # Larger crops give the U-Net context at its lowest (1/8) resolution.
  c.data.patch_size = 128
  # More worker threads to keep an accelerator fed.
  c.data.num_workers = 16
  c.data.prefetch = 4
  # Decoded DIV2K photos are ~6 MB each: keep most of them in memory.
  c.data.cache_mb = 8192
  # The SR3-like model with attention at the lowest resolution (~24M parameters).
  c.model.variant = 'base'
  c.diffusion.sample_steps = 32
  # Long training as in SR3 (1M steps there; 200k gets most of the way).
  c.train.num_steps = 200_000
  c.train.batch_size = 64
  c.train.lr = 2e-4
  c.train.warmup_steps = 5_000
  c.train.ema_decay = 0.9999
  # bfloat16 activations: the fast path on TPUs and recent GPUs.
  c.train.compute_dtype = 'bfloat16'
  c.train.log_every = 100
  c.train.checkpoint_every = 5_000
  c.train.keep_checkpoints = 5
  c.train.sample_every = 10_000
  c.train.num_samples = 8
  # Pure data parallelism; raise mesh.fsdp to shard parameters on big slices.
  c.mesh.data, c.mesh.fsdp = -1, 1
  return c
