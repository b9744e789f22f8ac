"""The default model's teacher, first stage: the 'mobile' U-Net on bsd400, sized for 2 CPU cores.

  zoom-enhance train --config configs/default_model.py --workdir workdirs/default-teacher

14,000 steps of batch 16 on 64-px crops, about 80 minutes on a 2-core CPU.
configs/default_model_finetune.py, twice (its docstring has the commands),
fine-tunes it into the shipped teacher, 34 minutes more
(zoom_enhance/assets/weights/default_teacher: what
configs/distill_default_branch.py distills, and what
`--config.train.init_from` fine-tunes). The photo folder is the developers'
copy of BSD400 (400 natural photos); point `--config.data.source` at any
folder of photos, or a TFDS name such as 'div2k'. (The bundle shipped before
the distilled student was an earlier teacher of this config on 96-px crops,
whose own 1-step DDIM it was; at 96 px the same 14,000 steps take 2.5 times as
long here.)
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """The schema's defaults with the default model's settings."""
  del arg
  c = config.defaults()
  c.data.source = 'folder:../shared/data/bsd400'
  c.data.eval_source = 'folder:../shared/data/dev-val'
  # 64-px HR crops: 16x16 LR pixels at x4, 8x8 at the U-Net's lowest level.
  c.data.patch_size = 64
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
