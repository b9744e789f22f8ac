"""A model's weights without its training run: what ships in the repository and starts the next model.

A weights directory holds
  params.msgpack  the EMA parameters (flax.serialization's msgpack, float32),
  config.json     the config of the run that trained them,
  weights.json    where they come from (workdir, step), the checkpoint's data
                  position (what ran, a distillation's student steps) and the
                  SHA-256 of params.msgpack, checked when read.
Everything that reads a checkpoint reads one too (checkpoint.restore_params,
restore_config, read_position): `--config.train.init_from=DIR` fine-tunes
from it, `--config.distill.teacher_workdir=DIR` distills it, `export
--workdir DIR` and `sample --workdir DIR` use it. `zoom-enhance save-weights`
writes one from a workdir.
"""

import json
import os
import shutil
import tempfile

import jax
import ml_collections
import numpy as np
from flax import serialization
from flax import traverse_util

from zoom_enhance import errors
from zoom_enhance.imaging import files

PARAMS = 'params.msgpack'
CONFIG = 'config.json'
INFO = 'weights.json'


class WeightsError(errors.ZoomEnhanceError):
  """A weights directory is incomplete or damaged."""


def fit_params(params, like, *, zero_fill=()) -> tuple[dict, str | None]:
  """`params` in the tree `like` (arrays or shape structs): (tree, None), or (None, what does not fit).

  What does not fit is a phrase naming the first parameter: 'parameter A/B is
  missing', 'parameter A/B is shaped (..), the model needs (..)', or
  'parameters the model lacks: ...'. Parameters under a top-level module named
  in `zero_fill` that `params` lacks become zeros (a student's new,
  zero-initialised inputs).
  """
  have, want = traverse_util.flatten_dict(params), traverse_util.flatten_dict(like)
  extra = sorted('/'.join(k) for k in set(have) - set(want))
  if extra:
    return None, f'parameters the model lacks: {", ".join(extra)}'
  out = {}
  for key, leaf in want.items():
    name, got = '/'.join(key), have.get(key)
    if got is None and key[0] in zero_fill:
      out[key] = np.zeros(leaf.shape, leaf.dtype)
    elif got is None:
      return None, f'parameter {name} is missing'
    elif tuple(got.shape) != tuple(leaf.shape):
      return None, f'parameter {name} is shaped {tuple(got.shape)}, the model needs {tuple(leaf.shape)}'
    else:
      out[key] = got
  return traverse_util.unflatten_dict(out), None


def is_weights_dir(path: str) -> bool:
  """True for a directory `write` made (it has params.msgpack)."""
  return os.path.isfile(os.path.join(path, PARAMS))


def write(out: str, params, config, *, source: str, step: int, position: dict) -> dict:
  """Writes a weights directory at `out` (replacing one there) through a temporary one; returns its info."""
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), jax.device_get(params))
  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.', dir=parent)
  try:
    with open(os.path.join(tmp, PARAMS), 'wb') as f:
      f.write(serialization.msgpack_serialize(params))
    with open(os.path.join(tmp, CONFIG), 'w') as f:
      f.write(config.to_json_best_effort(indent=2) + '\n')
    info = {
      'source': source,
      'step': int(step),
      'position': position,
      'parameters': int(sum(a.size for a in jax.tree.leaves(params))),
      'sha256': files.sha256(os.path.join(tmp, PARAMS)),
    }
    files.write_json(os.path.join(tmp, INFO), info)
    os.chmod(tmp, 0o755)
    files.publish_dir(tmp, out, is_ours=is_weights_dir, what='weights directory')
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return info


def read_info(path: str) -> dict:
  try:
    with open(os.path.join(path, INFO)) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise WeightsError(f'{path}: cannot read {INFO} ({e})') from None


def read_config(path: str) -> ml_collections.ConfigDict:
  """The config the weights were trained with, with the fields it lacks from the schema's defaults."""
  from zoom_enhance.training import config as config_lib

  try:
    with open(os.path.join(path, CONFIG)) as f:
      return config_lib.fill_defaults(json.load(f))
  except (OSError, ValueError) as e:
    raise WeightsError(f'{path}: cannot read {CONFIG} ({e})') from None


def read_params(path: str):
  """The parameters (numpy arrays), after checking params.msgpack against the SHA-256 in weights.json."""
  info = read_info(path)
  params_path = os.path.join(path, PARAMS)
  if files.sha256(params_path) != info.get('sha256'):
    raise WeightsError(f'{params_path}: its SHA-256 differs from the one in {INFO} (damaged or replaced)')
  with open(params_path, 'rb') as f:
    return serialization.msgpack_restore(f.read())
