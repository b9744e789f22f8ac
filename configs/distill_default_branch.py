"""The default model's student, round 1: the teacher, fixed, plus a detail branch, 4 -> 2 steps.

  zoom-enhance distill --config configs/distill_default_branch.py --workdir workdirs/default-branch
  zoom-enhance distill --config configs/distill_default_branch_final.py \
      --workdir workdirs/default-branch-final

The first command is this config: the teacher's 4-step DDIM distilled into a
2-step student, 400 steps of batch 16, 10 minutes on a 2-core CPU. The second
(configs/distill_default_branch_final.py) distills that 2-step student into
the shipped 1-step student. The teacher is the shipped weights directory
(zoom_enhance/assets/weights/default_teacher, made by
configs/default_model.py and two runs of configs/default_model_finetune.py);
pass `--config.distill.teacher_workdir=W` for another. The model and
diffusion settings are taken from the teacher.
- model.detail_branch: the student's trunk is the teacher, unchanged (it gets
  no gradient); only a small branch beside it trains (detail_branch.DetailBranch: two
  residual blocks at 1/4 of the resolution that read the trunk's last
  features, the noise and the detail D, and full-resolution noise whose
  amplitude they set). The student's output is the trunk's + D x the
  branch's, so at D = 0 it is exactly the teacher's 1-step output (the same
  for every seed) and at D = 1 drawn detail; the default detail costs one
  branch, not a second network. A branch trained here is kept by the next
  round (distill.first_state).
- distill.loss = 'perceptual', distill.fidelity_blend: where a student step
  ends at t = 0, per example (1 - D) x 16 x the squared error against the
  photo + D x (L1 and LPIPS-VGG16 against the teacher's output, 0.25 each,
  + 16 x LPIPS-VGG16 against the photo). The evaluation's LPIPS uses
  AlexNet, so the reported score is not the trained one.
- distill.train_detail: the examples at t = 1 start from D * eps, D in
  [0, 1], as the runtime's `--detail D` feeds the noise.
Round report (8 dev-val photos, x4, JAX; docs/default_model/
distill_report_branch_4to2.json): the 2-step student 26.623 dB PSNR-Y /
LPIPS 0.378 against the teacher's own 2-step DDIM 26.664 / 0.394.

An earlier version of this experiment added the branch without the factor D
and ran 4 -> 2 -> 1 in one command from the 14,000-step teacher: dev-val x4
detail 0 26.689 / 0.438, detail 1 26.422 / 0.357
(docs/default_model/eval_branch_4to1.json, distill_report_branch_4to1.json).
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """distill_default's settings with the detail branch instead of its noise input: round 1, 4 -> 2 steps."""
  del arg
  c = config.sibling(__file__, 'distill_default')
  c.model.direct_noise = False
  c.model.detail_branch = True
  c.distill.end_steps = 2
  c.distill.steps_per_round = 400
  c.distill.l1_weight = 0.25
  c.distill.lpips_weight = 0.25
  c.distill.hr_lpips_weight = 16.0
  c.distill.fidelity_weight = 16.0
  c.distill.fidelity_blend = True
  # The branch starts from random weights (its output maps from zero).
  c.train.lr = 1e-3
  c.train.warmup_steps = 50
  c.train.checkpoint_every = 400
  return c
