"""Progressive distillation (Salimans & Ho 2022) on the training machinery.

Round r halves the sampler: a student that starts as the teacher learns to
match two teacher DDIM steps (on the teacher's grid of N_t = start / 2^r steps)
with one of its own (N_s = N_t / 2 steps); then the student becomes the
teacher. Rounds run until N_s reaches `distill.end_steps`. Each round is
`distill.steps_per_round` optimizer steps of the same jitted train step as
training, with the student's loss (distill_loss.DistillLoss: the same
x-space error, against the teacher's target instead of the data's, and the
image losses where a step ends at t = 0); the teacher lives in the
TrainState, and a discriminator where there is one, so checkpoints and
resumption work mid-round. After every round the student is
scored (distill_report.py) and distill_report.json is rewritten.
"""

import logging

import flax.traverse_util
import jax
import numpy as np
import optax

from zoom_enhance import errors
from zoom_enhance.data import sources
from zoom_enhance.evaluation import protocol
from zoom_enhance.model import diffusion
from zoom_enhance.training import adversarial
from zoom_enhance.training import checkpoint
from zoom_enhance.training import config as config_lib
from zoom_enhance.training import distill_loss
from zoom_enhance.training import distill_report
from zoom_enhance.training import distributed
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
    model = train.model_of(config)
    critic = adversarial.Critic.from_config(config.distill)
    loss = distill_loss.DistillLoss.from_config(
      config, model, diffusion.Diffusion.from_config(config.diffusion), critic
    )
    super().__init__(config, model=model, optimizer=self._optimizer(config), loss_fn=loss, critic=critic)
    self._teacher = None
    self._teacher_has_branch = False
    self._next_round = None
    self.evaluator = None

  def _optimizer(self, config):
    """(tx, lr_fn): the training optimizer with its schedule restarting every round; with
    model.detail_branch it updates the branch alone."""
    round_train = config.train.copy_and_resolve_references()
    round_train.num_steps = self.per_round
    tx, round_lr = train.make_optimizer(round_train)
    if config.model.detail_branch:
      tx = branch_only(tx)
    return tx, lambda step: round_lr(step % self.per_round)

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
