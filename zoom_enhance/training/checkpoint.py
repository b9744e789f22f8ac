"""The one wrapper around Orbax: train state, config and data position per step, checked on restore.

A checkpoint lives in WORKDIR/checkpoints/<step>/ with three items: `state`
(the sharded TrainState), `config` (the run's ConfigDict as JSON) and `data`
(the input pipeline's position). Orbax writes each step into a temporary
directory and renames it when complete, so a crash never leaves a half-written
checkpoint as the latest. Orbax does not notice flipped bytes in a complete
one, so once a save is complete its files' sizes and SHA-256 go to
WORKDIR/checkpoint_checksums/<step>.json; restoring checks them and falls
back to the previous checkpoint, with a warning naming the bad one, when they
differ or Orbax cannot read it. `restore_params` serves sampling,
distillation, export and evaluation alike; it, `restore_config` and
`read_position` also read a weights directory (weights.py) given for a workdir.
"""

import json
import logging
import os
import shutil

import jax
import ml_collections
import orbax.checkpoint as ocp

from zoom_enhance import errors
from zoom_enhance.imaging import files
from zoom_enhance.training import config as config_lib
from zoom_enhance.training import distributed
from zoom_enhance.training import weights

CHECKSUMS = 'checkpoint_checksums'
# Where training moves checkpoints it could not restore (new ones reuse their step numbers).
SET_ASIDE = 'checkpoints_unreadable'


