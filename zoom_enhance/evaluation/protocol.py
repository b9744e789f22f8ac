"""The evaluation protocol: ground-truth photos, how their LR inputs are made, and the one scoring loop.

LR inputs are made from each ground-truth photo by a bicubic (antialiased)
downscale, or by the realistic degradation (blur, noise, JPEG) with a seed
per photo. A method maps (lr_uint8, out_hw) -> a uint8 image; `score` runs
methods over photos, times them and scores them with a metrics.Scorer. It is
what `zoom-enhance eval` and distillation's round reports both run.
"""

import dataclasses
import logging
import os
import time
import zlib
from typing import Callable

import numpy as np
from PIL import Image

from zoom_enhance import errors
from zoom_enhance.data import degrade
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo
from zoom_enhance.imaging import resample

logger = logging.getLogger('zoom_enhance.eval')

DEGRADATIONS = ('bicubic', 'realistic')


@dataclasses.dataclass(frozen=True)
class RealisticDegradation:
  """The fields `degrade.degrade` reads: the ranges of the training configs' `data` section."""

  blur_sigma_max: float = 1.5
  noise_sigma_max: float = 8.0
  jpeg_quality_min: int = 40
  jpeg_quality_max: int = 95


# Fixed here rather than read from a config: a benchmark must not move when
# a training config does.
REALISTIC = RealisticDegradation()


def load_hr_images(spec: str, max_images: int = 0) -> list[tuple[str, np.ndarray]]:
  """(name, uint8 RGB) of the photos in 'folder:PATH' (or PATH), sorted by path."""
  folder = os.path.expanduser(spec[len('folder:') :] if spec.startswith('folder:') else spec)
  if not os.path.isdir(folder):
    raise errors.ConfigError(f'{spec}: no such folder of evaluation photos')
  paths = files.list_images(folder)
  if max_images > 0:
    paths = paths[:max_images]
  if not paths:
    raise errors.ConfigError(f'{spec}: no images to evaluate on')
  return [(os.path.basename(p), photo.load_rgb(p)) for p in paths]


def image_seed(name: str) -> int:
  """The realistic degradation's seed for a photo: CRC-32 of its file name.

  So a photo's LR does not depend on which other photos are in the run or on their order.
  """
  return zlib.crc32(name.encode('utf-8'))


def check_degradation(degradation: str) -> str:
  if degradation not in DEGRADATIONS:
    raise errors.ConfigError(f'degradation {degradation!r}: choose one of {", ".join(DEGRADATIONS)}')
  return degradation


