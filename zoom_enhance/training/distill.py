"""Progressive distillation (Salimans & Ho 2022) on the training machinery.

Round r halves the sampler: a student that starts as the teacher learns to
match two teacher DDIM steps (on the teacher's grid of N_t = start / 2^r steps)
with one of its own (N_s = N_t / 2 steps); then the student becomes the
teacher. Rounds run until N_s reaches `distill.end_steps`. Each round is
`distill.steps_per_round` optimizer steps of the same jitted train step with
the same loss core as training (train.denoising_loss), given the teacher's
target instead of the data's; the teacher lives in the TrainState, so
checkpoints and resumption work mid-round. After every round the student is
scored (distill_report.py) and distill_report.json is rewritten.
"""

import functools
import logging
from typing import NamedTuple

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from zoom_enhance import errors
from zoom_enhance.data import sources
from zoom_enhance.evaluation import protocol
from zoom_enhance.model import diffusion
from zoom_enhance.model import sampler
from zoom_enhance.training import adversarial
from zoom_enhance.training import checkpoint
from zoom_enhance.training import config as config_lib
from zoom_enhance.training import distill_report
from zoom_enhance.training import distributed
from zoom_enhance.training import perceptual
from zoom_enhance.training import train
from zoom_enhance.training import weights

# Modules a student adds to its teacher (zero-initialised; see unet.UNet).
NEW_STUDENT_MODULES = ('noise_in', 'noise_out', 'detail_in', 'detail_branch')
# The one module a model.detail_branch student trains; the rest is its teacher, fixed.
BRANCH = 'detail_branch'


def branch_only(tx):
  """`tx` for the detail branch's parameters, no update for any other (not even weight decay)."""
  labels = lambda params: flax.traverse_util.path_aware_map(  # noqa: E731
    lambda path, _: 'train' if path[0] == BRANCH else 'fixed', params
  )
  return optax.multi_transform({'train': tx, 'fixed': optax.set_to_zero()}, labels)


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


def image_loss(vgg, student_img, target_img, hr, detail, weights):
  """Per example: w_l1 |s - T|_1 + w_lpips LPIPS_vgg(s, T) + w_hr D LPIPS_vgg(s, HR), images in [-1, 1].

  T is the teacher's output image, HR the ground truth; its term grows with
  the detail D, so the fidelity end (D = 0) stays the teacher's.
  """
  l1_w, lpips_w, hr_w = weights
  feats = perceptual.vgg_features(vgg, student_img)
  loss = l1_w * jnp.mean(jnp.abs(student_img - target_img), axis=(1, 2, 3))
  if lpips_w:
    loss = loss + lpips_w * perceptual.lpips_distance(vgg, feats, perceptual.vgg_features(vgg, target_img))
  if hr_w:
    loss = loss + hr_w * detail * perceptual.lpips_distance(vgg, feats, perceptual.vgg_features(vgg, hr))
  return loss


