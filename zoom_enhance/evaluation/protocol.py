"""The evaluation protocol: ground-truth photos, their LR inputs, and the one scoring loop.

LR inputs are made from each ground-truth photo by a bicubic (antialiased)
downscale, or by the realistic degradation (blur, noise, JPEG) or the
second-order one (Real-ESRGAN's chain, twice) with a seed per photo, or
read from a folder of real LR images paired with the photos by file name.
A method maps (lr_uint8, out_hw) -> a uint8 image, or reads results made
elsewhere; `score` runs methods over photos, times them and
scores them with a metrics.Scorer. It is what `zoom-enhance eval` and
distillation's round reports both run.
"""

import dataclasses
import logging
import os
import re
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

DEGRADATIONS = ('bicubic', 'realistic', 'second_order')
# The degradation recorded when real LR images are given.
PAIRED = 'paired'
# Where two folders' file names differ, a trailing tag like these is dropped: 0801x4, a_x1, b_LR4, c_out.
NAME_TAG = re.compile(r'([_-](lr|hr|sr|out)\d*|[_-]?x\d+(\.\d+)?)$', re.IGNORECASE)
# Metrics whose median over the photos is reported too, as KEY_median.
MEDIANS = ('lattice',)
TIMES = ('sec_per_mp', 'cpu_sec_per_mp')


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


def image_paths(spec: str, what: str = 'evaluation photos') -> list[str]:
  """The image files in 'folder:PATH' (or PATH, recursively), sorted by path; ConfigError if none."""
  folder = os.path.expanduser(spec[len('folder:') :] if spec.startswith('folder:') else spec)
  if not os.path.isdir(folder):
    raise errors.ConfigError(f'{spec}: no such folder of {what}')
  paths = files.list_images(folder)
  if not paths:
    raise errors.ConfigError(f'{spec}: no images to evaluate on')
  return paths


def load_hr_images(spec: str, max_images: int = 0) -> list[tuple[str, np.ndarray]]:
  """(name, uint8 RGB) of the photos in 'folder:PATH' (or PATH), sorted by path."""
  paths = image_paths(spec)
  return [(os.path.basename(p), photo.load_rgb(p)) for p in paths[: max_images or None]]


def _name_key(path: str) -> str:
  return NAME_TAG.sub('', os.path.splitext(os.path.basename(path))[0])


def match_files(names, spec: str, flag: str) -> dict:
  """{name: path}: for each photo name, the image in folder `spec` of the same stem, else of the same stem
  once a trailing tag (NAME_TAG: _x4, x4, _LR4, _out...) is dropped from both; ConfigError naming the
  first photo with none or with two."""
  paths = image_paths(spec, 'images')
  by_stem, by_key = {}, {}
  for p in paths:
    by_stem.setdefault(os.path.splitext(os.path.basename(p))[0], []).append(p)
    by_key.setdefault(_name_key(p), []).append(p)
  found = {}
  for name in names:
    candidates = by_stem.get(os.path.splitext(name)[0]) or by_key.get(_name_key(name), [])
    if len(candidates) != 1:
      what = 'no image' if not candidates else f'{len(candidates)} images'
      raise errors.ConfigError(f'{name}: {what} of the same name in {flag} {spec}')
    if candidates[0] in found.values():
      raise errors.ConfigError(f'{name}: its image in {flag} {spec} is also that of another photo')
    found[name] = candidates[0]
  return found


def fit_pair(hr: np.ndarray, lr: np.ndarray, scale: float, name: str) -> tuple[np.ndarray, np.ndarray]:
  """(hr, lr) of a real pair, the HR cropped to round(LR side * scale); it may exceed that by < `scale`."""
  want = [round(side * scale) for side in lr.shape[:2]]
  if not all(w <= side < w + scale for w, side in zip(want, hr.shape[:2])):
    raise errors.ConfigError(
      f'{name}: the HR is {hr.shape[1]}x{hr.shape[0]}, not x{scale:g} the LR {lr.shape[1]}x{lr.shape[0]} '
      f"({want[1]}x{want[0]}); give the pairs' factor as --scale"
    )
  return hr[: want[0], : want[1]], lr


