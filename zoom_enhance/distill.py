"""Progressive distillation (Salimans & Ho 2022) on the training machinery.

Round r halves the sampler: a student that starts as the teacher learns to
match two teacher DDIM steps (on the teacher's grid of N_t = start / 2^r steps)
with one of its own (N_s = N_t / 2 steps); then the student becomes the
teacher. Rounds run until N_s reaches `distill.end_steps`. Each round is
`distill.steps_per_round` optimizer steps of the same jitted train step, with
the distillation target made inside the loss; the teacher lives in the
TrainState, so checkpoints and resumption work mid-round. After every round
the student is evaluated (evaluate.py) and distill_report.json is rewritten.
"""

import functools
import json
import logging
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

from zoom_enhance import checkpoint
from zoom_enhance import diffusion
from zoom_enhance import errors
from zoom_enhance import sampler
from zoom_enhance import sharding
from zoom_enhance import train

REPORT = 'distill_report.json'


def round_plan(start_steps: int, end_steps: int) -> list[int]:
  """Student step counts of the rounds: start/2, start/4, ..., end_steps."""
  if start_steps < 2 or end_steps < 1 or start_steps & (start_steps - 1) or end_steps & (end_steps - 1):
    raise errors.ConfigError(f'distill.start_steps={start_steps} and distill.end_steps={end_steps} '
                             'must be powers of two')
  if end_steps >= start_steps:
    raise errors.ConfigError('distill.end_steps must be below distill.start_steps')
  return [start_steps >> r for r in range(1, int(math.log2(start_steps // end_steps)) + 1)]


def distill_loss(params, batch, rng, teacher_params, *, model, dcfg):
  """Student loss against the x that reproduces two teacher DDIM steps.

  For each example: i ~ U{1..N_s} (stratified over the batch), t = i / N_s,
  t' = t - 1 / (2 N_s), t'' = t - 1 / N_s; z_t = alpha_t x + sigma_t eps;
  z_t' and z_t'' are two teacher DDIM steps (with the sampler's clipping);
  the target is distill_x_target(z_t, z_t''), scored by diffusion_loss.
  """
  rng_i, rng_eps, rng_loss = jax.random.split(rng, 3)
  lr_up, scale = batch['lr_up'], batch['scale']
  n = batch['student_steps']
  x = diffusion.encode_target(batch['hr'], lr_up, residual=dcfg.residual,
                              residual_scale=dcfg.residual_scale)
  u = diffusion.low_discrepancy_times(rng_i, x.shape[0])
  i = jnp.floor(u * n) + 1.0
  logsnr = functools.partial(diffusion.logsnr_schedule_cosine, logsnr_min=dcfg.logsnr_min,
                             logsnr_max=dcfg.logsnr_max)
  logsnr_t, logsnr_mid, logsnr_s = logsnr(i / n), logsnr((i - 0.5) / n), logsnr((i - 1.0) / n)
  z_t = diffusion.diffuse(x=x, eps=jax.random.normal(rng_eps, x.shape), logsnr=logsnr_t)
  teacher = sampler.make_denoise_fn(model, teacher_params, dcfg, lr_up, scale)
  x1, e1 = teacher(z_t, logsnr_t)
  z_mid = diffusion.ddim_step(x_pred=x1, eps_pred=e1, logsnr_s=logsnr_mid)
  x2, e2 = teacher(z_mid, logsnr_mid)
  z_s = diffusion.ddim_step(x_pred=x2, eps_pred=e2, logsnr_s=logsnr_s)
  target = diffusion.distill_x_target(z_t=z_t, z_s=z_s, logsnr_t=logsnr_t, logsnr_s=logsnr_s)
  student_batch = dict(batch, target=jax.lax.stop_gradient(target), z=z_t, logsnr=logsnr_t)
  return train.diffusion_loss(params, student_batch, rng_loss, model=model, dcfg=dcfg)


def prepare_config(config):
  """Takes the model and diffusion settings from the teacher's checkpoint."""
  dcfg = config.distill
  if not dcfg.teacher_workdir:
    raise errors.ConfigError('set --config.distill.teacher_workdir to the teacher\'s training workdir')
  teacher_config = checkpoint.restore_config(dcfg.teacher_workdir,
                                             None if dcfg.teacher_step < 0 else dcfg.teacher_step)
  with config.unlocked():
    config.model = teacher_config.model
    for key in ('logsnr_min', 'logsnr_max', 'prediction', 'residual', 'residual_scale'):
      config.diffusion[key] = teacher_config.diffusion[key]
  if config.diffusion.prediction == 'eps':
    logging.warning('the teacher predicts eps; distillation works best with v-prediction')
  train.validate_config(config)
  return config


class DistillTask(train.Task):
  """Training task whose loss is distillation and whose state carries the teacher."""

  def __init__(self, config):
    self.plan = round_plan(config.distill.start_steps, config.distill.end_steps)
    self.per_round = config.distill.steps_per_round
    round_train = config.train.copy_and_resolve_references()
    round_train.num_steps = self.per_round  # the schedule restarts every round
    super().__init__(config)
    self.tx, round_lr = train.make_optimizer(round_train)
    self.lr_fn = lambda step: round_lr(step % self.per_round)
    self.loss_fn = functools.partial(distill_loss, model=self.model, dcfg=config.diffusion)
    self._teacher = None
    self._next_round = None
    self.evaluator = None

  @property
  def num_steps(self) -> int:
    return len(self.plan) * self.per_round

  def round_of(self, step: int) -> int:
    """Round of 1-based step `step`."""
    return (step - 1) // self.per_round

  def init(self, rng):
    state = super().init(rng)
    return state.replace(teacher_params=state.params)

  def first_state(self, compiled, rng):
    """Student, its EMA and the teacher all start as the teacher's EMA parameters."""
    del rng
    params = self.teacher_params()
    state = compiled.init_fn(jax.random.PRNGKey(0))
    put = lambda tree, like: jax.device_put(tree, jax.tree.map(lambda a: a.sharding, like))  # noqa: E731
    return state.replace(params=put(params, state.params), ema_params=put(params, state.ema_params),
                         teacher_params=put(params, state.teacher_params))

  def teacher_params(self):
    if self._teacher is None:
      step = None if self.config.distill.teacher_step < 0 else self.config.distill.teacher_step
      self._teacher, _, teacher_step = checkpoint.restore_params(self.config.distill.teacher_workdir,
                                                                 step)
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
      self._next_round = jax.jit(next_round, out_shardings=compiled.state_shardings,
                                 donate_argnums=(0,))
    r = self.round_of(step)
    logging.info('round %d: teacher %d steps -> student %d steps', r + 1, 2 * self.plan[r],
                 self.plan[r])
    return self._next_round(state)

  def extend_batch(self, step, batch):
    n = self.plan[self.round_of(step)]
    return dict(batch, student_steps=np.full((len(batch['scale']),), n, np.float32))

  def must_checkpoint(self, step):
    return step % self.per_round == 0

  def end_step(self, step, state, workdir):
    if step % self.per_round == 0 and self.evaluator is not None:
      self.evaluator.evaluate_round(workdir, self.round_of(step), self.plan[self.round_of(step)],
                                    state.ema_params)

  def sample_steps(self, step):
    return self.plan[self.round_of(max(step, 1))]

  def data_position(self, step):
    return {'step': step, 'round': self.round_of(max(step, 1)),
            'student_steps': self.plan[self.round_of(max(step, 1))]}


class RoundEvaluator:
  """Scores the student after each round; writes distill_report.json.

  Methods, each on the same held-out photos and, for the diffusion ones, the
  same initial noise: (a) the student at its step count, (b) the original
  teacher with plain DDIM at that step count, (c) the original teacher at its
  full step count, (d) bicubic. Besides the ground-truth scores, each row
  scores fidelity to (c)'s outputs ('*_vs_ref'): distillation should bring
  the few-step sampler closer to the many-step one than plain DDIM is.
  """

  def __init__(self, config):
    from zoom_enhance import evaluate
    self.config = config
    dcfg = config.distill
    self.images = evaluate.load_hr_images(dcfg.eval_source, dcfg.eval_max_images)
    self.scales = [float(s) for s in dcfg.eval_scales]
    self.scorer = evaluate.Scorer(lpips=dcfg.eval_lpips)
    self._teacher = None
    self._reference = {}  # scale -> {name: full-step teacher output}
    self._cache = {}

  def _method(self, params, steps):
    return functools.partial(sampler.upscale_image, params, self.config, num_steps=steps,
                             seed=self.config.seed)

  def _score_all(self, method, **kw):
    from zoom_enhance import evaluate
    return {f'x{s:g}': evaluate.score_method(method, self.images, s, self.scorer,
                                             reference=self._reference.get(s), **kw)
            for s in self.scales}

  def _cached(self, key, method):
    if key not in self._cache:
      self._cache[key] = self._score_all(method)
    return self._cache[key]

  def _full_teacher(self, steps):
    """Scores (c) once, keeping its outputs as the reference of the other methods."""
    from zoom_enhance import evaluate
    if 'full' not in self._cache:
      method = self._method(self._teacher, steps)
      rows = {}
      for s in self.scales:
        outputs = {}
        rows[f'x{s:g}'] = evaluate.score_method(method, self.images, s, self.scorer, outputs=outputs)
        self._reference[s] = outputs
      self._cache['full'] = rows
    return self._cache['full']

  def evaluate_round(self, workdir, round_index, steps, student_params):
    if not sharding.is_main_process():
      return
    from zoom_enhance import evaluate
    dcfg = self.config.distill
    if self._teacher is None:
      self._teacher, _, _ = checkpoint.restore_params(
          dcfg.teacher_workdir, None if dcfg.teacher_step < 0 else dcfg.teacher_step)
    full = self._full_teacher(dcfg.start_steps)
    rows = {
        f'student@{steps}': self._score_all(self._method(jax.device_get(student_params), steps)),
        f'teacher_ddim@{steps}': self._cached(('ddim', steps), self._method(self._teacher, steps)),
        f'teacher@{dcfg.start_steps}': full,
        'bicubic': self._cached('bicubic', evaluate.bicubic_method),
    }
    path = os.path.join(workdir, REPORT)
    report = {'rounds': []}
    if os.path.exists(path):
      with open(path) as f:
        report = json.load(f)
    report['rounds'] = [r for r in report['rounds'] if r['round'] != round_index + 1]
    report['rounds'].append({'round': round_index + 1, 'student_steps': steps, 'methods': rows})
    report['rounds'].sort(key=lambda r: r['round'])
    report.update(images=len(self.images), eval_source=dcfg.eval_source, scales=self.scales,
                  teacher_workdir=dcfg.teacher_workdir, reference=f'teacher@{dcfg.start_steps}')
    evaluate.write_json_atomic(path, report)
    logging.info('round %d report (%d images; "vs ref" = against teacher@%d outputs):\n%s',
                 round_index + 1, len(self.images), dcfg.start_steps, evaluate.format_table(rows))


def distill(config, workdir: str) -> int:
  """Runs (or resumes) progressive distillation of config.distill.teacher_workdir into workdir."""
  config = prepare_config(config)
  task = DistillTask(config)
  if config.distill.eval_source:
    task.evaluator = RoundEvaluator(config)
  return train.run(config, workdir, task)