def grid_share(x, period: int):
  """Share of an image's energy on the period-px grid's frequencies, per example (B, H, W, C) -> (B,).

  With X = DFT2 of the channel mean, G = {(a H / p, b W / p)} \\ {(0, 0)}:
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


def distill_loss(
  params,
  batch,
  rng,
  teacher_params,
  critic_params=None,
  *,
  model,
  diff: diffusion.Diffusion,
  train_detail=False,
  fidelity_from_data=False,
  fidelity_weight=1.0,
  fidelity_blend=False,
  vgg=None,
  weights=(),
  critic=None,
  lattice_weight=0.0,
  lattice_period=4,
):
  """The student against the teacher's two-step target (teacher_target).

  Without `vgg`: the config's weighted x-space squared error everywhere
  (Salimans & Ho). With it: where the step ends at t = 0 the target is an
  image and the loss is image_loss of the decoded, clipped images; elsewhere
  the squared error. With `fidelity_from_data`, the examples at detail 0
  whose step ends at t = 0 learn the data instead: fidelity_weight |x_pred - x|^2,
  whose minimiser is the posterior mean E[x | LR], the best-PSNR output.
  With `fidelity_blend` too, every example whose step ends at t = 0 mixes the
  two by its detail D: (1 - D) fidelity_weight |x_pred - x|^2 + D image_loss,
  so the detail moves the output smoothly from the best PSNR (D = 0) to all
  the drawn detail (D = 1) instead of switching at the first D above 0.
  With a `critic` (adversarial.Critic), the image loss adds its generator
  loss, and with `lattice_weight` the lattice_penalty; both are image-loss
  terms, so the blend scales them by D. Returns (loss, aux) for
  train.train_step: the logged terms, and the images the critic learns from.
  """
  rng_target, rng_drop = jax.random.split(rng)
  lr_up, scale = batch['lr_up'], batch['scale']
  x_data = diff.encode(batch['hr'], lr_up)
  teacher = lambda z, logsnr, detail: sampler.make_denoise_fn(  # noqa: E731
    model, diff, teacher_params, lr_up, scale, detail
  )(z, logsnr)
  target = teacher_target(diff, teacher, x_data, rng_target, batch['student_steps'], train_detail)
  x_pred = train.predict_x(
    params,
    model=model,
    diff=diff,
    z=target.z,
    logsnr=target.logsnr,
    lr_up=lr_up,
    scale=scale,
    rng_dropout=rng_drop,
    detail=target.detail,
  )
  loss = diffusion.weighted_x_errors(
    x_pred=x_pred, x_target=target.x, logsnr=target.logsnr, weighting=diff.loss_weighting
  )
  image = lambda x: jnp.clip(diff.decode(x, lr_up), -1.0, 1.0)  # noqa: E731
  student_img = image(x_pred)
  metrics = {}
  if vgg is not None:
    hr_detail = jnp.ones_like(target.detail) if fidelity_blend else target.detail
    per_image = image_loss(vgg, student_img, image(target.x), batch['hr'], hr_detail, weights)
    if critic is not None:
      adv = critic.generator_loss(critic_params, student_img)
      metrics['train/adversarial_loss'] = _final_mean(adv, target)
      per_image = per_image + adv
    if lattice_weight:
      lattice = lattice_penalty(student_img, batch['hr'], lr_up, lattice_period)
      metrics['train/lattice_penalty'] = _final_mean(lattice, target)
      per_image = per_image + lattice_weight * lattice
    loss = jnp.where(target.final, per_image, loss)
  if fidelity_from_data:
    data_mse = fidelity_weight * jnp.mean(jnp.square(x_pred - x_data), axis=(1, 2, 3))
    if fidelity_blend:
      blended = (1.0 - target.detail) * data_mse + target.detail * loss
      loss = jnp.where(target.final, blended, loss)
    else:
      loss = jnp.where(target.final & (target.detail == 0.0), data_mse, loss)
  aux = {'metrics': metrics}
  if critic is not None:
    aux['fake'] = student_img
    aux['fake_weight'] = jnp.where(target.final, target.detail, 0.0)
  return jnp.mean(loss), aux


def _final_mean(per_example, target: Target):
  """Mean of a per-example term over the examples whose step ends at t = 0 (where it applies)."""
  weight = target.final.astype(per_example.dtype)
  return jnp.sum(per_example * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def student_params(teacher, like):
  """The teacher's parameters in the student's tree `like`: the modules the student adds are zeros.

  The student may add model.direct_noise's zero-initialised input convolutions
  to a gated teacher; with them at zero it computes exactly the teacher's function.
  """
  params, problem = weights.fit_params(teacher, like, zero_fill=NEW_STUDENT_MODULES)
  if problem:
    raise errors.ConfigError(f"the teacher's {problem} (another model variant?)")
  return params


def _teacher_step(config):
  return None if config.distill.teacher_step < 0 else config.distill.teacher_step


def prepare_config(config):
  """Takes the model and diffusion settings from the teacher's checkpoint, then validates the whole config."""
  if not config.distill.teacher_workdir:
    raise errors.ConfigError("set --config.distill.teacher_workdir to the teacher's training workdir")
  teacher_config = checkpoint.restore_config(config.distill.teacher_workdir, _teacher_step(config))
  with config.unlocked():
    added = {
      key: bool(config.model[key] or teacher_config.model[key])
      for key in ('direct_noise', 'detail_input', 'detail_branch')
    }
    head = config.model.detail_head
    config.model = teacher_config.model
    # The student may add the ungated noise input and the detail input the teacher lacks (student_params),
    # and chooses its own detail branch's head.
    config.model.update(added, detail_head=head)
    for key in ('logsnr_min', 'logsnr_max', 'prediction', 'residual', 'residual_scale'):
      config.diffusion[key] = teacher_config.diffusion[key]
  if config.diffusion.prediction == 'eps':
    logging.warning('the teacher predicts eps; distillation works best with v-prediction')
  config_lib.validate(config, distill=True)
  return config


def round_photos(config, source) -> tuple[list, str]:
  """The photos each round is scored on, and where they come from (said in the log and the report).

  distill.eval_source if set; else the last distill.eval_holdout images of
  the training source, which distillation then does not train on; else, for a
  source too small to spare them, scikit-image's sample photos. An
  eval_holdout of 0 without an eval_source turns the reports off.
  """
  d = config.distill
  if d.eval_source:
    return protocol.load_hr_images(d.eval_source, d.eval_max_images), d.eval_source
  if d.eval_holdout == 0:
    return [], 'none: distill.eval_source is empty and distill.eval_holdout is 0, so no round is scored'
  if len(source) > 2 * d.eval_holdout:
    held = source.hold_out(d.eval_holdout)
    return held, f'the last {d.eval_holdout} images of {source.name}, held out of distillation'
  note = ', the training source itself' if config.data.source == 'skimage' else ''
  return sources.skimage_photos(), (
    f"scikit-image's sample photos{note} ({source.name} has too few images to hold {d.eval_holdout} out)"
  )


