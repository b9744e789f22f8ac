"""The bundle format: a directory of .tflite models and the manifest.json that describes them.

Standard library (and imaging.files) only, so the on-device runtime can read bundles without JAX
or TensorFlow. The manifest says everything a runtime needs (the model
contract): tile size and overlap, step count, scale range, tensor layout and
value range, and for each model file its quantization, SHA-256 and the
parity of its outputs with the JAX sampler; NPU-compiled models, where the
export made any, are listed under `npu_models` with their SHA-256 too.
"""

import json
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


def load_manifest(directory: str, *, verify: bool = True) -> dict:
  """Reads and checks a bundle: format version, files present, checksums.

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
  models = manifest.get('models')
  if not isinstance(models, dict) or not models:
    raise BundleError(f'{path}: the manifest lists no models')
  npu_models = manifest.setdefault('npu_models', {})
  if verify:
    for name, entry in list(models.items()) + list(npu_models.items()):
      file = os.path.join(directory, entry['file'])
      if not os.path.isfile(file):
        raise BundleError(f'{file}: missing (model {name!r} of the bundle)')
      if files.sha256(file) != entry['sha256']:
        raise BundleError(f'{file}: checksum mismatch (damaged or replaced); re-export the bundle')
  return manifest