def load_paired(lr_spec: str, hr_spec: str, scale: float, max_images: int = 0) -> dict:
  """{name: (hr, lr)} of real pairs: each photo of `hr_spec` and the image of `lr_spec` of the same name
  (match_files), the HR cropped by fit_pair. An LR image without its photo, or a photo without its LR, is
  a ConfigError; `max_images` keeps the first photos by path."""
  hr_paths = image_paths(hr_spec)
  names = [os.path.basename(p) for p in hr_paths]
  if len(set(names)) < len(names):
    raise errors.ConfigError(f'{hr_spec}: two photos have the same file name; rename one')
  lr_for = match_files(names, lr_spec, '--lr-dir')
  orphans = sorted(set(image_paths(lr_spec)) - set(lr_for.values()))
  if orphans:
    raise errors.ConfigError(
      f'{os.path.basename(orphans[0])}: no photo of the same name in --hr-dir {hr_spec} (from --lr-dir)'
    )
  return {
    name: fit_pair(photo.load_rgb(p), photo.load_rgb(lr_for[name]), scale, name)
    for name, p in list(zip(names, hr_paths))[: max_images or None]
  }


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
  REALISTIC, its draws from `seed` alone; 'second_order' is Real-ESRGAN's
  chain (`degrade.second_order`, the training data's ranges), likewise seeded.
  """
  check_degradation(degradation)
  lh, lw = int(hr.shape[0] // scale), int(hr.shape[1] // scale)
  if lh < 1 or lw < 1:
    raise errors.ConfigError(f'a {hr.shape[1]}x{hr.shape[0]} photo is too small for x{scale:g}')
  hr = hr[: round(lh * scale), : round(lw * scale)]
  if degradation == 'second_order':
    return hr, degrade.second_order(hr, (lh, lw), np.random.default_rng(seed))
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
  run: Callable | None
  info: dict = dataclasses.field(default_factory=dict)
  close: Callable = lambda: None
  # The first call on each input shape compiles (a JAX sampler): it runs once untimed.
  compiles: bool = False
  # Results made elsewhere, {photo name: path}: read instead of run, and not timed.
  outputs: dict | None = None


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


def folder_method(spec: str, name: str, pairs: dict) -> Method:
  """The results in folder `spec` as a method: one image per photo of `pairs`, matched by name
  (match_files), each of its photo's (cropped) size; read, not run."""
  outputs = match_files(list(pairs), spec, '--results-dir')
  for photo_name, path in outputs.items():
    hr = pairs[photo_name][0]
    size = photo.upright_size(path)
    if size is not None and size != (hr.shape[1], hr.shape[0]):
      raise errors.ConfigError(
        f'{os.path.basename(path)} in --results-dir: {size[0]}x{size[1]}, but the photo '
        f'{photo_name} is {hr.shape[1]}x{hr.shape[0]} (cropped to x scale its LR)'
      )
  info = {'results_dir': os.path.abspath(os.path.expanduser(spec)), 'files': len(outputs)}
  return Method(name, None, info, outputs=outputs)


def timed(run, lr: np.ndarray, out_hw) -> tuple[np.ndarray, float, float]:
  """(output, wall seconds, CPU seconds of this process, all threads)."""
  t0, c0 = time.perf_counter(), time.process_time()
  out = run(lr, out_hw)
  return out, time.perf_counter() - t0, time.process_time() - c0


def _eta(seconds: float) -> str:
  return f'{seconds / 60:.1f} min' if seconds >= 90 else f'{seconds:.0f} s'


def _output(m: Method, name: str, lr: np.ndarray, out_hw, compiled: set):
  """(output, wall seconds, CPU seconds) of one method on one photo; no times for results read from files."""
  if m.outputs is not None:
    return photo.load_rgb(m.outputs[name]), None, None
  if m.compiles and lr.shape not in compiled:
    compiled.add(lr.shape)
    m.run(lr, out_hw)
  return timed(m.run, lr, out_hw)


def _means(rows: list, totals, megapixels: float) -> dict:
  """The metrics averaged over the photos (and the median of MEDIANS), times as total seconds per total MP."""
  keys = [k for k in rows[0] if k not in TIMES]
  means = {k: float(np.mean([r[k] for r in rows])) for k in keys}
  means.update({f'{k}_median': float(np.median([r[k] for r in rows])) for k in MEDIANS if k in means})
  for key, seconds in zip(TIMES, totals):
    means[key] = None if seconds is None else seconds / megapixels
  return means


def _log_photo(i: int, count: int, name: str, row: dict, elapsed: float) -> None:
  psnrs = ', '.join(f'{m} {r["psnr_y"]:.2f}' for m, r in row.items() if isinstance(r, dict))
  left = elapsed / (i + 1) * (count - i - 1)
  logger.info(
    '[%d/%d] %s: PSNR-Y %s; %.1f s/photo, ETA %s', i + 1, count, name, psnrs, elapsed / (i + 1), _eta(left)
  )


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
  of the call per output megapixel; None for results read from files).
  means[method] averages the metrics over the photos (lattice also as
  lattice_median), with times as total seconds over total megapixels. When
  the scorer has a lattice_period, it gets each photo's bicubic enlargement
  of its LR. With `reference` ({name: image}, e.g. a full-step teacher's
  outputs) each row also scores fidelity to it: psnr_y_vs_ref (and
  lpips_vs_ref). on_photo(index, name, hr, lr, {method: output}) sees every
  photo's outputs.
  """
  per_image, rows = {}, {m.name: [] for m in methods}
  totals = {m.name: [None, None] if m.outputs is not None else [0.0, 0.0] for m in methods}
  compiled = {m.name: set() for m in methods}
  megapixels, t_start = 0.0, time.perf_counter()
  for i, (name, (hr, lr)) in enumerate(pairs.items()):
    mp = hr.shape[0] * hr.shape[1] / 1e6
    megapixels += mp
    extra = {'bicubic': bicubic(lr, hr.shape[:2])} if getattr(scorer, 'lattice_period', None) else {}
    outputs = {}
    per_image[name] = {'hr_size': [hr.shape[1], hr.shape[0]], 'lr_size': [lr.shape[1], lr.shape[0]]}
    for m in methods:
      sr, sec, cpu = _output(m, name, lr, hr.shape[:2], compiled[m.name])
      if sr.shape != hr.shape:
        raise errors.ZoomEnhanceError(f'{m.name} made a {sr.shape} image for {name}, expected {hr.shape}')
      row = dict(scorer(sr, hr, scale, **extra), sec_per_mp=None, cpu_sec_per_mp=None)
      if sec is not None:
        totals[m.name] = [totals[m.name][0] + sec, totals[m.name][1] + cpu]
        row.update(sec_per_mp=sec / mp, cpu_sec_per_mp=cpu / mp)
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
      _log_photo(i, len(pairs), name, per_image[name], time.perf_counter() - t_start)
  return per_image, {m.name: _means(rows[m.name], totals[m.name], megapixels) for m in methods}
