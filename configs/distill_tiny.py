"""Progressive distillation of a tiny teacher: 64 -> 4 DDIM steps in 4 rounds, on 2 CPU cores.

  zoom-enhance distill --config configs/distill_tiny.py --workdir W2 \
      --config.distill.teacher_workdir=W --config.data.source=folder:PHOTOS \
      [--config.distill.eval_source=folder:HELD_OUT_PHOTOS]
The model and diffusion settings are taken from the teacher's checkpoint.
Without an eval_source the rounds are scored on the last distill.eval_holdout
photos of the data source, held out of distillation.
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """The schema's defaults (its distill section is this file's) with distillation's optimizer settings."""
  del arg
  c = config.defaults()
  # Salimans & Ho's truncated-SNR weighting max(SNR, 1) for the student's x loss.
  c.diffusion.loss_weighting = 'snr_trunc'
  c.train.lr = 5e-4
  c.train.warmup_steps = 10
  c.train.lr_end_fraction = 0.0
  # Shorter EMA: each round is short and its EMA becomes the next teacher.
  c.train.ema_decay = 0.99
  c.train.checkpoint_every = 100
  c.train.sample_every = 0
  return c