class CheckpointError(errors.ZoomEnhanceError):
  """A workdir without usable checkpoints."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def step_dir(workdir: str, step: int) -> str:
  return os.path.join(checkpoint_dir(workdir), str(step))


def _checksum_path(workdir: str, step: int) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKSUMS, f'{step}.json')


def _digests(directory: str) -> dict:
  """{relative path: [size, sha256]} of every file under `directory`."""
  out = {}
  for root, _, names in os.walk(directory):
    for name in sorted(names):
      path = os.path.join(root, name)
      out[os.path.relpath(path, directory)] = [os.path.getsize(path), files.sha256(path)]
  return out


def seal(workdir: str, step: int):
  """Records the checksums of complete checkpoint `step` (written by one process)."""
  path = _checksum_path(workdir, step)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  files.write_json(path, _digests(step_dir(workdir, step)), indent=None)


def verify(workdir: str, step: int):
  """None if checkpoint `step` matches its checksums (or has none), else what is wrong."""
  path = _checksum_path(workdir, step)
  if not os.path.exists(path):
    return None  # saved before its checksums were written (a crash, or older code)
  try:
    with open(path) as f:
      expected = json.load(f)
  except (OSError, ValueError) as e:
    return f'unreadable checksum file {path}: {e}'
  directory = step_dir(workdir, step)
  for rel, (size, digest) in expected.items():
    file = os.path.join(directory, rel)
    if not os.path.isfile(file):
      return f'{rel} is missing'
    if os.path.getsize(file) != size:
      return f'{rel} has {os.path.getsize(file)} bytes instead of {size}'
    if files.sha256(file) != digest:
      return f'{rel} does not match its checksum'
  return None


def _reason(e: Exception) -> str:
  text = errors.first_line(e)
  return text if text == type(e).__name__ else f'{type(e).__name__}: {text}'


def _reader(workdir: str) -> ocp.CheckpointManager:
  """A read-only manager that knows how each item was written."""
  handlers = {
    'state': ocp.StandardCheckpointHandler(),
    'config': ocp.JsonCheckpointHandler(),
    'data': ocp.JsonCheckpointHandler(),
  }
  return ocp.CheckpointManager(
    checkpoint_dir(workdir), item_handlers=handlers, options=ocp.CheckpointManagerOptions(read_only=True)
  )


class Checkpointer:
  """Saves and restores (state, config, data position) under a workdir; every process calls it."""

  def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
    self.workdir = workdir
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=async_save
    )
    self._manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)
    # Steps this run saved whose checksums are not written yet (only those: an
    # older unsealed checkpoint might already be damaged).
    self._unsealed = []

  def latest_step(self):
    return self._manager.latest_step()

  def all_steps(self):
    return list(self._manager.all_steps())

  def save(self, step: int, state, config, data_position: dict):
    """Starts saving `step` (async); the previous save is finished (and sealed) first."""
    self.wait()
    self._manager.save(
      int(step),
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        config=ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
        data=ocp.args.JsonSave(data_position),
      ),
      force=True,
    )
    self._unsealed.append(int(step))

  def restore(self, step: int, abstract_state):
    """Restores `step` into arrays laid out like `abstract_state` (shardings included)."""
    restored = self._manager.restore(
      int(step),
      args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()),
    )
    return restored.state, dict(restored.data)

  def restore_latest(self, abstract_state):
    """(step, state, data position) of the newest checkpoint that restores, or None if there are none.

    Checkpoints that fail their checksums (checked on process 0) or that
    Orbax cannot read are skipped with a warning naming their directory, and
    moved to WORKDIR/checkpoints_unreadable/ once an older one has restored.
    Every process calls this and they agree on each verdict.
    """
    bad = []
    for step in sorted(self.all_steps(), reverse=True):
      problem = verify(self.workdir, step) if distributed.is_main_process() else None
      if distributed.all_processes(problem is None):
        try:
          state, position = self.restore(step, abstract_state)
        except Exception as e:  # Orbax and TensorStore fail in many types on damaged files.
          problem = _reason(e)
        if distributed.all_processes(problem is None):
          self._set_aside(bad)
          if bad:
            logging.warning('resuming from step %d of %s instead', step, self.workdir)
          self._seal_restored(step)
          return step, state, position
      logging.warning(
        'checkpoint %s is unreadable (%s); trying an older one',
        step_dir(self.workdir, step),
        problem or 'rejected by another process',
      )
      bad.append(step)
    if bad:
      raise CheckpointError(
        f'{self.workdir}: no checkpoint could be restored (unreadable: '
        f'{", ".join(step_dir(self.workdir, s) for s in bad)}); move '
        f'{checkpoint_dir(self.workdir)} away to start from scratch'
      )
    return None

  def _seal_restored(self, step):
    """Records the checksums of a checkpoint that restored without any (its run stopped before writing
    them), so that damage to it from now on is caught like any other's."""
    if distributed.is_main_process() and not os.path.exists(_checksum_path(self.workdir, step)):
      seal(self.workdir, step)
      logging.info(
        'checkpoint %s had no checksums (its run stopped first): recorded them', step_dir(self.workdir, step)
      )

  def _set_aside(self, steps):
    if not steps:
      return
    if distributed.is_main_process():
      for step in steps:
        dest = os.path.join(os.path.abspath(self.workdir), SET_ASIDE, str(step))
        while os.path.exists(dest):
          dest += '_'
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(step_dir(self.workdir, step), dest)
        if os.path.exists(_checksum_path(self.workdir, step)):
          os.remove(_checksum_path(self.workdir, step))
        logging.warning('moved unreadable checkpoint %s to %s', step_dir(self.workdir, step), dest)
    distributed.barrier('checkpoint_set_aside')
    self._manager.reload()

  def wait(self):
    """Finishes pending saves and records their checksums."""
    self._manager.wait_until_finished()
    if distributed.is_main_process():
      saved = set(self._manager.all_steps())
      for step in self._unsealed:
        if step in saved:
          seal(self.workdir, step)
      self._prune_checksums(saved)
    self._unsealed = []

  def _prune_checksums(self, saved):
    """Removes the checksums of checkpoints Orbax has deleted (max_to_keep)."""
    directory = os.path.join(os.path.abspath(self.workdir), CHECKSUMS)
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
      stem = name.split('.')[0]
      if name.endswith('.json') and stem.isdigit() and int(stem) not in saved:
        os.remove(os.path.join(directory, name))

  def close(self):
    self.wait()
    self._manager.close()


def restore_config(workdir: str, step=None) -> ml_collections.ConfigDict:
  """The config saved with a checkpoint (by default the latest that passes its checksums).

  Fields the saving run's code did not have yet get the schema's defaults.
  """
  if weights.is_weights_dir(workdir):
    _check_weights_step(workdir, step)
    return weights.read_config(workdir)
  for candidate in _candidates(workdir, step):
    try:
      return _read_config(workdir, candidate)
    except Exception as e:  # See restore_params.
      _give_up_or_warn(workdir, candidate, _reason(e), explicit=step is not None)
  raise _none_readable(workdir)


