"""The student's loss in distillation: built once from config.distill, called by the train step.

`DistillLoss(params, batch, rng, teacher_params, critic_params)` scores the
student's one step against two teacher DDIM steps (`teacher_target`):
the weighted x-space squared error (Salimans & Ho), and where the step ends
at t = 0 (its target is an image) an `ImageLoss` of the decoded images,
blended with the squared error against the photo by the detail D (its
`fidelity` mode). The image loss's terms are each a small pure function.
"""

import dataclasses
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from zoom_enhance.model import diffusion
from zoom_enhance.model import sampler
from zoom_enhance.training import adversarial
from zoom_enhance.training import perceptual
from zoom_enhance.training import train

# How the examples whose step ends at t = 0 weigh the photo against the image loss (see DistillLoss).
FIDELITY_MODES = ('teacher', 'data_at_zero', 'blend')


def grid_share(x, period: int):
  """Share of an image's energy on the period-px grid's frequencies, per example (B, H, W, C) -> (B,).

  With X = DFT2 of the channel mean, G = {(a H / p, b W / p)} minus (0, 0):
  share = sum_G |X|^2 / sum_{all but (0, 0)} |X|^2. A pattern repeated every p
  pixels puts all its energy on G; a natural photo's residual about 15 / (H W)
  of it (evaluation.metrics' lattice score is this share over the photo's).
  """
  _, h, w, _ = x.shape
  power = jnp.square(jnp.abs(jnp.fft.fft2(jnp.mean(x, axis=-1))))
  grid = np.zeros((h, w), np.float32)
  grid[:: max(h // period, 1), :: max(w // period, 1)] = 1.0
  grid[0, 0] = 0.0
  total = jnp.sum(power, axis=(1, 2)) - power[:, 0, 0]
  return jnp.sum(power * grid, axis=(1, 2)) / (total + 1e-8)


def lattice_penalty(student_img, hr, lr_up, period: int):
  """Per example: relu(log share(s - lr_up) - log share(HR - lr_up)), grid_share's excess over the photo's."""
  excess = jnp.log(grid_share(student_img - lr_up, period) + 1e-8) - jnp.log(
    grid_share(hr - lr_up, period) + 1e-8
  )
  return jnp.maximum(excess, 0.0)


def training_detail(rng, batch: int):
  """Per-example detail D = clip(1.4 u - 0.2, 0, 1), u ~ U(0, 1): 1/7 at 0, 1/7 at 1, the rest uniform.

  The sampler starts from z_1 = D * eps (Sampler.sample's temperature):
  D = 0 is the deterministic fidelity end, D = 1 a full sample.
  """
  return jnp.clip(1.4 * jax.random.uniform(rng, (batch,)) - 0.2, 0.0, 1.0)


class Target(NamedTuple):
  """What the student is scored against at one (z_t, t) per example."""

  x: jax.Array  # the x whose one student DDIM step from z_t lands where two teacher steps do
  z: jax.Array  # z_t
  logsnr: jax.Array  # logsnr(t)
  final: jax.Array  # True where the step ends at t = 0, so that x is the sampler's output image
  detail: jax.Array  # D of the examples that start at t = 1 (1 elsewhere)


def teacher_target(diff: diffusion.Diffusion, teacher, x, rng, student_steps, train_detail: bool) -> Target:
  """The student's target: two teacher DDIM steps from z_t, read as one student step.

  For each example: i ~ U{1..N_s} (stratified over the batch), t = i / N_s,
  t' = t - 1 / (2 N_s), t'' = t - 1 / N_s; z_t = alpha_t x + sigma_t eps,
  except at t = 1 with train_detail, where z_1 = D eps as the sampler starts
  (D from training_detail); z_t' and z_t'' are two teacher DDIM steps
  (teacher(z, logsnr, D) -> (x_hat, eps_hat), with the sampler's clipping;
  a teacher without model.detail_input ignores D); the target is
  distill_x_target(z_t, z_t'').
  """
  rng_i, rng_eps, rng_detail = jax.random.split(rng, 3)
  n = student_steps
  i = jnp.floor(diffusion.low_discrepancy_times(rng_i, x.shape[0]) * n) + 1.0
  logsnr_t, logsnr_mid, logsnr_s = diff.logsnr(i / n), diff.logsnr((i - 0.5) / n), diff.logsnr((i - 1.0) / n)
  eps = jax.random.normal(rng_eps, x.shape)
  z_t = diffusion.diffuse(x=x, eps=eps, logsnr=logsnr_t)
  detail = jnp.ones_like(i)
  if train_detail:
    detail = jnp.where(i == n, training_detail(rng_detail, x.shape[0]), 1.0)
    z_t = jnp.where((i == n)[:, None, None, None], detail[:, None, None, None] * eps, z_t)
  x1, e1 = teacher(z_t, logsnr_t, detail)
  z_mid = diffusion.ddim_step(x_pred=x1, eps_pred=e1, logsnr_s=logsnr_mid)
  x2, e2 = teacher(z_mid, logsnr_mid, detail)
  z_s = diffusion.ddim_step(x_pred=x2, eps_pred=e2, logsnr_s=logsnr_s)
  target = diffusion.distill_x_target(z_t=z_t, z_s=z_s, logsnr_t=logsnr_t, logsnr_s=logsnr_s)
  return Target(jax.lax.stop_gradient(target), z_t, logsnr_t, i == 1.0, detail)


@dataclasses.dataclass(frozen=True)
class ImageLoss:
  """Per example, of images in [-1, 1]: l1 |s - T|_1 + lpips LPIPS_vgg(s, T) + hr_lpips w LPIPS_vgg(s, HR)
  + the critic's generator loss + lattice x lattice_penalty.

  T is the teacher's output image, HR the photo; w is the detail D, or 1
  where the blend scales the whole image loss by D.
  """

  vgg: Any
  l1: float
  lpips: float
  hr_lpips: float
  critic: adversarial.Critic | None
  lattice: float
  lattice_period: int

  def __call__(self, student, teacher, hr, lr_up, hr_weight, critic_params):
    """(per-example loss, {name: per-example term} of the terms worth logging)."""
    feats = perceptual.vgg_features(self.vgg, student)
    loss = self.l1 * jnp.mean(jnp.abs(student - teacher), axis=(1, 2, 3))
    if self.lpips:
      loss += self.lpips * perceptual.lpips_distance(
        self.vgg, feats, perceptual.vgg_features(self.vgg, teacher)
      )
    if self.hr_lpips:
      loss += (
        self.hr_lpips
        * hr_weight
        * perceptual.lpips_distance(self.vgg, feats, perceptual.vgg_features(self.vgg, hr))
      )
    terms = {}
    if self.critic is not None:
      terms['train/adversarial_loss'] = self.critic.generator_loss(critic_params, student)
      loss += terms['train/adversarial_loss']
    if self.lattice:
      terms['train/lattice_penalty'] = lattice_penalty(student, hr, lr_up, self.lattice_period)
      loss += self.lattice * terms['train/lattice_penalty']
    return loss, terms


@dataclasses.dataclass(frozen=True)
class DistillLoss:
  """The student against the teacher's two-step target; (loss, aux) for train.train_step.

  Everywhere: the config's weighted x-space squared error. Where the step
  ends at t = 0, with an `image` loss: that loss of the decoded, clipped
  images instead. Then by `fidelity`:
    'teacher'       as it is;
    'data_at_zero'  the examples at D = 0 learn the photo instead:
                    fidelity_weight |x_pred - x|^2 (minimised by E[x | LR],
                    the best-PSNR output);
    'blend'         every one learns (1 - D) fidelity_weight |x_pred - x|^2 + D
                    image loss, so D moves the output smoothly from the best
                    PSNR to all the drawn detail.
  aux: the image terms' means over those examples (logged), and with a
  critic the images and weights it learns from.
  """

  model: Any
  diff: diffusion.Diffusion
  train_detail: bool
  fidelity: str
  fidelity_weight: float
  image: ImageLoss | None

  @classmethod
  def from_config(cls, config, model, diff, critic) -> 'DistillLoss':
    d = config.distill
    image = None
    if d.loss == 'perceptual':
      image = ImageLoss(
        perceptual.load_vgg_lpips(),
        d.l1_weight,
        d.lpips_weight,
        d.hr_lpips_weight,
        critic,
        d.lattice_weight,
        model.variant.patch,
      )
    fidelity = 'teacher' if not d.fidelity_from_data else 'blend' if d.fidelity_blend else 'data_at_zero'
    return cls(model, diff, d.train_detail, fidelity, d.fidelity_weight, image)

  def __call__(self, params, batch, rng, teacher_params, critic_params=None):
    rng_target, rng_drop = jax.random.split(rng)
    lr_up, scale, diff = batch['lr_up'], batch['scale'], self.diff
    x_data = diff.encode(batch['hr'], lr_up)
    teacher = lambda z, logsnr, detail: sampler.make_denoise_fn(  # noqa: E731
      self.model, diff, teacher_params, lr_up, scale, detail
    )(z, logsnr)
    target = teacher_target(diff, teacher, x_data, rng_target, batch['student_steps'], self.train_detail)
    x_pred = train.predict_x(
      params, model=self.model, diff=diff, z=target.z, logsnr=target.logsnr, lr_up=lr_up, scale=scale,
      rng_dropout=rng_drop, detail=target.detail,
    )  # fmt: skip
    loss = diffusion.weighted_x_errors(
      x_pred=x_pred, x_target=target.x, logsnr=target.logsnr, weighting=diff.loss_weighting
    )
    image = lambda x: jnp.clip(diff.decode(x, lr_up), -1.0, 1.0)  # noqa: E731
    student_img, aux = image(x_pred), {'metrics': {}}
    if self.image is not None:
      hr_weight = jnp.ones_like(target.detail) if self.fidelity == 'blend' else target.detail
      per_image, terms = self.image(
        student_img, image(target.x), batch['hr'], lr_up, hr_weight, critic_params
      )
      final = target.final.astype(per_image.dtype)
      aux['metrics'] = {k: jnp.sum(v * final) / jnp.maximum(jnp.sum(final), 1.0) for k, v in terms.items()}
      loss = jnp.where(target.final, per_image, loss)
      if self.image.critic is not None:
        aux['fake'], aux['fake_weight'] = student_img, jnp.where(target.final, target.detail, 0.0)
    if self.fidelity != 'teacher':
      data_mse = self.fidelity_weight * jnp.mean(jnp.square(x_pred - x_data), axis=(1, 2, 3))
      if self.fidelity == 'blend':
        loss = jnp.where(target.final, (1.0 - target.detail) * data_mse + target.detail * loss, loss)
      else:
        loss = jnp.where(target.final & (target.detail == 0.0), data_mse, loss)
    return jnp.mean(loss), aux
