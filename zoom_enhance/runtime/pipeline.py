"""Enhance one photo with a bundle: crop, plan the factors, tile through the engine, resample, keep metadata.

`Enhancer` loads a bundle once (checksums, accelerator chain) and enhances
many photos; `enhance` is the one-call form behind `zoom_enhance.enhance`.
Both return a PIL image whose `info` holds the ICC profile and EXIF to save
with it and, under 'zoom_enhance', the `Report` of what ran.
"""

import dataclasses
import logging
import numbers
import os
import time
from typing import Callable

import numpy as np
from PIL import Image

from zoom_enhance import errors
from zoom_enhance.imaging import consistency
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo as photo_lib
from zoom_enhance.imaging import save
from zoom_enhance.runtime import bundle as bundle_lib
from zoom_enhance.runtime import cpu_variant
from zoom_enhance.runtime import engine as engine_lib
from zoom_enhance.runtime import geometry
from zoom_enhance.runtime import tiling

logger = logging.getLogger('zoom_enhance.runtime')

DEFAULT_BUNDLE = files.asset_path('default_bundle')

# Largest result, in pixels: 400 MP of uint8 RGB is 1.2 GB.
MAX_OUTPUT_PIXELS = 400_000_000


@dataclasses.dataclass(frozen=True)
class Report:
  """What one enhancement did and what ran it."""

  source: str
  accelerator: str  # 'npu', 'gpu', 'cpu' or 'delegate': what actually ran
  runtime: str  # runtime, threads or delegate library
  variant: str  # the bundle's model key: fp32, fp16, int8, ...
  fallbacks: tuple  # 'npu: reason' for accelerators passed over
  crop: tuple  # (x, y, w, h) in the upright image
  model_size: tuple  # (w, h) the model rendered
  output_size: tuple  # (w, h) of the result
  model_scale: float  # factor the model was conditioned on
  resampled: bool  # Lanczos took model_size to output_size (factor outside the bundle's range)
  steps: int
  strength: float
  detail: float  # scale of the starting noise: 0 fidelity, 1 all the drawn detail
  back_projection: float  # weight of the back-projection onto the input (imaging.consistency), 0 none
  seed: int
  tiles: int
  tile_size: tuple  # (w, h) of the model's tiles
  seconds: float

  def summary(self) -> str:
    w, h = self.output_size
    per_mp = self.seconds / (w * h / 1e6)
    resample = f', Lanczos from {self.model_size[0]}x{self.model_size[1]}' if self.resampled else ''
    return (
      f'{self.crop[2]}x{self.crop[3]} -> {w}x{h} (x{self.model_scale:.3g} model{resample}), '
      f'{self.tiles} tiles of {self.tile_size[0]}x{self.tile_size[1]} on {self.accelerator} '
      f'({self.runtime}), model {self.variant}, '
      f'{self.seconds:.2f} s ({per_mp:.2f} s/MP)'
    )


def resolve_bundle(path=None) -> str:
  """The bundle to use: `path`, else the one embedded in the package."""
  if path:
    return os.fspath(path)
  if os.path.isfile(os.path.join(DEFAULT_BUNDLE, bundle_lib.MANIFEST)):
    return DEFAULT_BUNDLE
  raise bundle_lib.BundleError(
    'no bundle: this install has no embedded default model; pass --bundle DIR '
    '(a bundle written by zoom-enhance export)'
  )


def _whole(value, name: str, low: int, *, none_ok: bool = False):
  """A whole-number option given from Python or the command line, checked before any work."""
  if value is None and none_ok:
    return None
  if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
    raise errors.ConfigError(f'{name} {value!r}: must be a whole number >= {low}')
  return int(value)


def max_threads() -> int:
  """The most CPU threads an Enhancer takes: 4 per core, at least 16. Each runs a copy of the model, and
  more threads than cores only slow LiteRT down: 1000 took minutes to load."""
  return max(16, 4 * (os.cpu_count() or 1))


def check_threads(threads: int | None, name: str = '--threads') -> None:
  """Refuses a thread count above max_threads()."""
  if threads is not None and threads > max_threads():
    raise errors.ConfigError(
      f'{name} {threads}: at most {max_threads()} on this machine ({os.cpu_count()} cores; more threads '
      'than cores only slow the model down)'
    )


def _fraction(value, name: str, what: str):
  """A number in [0, 1] given from Python or the command line."""
  if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
    shown = f'{value:g}' if isinstance(value, numbers.Real) and not isinstance(value, bool) else repr(value)
    raise errors.ConfigError(f'{name} {shown}: must be in [0, 1] ({what})')
  return float(value)


