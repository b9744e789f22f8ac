"""Training: the train state, the pure train step, and the loop that drives it.

`train_step(state, batch, rng)` is jitted once with the state's shardings and
donated; it takes its loss from a `loss_fn(params, batch, rng, teacher,
critic) -> (loss, aux)`, and updates a discriminator too where the task has
one (adversarial.Critic).
The loss core, `denoising_loss`, scores the network against an x target
given to it explicitly: `data_target` makes it from the batch here,
distillation's `teacher_target` from two teacher DDIM steps, and the rest of
the machinery is shared.
"""

import functools
import logging
import math
import time
from typing import Any
from typing import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from zoom_enhance import errors
from zoom_enhance.data import pipeline
from zoom_enhance.data import sources
from zoom_enhance.evaluation import metrics
from zoom_enhance.imaging import resample
from zoom_enhance.imaging import visualize
from zoom_enhance.model import diffusion
from zoom_enhance.model import sampler
from zoom_enhance.model import unet
from zoom_enhance.training import checkpoint
from zoom_enhance.training import config as config_lib
from zoom_enhance.training import distributed
from zoom_enhance.training import metrics_log
from zoom_enhance.training import sharding
from zoom_enhance.training import weights


class TrainingError(errors.ZoomEnhanceError):
  """Training cannot go on (for example the loss became NaN)."""


class TrainState(train_state.TrainState):
  """Step, parameters, optimizer state, the EMA of the parameters, a teacher and a critic.

  `teacher_params` is None for plain training; distillation keeps the current
  round's teacher here so that it is sharded and checkpointed with the rest,
  and adversarial distillation its discriminator (`critic_params`, with its
  own optimizer state).
  """

  ema_params: Any = None
  teacher_params: Any = None
  critic_params: Any = None
  critic_opt_state: Any = None


def make_optimizer(tcfg):
  """AdamW with linear warmup, cosine decay and global-norm clipping."""
  lr_fn = optax.warmup_cosine_decay_schedule(
    init_value=0.0,
    peak_value=tcfg.lr,
    warmup_steps=tcfg.warmup_steps,
    decay_steps=max(tcfg.num_steps, tcfg.warmup_steps + 1),
    end_value=tcfg.lr * tcfg.lr_end_fraction,
  )
  tx = optax.chain(
    optax.clip_by_global_norm(tcfg.grad_clip), optax.adamw(lr_fn, weight_decay=tcfg.weight_decay)
  )
  return tx, lr_fn


def init_state(rng, *, model, tx, patch_size: int, critic=None) -> TrainState:
  x = jnp.zeros((1, patch_size, patch_size, 3), jnp.float32)
  rng, rng_critic = jax.random.split(rng)
  params = model.init({'params': rng}, x, x, jnp.zeros((1,)), jnp.ones((1,)))['params']
  state = TrainState.create(apply_fn=model.apply, params=params, tx=tx, ema_params=params)
  if critic is not None:
    critic_params, critic_opt_state = critic.init(rng_critic, patch_size)
    state = state.replace(critic_params=critic_params, critic_opt_state=critic_opt_state)
  # A strongly typed step, as a restored checkpoint has: a resumed run then compiles the same program
  # (a compilation-cache hit) instead of a weakly typed variant of it.
  return state.replace(step=jnp.zeros((), jnp.int32))


def initial_params(workdir: str, like):
  """The EMA parameters of a workdir or weights directory, checked against the tree `like`."""
  restored, _, step = checkpoint.restore_params(workdir)
  params, problem = weights.fit_params(restored, like)
  if problem:
    raise TrainingError(
      f'train.init_from={workdir}: its {problem} (is model.variant the one it was trained with?)'
    )
  logging.info('starting from the EMA parameters of %s (step %d)', workdir, step)
  return params


def predict_x(params, *, model, diff: diffusion.Diffusion, z, logsnr, lr_up, scale, rng_dropout, detail=None):
  """The network's x prediction at (z, logsnr) in training mode (dropout on); `detail` as in unet.UNet."""
  out = model.apply(
    {'params': params}, z, lr_up, logsnr, scale, train=True, detail=detail, rngs={'dropout': rng_dropout}
  )
  x_pred, _ = diff.x_eps(out, z=z, logsnr=logsnr)
  return x_pred


