"""How a low-resolution photo is made from a high-resolution one: bicubic, or blur, noise and JPEG.

Every function is pure; randomness comes from the `np.random.Generator`
passed in. The resampler itself is imaging.resample's, shared with the
runtime.
"""

import io

import numpy as np
from PIL import Image
from PIL import ImageFilter

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
