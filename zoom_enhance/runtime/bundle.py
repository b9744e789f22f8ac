"""The bundle format: a directory of .tflite models and the manifest.json that describes them.

Standard library (and imaging.files) only, so the on-device runtime can read bundles without JAX
or TensorFlow. The manifest says everything a runtime needs (the model
contract): tile size and overlap, step count, scale range, tensor layout and
value range, and for each model file its quantization, SHA-256 and the
parity of its outputs with the JAX sampler; NPU-compiled models, where the
export made any, are listed under `npu_models` with their SHA-256 too.

In Python the manifest is a `Manifest`, frozen dataclasses read by
`Manifest.from_json`, which checks every field the runtime reads and gives
the fields older bundles lack their defaults (here, and nowhere else), and
written by `to_json`: export builds one, so the file it writes and the
runtime reads have one definition. Fields that are None are left out of the
JSON.
"""

import dataclasses
import json
import math
import os

from zoom_enhance import errors
from zoom_enhance.imaging import files

MANIFEST = 'manifest.json'
FORMAT = 'zoom-enhance-bundle'
FORMAT_VERSION = 1
# The models' inputs, as the manifest's "inputs" names them; converters decorate the names in the files.
INPUT_NAMES = ('lr_up', 'noise', 'scale', 'detail')


class BundleError(errors.ZoomEnhanceError):
  """A bundle that is missing, damaged or of another format version."""


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _json(value):
  """A manifest value as JSON: dataclasses as objects without their None fields, tuples as lists."""
  if dataclasses.is_dataclass(value):
    fields = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    return {name: _json(v) for name, v in fields if v is not None}
  if isinstance(value, dict):
    return {k: _json(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json(v) for v in value]
  return value


def _frozen(value):
  """A JSON value as a Manifest keeps it: lists as tuples."""
  if isinstance(value, list):
    return tuple(_frozen(v) for v in value)
  if isinstance(value, dict):
    return {k: _frozen(v) for k, v in value.items()}
  return value


class _Section:
  """A part of the manifest: JSON out (to_json), and in, for parts the runtime only carries (from_json)."""

  def to_json(self) -> dict:
    return _json(self)

  @classmethod
  def from_json(cls, value, where: str):
    """The known keys of the object `value` at `where` (e.g. "training"), others left out."""
    if not isinstance(value, dict):
      raise BundleError(f'"{where}" is not an object')
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: _frozen(v) for k, v in value.items() if k in names})


def _entries(cls, section: str, entries) -> dict:
  """The model entries under `section` ("models" or "npu_models"), checked: each names a file inside the
  bundle and its SHA-256."""
  if not isinstance(entries, dict):
    raise BundleError(f'"{section}" is not an object of model entries')
  out = {}
  for name, entry in entries.items():
    if not isinstance(entry, dict):
      raise BundleError(f'"{section}.{name}" is not an object')
    for key in ('file', 'sha256'):
      value = entry.get(key)
      if not isinstance(value, str) or not value:
        raise BundleError(f'"{section}.{name}.{key}" is missing or not a string')
    if os.path.basename(entry['file']) != entry['file']:
      raise BundleError(f'"{section}.{name}.file" must be a file name inside the bundle')
    if not isinstance(entry.get('resizable', False), bool):
      raise BundleError(f'"{section}.{name}.resizable" must be true or false')
    out[name] = cls.from_json(entry, f'{section}.{name}')
  return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEntry(_Section):
  """One of the bundle's models (under "models"), as export measured it."""

  file: str  # inside the bundle
  sha256: str
  quantization: str | None = None  # convert.QUANT_MODES
  description: str | None = None
  bytes: int | None = None
  parity_psnr_db: float = 0.0  # against JAX on real photo tiles (0: not measured)
  parity_threshold_db: float | None = None
  gpu_incompatible_ops: tuple = ()  # ops LiteRT's GPU delegate cannot run
  tile_latency_ms_export_cpu: float | None = None
  # Takes tiles of any (h, w) (export_tflite/resizable.py): the CPU's interpreters then run tiles of the
  # photo's own proportions (tiling.plan_tile).
  resizable: bool = False
  not_resizable: str | None = None  # why not, where not
  resized_parity_psnr_db: float | None = None  # at tile.resized_check, where resizable


