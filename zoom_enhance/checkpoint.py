"""The one wrapper around Orbax: train state, config and data position per step.

A checkpoint lives in WORKDIR/checkpoints/<step>/ with three items: `state`
(the sharded TrainState), `config` (the run's ConfigDict as JSON) and `data`
(the input pipeline's position). Orbax writes each step into a temporary
directory and renames it when complete, so a crash never leaves a half-written
checkpoint as the latest. `restore_params` serves sampling, distillation,
export and evaluation alike.
"""

import json
import logging
import os

import jax
import ml_collections
import orbax.checkpoint as ocp

from zoom_enhance import errors


class CheckpointError(errors.ZoomEnhanceError):
  """A workdir without usable checkpoints."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def _reader(workdir: str) -> ocp.CheckpointManager:
  """A read-only manager that knows how each item was written."""
  handlers = {'state': ocp.StandardCheckpointHandler(), 'config': ocp.JsonCheckpointHandler(),
              'data': ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(checkpoint_dir(workdir), item_handlers=handlers,
                               options=ocp.CheckpointManagerOptions(read_only=True))


class Checkpointer:
  """Saves and restores (state, config, data position) under a workdir."""

  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step: int, state, config, data_position: dict):
    """Starts saving `step` (async); the previous save is finished first."""
    self._manager.save(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
            data=ocp.args.JsonSave(data_position)),
        force=True)

  def restore(self, step: int, abstract_state):
    """Restores `step` into arrays laid out like `abstract_state` (shardings included)."""
    restored = self._manager.restore(
        int(step),
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore()))
    return restored.state, dict(restored.data)

  def wait(self):
    self._manager.wait_until_finished()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def restore_config(workdir: str, step=None) -> ml_collections.ConfigDict:
  """The config saved with a checkpoint (the latest by default)."""
  step = _resolve_step(workdir, step)
  path = os.path.join(checkpoint_dir(workdir), str(step), 'config')
  with _reader(workdir) as manager:
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  if restored.config is None:
    raise CheckpointError(f'{path}: no config saved with this checkpoint')
  return ml_collections.ConfigDict(restored.config)


def restore_params(workdir: str, step=None, *, ema: bool = True):
  """(params, config, step) of a checkpoint, as host numpy arrays.

  `ema` picks the exponential moving average of the parameters (what sampling
  and export use) rather than the raw training parameters.
  """
  step = _resolve_step(workdir, step)
  config = restore_config(workdir, step)
  with _reader(workdir) as manager:
    metadata = manager.item_metadata(step)['state']
    # Onto this process's first device, whatever mesh the checkpoint was saved from.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  params = restored.state['ema_params' if ema else 'params']
  return jax.tree.map(jax.device_get, params), config, step


def _resolve_step(workdir: str, step):
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise CheckpointError(f'{workdir}: no checkpoints (train a model there first)')
  with _reader(workdir) as manager:
    steps = list(manager.all_steps())
  if not steps:
    raise CheckpointError(f'{workdir}: no complete checkpoint under {directory}')
  if step is None:
    return max(steps)
  if int(step) not in steps:
    raise CheckpointError(f'{workdir}: no checkpoint at step {step} (have {sorted(steps)})')
  logging.info('using checkpoint %s at step %d', directory, step)
  return int(step)
