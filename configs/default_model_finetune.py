"""An experiment, not shipped: the default teacher fine-tuned 3,000 steps on 96-px crops, at t = 1 mostly.

  zoom-enhance train --config configs/default_model_finetune.py --workdir workdirs/default-teacher-ft

Starts from the shipped teacher's EMA parameters (train.init_from) and trains
on crops of 96 px instead of 64 (more of each crop is far from its border,
as in the 192-px tiles the runtime runs), nine examples in ten at t = 1,
where the teacher's 1-step output is a regression on the LR image: that
output is the fidelity end of a model.detail_branch student (which keeps
the teacher as its trunk). 3,000 steps
of batch 16, 18 minutes on a 2-core CPU. The other examples keep the noise
levels of the first stage, so it stays a diffusion teacher for
configs/distill_default_branch.py. Measured on dev-val (x4, int8, 1 step):
26.708 dB against the shipped teacher's 26.685 (+0.023; the same 3,000 steps
on 64-px crops: 26.699), still below the bundle before the distilled
students (26.745, an earlier teacher trained on 96-px crops throughout,
whose parameters did not survive) and the 26.736 the fidelity end needs.
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """default_model's settings from its first stage: larger crops, t = 1 mostly, a smaller learning rate."""
  del arg
  c = config.sibling(__file__, 'default_model')
  c.train.init_from = 'zoom_enhance/assets/weights/default_teacher'
  c.data.patch_size = 96
  c.diffusion.max_time_prob = 0.9
  c.train.num_steps = 3000
  c.train.lr = 3e-4
  c.train.warmup_steps = 50
  c.train.ema_decay = 0.998
  c.train.checkpoint_every = 1000
  c.train.sample_every = 0
  return c
