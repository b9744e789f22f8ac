"""Crop and size arithmetic: which pixels to enhance, how large the result is, what the model does.

Pure functions on integers and floats, so every rounding rule is in one place
and tested on its own. Sizes are (width, height) as people write them
(2048x1152); arrays elsewhere are (height, width).
"""

import dataclasses
import math
import numbers

from zoom_enhance import errors


class GeometryError(errors.ZoomEnhanceError, ValueError):
  """A crop, scale or size that cannot work for this image."""


@dataclasses.dataclass(frozen=True)
class Box:
  """A pixel rectangle: left, top, width, height."""

  x: int
  y: int
  w: int
  h: int

  def pillow(self) -> tuple[int, int, int, int]:
    """(left, upper, right, lower), as Image.crop takes it."""
    return self.x, self.y, self.x + self.w, self.y + self.h


def parse_crop(text: str) -> tuple[float, float, float, float]:
  """'X,Y,W,H' -> four numbers; with a decimal point they are fractions of the image.

  '100,80,320,180' is in pixels; '0.25,0.1,0.5,0.5' (any value written with a
  '.') is normalized to the image size, so '1,1,1,1' stays a 1-pixel crop.
  """
  parts = [p.strip() for p in str(text).split(',')]
  if len(parts) != 4:
    raise GeometryError(f'--crop {text!r}: expected X,Y,W,H (pixels, or fractions such as 0.25,0.1,0.5,0.5)')
  try:
    if any('.' in p or 'e' in p.lower() for p in parts):
      return tuple(float(p) for p in parts)
    return tuple(int(p) for p in parts)
  except ValueError:
    raise GeometryError(f'--crop {text!r}: expected four numbers X,Y,W,H') from None


def resolve_crop(crop, image_wh) -> Box:
  """The crop as a pixel Box inside an image of `image_wh`; None means the whole image.

  `crop` is (x, y, w, h) of ints (pixels) or of floats in [0, 1] (fractions),
  as `parse_crop` returns it. Fractions round both edges to the nearest pixel
  so adjacent normalized crops tile the image without gaps. A crop that
  leaves the image or has no pixels is an error, never silently clamped.
  """
  iw, ih = image_wh
  if crop is None:
    return Box(0, 0, iw, ih)
  values = _four_numbers(crop, 'crop', '(x, y, w, h)')
  # Whole numbers of any type (numpy's too) are pixels; any other number makes them fractions.
  if all(isinstance(v, numbers.Integral) for v in values):
    x, y, w, h = (int(v) for v in values)
  else:
    fx, fy, fw, fh = (float(v) for v in values)
    if not all(0.0 <= v <= 1.0 for v in (fx, fy, fw, fh)) or fx + fw > 1.0 + 1e-9 or fy + fh > 1.0 + 1e-9:
      raise GeometryError(
        f'normalized crop {fx:g},{fy:g},{fw:g},{fh:g} is not inside [0, 1] '
        '(fractions of the image: x + w and y + h at most 1)'
      )
    x, y = round(fx * iw), round(fy * ih)
    w, h = round((fx + fw) * iw) - x, round((fy + fh) * ih) - y
  if w <= 0 or h <= 0:
    raise GeometryError(f'crop {x},{y},{w},{h} has zero area')
  if x < 0 or y < 0 or x + w > iw or y + h > ih:
    raise GeometryError(f'crop {x},{y},{w},{h} extends past the {iw}x{ih} image')
  return Box(x, y, w, h)


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _four_numbers(value, name: str, form: str) -> list:
  """The four numbers of a crop given from Python, or a GeometryError saying what was expected."""
  if isinstance(value, (str, bytes)) or not hasattr(value, '__len__') or len(value) != 4:
    raise GeometryError(f'{name} {_short(value)}: expected {form}, four numbers')
  values = list(value)
  if not all(_is_number(v) and math.isfinite(v) for v in values):
    raise GeometryError(f'{name} {_short(value)}: expected {form}, four numbers')
  return values


def _short(value, limit: int = 60) -> str:
  text = repr(value)
  return text if len(text) <= limit else text[: limit - 3] + '...'


def check_crop(crop):
  """A crop given from Python or parsed: None, or four finite numbers (checked before any decoding)."""
  if crop is not None:
    _four_numbers(crop, 'crop', '(x, y, w, h)')
  return crop


def check_size(size) -> tuple[int, int]:
  """A size given from Python: (width, height) of positive whole numbers."""
  if isinstance(size, (str, bytes)) or not hasattr(size, '__len__') or len(size) != 2:
    raise GeometryError(f'size {_short(size)}: expected (width, height) or "WxH"')
  if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in size):
    raise GeometryError(f'size {_short(size)}: width and height must be whole numbers')
  w, h = int(size[0]), int(size[1])
  if w < 1 or h < 1:
    raise GeometryError(f'size {w}x{h}: width and height must be positive')
  return w, h


def check_scale(scale) -> float:
  """A factor given from Python: a positive finite number."""
  if not _is_number(scale) or not math.isfinite(scale) or scale <= 0:
    raise GeometryError(f'scale {_short(scale)}: must be a positive number')
  return float(scale)


def parse_size(text: str) -> tuple[int, int]:
  """'2048x1152' -> (2048, 1152)."""
  try:
    w, h = (int(v) for v in str(text).lower().replace('*', 'x').split('x'))
  except ValueError:
    raise GeometryError(f'--size {text!r}: expected WxH, e.g. 2048x1152') from None
  if w < 1 or h < 1:
    raise GeometryError(f'--size {text!r}: width and height must be positive')
  return w, h


def output_size(crop_wh, *, scale: float | None = None, size=None) -> tuple[int, int]:
  """The result's (width, height): `size` as given, else round(side * scale), at least 1."""
  if size is not None and scale is not None:
    raise GeometryError('give a scale or a size, not both')
  if size is not None:
    return check_size(size)
  scale = 1.0 if scale is None else check_scale(scale)
  return max(1, round(crop_wh[0] * scale)), max(1, round(crop_wh[1] * scale))


@dataclasses.dataclass(frozen=True)
class Plan:
  """How a crop becomes the output: the model's output size and factor, then a resample if any."""

  model_wh: tuple[int, int]  # what the model produces (its factor stays in the bundle's range)
  model_scale: float  # the factor fed to the model: mean of its two axis factors
  output_wh: tuple[int, int]  # the final size; differs from model_wh only outside the range

  @property
  def resample(self) -> bool:
    return self.model_wh != self.output_wh


def plan(crop_wh, output_wh, scale_range) -> Plan:
  """Keeps the model inside the factors it was trained on and resamples the rest.

  Per axis, factor = output / crop is clamped to [min, max] of the bundle's
  scale_range; the model renders crop * clamped factor and Lanczos takes it to
  the requested size (up for factors above the range, down below it).
  """
  lo, hi = float(scale_range[0]), float(scale_range[1])
  model_wh = []
  for crop_side, out_side in zip(crop_wh, output_wh):
    factor = out_side / crop_side
    if lo <= factor <= hi:
      model_wh.append(out_side)
    else:
      model_wh.append(max(1, round(crop_side * min(max(factor, lo), hi))))
  model_scale = 0.5 * (model_wh[0] / crop_wh[0] + model_wh[1] / crop_wh[1])
  return Plan(tuple(model_wh), model_scale, tuple(output_wh))
