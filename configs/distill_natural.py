"""The natural-detail student: the teacher, fixed, plus a full-resolution detail branch trained adversarially.

  zoom-enhance distill --config configs/distill_natural.py --workdir workdirs/natural

One 2 -> 1 round from the shipped teacher (zoom_enhance/assets/weights/
default_teacher): the student's 1 step learns the teacher's 2-step DDIM where
D is low and drawn detail where it is high, as distill_default_branch's
students do, with three changes aimed at natural texture (issue 29):
- model.detail_head = 'fullres': the branch's features are interpolated to
  full resolution by a fixed tent filter and mixed with the noise and the
  LR image by two 3x3 convolutions there (detail_branch.FullResDetailHead). The
  first shipped branch up-sampled with pixel shuffles, whose per-position
  weights painted a lattice on the 4-px patch grid.
- distill.adversarial_weight: a spectral-normalised patch discriminator
  (training/adversarial.py) beside the student, its hinge loss part of the
  image loss, so scaled by D (the fidelity end stays the teacher's).
- distill.lattice_weight: the excess of the student's energy on the patch
  grid's frequencies over the photo's, penalised (distill_loss.lattice_penalty).
To continue a run that a session cut short, run the same command again
(it resumes from the workdir's last checkpoint).

The shipped student is this config's run (1,000 steps, 43 minutes on a
2-core CPU; docs/natural/). Round report (8 dev-val photos, x4, JAX):
detail 1 26.482 dB PSNR-Y / LPIPS 0.340, detail 0 26.890 / 0.447; eval of
the bundle on dev-val x4 (docs/natural/eval_bicubic.json): detail 1 26.266
/ 0.3414 / DISTS 0.1937, lattice score median 1.49 (the previous student's
440).
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """distill_default_branch's losses, the full-resolution head, a discriminator; one 2 -> 1 round."""
  del arg
  c = config.sibling(__file__, 'distill_default_branch')
  c.model.detail_head = 'fullres'
  c.distill.start_steps = 2
  c.distill.end_steps = 1
  c.distill.steps_per_round = 1000
  # About 2% of the image loss at a typical LPIPS (16 x 0.3), Real-ESRGAN's proportion (0.1 against its
  # perceptual loss of a few units).
  c.distill.adversarial_weight = 0.2
  c.distill.critic_lr = 2e-4
  c.distill.lattice_weight = 1.0
  c.train.checkpoint_every = 250
  c.train.keep_checkpoints = 2
  c.train.log_every = 25
  return c