def denoising_loss(
  params, *, model, diff: diffusion.Diffusion, x_target, z, logsnr, lr_up, scale, rng_dropout
):
  """The network's x prediction at (z, logsnr), scored against `x_target` with the config's weighting."""
  x_pred = predict_x(
    params, model=model, diff=diff, z=z, logsnr=logsnr, lr_up=lr_up, scale=scale, rng_dropout=rng_dropout
  )
  return diff.loss(x_pred=x_pred, x_target=x_target, logsnr=logsnr)


def data_target(diff: diffusion.Diffusion, batch, rng_t, rng_eps, rng_max):
  """(x, z_t, logsnr_t) of plain training: x = encode(hr, lr_up), z_t = alpha_t x + sigma_t eps."""
  x = diff.encode(batch['hr'], batch['lr_up'])
  logsnr = diff.logsnr(diff.training_times(rng_t, rng_max, x.shape[0]))
  z = diffusion.diffuse(x=x, eps=jax.random.normal(rng_eps, x.shape), logsnr=logsnr)
  return x, z, logsnr


def diffusion_loss(params, batch, rng, teacher_params=None, critic_params=None, *, model, diff):
  """Denoising loss of the upscaler on one batch, against the data's own target; (loss, {})."""
  del teacher_params, critic_params  # fields of the state that distillation's loss uses
  rng_t, rng_eps, rng_drop, rng_max = jax.random.split(rng, 4)
  x, z, logsnr = data_target(diff, batch, rng_t, rng_eps, rng_max)
  loss = denoising_loss(
    params,
    model=model,
    diff=diff,
    x_target=x,
    z=z,
    logsnr=logsnr,
    lr_up=batch['lr_up'],
    scale=batch['scale'],
    rng_dropout=rng_drop,
  )
  return loss, {}


def train_step(state: TrainState, batch, rng, *, loss_fn: Callable, lr_fn, ema_decay: float, critic=None):
  """One optimizer step: gradients of loss_fn, AdamW update, EMA update; then the critic's step.

  loss_fn(params, batch, rng, teacher_params, critic_params) -> (loss, aux):
  aux['metrics'] are logged beside the loss; with a `critic`
  (adversarial.Critic), aux['fake'] are the generated images and
  aux['fake_weight'] their weights in the critic's loss, and the critic then
  takes one step on them against batch['hr'].
  EMA: ema <- d ema + (1 - d) params with d = min(ema_decay, (1 + step) / (10 + step)),
  so early averages are not dominated by the random initialisation.
  """
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.params, batch, rng, state.teacher_params, state.critic_params
  )
  new_state = state.apply_gradients(grads=grads)
  step = state.step.astype(jnp.float32)
  decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, new_state.params)
  new_state = new_state.replace(ema_params=ema)
  metrics = {'train/loss': loss, 'train/grad_norm': optax.tree.norm(grads), 'train/lr': lr_fn(state.step)}
  metrics.update(aux.get('metrics', {}))
  if critic is not None:
    params, opt_state, critic_metrics = critic.update(
      state.critic_params, state.critic_opt_state, batch['hr'], aux['fake'], aux['fake_weight']
    )
    new_state = new_state.replace(critic_params=params, critic_opt_state=opt_state)
    metrics.update(critic_metrics)
  return new_state, metrics


def model_of(config) -> unet.UNet:
  """The network a config trains, computing in train.compute_dtype."""
  return unet.from_config(config, getattr(jnp, config.train.compute_dtype))


