"""Progressive distillation of the default model's teacher: its 2-step DDIM sampler into 1 step.

  zoom-enhance distill --config configs/distill_default.py --workdir workdirs/default-distill

after configs/default_model.py trained workdirs/default-teacher. The student
is the last round's (1 step); `--config.distill.start_steps=4` (or 8) adds
rounds. It is not what ships: on dev-val at x4 it scored 26.707 dB PSNR-Y and
0.460 LPIPS, the teacher's own 1-step DDIM 26.747 and 0.442, so the bundle is
the teacher's (README, "The default model"). With the mobile model's
gated input, a 1-step sampler is a deterministic function of the LR image (at
t = 1 the noise cannot reach the network), so the 1-step student learns the
teacher's 2-step output averaged over its noise, which lands between that
sampler and the teacher's single step. The model and
diffusion settings are taken from the teacher's checkpoint.
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """The default model's training config with its distillation settings."""
  del arg
  c = config.sibling(__file__, 'default_model')
  c.distill.teacher_workdir = 'workdirs/default-teacher'
  c.distill.start_steps = 2
  c.distill.end_steps = 1
  c.distill.steps_per_round = 600
  c.distill.eval_source = 'folder:../shared/data/dev-val'
  c.distill.eval_scales = (4.0,)

  c.diffusion.loss_weighting = 'snr_trunc'
  c.train.lr = 3e-4
  c.train.warmup_steps = 20
  c.train.lr_end_fraction = 0.0
  c.train.ema_decay = 0.995
  c.train.log_every = 100
  # One checkpoint per round, all kept: each round's student can be exported.
  c.train.checkpoint_every = 600
  c.train.keep_checkpoints = 4
  c.train.sample_every = 0
  return c
