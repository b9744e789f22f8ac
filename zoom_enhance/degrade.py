"""How a low-resolution photo is made from a high-resolution one, and the shared resampler.

numpy and Pillow only: the on-device runtime builds its conditioning with the
same `bicubic_resize`, so it must not import JAX or TensorFlow. Every function
is pure; randomness comes from the `np.random.Generator` passed in.
"""

import io

import numpy as np
from PIL import Image
from PIL import ImageFilter

# Realistic noise is the same on all channels (luminance-like sensor noise)
# this often; otherwise independent per channel (colour noise).
GRAY_NOISE_PROB = 0.4
# Smallest blur sigma drawn, in HR pixels.
BLUR_SIGMA_MIN = 0.2


def lr_size_for(hr_size: int, scale: float) -> int:
  """lr = max(1, round(hr / scale)); the effective scale is then hr / lr."""
  return max(1, int(round(hr_size / scale)))


def bicubic_resize(img: np.ndarray, size_hw) -> np.ndarray:
  """Bicubic resampling of an (H, W, C) image to `size_hw`, as float32.

  Each channel is resized by Pillow in mode 'F' (32-bit float, so no rounding
  to 8 bits in between) with the BICUBIC filter (a = -0.5). When shrinking,
  Pillow widens the kernel by the scale factor, which is the antialiasing of
  MATLAB's imresize. Values stay in the input's range (0..255) up to the small
  overshoot of the cubic kernel near edges; callers clip. Deterministic: the
  training pipeline and the runtime must build identical conditioning.
  """
  h, w = int(size_hw[0]), int(size_hw[1])
  if h < 1 or w < 1:
    raise ValueError(f'bicubic_resize to an empty size {size_hw}')
  img = np.asarray(img)
  if img.ndim != 3:
    raise ValueError(f'bicubic_resize expects (H, W, C), got shape {img.shape}')
  out = np.empty((h, w, img.shape[2]), np.float32)
  for c in range(img.shape[2]):
    channel = Image.fromarray(np.ascontiguousarray(img[:, :, c], dtype=np.float32))
    out[:, :, c] = np.asarray(channel.resize((w, h), Image.Resampling.BICUBIC))
  return out


def to_uint8(img: np.ndarray) -> np.ndarray:
  """Rounds and clips a 0..255 float image to uint8."""
  return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def to_signed(img: np.ndarray) -> np.ndarray:
  """x = clip(img / 127.5 - 1, -1, 1): 8-bit levels to the model's range."""
  return np.clip(np.asarray(img, np.float32) / 127.5 - 1.0, -1.0, 1.0)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
  """Gaussian blur of a uint8 RGB image (Pillow's extended-box approximation)."""
  return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))


def _add_noise(img: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool):
  """img + N(0, sigma^2) in 8-bit levels, shared by all channels if `gray`."""
  shape = img.shape[:2] + (1,) if gray else img.shape
  noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
  return to_uint8(img.astype(np.float32) + noise)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
  """Encodes and decodes with libjpeg in memory: blocking, ringing, chroma loss."""
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format='JPEG', quality=int(quality))
  buf.seek(0)
  with Image.open(buf) as im:
    return np.asarray(im.convert('RGB'))


def degrade(hr_uint8: np.ndarray, lr_hw, rng: np.random.Generator, data_cfg,
            realistic: bool) -> np.ndarray:
  """Makes the LR photo: lr = JPEG_q(down(blur_s(hr)) + n), or just down(hr).

  down is `bicubic_resize` to `lr_hw`. With `realistic`: blur_s is a Gaussian
  blur with s ~ U[0.2, blur_sigma_max] (in HR pixels, as an out-of-focus or
  shaken camera), n ~ N(0, t^2) with t ~ U[0, noise_sigma_max] 8-bit levels
  (grey noise with probability 0.4, else per channel), and JPEG_q a re-encode
  at quality q ~ U{jpeg_quality_min..jpeg_quality_max}. Returns uint8; the
  draws depend only on `rng`, so a given rng state gives the same LR.
  """
  img = np.asarray(hr_uint8)
  if not realistic:
    return to_uint8(bicubic_resize(img, lr_hw))
  # All draws happen up front and always, so the stream does not depend on
  # which degradations the config switches off.
  sigma_blur = rng.uniform(BLUR_SIGMA_MIN, max(BLUR_SIGMA_MIN, data_cfg.blur_sigma_max))
  sigma_noise = rng.uniform(0.0, data_cfg.noise_sigma_max)
  gray = rng.random() < GRAY_NOISE_PROB
  quality = rng.integers(data_cfg.jpeg_quality_min, data_cfg.jpeg_quality_max + 1)
  if data_cfg.blur_sigma_max > 0:
    img = _blur(img, sigma_blur)
  lr = to_uint8(bicubic_resize(img, lr_hw))
  if sigma_noise > 0:
    lr = _add_noise(lr, rng, sigma_noise, gray)
  return _jpeg(lr, quality)