@dataclasses.dataclass(frozen=True, kw_only=True)
class NpuModel(_Section):
  """A model `export --npu` compiled ahead of time for an NPU (under "npu_models")."""

  file: str
  sha256: str
  vendor: str | None = None
  soc: str | None = None  # the SoC it was compiled for
  bytes: int | None = None
  source_quantization: str | None = None  # the model of "models" it was compiled from


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tile(_Section):
  size: int  # the models' square tile
  overlap: int  # between neighbouring tiles, in [0, size)
  multiple: int = 8  # a resizable model's tile sides are multiples of this
  resized_check: tuple | None = None  # (h, w) export checked a resizable model's parity at

  @classmethod
  def from_json(cls, tile, where: str = 'tile') -> 'Tile':
    if not isinstance(tile, dict):
      raise BundleError('"tile" is missing or not an object')
    size, overlap, multiple = tile.get('size'), tile.get('overlap'), tile.get('multiple', 8)
    if not _whole(size) or size < 1:
      raise BundleError(f'"tile.size" must be a positive whole number, not {size!r}')
    if not _whole(overlap) or not 0 <= overlap < size:
      raise BundleError(f'"tile.overlap" must be a whole number in [0, tile.size), not {overlap!r}')
    if not _whole(multiple) or multiple < 1:
      raise BundleError(f'"tile.multiple" must be a positive whole number, not {multiple!r}')
    return cls(
      size=size, overlap=overlap, multiple=multiple, resized_check=_frozen(tile.get('resized_check'))
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Detail(_Section):
  """The detail control (enhance --detail): the scale of the starting noise."""

  default: float = 1.0  # bundles before the control: 1, a full sample
  # Back-projection rounds at detail D < 1, weighted 1 - D (imaging.consistency); bundles before it: none.
  back_projection_iterations: int = 0
  input: bool | None = None  # whether the models read it as an input
  meaning: str | None = None

  @classmethod
  def from_json(cls, detail, where: str = 'detail') -> 'Detail':
    default = detail.get('default', 1.0) if isinstance(detail, dict) else None
    if not (_number(default) and 0 <= default <= 1):
      raise BundleError('"detail.default" must be a number in [0, 1]')
    rounds = detail.get('back_projection_iterations', 0)
    if not _whole(rounds) or rounds < 0:
      raise BundleError('"detail.back_projection_iterations" must be a whole number >= 0')
    return cls(
      default=default,
      back_projection_iterations=rounds,
      input=detail.get('input'),
      meaning=detail.get('meaning'),
    )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tensor(_Section):
  """A model input or output as the manifest describes it (the runtime reads the shapes of the models)."""

  shape: tuple | None = None
  dtype: str | None = None
  range: tuple | None = None
  layout: str | None = None
  resampler: str | None = None
  distribution: str | None = None
  meaning: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Noise(Tensor):
  effect_max_abs: float | None = None  # largest output change between two noise draws, at export
  used: bool = True  # False: the runtime feeds zeros instead of drawing noise (bundles before it: drawn)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Inputs(_Section):
  lr_up: Tensor | None = None
  noise: Noise = dataclasses.field(default_factory=Noise)
  scale: Tensor | None = None
  detail: Tensor | None = None  # models that read the detail

  @classmethod
  def from_json(cls, inputs, where: str = 'inputs') -> 'Inputs':
    noise = inputs.get('noise', {}) if isinstance(inputs, dict) else None
    if not isinstance(noise, dict) or not isinstance(noise.get('used', True), bool):
      raise BundleError('"inputs.noise.used" must be true or false')
    tensors = {
      k: Tensor.from_json(v, f'inputs.{k}') for k, v in inputs.items() if k in ('lr_up', 'scale', 'detail')
    }
    return cls(noise=Noise.from_json(noise, 'inputs.noise'), **tensors)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source(_Section):
  """The checkpoint a bundle was exported from (the manifest's "model")."""

  variant: str | None = None  # unet.get_variant
  checkpoint_step: int | None = None
  workdir: str | None = None  # as given to export


@dataclasses.dataclass(frozen=True, kw_only=True)
class Parity(_Section):
  """How export measured the models' parity with JAX."""

  tiles: int | None = None
  source: str | None = None
  engine: str | None = None  # the runtime engine it ran the models on


@dataclasses.dataclass(frozen=True, kw_only=True)
class Training(_Section):
  data: str | None = None
  prediction: str | None = None
  residual: bool | None = None
  distilled: bool | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest(_Section):
  """manifest.json, checked (from_json): what a runtime needs to run the bundle's models, and how export made
  them."""

  models: dict  # name -> ModelEntry, in the order export wrote them
  tile: Tile
  steps: int  # sampler steps, fixed at export
  scale_range: tuple  # (low, high) factors the model was trained for, 1 <= low <= high
  inputs: Inputs = dataclasses.field(default_factory=Inputs)
  detail: Detail = dataclasses.field(default_factory=Detail)
  default_quant: dict = dataclasses.field(
    default_factory=dict
  )  # accelerator -> model name (export --cpu-quant)
  npu_models: dict = dataclasses.field(default_factory=dict)  # name -> NpuModel
  npu_skipped: dict = dataclasses.field(default_factory=dict)  # NPU vendor -> why export compiled none
  noise_temperature: float | None = None
  output: Tensor | None = None
  model: Source | None = None
  parity: Parity | None = None
  training: Training | None = None

  @classmethod
  def from_json(cls, m, where: str = '') -> 'Manifest':
    """The manifest of the JSON object `m`; BundleError with a phrase naming the first field a runtime cannot
    use (its structure and type, and for numbers their range: tile.size > 0, 0 <= tile.overlap < tile.size,
    steps >= 1, 1 <= scale_range low <= high, detail.default in [0, 1], ...)."""
    if not isinstance(m, dict):
      raise BundleError('the manifest is not an object')
    if not isinstance(m.get('models'), dict) or not m['models']:
      raise BundleError('the manifest lists no models')
    models = _entries(ModelEntry, 'models', m['models'])
    npu_models = _entries(NpuModel, 'npu_models', m['npu_models']) if 'npu_models' in m else {}
    tile = Tile.from_json(m.get('tile'))
    steps = m.get('steps')
    if not _whole(steps) or steps < 1:
      raise BundleError(f'"steps" must be a whole number >= 1, not {steps!r}')
    sr = m.get('scale_range')
    if not (isinstance(sr, list) and len(sr) == 2 and all(_number(v) for v in sr) and 1.0 <= sr[0] <= sr[1]):
      raise BundleError(f'"scale_range" must be [low, high] with 1 <= low <= high, not {sr!r}')
    inputs = Inputs.from_json(m.get('inputs', {}))
    detail = Detail.from_json(m.get('detail', {}))
    default_quant = m.get('default_quant', {})
    if not isinstance(default_quant, dict) or not all(isinstance(v, str) for v in default_quant.values()):
      raise BundleError('"default_quant" must map accelerators to model names')
    described = {
      name: kind.from_json(m[name], name)
      for name, kind in (('output', Tensor), ('model', Source), ('parity', Parity), ('training', Training))
      if m.get(name) is not None
    }
    return cls(
      models=models,
      tile=tile,
      steps=steps,
      scale_range=tuple(sr),
      inputs=inputs,
      detail=detail,
      default_quant=default_quant,
      npu_models=npu_models,
      npu_skipped=_frozen(m.get('npu_skipped', {})),
      noise_temperature=m.get('noise_temperature'),
      **described,
    )


def write_manifest(directory: str, manifest: Manifest) -> str:
  """Writes manifest.json atomically (temporary file, then rename)."""
  path = os.path.join(directory, MANIFEST)
  files.write_json(
    path, dict(manifest.to_json(), format=FORMAT, format_version=FORMAT_VERSION), sort_keys=True
  )
  return path


def load_manifest(directory: str, *, verify: bool = True) -> Manifest:
  """Reads and checks a bundle: format version, every field the runtime reads (Manifest.from_json), files
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
      raw = json.load(f)
  except (OSError, ValueError) as e:
    raise BundleError(f'{path}: unreadable manifest ({e})') from None
  if not isinstance(raw, dict) or raw.get('format') != FORMAT:
    raise BundleError(f'{path}: not a {FORMAT} manifest')
  version = raw.get('format_version')
  if version != FORMAT_VERSION:
    raise BundleError(
      f'{path}: bundle format version {version}, this zoom-enhance reads '
      f'version {FORMAT_VERSION}; re-export the bundle or upgrade zoom-enhance'
    )
  try:
    manifest = Manifest.from_json(raw)
  except BundleError as e:
    raise BundleError(f'{path}: {e}; re-export the bundle') from None
  if verify:
    for name, entry in list(manifest.models.items()) + list(manifest.npu_models.items()):
      file = os.path.join(directory, entry.file)
      if not os.path.isfile(file):
        raise BundleError(f'{file}: missing (model {name!r} of the bundle)')
      if files.sha256(file) != entry.sha256:
        raise BundleError(f'{file}: checksum mismatch (damaged or replaced); re-export the bundle')
  return manifest
