"""How a low-resolution photo is made from a high-resolution one: bicubic, or blur, noise and JPEG.

Every function is pure; randomness comes from the `np.random.Generator`
passed in. The bicubic resampler is imaging.resample's, shared with the
runtime. `second_order` is Real-ESRGAN's chain (Wang et al. 2021) in numpy,
Pillow and scipy (the `train` and `eval` extras bring it with scikit-image).
"""

import dataclasses
import io
import math

import numpy as np
from PIL import Image
from PIL import ImageFilter
from scipy import fft
from scipy import special

from zoom_enhance.imaging import resample

# Realistic noise is the same on all channels (luminance-like sensor noise)
# this often; otherwise independent per channel (colour noise).
GRAY_NOISE_PROB = 0.4
# Smallest blur sigma drawn, in HR pixels.
BLUR_SIGMA_MIN = 0.2


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur of a uint8 RGB image (Pillow's extended-box approximation)."""
  return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))


def _add_noise(img: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool):
  """img + N(0, sigma^2) in 8-bit levels, shared by all channels if `gray`."""
  shape = img.shape[:2] + (1,) if gray else img.shape
  noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
  return resample.to_uint8(img.astype(np.float32) + noise)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
  """Encodes and decodes with libjpeg in memory: blocking, ringing, chroma loss."""
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format='JPEG', quality=int(quality))
  buf.seek(0)
  with Image.open(buf) as im:
    return np.asarray(im.convert('RGB'))


def degrade(hr_uint8: np.ndarray, lr_hw, rng: np.random.Generator, data_cfg, realistic: bool) -> np.ndarray:
  """Makes the LR photo: lr = JPEG_q(down(blur_s(hr)) + n), or just down(hr).

  down is the bicubic resize (antialiased) to `lr_hw`. With `realistic`: blur_s is a Gaussian
  blur with s ~ U[0.2, blur_sigma_max] (in HR pixels, as an out-of-focus or
  shaken camera), n ~ N(0, t^2) with t ~ U[0, noise_sigma_max] 8-bit levels
  (grey noise with probability 0.4, else per channel), and JPEG_q a re-encode
  at quality q ~ U{jpeg_quality_min..jpeg_quality_max}. Returns uint8; the
  draws depend only on `rng`, so a given rng state gives the same LR.
  """
  img = np.asarray(hr_uint8)
  if not realistic:
    return resample.bicubic_uint8(img, lr_hw)
  # All draws happen up front and always, so the stream does not depend on
  # which degradations the config switches off.
  sigma_blur = rng.uniform(BLUR_SIGMA_MIN, max(BLUR_SIGMA_MIN, data_cfg.blur_sigma_max))
  sigma_noise = rng.uniform(0.0, data_cfg.noise_sigma_max)
  gray = rng.random() < GRAY_NOISE_PROB
  quality = rng.integers(data_cfg.jpeg_quality_min, data_cfg.jpeg_quality_max + 1)
  if data_cfg.blur_sigma_max > 0:
    img = _blur(img, sigma_blur)
  lr = resample.bicubic_uint8(img, lr_hw)
  if sigma_noise > 0:
    lr = _add_noise(lr, rng, sigma_noise, gray)
  return _jpeg(lr, quality)


# --- The second-order chain (Real-ESRGAN) -------------------------------------

# Blur kernel families, drawn with SecondOrderDegradation.kernel_probs.
KERNELS = ('iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso')
# The random resizes' filters, equally likely: area, bilinear, bicubic (Pillow, antialiased).
RESIZE_FILTERS = (Image.Resampling.BOX, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)
# BT.601 luma weights: the level of grey shot noise.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# The scale Real-ESRGAN's first-pass ranges are for (its pairs are x4); see `second_order`.
REFERENCE_SCALE = 4.0


