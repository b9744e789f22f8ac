"""The resampler and the model's input contract: bicubic resizes, value ranges and `lr_up`.

The model's conditioning is the LR photo upsampled bicubic to the output
size, in [-1, 1]: `lr_up`. Training data, evaluation, export calibration,
`zoom-enhance sample` and the on-device runtime all build it here, whole
(`lr_up`) or a strip of output rows at a time (`LrUpStrips`, the runtime's
bounded-memory path, equal to the whole-image resize to float rounding).
numpy and Pillow only; every function is deterministic.
"""

import math

import numpy as np
from PIL import Image

# Reach of Pillow's bicubic filter in source pixels, per unit of
# max(1, source/output) (it widens when shrinking).
_BICUBIC_SUPPORT = 2.0


def lr_size_for(hr_size: int, scale: float) -> int:
  """lr = max(1, round(hr / scale)); the effective scale is then hr / lr."""
  return max(1, int(round(hr_size / scale)))


def _resize_channels(img: np.ndarray, size_wh, box=None) -> np.ndarray:
  """Each channel of (H, W, C) resized by Pillow in mode 'F' with BICUBIC, as float32 (h, w, C)."""
  w, h = size_wh
  out = np.empty((h, w, img.shape[2]), np.float32)
  for c in range(img.shape[2]):
    channel = Image.fromarray(np.ascontiguousarray(img[:, :, c], dtype=np.float32))
    out[:, :, c] = np.asarray(channel.resize((w, h), Image.Resampling.BICUBIC, box=box))
  return out


def bicubic_resize(img: np.ndarray, size_hw) -> np.ndarray:
  """Bicubic resampling of an (H, W, C) image to `size_hw`, as float32.

  Each channel is resized by Pillow in mode 'F' (32-bit float, so no rounding
  to 8 bits in between) with the BICUBIC filter (a = -0.5). When shrinking,
  Pillow widens the kernel by the scale factor, which is the antialiasing of
  MATLAB's imresize. Values stay in the input's range (0..255) up to the small
  overshoot of the cubic kernel near edges; callers clip.
  """
  h, w = int(size_hw[0]), int(size_hw[1])
  if h < 1 or w < 1:
    raise ValueError(f'bicubic_resize to an empty size {size_hw}')
  img = np.asarray(img)
  if img.ndim != 3:
    raise ValueError(f'bicubic_resize expects (H, W, C), got shape {img.shape}')
  return _resize_channels(img, (w, h))


def to_uint8(img: np.ndarray) -> np.ndarray:
  """Rounds and clips a 0..255 float image to uint8."""
  return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def to_signed(img: np.ndarray) -> np.ndarray:
  """x = clip(img / 127.5 - 1, -1, 1): 8-bit levels to the model's range, float32."""
  return np.clip(np.asarray(img, np.float32) / 127.5 - 1.0, -1.0, 1.0)


def from_signed(x) -> np.ndarray:
  """The model's range [-1, 1] back to uint8 pixels: round((x + 1) * 127.5), clipped."""
  return to_uint8((np.asarray(x, np.float32) + 1.0) * 127.5)


def lr_up(lr_uint8: np.ndarray, out_hw) -> np.ndarray:
  """The model's conditioning: the LR image upsampled bicubic to `out_hw`, in [-1, 1], float32."""
  return to_signed(bicubic_resize(lr_uint8, out_hw))


def bicubic_uint8(img: np.ndarray, size_hw) -> np.ndarray:
  """The bicubic resize rounded to uint8: a photo's LR, or the plain enlargement `lr_up` stands for."""
  return to_uint8(bicubic_resize(img, size_hw))


class LrUpStrips:
  """`lr_up` a strip of output rows at a time: rows(y0, y1) equals lr_up(...)[y0:y1].

  Only the LR rows a strip needs become float32, so a 12 MP input costs a
  few rows of floats, not 144 MB.
  """

  def __init__(self, lr_uint8: np.ndarray, out_hw):
    self.lr = lr_uint8
    self.h, self.w = lr_uint8.shape[:2]
    self.out_h, self.out_w = int(out_hw[0]), int(out_hw[1])

  def rows(self, y0: int, y1: int) -> np.ndarray:
    """(y1 - y0, out_w, 3) float32 in [-1, 1]: output rows [y0, y1) of the whole-image `lr_up`."""
    return self.window(y0, y1, 0, self.out_w)

  def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """(y1 - y0, x1 - x0, 3) float32 in [-1, 1]: lr_up(...)[y0:y1, x0:x1], from the LR pixels it needs.

    Thread-safe: the runtime's tile threads each build their own tile's.
    """
    return _signed_in_place(upsampled_window(self.lr, (self.out_h, self.out_w), y0, y1, x0, x1))


def _signed_in_place(out: np.ndarray) -> np.ndarray:
  """to_signed, in place: a strip is the largest float buffer of the runtime."""
  out /= 127.5
  out -= 1.0
  return np.clip(out, -1.0, 1.0, out=out)


def _source_span(n: int, out_n: int, o0: int, o1: int) -> tuple[int, int, float, float]:
  """(first, end) source pixels that output pixels [o0, o1) read, with reach, and their box edges."""
  s = n / out_n
  lo, hi = o0 * s, min(float(n), o1 * s)
  reach = _BICUBIC_SUPPORT * max(1.0, s) + 2
  a, b = max(0, math.floor(lo - reach)), min(n, math.ceil(hi + reach))
  return a, b, lo - a, hi - a


def upsampled_window(src: np.ndarray, out_hw, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
  """bicubic_resize(src, out_hw)[y0:y1, x0:x1], float32, from the source pixels it needs.

  As resized_rows, along both axes: the window equals the whole-image resize to float rounding.
  """
  a, b, top, bottom = _source_span(src.shape[0], int(out_hw[0]), y0, y1)
  c, d, left, right = _source_span(src.shape[1], int(out_hw[1]), x0, x1)
  return _resize_channels(src[a:b, c:d], (x1 - x0, y1 - y0), box=(left, top, right, bottom))


def upsampled_rows(src: np.ndarray, out_hw, y0: int, y1: int) -> np.ndarray:
  """Rows [y0, y1) of bicubic_resize(src, out_hw), float32, from the src rows they need (resized_rows)."""
  return resized_rows(lambda a, b: src[a:b], src.shape[:2], out_hw, y0, y1)


def resized_rows(rows_of, src_hw, out_hw, r0: int, r1: int) -> np.ndarray:
  """Rows [r0, r1) of bicubic_resize(src, out_hw), float32; `rows_of(a, b)` gives src rows [a, b).

  Enlarging or shrinking (antialiased as the whole-image resize: the filter
  widens by the factor). Pillow clips the filter to the image it is given,
  so the source rows read reach past every tap that the whole-image resize
  would use (the image's own edges excepted): the strip equals the
  whole-image resize to float rounding.
  """
  a, b, top, bottom = _source_span(int(src_hw[0]), int(out_hw[0]), r0, r1)
  box = (0.0, top, float(src_hw[1]), bottom)
  return _resize_channels(rows_of(a, b), (int(out_hw[1]), r1 - r0), box=box)