class Task:
  """What the loop optimises. Plain diffusion training; distillation subclasses it.

  The loop asks a task for its loss, optimizer, first state and length, and
  calls its hooks around each step; everything else (sharding, data,
  checkpoints, metrics, preemption, NaN checks) is the loop's.
  """

  def __init__(self, config, *, model=None, optimizer=None, loss_fn=None, critic=None):
    """Plain training's parts, or those a subclass gives: `model` (unet.from_config's), `optimizer`
    ((tx, lr_fn), make_optimizer's), `loss_fn` (diffusion_loss) and `critic` (a discriminator trained
    beside the model, adversarial.Critic; None)."""
    self.config = config
    self.model = model or model_of(config)
    self.diffusion = diffusion.Diffusion.from_config(config.diffusion)
    # Sample grids and evaluations run the float32 sampler.
    self.sampler = sampler.Sampler(config)
    self.tx, self.lr_fn = optimizer or make_optimizer(config.train)
    self.loss_fn = loss_fn or functools.partial(diffusion_loss, model=self.model, diff=self.diffusion)
    self.critic = critic

  @property
  def num_steps(self) -> int:
    return self.config.train.num_steps

  def init(self, rng) -> TrainState:
    """A fresh state (traced under jit with the state's shardings)."""
    return init_state(
      rng, model=self.model, tx=self.tx, patch_size=self.config.data.patch_size, critic=self.critic
    )

  def first_state(self, compiled, rng) -> TrainState:
    """The state of a new run: a random initialisation, or train.init_from's EMA parameters."""
    if not self.config.train.init_from:
      return compiled.init_fn(rng)
    params = initial_params(self.config.train.init_from, compiled.abstract_state.params)
    # Two copies: the train step donates the state's buffers, so no two leaves may share one.
    return compiled.init_fn(rng).replace(
      params=jax.device_put(params, compiled.state_shardings.params),
      ema_params=jax.device_put(params, compiled.state_shardings.ema_params),
    )

  def begin_step(self, step: int, state, compiled):
    """Called before step `step` runs (1-based); may replace the state."""
    del step, compiled
    return state

  def extend_batch(self, step: int, batch: dict) -> dict:
    """Adds task inputs to this process's share of the batch."""
    del step
    return batch

  def must_checkpoint(self, step: int) -> bool:
    del step
    return False

  def end_step(self, step: int, state, workdir: str):
    """Called after step `step` and its checkpoint (distillation evaluates here)."""
    del step, state, workdir

  def sample_steps(self, step: int) -> int:
    del step
    return self.config.diffusion.sample_steps

  def data_position(self, step: int) -> dict:
    """What the checkpoint of `step` records beside the state: read back by resumption and export."""
    return {'step': step, 'task': 'train'}

  def open_sources(self):
    """(training source, source of the sample grids)."""
    data = self.config.data
    source = sources.make_source(data.source, data)
    eval_source = sources.make_source(data.eval_source, data) if data.eval_source else source
    return source, eval_source


class Compiled(NamedTuple):
  """Everything the loop needs that depends only on the config and the mesh."""

  mesh: Any
  state_shardings: Any
  abstract_state: Any
  init_fn: Callable
  step_fn: Callable