@dataclasses.dataclass(frozen=True)
class DegradationPass:
  """The ranges of one pass (blur, random resize, noise, JPEG); lengths in pixels of the image it degrades."""

  # Share of images blurred at all.
  blur_prob: float
  # Kernel radius range, in pixels (odd sizes 2r + 1).
  kernel_radius: tuple[int, int]
  # Gaussian-family kernel sigmas (each axis of an anisotropic one), in pixels.
  blur_sigma: tuple[float, float]
  # Share of blurs that are a sinc (ringing) kernel instead.
  sinc_prob: float
  # The sinc's cutoff frequency range, in radians per pixel (pi: none).
  sinc_cutoff: tuple[float, float]
  # Chances of resizing up, down or keeping the size.
  resize_probs: tuple[float, float, float]
  # Smallest and largest resize factor, of the pass's base size.
  resize_range: tuple[float, float]
  # Share of noise that is Gaussian; Poisson (shot noise) otherwise.
  gaussian_noise_prob: float
  # Gaussian noise sigma range, in 8-bit levels.
  noise_sigma: tuple[float, float]
  # Poisson noise range: its sigma is scale * sqrt(level), in 8-bit levels.
  poisson_scale: tuple[float, float]
  # Share of noise that is the same on all channels (luminance noise).
  gray_noise_prob: float
  # JPEG quality range (the second pass's JPEG is the final one).
  jpeg_quality: tuple[int, int]


# Real-ESRGAN's first pass (train_realesrgan_x4plus.yml), milder where a phone photo is.
FIRST_PASS = DegradationPass(
  blur_prob=1.0,
  kernel_radius=(3, 10),
  blur_sigma=(0.2, 2.0),  # Real-ESRGAN: 0.2-3
  sinc_prob=0.1,
  sinc_cutoff=(math.pi / 3, math.pi),  # Real-ESRGAN: down to pi/5 for kernels of 13 px and more
  resize_probs=(0.2, 0.7, 0.1),
  resize_range=(0.2, 1.5),  # Real-ESRGAN: 0.15-1.5
  gaussian_noise_prob=0.5,
  noise_sigma=(1.0, 20.0),  # Real-ESRGAN: 1-30
  poisson_scale=(0.05, 2.0),  # Real-ESRGAN: 0.05-3
  gray_noise_prob=0.4,
  jpeg_quality=(60, 95),  # Real-ESRGAN: 30-95
)
# Its second pass, at about the LR size.
SECOND_PASS = DegradationPass(
  blur_prob=0.8,
  kernel_radius=(3, 10),
  blur_sigma=(0.2, 1.0),  # Real-ESRGAN: 0.2-1.5
  sinc_prob=0.1,
  sinc_cutoff=(math.pi / 2, math.pi),  # Real-ESRGAN: pi/3 (pi/5)-pi
  resize_probs=(0.3, 0.4, 0.3),
  resize_range=(0.6, 1.2),  # Real-ESRGAN: 0.3-1.2
  gaussian_noise_prob=0.5,
  noise_sigma=(1.0, 8.0),  # Real-ESRGAN: 1-25
  poisson_scale=(0.05, 0.8),  # Real-ESRGAN: 0.05-2.5
  gray_noise_prob=0.4,
  jpeg_quality=(50, 95),  # Real-ESRGAN: 30-95
)


@dataclasses.dataclass(frozen=True)
class SecondOrderDegradation:
  """The ranges of `second_order`: its two passes, the kernels' shapes and the final sinc."""

  # The first pass, on the HR image; lengths in HR pixels of an x4 pair (see `second_order`).
  first: DegradationPass = FIRST_PASS
  # The second pass, resizing relative to the LR size; lengths in its own pixels.
  second: DegradationPass = SECOND_PASS
  # Chances of each of KERNELS.
  kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
  # Shape range of generalized Gaussian kernels (1: Gaussian, below: heavy tails, above: flat top).
  generalized_beta: tuple[float, float] = (0.5, 4.0)
  # Shape range of plateau kernels 1 / (1 + q^beta).
  plateau_beta: tuple[float, float] = (1.0, 2.0)
  # Share of LR images given a last sinc (ringing, as from over-sharpening); Real-ESRGAN: 0.8.
  final_sinc_prob: float = 0.5
  # Its cutoff range, in radians per LR pixel; Real-ESRGAN: pi/3-pi.
  final_sinc_cutoff: tuple[float, float] = (math.pi / 2, math.pi)


SECOND_ORDER = SecondOrderDegradation()


def _quadratic_form(radius: int, sx: float, sy: float, theta: float) -> np.ndarray:
  """x^T S^-1 x over the (2r + 1)^2 grid, S the covariance of sigmas (sx, sy) rotated by theta."""
  y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float32)
  u = x * math.cos(theta) + y * math.sin(theta)
  v = y * math.cos(theta) - x * math.sin(theta)
  return (u / sx) ** 2 + (v / sy) ** 2


