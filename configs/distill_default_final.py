"""An earlier default student, second part: its 2-step student distilled into 1 step that draws detail.

  zoom-enhance distill --config configs/distill_default.py --workdir workdirs/default-distill \
      --config.distill.end_steps=2
  zoom-enhance distill --config configs/distill_default_final.py --workdir workdirs/default-final

The first command is configs/distill_default.py's first round (the teacher's
4-step DDIM into a 2-step student that sees its noise); this config's one
round distills that 2-step student (`distill.teacher_step` 800, the end of
the first round) into the 1-step student shipped before the detail-branch
student (configs/distill_default_branch_final.py), 1,600 steps, 27 minutes on
a 2-core CPU. The student reads the detail D (model.detail_input) and its
last step learns (1 - D) x 16 x the squared error against the photo + D x
(L1 and LPIPS-VGG against the teacher's 2-step output, 0.25 each, + 16 x
LPIPS-VGG against the photo) (distill.fidelity_blend). On the 8 round
photos, x4 (PSNR-Y / LPIPS at detail 1, then at detail 0):
- this config: 26.567 / 0.320, 26.782 / 0.423;
- without fidelity_blend (every D > 0 learns the image loss, LPIPS against
  the photo times D): 26.362 / 0.301, 26.737 / 0.427; on dev-val the output
  jumps to the detailed end by D = 0.2;
- without the detail input either: 26.525 / 0.319, 26.544 / 0.323, the two
  ends nearly alike;
- the same, LPIPS against the photo 8: 26.642 / 0.347 at detail 1;
- this config with fidelity_weight 64: 26.699 / 0.375, 26.837 / 0.437 (the
  fidelity end gains 0.055 dB, the detailed end loses 0.055 of LPIPS);
- configs/distill_default.py's own second round: 26.652 / 0.419;
- the 2-step student it starts from, at 2 steps: 26.551 / 0.375.
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """distill_default's settings, one 2 -> 1 round from its first round's student."""
  del arg
  c = config.sibling(__file__, 'distill_default')
  c.model.detail_input = True
  c.distill.teacher_workdir = 'workdirs/default-distill'
  c.distill.teacher_step = 800
  c.distill.start_steps = 2
  c.distill.end_steps = 1
  c.distill.steps_per_round = 1600
  c.distill.l1_weight = 0.25
  c.distill.lpips_weight = 0.25
  c.distill.hr_lpips_weight = 16.0
  c.distill.fidelity_weight = 16.0
  c.distill.fidelity_blend = True
  c.train.lr = 5e-4
  c.train.checkpoint_every = 400
  return c