class DistillTask(train.Task):
  """Training task whose loss is distillation and whose state carries the teacher."""

  def __init__(self, config):
    self.plan = config_lib.round_plan(config.distill.start_steps, config.distill.end_steps)
    self.per_round = config.distill.steps_per_round
    round_train = config.train.copy_and_resolve_references()
    round_train.num_steps = self.per_round  # the schedule restarts every round
    super().__init__(config)
    self.critic = adversarial.Critic.from_config(config.distill)
    self.tx, round_lr = train.make_optimizer(round_train)
    if config.model.detail_branch:
      self.tx = branch_only(self.tx)
    self.lr_fn = lambda step: round_lr(step % self.per_round)
    d = config.distill
    self.loss_fn = functools.partial(
      distill_loss,
      model=self.model,
      diff=self.diffusion,
      train_detail=d.train_detail,
      fidelity_from_data=d.fidelity_from_data,
      fidelity_weight=d.fidelity_weight,
      fidelity_blend=d.fidelity_blend,
      vgg=perceptual.load_vgg_lpips() if d.loss == 'perceptual' else None,
      weights=(d.l1_weight, d.lpips_weight, d.hr_lpips_weight),
      critic=self.critic,
      lattice_weight=d.lattice_weight,
      lattice_period=self.model.variant.patch,
    )
    self._teacher = None
    self._teacher_has_branch = False
    self._next_round = None
    self.evaluator = None

  @property
  def num_steps(self) -> int:
    return len(self.plan) * self.per_round

  def round_of(self, step: int) -> int:
    """Round of 1-based step `step`."""
    return (step - 1) // self.per_round

  def open_sources(self):
    """The training sources, less the photos held out for the round reports (see round_photos)."""
    source, eval_source = super().open_sources()
    photos, where = round_photos(self.config, source)
    logging.info('distillation rounds are scored on %d photos: %s', len(photos), where)
    if photos and distributed.is_main_process():
      self.evaluator = distill_report.RoundEvaluator(
        self.config, self.sampler, photos, where, self.teacher_params
      )
    return source, eval_source

  def init(self, rng):
    state = super().init(rng)
    return state.replace(teacher_params=state.params)

  def first_state(self, compiled, rng):
    """Student, its EMA and the teacher all start as the teacher's EMA parameters.

    A detail branch (model.detail_branch) that the teacher lacks keeps its
    random initialisation: zeros would give it no gradient. Its output maps
    start at zero, so the student still computes exactly the teacher's
    function. A teacher with a branch (an earlier round's student) hands it on.
    """
    del rng
    params = self.teacher_params()
    state = compiled.init_fn(jax.random.PRNGKey(0))
    if BRANCH in params and not self._teacher_has_branch:
      params = dict(params, **{BRANCH: jax.device_get(state.params[BRANCH])})
    put = lambda tree, like: jax.device_put(tree, jax.tree.map(lambda a: a.sharding, like))  # noqa: E731
    return state.replace(
      params=put(params, state.params),
      ema_params=put(params, state.ema_params),
      teacher_params=put(params, state.teacher_params),
    )

  def teacher_params(self):
    """The original teacher's EMA parameters (host arrays) in the student's tree, restored once."""
    if self._teacher is None:
      restored, _, teacher_step = checkpoint.restore_params(
        self.config.distill.teacher_workdir, _teacher_step(self.config)
      )
      like = jax.eval_shape(self.init, jax.random.PRNGKey(0)).params
      self._teacher_has_branch = BRANCH in restored
      self._teacher = student_params(restored, like)
      logging.info('teacher: %s at step %d', self.config.distill.teacher_workdir, teacher_step)
    return self._teacher

  def begin_step(self, step, state, compiled):
    """At a round's first step the student (EMA) becomes the teacher and Adam restarts."""
    if step == 1 or (step - 1) % self.per_round:
      return state
    if self._next_round is None:

      def next_round(state):
        ema = state.ema_params
        return state.replace(params=ema, teacher_params=ema, opt_state=self.tx.init(ema))

      self._next_round = jax.jit(next_round, out_shardings=compiled.state_shardings, donate_argnums=(0,))
    r = self.round_of(step)
    logging.info('round %d: teacher %d steps -> student %d steps', r + 1, 2 * self.plan[r], self.plan[r])
    return self._next_round(state)

  def extend_batch(self, step, batch):
    n = self.plan[self.round_of(step)]
    return dict(batch, student_steps=np.full((len(batch['scale']),), n, np.float32))

  def must_checkpoint(self, step):
    return step % self.per_round == 0

  def end_step(self, step, state, workdir):
    if step % self.per_round == 0 and self.evaluator is not None:
      r = self.round_of(step)
      self.evaluator.evaluate_round(workdir, r, self.plan[r], jax.device_get(state.ema_params))

  def sample_steps(self, step):
    return self.plan[self.round_of(max(step, 1))]

  def data_position(self, step):
    r = self.round_of(max(step, 1))
    return {'step': step, 'task': 'distill', 'round': r, 'student_steps': self.plan[r]}


def distill(config, workdir: str) -> int:
  """Runs (or resumes) progressive distillation of config.distill.teacher_workdir into workdir."""
  config = prepare_config(config)
  return train.run(config, workdir, DistillTask(config))