def _beta(rng: np.random.Generator, lo_hi) -> float:
  """A shape exponent: U[lo, 1] or U[1, hi], each half the time (as Real-ESRGAN draws them)."""
  return rng.uniform(lo_hi[0], 1.0) if rng.random() < 0.5 else rng.uniform(1.0, lo_hi[1])


def _shaped_kernel(rng, radius: int, p: DegradationPass, kind: str, s: SecondOrderDegradation) -> np.ndarray:
  """A normalised Gaussian, generalized Gaussian exp(-q^b / 2) or plateau 1 / (1 + q^b) kernel."""
  sx = rng.uniform(*p.blur_sigma)
  sy, theta = (rng.uniform(*p.blur_sigma), rng.uniform(-math.pi, math.pi)) if 'aniso' in kind else (sx, 0.0)
  q = _quadratic_form(radius, sx, sy, theta)
  if kind.startswith('plateau'):
    k = 1.0 / (q ** _beta(rng, s.plateau_beta) + 1.0)
  else:
    k = np.exp(-0.5 * q ** (_beta(rng, s.generalized_beta) if kind.startswith('generalized') else 1.0))
  return k / k.sum()


def _sinc_kernel(radius: int, cutoff: float) -> np.ndarray:
  """The ideal circular low-pass of `cutoff` radians per pixel, cut to (2r + 1)^2 and normalised."""
  y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
  r = np.hypot(x, y).astype(np.float32)
  k = cutoff * special.j1(cutoff * r) / (2 * math.pi * np.maximum(r, 1e-6))
  k[radius, radius] = cutoff**2 / (4 * math.pi)
  return k / k.sum()


def _random_kernel(rng, p: DegradationPass, s: SecondOrderDegradation) -> np.ndarray:
  """A blur kernel of the pass: a sinc with chance p.sinc_prob, else one of KERNELS."""
  radius = int(rng.integers(p.kernel_radius[0], p.kernel_radius[1] + 1))
  if rng.random() < p.sinc_prob:
    return _sinc_kernel(radius, rng.uniform(*p.sinc_cutoff))
  return _shaped_kernel(rng, radius, p, KERNELS[rng.choice(len(KERNELS), p=s.kernel_probs)], s)


def _filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """img convolved with `kernel` (edges mirrored), rounded to uint8.

  An FFT product of the mirror-padded image, channels first: outputs from 2r
  on never wrap around, and are the image's pixels.
  """
  r = kernel.shape[0] // 2
  x = np.pad(img.astype(np.float32), ((r, r), (r, r), (0, 0)), mode='reflect').transpose(2, 0, 1)
  shape = [fft.next_fast_len(n, real=True) for n in x.shape[1:]]
  out = fft.irfft2(fft.rfft2(x, shape) * fft.rfft2(kernel.astype(np.float32), shape), shape)
  out = out[:, 2 * r : x.shape[1], 2 * r : x.shape[2]].transpose(1, 2, 0)
  return np.ascontiguousarray(resample.to_uint8(out))


def _resize(img: np.ndarray, size_hw, rng: np.random.Generator) -> np.ndarray:
  """img resized to `size_hw` by one of RESIZE_FILTERS, drawn."""
  filt = RESIZE_FILTERS[int(rng.integers(len(RESIZE_FILTERS)))]
  return np.asarray(Image.fromarray(img).resize((int(size_hw[1]), int(size_hw[0])), filt))


def _random_size(rng, p: DegradationPass, base_hw) -> tuple[int, int]:
  """base_hw times a factor: up to resize_range[1], down to resize_range[0] or 1, as resize_probs say."""
  way = rng.choice(3, p=p.resize_probs)
  lo, hi = ((1.0, p.resize_range[1]), (p.resize_range[0], 1.0), (1.0, 1.0))[way]
  f = rng.uniform(lo, hi)
  return max(1, round(base_hw[0] * f)), max(1, round(base_hw[1] * f))


def _shot_noise(img: np.ndarray, rng: np.random.Generator, scale: float, gray: bool) -> np.ndarray:
  """img + scale * sqrt(level) * N(0, 1): Poisson noise of the level (the luma's for all channels if `gray`).

  Poisson(l) - l is drawn as its normal approximation, sqrt(l) N(0, 1): the
  same variance in a third of the time of numpy's Poisson sampler; only the
  skew of the darkest levels differs.
  """
  x = img.astype(np.float32)
  level = x @ LUMA[:, None] if gray else x
  noise = rng.standard_normal(level.shape, dtype=np.float32) * np.sqrt(level) * np.float32(scale)
  return resample.to_uint8(x + noise)


