"""The bundle format: a directory of .tflite models and the manifest.json that describes them.

Standard library (and imaging.files) only, so the on-device runtime can read bundles without JAX
or TensorFlow. The manifest says everything a runtime needs (the model
contract): tile size and overlap, step count, scale range, tensor layout and
value range, and for each model file its quantization, SHA-256 and the
parity of its outputs with the JAX sampler; NPU-compiled models, where the
export made any, are listed under `npu_models` with their SHA-256 too.
"""

import json
import math
import os

from zoom_enhance import errors
from zoom_enhance.imaging import files

MANIFEST = 'manifest.json'
FORMAT = 'zoom-enhance-bundle'
FORMAT_VERSION = 1


class BundleError(errors.ZoomEnhanceError):
  """A bundle that is missing, damaged or of another format version."""


def write_manifest(directory: str, manifest: dict) -> str:
  """Writes manifest.json atomically (temporary file, then rename)."""
  path = os.path.join(directory, MANIFEST)
  files.write_json(path, dict(manifest, format=FORMAT, format_version=FORMAT_VERSION), sort_keys=True)
  return path


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _model_entries_problem(section: str, entries) -> str | None:
  if not isinstance(entries, dict):
    return f'"{section}" is not an object of model entries'
  for name, entry in entries.items():
    if not isinstance(entry, dict):
      return f'"{section}.{name}" is not an object'
    for key in ('file', 'sha256'):
      value = entry.get(key)
      if not isinstance(value, str) or not value:
        return f'"{section}.{name}.{key}" is missing or not a string'
    if os.path.basename(entry['file']) != entry['file']:
      return f'"{section}.{name}.file" must be a file name inside the bundle'
    if not isinstance(entry.get('resizable', False), bool):
      return f'"{section}.{name}.resizable" must be true or false'
  return None


def manifest_problem(m: dict) -> str | None:
  """The first field of a manifest that a runtime cannot use, as a phrase naming it; None if all are fine.

  Checks the structure and types of everything the runtime reads: models
  (file, sha256, resizable), tile (size > 0, 0 <= overlap < size,
  multiple > 0), steps (>= 1),
  scale_range (1 <= lo <= hi, finite), and the optional inputs.noise.used,
  detail.default (in [0, 1]), default_quant and npu_models.
  """
  models = m.get('models')
  if not isinstance(models, dict) or not models:
    return 'the manifest lists no models'
  problem = _model_entries_problem('models', models)
  if problem:
    return problem
  if 'npu_models' in m:
    problem = _model_entries_problem('npu_models', m['npu_models'])
    if problem:
      return problem
  tile = m.get('tile')
  if not isinstance(tile, dict):
    return '"tile" is missing or not an object'
  size, overlap = tile.get('size'), tile.get('overlap')
  if not _whole(size) or size < 1:
    return f'"tile.size" must be a positive whole number, not {size!r}'
  if not _whole(overlap) or not 0 <= overlap < size:
    return f'"tile.overlap" must be a whole number in [0, tile.size), not {overlap!r}'
  multiple = tile.get('multiple', 8)
  if not _whole(multiple) or multiple < 1:
    return f'"tile.multiple" must be a positive whole number, not {multiple!r}'
  steps = m.get('steps')
  if not _whole(steps) or steps < 1:
    return f'"steps" must be a whole number >= 1, not {steps!r}'
  sr = m.get('scale_range')
  if not (isinstance(sr, list) and len(sr) == 2 and all(_number(v) for v in sr) and 1.0 <= sr[0] <= sr[1]):
    return f'"scale_range" must be [low, high] with 1 <= low <= high, not {sr!r}'
  noise = m.get('inputs', {}).get('noise', {}) if isinstance(m.get('inputs', {}), dict) else None
  if not isinstance(noise, dict) or not isinstance(noise.get('used', True), bool):
    return '"inputs.noise.used" must be true or false'
  detail = m.get('detail', {})
  if not isinstance(detail, dict) or not (
    _number(detail.get('default', 1.0)) and 0 <= detail.get('default', 1.0) <= 1
  ):
    return '"detail.default" must be a number in [0, 1]'
  rounds = detail.get('back_projection_iterations', 0)
  if not _whole(rounds) or rounds < 0:
    return '"detail.back_projection_iterations" must be a whole number >= 0'
  default_quant = m.get('default_quant', {})
  if not isinstance(default_quant, dict) or not all(isinstance(v, str) for v in default_quant.values()):
    return '"default_quant" must map accelerators to model names'
  return None


def load_manifest(directory: str, *, verify: bool = True) -> dict:
  """Reads and checks a bundle: format version, every field the runtime reads (manifest_problem), files
  present, checksums.

  Raises BundleError with a one-line reason naming the bundle and the file.
  """
  path = os.path.join(directory, MANIFEST)
  if not os.path.isdir(directory):
    raise BundleError(f'{directory}: no such bundle directory')
  if not os.path.isfile(path):
    raise BundleError(f'{directory}: not a bundle (no {MANIFEST})')
  try:
    with open(path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise BundleError(f'{path}: unreadable manifest ({e})') from None
  if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
    raise BundleError(f'{path}: not a {FORMAT} manifest')
  version = manifest.get('format_version')
  if version != FORMAT_VERSION:
    raise BundleError(
      f'{path}: bundle format version {version}, this zoom-enhance reads '
      f'version {FORMAT_VERSION}; re-export the bundle or upgrade zoom-enhance'
    )
  problem = manifest_problem(manifest)
  if problem:
    raise BundleError(f'{path}: {problem}; re-export the bundle')
  models = manifest['models']
  npu_models = manifest.setdefault('npu_models', {})
  if verify:
    for name, entry in list(models.items()) + list(npu_models.items()):
      file = os.path.join(directory, entry['file'])
      if not os.path.isfile(file):
        raise BundleError(f'{file}: missing (model {name!r} of the bundle)')
      if files.sha256(file) != entry['sha256']:
        raise BundleError(f'{file}: checksum mismatch (damaged or replaced); re-export the bundle')
  return manifest
