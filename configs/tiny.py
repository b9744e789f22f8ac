"""Tiny SR3-style upscaler: a run of a few minutes on 2 CPU cores; also the test config.

  zoom-enhance train --config configs/tiny.py --workdir /tmp/ze-tiny \
      --config.data.source=folder:/path/to/photos --config.train.num_steps=300
"""

import ml_collections


def get_config(arg=None):
  """Returns the tiny config. `arg` is unused (kept for `file.py:arg` syntax)."""
  del arg
  c = ml_collections.ConfigDict()
  # Master seed: parameters, data order and degradations, diffusion noise.
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  # Photos to learn from: 'folder:PATH', 'skimage' (scikit-image's sample
  # photos, handy offline), or a tensorflow-datasets name such as 'div2k'.
  c.data.source = 'skimage'
  # TFDS split to read (ignored by folders).
  c.data.split = 'train'
  # TFDS feature that holds the high-resolution image; '' picks 'hr' or 'image'.
  c.data.image_key = ''
  # Side of the square HR training crop, in pixels.
  c.data.patch_size = 64
  # Upscale factors are drawn uniformly from [min_scale, max_scale].
  c.data.min_scale = 1.0
  c.data.max_scale = 4.0
  # Fraction of examples at exactly max_scale instead (0: uniform only).
  c.data.max_scale_prob = 0.0
  # Fraction of examples that get realistic degradations (blur, noise, JPEG).
  c.data.realistic_prob = 0.3
  # Largest Gaussian blur sigma (in HR pixels) applied before downscaling.
  c.data.blur_sigma_max = 1.5
  # Largest Gaussian noise sigma, in 8-bit levels, added to the LR image.
  c.data.noise_sigma_max = 8.0
  # JPEG quality range for the compressed LR image.
  c.data.jpeg_quality_min = 40
  c.data.jpeg_quality_max = 95
  # Decoded images kept in memory, in megabytes (0 disables the cache).
  c.data.cache_mb = 512
  # Threads that decode and degrade examples.
  c.data.num_workers = 2
  # Batches prepared ahead of the training step.
  c.data.prefetch = 2
  # Held-out photos for sample grids: same syntax as `source`; '' reuses it.
  c.data.eval_source = ''

  c.model = ml_collections.ConfigDict()
  # One of zoom_enhance.unet.VARIANTS ('tiny', 'small', 'base').
  c.model.variant = 'tiny'

  c.diffusion = ml_collections.ConfigDict()
  # logSNR range of the continuous cosine schedule (t=1 is logsnr_min).
  c.diffusion.logsnr_min = -20.0
  c.diffusion.logsnr_max = 20.0
  # What the network predicts: 'v' (needed for distillation), 'eps' or 'x'.
  c.diffusion.prediction = 'v'
  # Loss weighting in x-space: 'snr_plus_one' (= v-MSE) or 'snr_trunc' (max(SNR, 1)).
  c.diffusion.loss_weighting = 'snr_plus_one'
  # Training times t = u^(1/time_power), u uniform: > 1 favours high noise levels.
  c.diffusion.time_power = 1.0
  # Fraction of examples at t = 1 exactly (the first sampler step: regression).
  c.diffusion.max_time_prob = 0.0
  # Diffuse the residual HR - upsample(LR) instead of the HR image itself.
  c.diffusion.residual = True
  # The residual is multiplied by this before diffusion (it is small otherwise).
  c.diffusion.residual_scale = 2.0
  # DDIM steps used for the sample grids written during training.
  c.diffusion.sample_steps = 8

  c.train = ml_collections.ConfigDict()
  # Optimizer steps to run in total (resuming counts the steps already done).
  c.train.num_steps = 300
  # Global batch size, split over all devices of all processes.
  c.train.batch_size = 8
  # Peak learning rate of AdamW, reached after `warmup_steps`, then cosine decay.
  c.train.lr = 2e-3
  c.train.warmup_steps = 20
  # Final learning rate as a fraction of the peak.
  c.train.lr_end_fraction = 0.05
  c.train.weight_decay = 1e-4
  # Global gradient norm clip.
  c.train.grad_clip = 1.0
  # EMA decay of the parameters used for sampling and export.
  c.train.ema_decay = 0.995
  # 'float32' or 'bfloat16' activations (parameters stay float32).
  c.train.compute_dtype = 'float32'
  # Steps between metrics.jsonl lines and progress updates.
  c.train.log_every = 10
  # Steps between checkpoints (a checkpoint is also written at the end).
  c.train.checkpoint_every = 100
  # Checkpoints to keep.
  c.train.keep_checkpoints = 3
  # Steps between sample grids (0: only at the end).
  c.train.sample_every = 100
  # Images in each sample grid.
  c.train.num_samples = 4

  c.mesh = ml_collections.ConfigDict()
  # Device mesh: 'data' splits the batch, 'fsdp' splits parameters and the
  # batch too (ZeRO-3 style). -1 takes all devices left over.
  c.mesh.data = -1
  c.mesh.fsdp = 1
  return c