def _noise(img: np.ndarray, rng: np.random.Generator, p: DegradationPass) -> np.ndarray:
  """Gaussian noise with chance p.gaussian_noise_prob, else Poisson; grey with chance p.gray_noise_prob."""
  gaussian, gray = rng.random() < p.gaussian_noise_prob, rng.random() < p.gray_noise_prob
  if gaussian:
    return _add_noise(img, rng, rng.uniform(*p.noise_sigma), gray)
  return _shot_noise(img, rng, rng.uniform(*p.poisson_scale), gray)


def _quality(rng: np.random.Generator, p: DegradationPass) -> int:
  return int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1))


def _one_pass(img, rng, p: DegradationPass, s: SecondOrderDegradation, base_hw) -> np.ndarray:
  """Blur (with chance p.blur_prob), resize to base_hw times a random factor, add noise."""
  if rng.random() < p.blur_prob:
    img = _filter(img, _random_kernel(rng, p, s))
  return _noise(_resize(img, _random_size(rng, p, base_hw), rng), rng, p)


def _final(img, rng, s: SecondOrderDegradation, lr_hw) -> np.ndarray:
  """The last JPEG and the resize to lr_hw with its sinc, in either order (each half the time)."""
  quality = _quality(rng, s.second)
  radius = int(rng.integers(s.second.kernel_radius[0], s.second.kernel_radius[1] + 1))
  sinc = _sinc_kernel(radius, rng.uniform(*s.final_sinc_cutoff)) if rng.random() < s.final_sinc_prob else None

  def to_lr(x):
    x = _resize(x, lr_hw, rng)
    return x if sinc is None else _filter(x, sinc)

  return _jpeg(to_lr(img), quality) if rng.random() < 0.5 else to_lr(_jpeg(img, quality))


def _at_scale(p: DegradationPass, px: float) -> DegradationPass:
  """The first pass's ranges for an HR image with px times an x4 pair's HR pixels per LR pixel."""
  return dataclasses.replace(
    p,
    kernel_radius=tuple(max(1, round(r * px)) for r in p.kernel_radius),
    blur_sigma=tuple(x * px for x in p.blur_sigma),
    sinc_cutoff=tuple(min(math.pi, c / px) for c in p.sinc_cutoff),
    resize_range=(min(1.0, p.resize_range[0] / px), p.resize_range[1]),
    noise_sigma=tuple(x * px for x in p.noise_sigma),
    poisson_scale=tuple(x * px for x in p.poisson_scale),
  )


def second_order(
  hr_uint8: np.ndarray, lr_hw, rng: np.random.Generator, settings: SecondOrderDegradation = SECOND_ORDER
) -> np.ndarray:
  """Real-ESRGAN's second-order degradation: [blur, resize, noise, JPEG], again, then the final steps.

  Pass 1 blurs the HR image with a random kernel (isotropic or anisotropic
  Gaussian, generalized Gaussian, plateau, or sinc), resizes it (up, down or
  not; area, bilinear or bicubic), adds Gaussian or Poisson noise (colour or
  grey) and JPEG-compresses it. Pass 2 does the same with milder ranges around
  the LR size, and the last steps are [resize to `lr_hw` and a sinc with chance
  final_sinc_prob, JPEG] in random order. Real-ESRGAN's pairs are x4: so that
  an LR looks the same at every zoom (as a phone photo does, whatever the
  crop), pass 1's lengths and noise scale with scale / 4 and its smallest
  resize keeps the same share of the LR size. Returns uint8 of `lr_hw`; the
  draws depend only on `rng`.
  """
  img = np.asarray(hr_uint8)
  px = math.sqrt(img.shape[0] * img.shape[1] / (lr_hw[0] * lr_hw[1])) / REFERENCE_SCALE
  first = _at_scale(settings.first, px)
  img = _jpeg(_one_pass(img, rng, first, settings, img.shape[:2]), _quality(rng, first))
  img = _one_pass(img, rng, settings.second, settings, lr_hw)
  return _final(img, rng, settings, lr_hw)