def _read_config(workdir: str, step: int) -> ml_collections.ConfigDict:
  path = os.path.join(step_dir(workdir, step), 'config')
  with _reader(workdir) as manager:
    restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
  if restored.config is None:
    raise CheckpointError(f'{path}: no config saved with this checkpoint')
  return config_lib.fill_defaults(restored.config)


def read_position(workdir: str, step: int) -> dict:
  """The data position saved with checkpoint `step`: what ran ('task') and, for a distillation, its
  round and 'student_steps'. Checkpoints of older runs get 'task' from what they hold.
  """
  if weights.is_weights_dir(workdir):
    return dict(weights.read_info(workdir).get('position') or {'task': 'train'})
  with _reader(workdir) as manager:
    restored = manager.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
  position = dict(restored.data or {})
  position.setdefault('task', 'distill' if 'student_steps' in position else 'train')
  return position


def restore_params(workdir: str, step=None, *, ema: bool = True):
  """(params, config, step) of a checkpoint, as host numpy arrays.

  `ema` picks the exponential moving average of the parameters (what sampling
  and export use) rather than the raw training parameters. Without `step`,
  the latest checkpoint that passes its checksums and reads is used; the
  ones skipped are named in a warning. A weights directory's parameters are its EMA ones.
  """
  if weights.is_weights_dir(workdir):
    if not ema:
      raise CheckpointError(f'{workdir}: a weights directory holds only the EMA parameters')
    step = _check_weights_step(workdir, step)
    return weights.read_params(workdir), weights.read_config(workdir), step
  for candidate in _candidates(workdir, step):
    try:
      return _read_params(workdir, candidate, ema)
    except CheckpointError:
      raise
    except Exception as e:  # Orbax and TensorStore fail in many types on damaged files.
      _give_up_or_warn(workdir, candidate, _reason(e), explicit=step is not None)
  raise _none_readable(workdir)


def _check_weights_step(path: str, step) -> int:
  """The step of a weights directory; asking for another one is an error."""
  have = int(weights.read_info(path)['step'])
  if step is not None and step != have:
    raise CheckpointError(f'{path} is a weights directory of step {have} only (asked for step {step})')
  return have


def _read_params(workdir: str, step: int, ema: bool):
  config = _read_config(workdir, step)
  with _reader(workdir) as manager:
    metadata = manager.item_metadata(step)['state']
    # Onto this process's first device, whatever mesh the checkpoint was saved from.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  params = restored.state['ema_params' if ema else 'params']
  return jax.tree.map(jax.device_get, params), config, step


def _candidates(workdir: str, step):
  """Steps to try, newest first, skipping (with a warning) those that fail their checksums."""
  directory = checkpoint_dir(workdir)
  if not os.path.isdir(directory):
    raise CheckpointError(f'{workdir}: no checkpoints (train a model there first)')
  with _reader(workdir) as manager:
    steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    raise CheckpointError(f'{workdir}: no complete checkpoint under {directory}')
  if step is not None:
    if int(step) not in steps:
      raise CheckpointError(f'{workdir}: no checkpoint at step {step} (have {sorted(steps)})')
    logging.info('using checkpoint %s at step %d', directory, step)
    steps = [int(step)]
  for s in steps:
    problem = verify(workdir, s)
    if problem is None:
      yield s
    else:
      _give_up_or_warn(workdir, s, problem, explicit=step is not None)


def _give_up_or_warn(workdir: str, step: int, problem: str, *, explicit: bool):
  if explicit:
    raise CheckpointError(f'checkpoint {step_dir(workdir, step)} is unreadable ({problem})')
  logging.warning('checkpoint %s is unreadable (%s); trying an older one', step_dir(workdir, step), problem)


def _none_readable(workdir: str) -> CheckpointError:
  return CheckpointError(
    f'{workdir}: none of the checkpoints under {checkpoint_dir(workdir)} '
    'could be read (see the warnings above)'
  )