def make_pair(
  hr: np.ndarray, scale: float, degradation: str = 'bicubic', seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """(hr_cropped, lr): LR is floor(side / scale); HR is cropped to round(lr_side * scale).

  For an integer scale this is the usual 'modcrop'. 'bicubic' is the plain
  antialiased downscale; 'realistic' is `degrade.degrade` with the ranges of
  REALISTIC, its draws from `seed` alone.
  """
  check_degradation(degradation)
  lh, lw = int(hr.shape[0] // scale), int(hr.shape[1] // scale)
  if lh < 1 or lw < 1:
    raise errors.ConfigError(f'a {hr.shape[1]}x{hr.shape[0]} photo is too small for x{scale:g}')
  hr = hr[: round(lh * scale), : round(lw * scale)]
  lr = degrade.degrade(
    hr, (lh, lw), np.random.default_rng(seed), REALISTIC, realistic=degradation == 'realistic'
  )
  return hr, lr


def make_pairs(photos, scale: float, degradation: str = 'bicubic') -> dict:
  """{name: (hr, lr)}, all made before anything runs, so that a photo too small fails at once."""
  pairs = {}
  for name, hr in photos:
    if name in pairs:
      raise errors.ConfigError(f'two photos are named {name}; rename one (results are keyed by file name)')
    try:
      pairs[name] = make_pair(hr, scale, degradation, image_seed(name))
    except errors.ConfigError as e:
      raise errors.ConfigError(f'{name}: {e}') from None
  return pairs


@dataclasses.dataclass
class Method:
  """An upscaler under test: run(lr_uint8, out_hw) -> uint8 image of out_hw."""

  name: str
  run: Callable
  info: dict = dataclasses.field(default_factory=dict)
  close: Callable = lambda: None
  # The first call on each input shape compiles (a JAX sampler): it runs once untimed.
  compiles: bool = False


def bicubic(lr: np.ndarray, out_hw) -> np.ndarray:
  """The bicubic enlargement (the model's lr_up, as pixels)."""
  return resample.bicubic_uint8(lr, out_hw)


def lanczos(lr: np.ndarray, out_hw) -> np.ndarray:
  """Pillow's Lanczos (a = 3) on 8-bit RGB: what photo editors and viewers use."""
  return np.asarray(Image.fromarray(lr).resize((out_hw[1], out_hw[0]), Image.Resampling.LANCZOS))


def bicubic_method() -> Method:
  return Method('bicubic', bicubic, {'resampler': 'Pillow BICUBIC, float32'})


def lanczos_method() -> Method:
  return Method('lanczos', lanczos, {'resampler': 'Pillow LANCZOS, 8-bit'})


def timed(run, lr: np.ndarray, out_hw) -> tuple[np.ndarray, float, float]:
  """(output, wall seconds, CPU seconds of this process, all threads)."""
  t0, c0 = time.perf_counter(), time.process_time()
  out = run(lr, out_hw)
  return out, time.perf_counter() - t0, time.process_time() - c0


def _eta(seconds: float) -> str:
  return f'{seconds / 60:.1f} min' if seconds >= 90 else f'{seconds:.0f} s'


def score(
  methods,
  pairs: dict,
  scale: float,
  scorer,
  *,
  reference: dict | None = None,
  on_photo: Callable | None = None,
  log_progress: bool = True,
) -> tuple[dict, dict]:
  """Runs every method on every photo and scores it: (per_image, means).

  per_image[name] holds the photo's HR and LR sizes and a row per method:
  the scorer's metrics, sec_per_mp and cpu_sec_per_mp (wall and CPU seconds
  of the call per output megapixel). means[method] averages the metrics over
  the photos, with times as total seconds over total megapixels. With
  `reference` ({name: image}, e.g. a full-step teacher's outputs) each row
  also scores fidelity to it: psnr_y_vs_ref (and lpips_vs_ref).
  on_photo(index, name, hr, lr, {method: output}) sees every photo's outputs.
  """
  per_image, rows = {}, {m.name: [] for m in methods}
  totals = {m.name: [0.0, 0.0] for m in methods}  # wall, CPU seconds
  shapes = {m.name: set() for m in methods}
  megapixels, t_start = 0.0, time.perf_counter()
  for i, (name, (hr, lr)) in enumerate(pairs.items()):
    mp = hr.shape[0] * hr.shape[1] / 1e6
    megapixels += mp
    outputs = {}
    per_image[name] = {'hr_size': [hr.shape[1], hr.shape[0]], 'lr_size': [lr.shape[1], lr.shape[0]]}
    for m in methods:
      if m.compiles and lr.shape not in shapes[m.name]:
        shapes[m.name].add(lr.shape)
        m.run(lr, hr.shape[:2])
      sr, sec, cpu = timed(m.run, lr, hr.shape[:2])
      if sr.shape != hr.shape:
        raise errors.ZoomEnhanceError(f'{m.name} made a {sr.shape} image for {name}, expected {hr.shape}')
      totals[m.name][0] += sec
      totals[m.name][1] += cpu
      row = dict(scorer(sr, hr, scale), sec_per_mp=sec / mp, cpu_sec_per_mp=cpu / mp)
      if reference is not None:
        ref = scorer(sr, reference[name], scale)
        row['psnr_y_vs_ref'] = ref['psnr_y']
        if 'lpips' in ref:
          row['lpips_vs_ref'] = ref['lpips']
      rows[m.name].append(row)
      per_image[name][m.name] = row
      outputs[m.name] = sr
    if on_photo is not None:
      on_photo(i, name, hr, lr, outputs)
    if log_progress:
      elapsed = time.perf_counter() - t_start
      left = elapsed / (i + 1) * (len(pairs) - i - 1)
      psnrs = ', '.join(f'{m.name} {per_image[name][m.name]["psnr_y"]:.2f}' for m in methods)
      logger.info(
        '[%d/%d] %s: PSNR-Y %s; %.1f s/photo, ETA %s',
        i + 1,
        len(pairs),
        name,
        psnrs,
        elapsed / (i + 1),
        _eta(left),
      )
  means = {}
  for m in methods:
    keys = [k for k in rows[m.name][0] if k not in ('sec_per_mp', 'cpu_sec_per_mp')]
    means[m.name] = {k: float(np.mean([r[k] for r in rows[m.name]])) for k in keys}
    means[m.name]['sec_per_mp'] = totals[m.name][0] / megapixels
    means[m.name]['cpu_sec_per_mp'] = totals[m.name][1] / megapixels
  return per_image, means