@dataclasses.dataclass(frozen=True)
class _Request:
  """The options of one Enhancer.enhance call, checked."""

  crop: object  # geometry.check_crop's: None, or (x, y, w, h) in pixels or fractions
  scale: float | None  # None where `size` is given
  size: tuple | None  # (w, h)
  strength: float
  detail: float
  seed: int
  max_pixels: int
  max_output_pixels: int


@dataclasses.dataclass(frozen=True)
class _Rendered:
  """What Enhancer._render made: the result, and the tiles that made it."""

  image: Image.Image
  tile: tuple  # (h, w)
  tiles: int
  back_projection: float  # weight of the back-projection onto the input, 0 none


class Enhancer:
  """A bundle loaded on an accelerator, ready for many photos. Use as a context manager or call close()."""

  def __init__(
    self,
    bundle=None,
    *,
    accelerator: str = 'auto',
    quant: str | None = None,
    delegate: str | None = None,
    threads: int | None = None,
    tile: int | None = None,
    steps: int | None = None,
  ):
    threads = _whole(threads, 'threads', 1, none_ok=True)
    check_threads(threads, 'threads')
    if threads is not None and threads > 4 * (os.cpu_count() or 1):
      logger.warning(
        '%d threads on %d cores: more threads than cores make LiteRT slower', threads, os.cpu_count()
      )
    self.bundle_dir = resolve_bundle(bundle)
    self.manifest = bundle_lib.load_manifest(self.bundle_dir)
    self.tile = self.manifest.tile.size
    self.overlap = self.manifest.tile.overlap
    self.steps = self.manifest.steps
    self.scale_range = tuple(float(v) for v in self.manifest.scale_range)
    self.noise_used = self.manifest.inputs.noise.used
    self.default_detail = float(self.manifest.detail.default)
    self.back_projection = self.manifest.detail.back_projection_iterations  # rounds at detail < 1
    self._check_fixed_at_export(tile, steps)
    self.engine = engine_lib.open_engine(
      self.manifest,
      self.bundle_dir,
      accelerator=accelerator,
      quant=quant,
      delegate=delegate,
      threads=threads,
      choose_cpu=self._choose_cpu_variant,
    )

  def _check_fixed_at_export(self, tile: int | None, steps: int | None):
    """Refuses a tile size or step count other than the bundle's: export fixes both in the models.

    LiteRT 2.3 cannot resize the models' static shapes correctly (CompiledModel
    refuses; the classic interpreter resizes, but a GroupNorm model's mean then
    still divides by the export tile's size); models export made resizable
    (export_tflite/resizable.py) get tiles of each photo's shape on the CPU
    anyway (tiling.plan_tile).
    """
    if tile is not None and int(tile) != self.tile:
      if all(m.resizable for m in self.manifest.models.values()):
        how = (
          'its models take tiles of any size on the CPU, planned per photo, and the GPU and NPU run '
          f'{self.tile}x{self.tile}'
        )
      else:
        how = (
          f'the models of {self.bundle_dir} are compiled for {self.tile}x{self.tile} tiles and '
          'LiteRT cannot resize them correctly'
        )
      raise errors.ConfigError(
        f'--tile {tile}: {how}; use --tile {self.tile} or export a bundle with '
        f'zoom-enhance export --tile {tile}'
      )
    if steps is not None and int(steps) != self.steps:
      raise errors.ConfigError(
        f'--steps {steps}: the models of {self.bundle_dir} run {self.steps} '
        'sampler steps, fixed at export; export another bundle with '
        f'zoom-enhance export --steps {steps}'
      )

  def _choose_cpu_variant(self, threads: int) -> 'cpu_variant.Choice | None':
    """The bundle's model to run on this machine's CPU (cpu_variant.choose), or None for the bundle's default.

    Asked by open_engine only once the accelerator chain reaches the CPU and
    no --quant was given. On a machine's first use of a bundle this times
    each candidate through the engine (about a second), logs the result at
    INFO and writes it to the user's cache directory (machine_cache); later
    runs read it from there.
    """
    return cpu_variant.choose(self.bundle_dir, self.manifest, threads)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def close(self):
    if self.engine is not None:
      self.engine.close()
      self.engine = None

  def default_scale(self) -> float:
    """The largest factor the model was trained for."""
    return self.scale_range[1]

  def tile_for(self, model_wh) -> tuple[int, int]:
    """(height, width) of the tiles for a result of `model_wh`: the bundle's square tile, or, on an
    engine that resizes its model (engine.Engine.resizable), the shape tiling.plan_tile picks."""
    if not self.engine.resizable:
      return self.tile, self.tile
    return tiling.plan_tile(
      (model_wh[1], model_wh[0]),
      overlap=self.overlap,
      multiple=self.manifest.tile.multiple,
      parallel=self.engine.parallel,
    )

  def count_tiles(self, model_wh) -> int:
    return tiling.count_tiles((model_wh[1], model_wh[0]), self.tile_for(model_wh), self.overlap)

  def enhance(
    self,
    image,
    *,
    crop=None,
    scale: float | None = None,
    size=None,
    strength: float = 1.0,
    detail: float | None = None,
    seed: int = 0,
    max_pixels: int = photo_lib.MAX_PIXELS,
    max_output_pixels: int = MAX_OUTPUT_PIXELS,
    on_start: Callable[[int], None] | None = None,
    on_tile: Callable[[], None] | None = None,
    check_output: Callable[[tuple], None] | None = None,
  ) -> Image.Image:
    """Enhances a path or PIL image; returns a PIL image (see the module docstring for its info).

    crop: (x, y, w, h) ints in pixels, floats in [0, 1] as fractions, or a
      string such as '100,80,320,180'; None is the whole image (upright,
      after EXIF orientation).
    scale / size: the factor, or the output (width, height) or 'WxH'; neither
      gives the bundle's largest factor.
    strength: 0 is the plain bicubic enlargement, 1 the model's output.
    detail: 0 is the model's fidelity output (the best PSNR, the same for
      every seed), 1 all the detail it draws; None is the bundle's default.
      A bundle whose noise is unused gives the same output for every value.
    on_start(tiles), on_tile(): progress callbacks.
    check_output((w, h)): raises if the result cannot be written (a format's
      size limit); called before decoding when the file's header tells the
      size, and again once the photo is decoded.
    """
    t0 = time.perf_counter()
    if self.engine is None:
      raise errors.ZoomEnhanceError('this Enhancer is closed')
    request = self._check_request(
      crop=crop,
      scale=scale,
      size=size,
      strength=strength,
      detail=detail,
      seed=seed,
      max_pixels=max_pixels,
      max_output_pixels=max_output_pixels,
    )
    photo, box, out_wh = self._open_photo(image, request, check_output)
    plan = geometry.plan((box.w, box.h), out_wh, self.scale_range)
    try:
      rendered = self._render(photo, box, plan, out_wh, request, on_start, on_tile)
    except MemoryError:
      raise photo_lib.out_of_memory(
        photo.source, f'for a {out_wh[0]}x{out_wh[1]} result; choose a smaller --crop, --scale or --size'
      ) from None
    result = rendered.image
    self._keep_metadata(result, photo, out_wh)
    seconds = time.perf_counter() - t0
    result.info['zoom_enhance'] = self._report(photo.source, box, plan, out_wh, request, rendered, seconds)
    return result

  def _check_request(
    self, *, crop, scale, size, strength, detail, seed, max_pixels, max_output_pixels
  ) -> _Request:
    """enhance's options checked (ConfigError or GeometryError naming the first one wrong), with the
    defaults filled in: the bundle's detail, and its largest factor where neither scale nor size is given."""
    strength = _fraction(strength, 'strength', '0 bicubic, 1 the model')
    detail = (
      self.default_detail
      if detail is None
      else _fraction(detail, 'detail', '0 fidelity, 1 all the drawn detail')
    )
    seed = _whole(seed, 'seed', 0)
    max_pixels = _whole(max_pixels, 'max_pixels', 1)
    max_output_pixels = _whole(max_output_pixels, 'max_output_pixels', 1)
    crop = geometry.check_crop(geometry.parse_crop(crop) if isinstance(crop, str) else crop)
    if size is not None:
      size = geometry.parse_size(size) if isinstance(size, str) else geometry.check_size(size)
    if scale is not None:
      scale = geometry.check_scale(scale)
    if scale is None and size is None:
      scale = self.default_scale()
    return _Request(crop, scale, size, strength, detail, seed, max_pixels, max_output_pixels)

  def _open_photo(self, image, request: _Request, check_output):
    """(photo, crop box, result size) of `image`. The result's size is checked from the file's header
    first, where it tells the size: a result over the limits is refused before decoding."""
    header = photo_lib.upright_size(image)
    if header is not None and header[0] * header[1] <= request.max_pixels:
      self._plan_output(os.fspath(image), header, request, check_output)
    photo = photo_lib.open_photo(image, max_pixels=request.max_pixels)
    box, out_wh = self._plan_output(photo.source, photo.size, request, check_output)
    return photo, box, out_wh

  @staticmethod
  def _plan_output(source, image_wh, request: _Request, check_output):
    """(crop box, result size) of an image of `image_wh`, checked against the limits; errors name `source`."""
    try:
      box = geometry.resolve_crop(request.crop, image_wh)
      out_wh = geometry.output_size((box.w, box.h), scale=request.scale, size=request.size)
    except geometry.GeometryError as e:
      raise geometry.GeometryError(f'{source}: {e}') from None
    if out_wh[0] * out_wh[1] > request.max_output_pixels:
      raise geometry.GeometryError(
        f'{source}: the result would be {out_wh[0]}x{out_wh[1]}, over '
        f'{photo_lib.megapixels(request.max_output_pixels)}; choose a smaller --scale or --size'
      )
    if check_output is not None:
      check_output(out_wh)
    return box, out_wh

  def _render(self, photo, box, plan, out_wh, request: _Request, on_start, on_tile) -> _Rendered:
    """The result of `photo`'s crop `box` following `plan` (geometry.plan), tiled through the engine."""
    lr = photo.rgb[box.y : box.y + box.h, box.x : box.x + box.w]
    tile = self.tile_for(plan.model_wh)
    self.engine.prepare(tile)
    tiles = tiling.count_tiles((plan.model_wh[1], plan.model_wh[0]), tile, self.overlap)
    if on_start:
      on_start(tiles)
    rgb = tiling.enhance_tiled(
      self.engine.run,
      lr,
      (plan.model_wh[1], plan.model_wh[0]),
      tile=tile,
      overlap=self.overlap,
      scale=plan.model_scale,
      seed=request.seed,
      strength=request.strength,
      detail=request.detail,
      noise_used=self.noise_used,
      on_tile=on_tile,
      parallel=self.engine.parallel,
      executor=self.engine.executor,
    )
    # Toward the fidelity end the result, shrunk again, gives back its input (imaging.consistency).
    back_projection = (1.0 - request.detail) * request.strength if self.back_projection else 0.0
    consistency.back_project(rgb, lr, weight=back_projection, iterations=self.back_projection)
    if plan.resample:
      rgb = np.asarray(Image.fromarray(rgb).resize(out_wh, Image.Resampling.LANCZOS))
    alpha = None
    if photo.alpha is not None:
      # Alpha is no photo: a sharp resampler, not the model.
      alpha_crop = Image.fromarray(photo.alpha[box.y : box.y + box.h, box.x : box.x + box.w])
      alpha = np.asarray(alpha_crop.resize(out_wh, Image.Resampling.LANCZOS))
    return _Rendered(save.to_image(rgb, alpha, gray=photo.gray), tile, tiles, back_projection)

  def _report(self, source, box, plan, out_wh, request: _Request, rendered: _Rendered, seconds) -> Report:
    """What the enhancement did and what ran it (the result's info['zoom_enhance'])."""
    eng = self.engine
    return Report(
      source=source,
      accelerator=eng.accelerator,
      runtime=eng.runtime,
      variant=eng.variant,
      fallbacks=tuple(eng.fallbacks),
      crop=(box.x, box.y, box.w, box.h),
      model_size=plan.model_wh,
      output_size=out_wh,
      model_scale=plan.model_scale,
      resampled=plan.resample,
      steps=self.steps,
      strength=request.strength,
      detail=request.detail,
      back_projection=rendered.back_projection,
      seed=request.seed,
      tiles=rendered.tiles,
      tile_size=(rendered.tile[1], rendered.tile[0]),
      seconds=seconds,
    )

  @staticmethod
  def _keep_metadata(result: Image.Image, photo, out_wh):
    """The photo's ICC profile and EXIF (its size updated) in `result.info`, for image.save to write."""
    if photo.icc_profile:
      result.info['icc_profile'] = photo.icc_profile
    exif = save.output_exif(photo.exif, out_wh)
    if exif:
      result.info['exif'] = exif


def enhance(
  image,
  *,
  crop=None,
  scale: float | None = None,
  size=None,
  bundle=None,
  accelerator: str = 'auto',
  quant: str | None = None,
  delegate: str | None = None,
  strength: float = 1.0,
  detail: float | None = None,
  steps: int | None = None,
  seed: int = 0,
  threads: int | None = None,
) -> Image.Image:
  """Enhances one photo: zoom_enhance.enhance('photo.jpg', crop=(100, 80, 320, 180), size=(2048, 1152)).

  Returns a PIL image; `image.info['zoom_enhance']` is the Report (accelerator,
  variant, tiles, seconds, ...), and info's 'icc_profile' and 'exif' are kept
  by `image.save(...)`. For many photos, reuse an `Enhancer`.
  """
  with Enhancer(
    bundle, accelerator=accelerator, quant=quant, delegate=delegate, threads=threads, steps=steps
  ) as enhancer:
    return enhancer.enhance(
      image, crop=crop, scale=scale, size=size, strength=strength, detail=detail, seed=seed
    )
