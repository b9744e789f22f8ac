"""The default model's student, second part: its 2-step student distilled into 1 step that draws detail.

  zoom-enhance distill --config configs/distill_default.py --workdir workdirs/default-distill \
      --config.distill.end_steps=2
  zoom-enhance distill --config configs/distill_default_final.py --workdir workdirs/default-final

The first command is configs/distill_default.py's first round (the teacher's
4-step DDIM into a 2-step student that sees its noise); this config's one
round distills that 2-step student (`distill.teacher_step` 800, the end of
the first round) into the shipped 1-step student, 1,600 steps, 27 minutes on
a 2-core CPU. Its image loss leans on the ground truth: LPIPS-VGG against the
HR photo weighted 16 at detail 1 (and by the detail below it), L1 and LPIPS
against the teacher's 2-step output 0.25 each; the detail-0 examples' squared
error against the photo weighted 16. On the 8 round photos, x4 (LPIPS):
- this config: 0.319 (PSNR-Y 26.525);
- the same with LPIPS against the photo 8: 0.347 (26.642);
- with LPIPS against the photo 4, L1 and LPIPS against the teacher
  0.5 each, fidelity_weight 8: 0.387 (26.692);
- configs/distill_default.py's own second round (2, 1 and 1, 4): 0.419 (26.652);
- the 2-step student it starts from, at 2 steps: 0.375 (26.551).
The more the loss weighs the photo, the lower the LPIPS, at a few hundredths
of a dB; the teacher's output holds the student back. The detail range
narrows with it: at detail 0 this student scores 0.323 (26.544).
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """distill_default's settings, one 2 -> 1 round from its first round's student."""
  del arg
  c = config.sibling(__file__, 'distill_default')
  c.distill.teacher_workdir = 'workdirs/default-distill'
  c.distill.teacher_step = 800
  c.distill.start_steps = 2
  c.distill.end_steps = 1
  c.distill.steps_per_round = 1600
  c.distill.l1_weight = 0.25
  c.distill.lpips_weight = 0.25
  c.distill.hr_lpips_weight = 16.0
  c.distill.fidelity_weight = 16.0
  c.train.lr = 5e-4
  c.train.checkpoint_every = 400
  return c
