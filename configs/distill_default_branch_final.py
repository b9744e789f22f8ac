"""The default model's student, round 2: distill_default_branch's 2-step student into 1 step.

  zoom-enhance distill --config configs/distill_default_branch.py --workdir workdirs/default-branch
  zoom-enhance distill --config configs/distill_default_branch_final.py \
      --workdir workdirs/default-branch-final
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """distill_default_branch's settings, one 2 -> 1 round of 1,600 steps from its 2-step student."""
  del arg
  c = config.sibling(__file__, 'distill_default_branch')
  c.distill.teacher_workdir = 'workdirs/default-branch'
  c.distill.teacher_step = 400
  c.distill.start_steps = 2
  c.distill.end_steps = 1
  c.distill.steps_per_round = 1600
  return c