def compile_training(config, task: Task) -> Compiled:
  """Mesh, shardings and the jitted init and train-step functions of a task."""
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch_size(config.train.batch_size, mesh)
  abstract = jax.eval_shape(task.init, jax.random.PRNGKey(0))
  shardings = sharding.tree_shardings(mesh, abstract)
  init_fn = jax.jit(task.init, out_shardings=shardings)
  step_fn = jax.jit(
    functools.partial(
      train_step,
      loss_fn=task.loss_fn,
      lr_fn=task.lr_fn,
      ema_decay=config.train.ema_decay,
      critic=task.critic,
    ),
    in_shardings=(shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
    out_shardings=(shardings, sharding.replicated(mesh)),
    donate_argnums=(0,),
  )
  return Compiled(mesh, shardings, abstract, init_fn, step_fn)


class Preempted(errors.Stopped):
  """Raised after a preemption checkpoint has been written."""

  def __init__(self, step):
    super().__init__(
      f'preempted (SIGTERM): saved a checkpoint at step {step}; run the same command again to resume'
    )
    self.step = step


def _check_finite(metrics, step, last_saved):
  loss = float(metrics['train/loss'])
  if not (math.isfinite(loss) and math.isfinite(float(metrics['train/grad_norm']))):
    kept = (
      f'the last good checkpoint (step {last_saved}) is kept'
      if last_saved is not None
      else 'no checkpoint was written'
    )
    raise TrainingError(f'train/loss became {loss} at step {step}; stopping, {kept}')
  return loss


def _compile_step(compiled: Compiled, state, batch, rng):
  """The train step compiled ahead of time; then waits until every process has compiled it."""
  t0 = time.perf_counter()
  step_fn = compiled.step_fn.lower(state, batch, rng).compile()
  logging.info('train step compiled in %.1f s', time.perf_counter() - t0)
  distributed.barrier('train_step_compiled')
  return step_fn


def train_and_evaluate(config, workdir: str) -> int:
  """Trains (or resumes training) the diffusion upscaler in `workdir`; returns the final step."""
  config_lib.validate(config)
  return run(config, workdir, Task(config))


def run(config, workdir: str, task: Task) -> int:
  """The training loop of any task: resume, step, log, checkpoint, sample, stop cleanly."""
  compiled = compile_training(config, task)
  main = distributed.is_main_process()
  ckpt = checkpoint.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  rng = jax.random.PRNGKey(config.seed)
  init_rng, train_rng, sample_rng = jax.random.split(rng, 3)
  total = task.num_steps
  distributed.barrier('run')

  target = jax.tree.map(
    lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
    compiled.abstract_state,
    compiled.state_shardings,
  )
  restored = ckpt.restore_latest(target)
  if restored is None:
    state, start = task.first_state(compiled, init_rng), 0
    logging.info(
      'model %s: %s parameters',
      config.model.variant,
      f'{sum(x.size for x in jax.tree.leaves(state.params)):,}',
    )
  else:
    start, state, position = restored
    if position.get('global_batch_size') != config.train.batch_size:
      logging.warning(
        'resuming with batch size %d (checkpoint used %s)',
        config.train.batch_size,
        position.get('global_batch_size'),
      )
    logging.info('resuming from step %d in %s', start, workdir)
  if start >= total:
    logging.info('already at step %d of %d: nothing to do', start, total)
    ckpt.close()
    return start

  source, eval_source = task.open_sources()
  eval_batch = pipeline.make_eval_batch(eval_source, config.data, config.train.num_samples, config.seed)
  sample_noise = jax.random.normal(sample_rng, eval_batch['lr_up'].shape, jnp.float32)
  writer = metrics_log.MetricsWriter(workdir, enabled=main)
  progress = metrics_log.Progress(start=start, total=total, batch_size=config.train.batch_size, enabled=main)
  iterator = pipeline.TrainIterator(
    source,
    config.data,
    global_batch_size=config.train.batch_size,
    seed=config.seed,
    start_step=start,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  preemption = distributed.Preemption()
  last_saved = start if start > 0 else None

  def save(step):
    nonlocal last_saved
    position = {
      'seed': config.seed,
      'global_batch_size': config.train.batch_size,
      'source': config.data.source,
      **task.data_position(step),
    }
    ckpt.save(step, state, config, position)
    last_saved = step

  def write_samples(step):
    n = task.sample_steps(step)
    out = np.asarray(
      task.sampler.jitted(n)(
        state.ema_params, jnp.asarray(eval_batch['lr_up']), sample_noise, jnp.asarray(eval_batch['scale'])
      )
    )
    row = {
      'sample/psnr': metrics.mean_psnr(out, eval_batch['hr'], data_range=2.0),
      'sample/psnr_bicubic': metrics.mean_psnr(eval_batch['lr_up'], eval_batch['hr'], data_range=2.0),
      'sample/steps': n,
    }
    if main:
      visualize.write_sample_grid(
        workdir,
        step,
        resample.from_signed(eval_batch['lr_up']),
        resample.from_signed(out),
        resample.from_signed(eval_batch['hr']),
      )
      writer.write(step, row)
    logging.info(
      'step %d: sample PSNR %.2f dB with %d steps (bicubic %.2f dB)',
      step,
      row['sample/psnr'],
      n,
      row['sample/psnr_bicubic'],
    )

  tcfg = config.train
  step = start
  step_fn = None
  try:
    for step in range(start + 1, total + 1):
      state = task.begin_step(step, state, compiled)
      local = task.extend_batch(step, next(iterator))
      batch = sharding.global_batch(local, compiled.mesh)
      step_rng = jax.random.fold_in(train_rng, step)
      step_fn = step_fn or _compile_step(compiled, state, batch, step_rng)
      state, logged = step_fn(state, batch, step_rng)
      # Checked every step, so a divergence is reported at the step it happened.
      logged = jax.device_get(logged)
      loss = _check_finite(logged, step, last_saved)
      last = step == total
      if step % tcfg.log_every == 0 or last or step == start + 1:
        logged.update(progress.update(step, loss))
        logged['data/skipped'] = source.num_skipped
        writer.write(step, logged)
      if step % tcfg.checkpoint_every == 0 or last or task.must_checkpoint(step):
        save(step)
      if (tcfg.sample_every and step % tcfg.sample_every == 0) or last:
        write_samples(step)
      task.end_step(step, state, workdir)
      if not last and preemption.reached(step):
        if last_saved != step:  # the notice may come at a step that was just checkpointed
          save(step)
        ckpt.wait()
        raise Preempted(step)
  finally:
    preemption.restore()
    iterator.close()
    progress.close()
    writer.close()
    ckpt.close()
  if main:
    metrics_log.plot_loss(workdir)
  return step
