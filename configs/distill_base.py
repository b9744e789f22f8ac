"""Progressive distillation of the base teacher: 256 -> 4 DDIM steps (6 rounds) on GPU/TPU.

  zoom-enhance distill --config configs/distill_base.py --workdir W2 \
      --config.distill.teacher_workdir=W --config.distill.eval_source=folder:HELD_OUT_PHOTOS
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """The base training config with a GPU-sized distillation."""
  del arg
  c = config.sibling(__file__, 'base')
  # The base teacher samples with 256 steps; rounds halve it down to 4.
  c.distill.start_steps = 256
  c.distill.end_steps = 4
  # Salimans & Ho used 50k steps per round at batch 128; 20k at batch 64 here.
  c.distill.steps_per_round = 20_000
  c.diffusion.loss_weighting = 'snr_trunc'
  c.train.lr = 1e-4
  c.train.warmup_steps = 500
  c.train.lr_end_fraction = 0.0
  c.train.ema_decay = 0.999
  c.train.checkpoint_every = 2_000
  c.train.sample_every = 0
  return c
