"""The shipped default model's teacher: the 'mobile' U-Net on bsd400, sized for 2 CPU cores.

This is the config that trained zoom_enhance/assets/default_bundle (see the
README, "Reproducing the default model"):

  zoom-enhance train --config configs/default_model.py --workdir workdirs/default-teacher

(14,000 steps, 79 minutes on a 2-core CPU), then its own 1-step DDIM sampler
is exported (`zoom-enhance export --workdir workdirs/default-teacher --steps 1`):
it scored above the student that configs/distill_default.py distills from its
2-step sampler, on PSNR-Y, SSIM-Y and LPIPS alike.
The photo folder is the developers' copy of BSD400 (400 natural photos); point
`--config.data.source` at any folder of photos, or a TFDS name such as 'div2k'.
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """The schema's defaults with the default model's settings."""
  del arg
  c = config.defaults()
  c.data.source = 'folder:../shared/data/bsd400'
  c.data.eval_source = 'folder:../shared/data/dev-val'
  # 96-px HR crops: 24x24 LR pixels at x4, 12x12 at the U-Net's lowest level.
  c.data.patch_size = 96
  # Scales 1x-4x, half of the examples at exactly 4x (the acceptance scale).
  c.data.min_scale = 1.0
  c.data.max_scale = 4.0
  c.data.max_scale_prob = 0.5
  # A quarter of the examples get blur, noise and JPEG (phone photos, crops of them).
  c.data.realistic_prob = 0.25

  # All work at 1/4 and 1/8 of the output resolution, no normalisation.
  c.model.variant = 'mobile'

  c.diffusion.prediction = 'v'
  c.diffusion.residual = True
  # HR - bicubic(LR) has an RMS of ~0.1 at x4; x4 brings it near unit scale,
  # where the cosine schedule spends its steps.
  c.diffusion.residual_scale = 4.0
  c.diffusion.sample_steps = 4
  # Twice the density at t = 1 as uniform, none at t = 0 ...
  c.diffusion.time_power = 2.0
  # ... and half of the examples at t = 1 exactly: the shipped sampler takes
  # 1 step and its teachers 2 and 4, all from t = 1, where the model is a
  # regression of the HR residual on the LR image.
  c.diffusion.max_time_prob = 0.5

  c.train.num_steps = 14000
  c.train.batch_size = 16
  c.train.lr = 1e-3
  c.train.warmup_steps = 200
  c.train.lr_end_fraction = 0.05
  c.train.ema_decay = 0.999
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.sample_every = 3000
  return c
