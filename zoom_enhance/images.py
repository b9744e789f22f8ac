"""Image files in and out: decode any photo to RGB uint8, list folders, write atomically.

numpy and Pillow only: the on-device runtime reuses this module, so it must not
import JAX or TensorFlow.
"""

import io
import os
import uuid

import numpy as np
from PIL import Image
from PIL import ImageOps

from zoom_enhance import errors

# Extensions (lower case, no dot) that folders are scanned for.
IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp', 'bmp', 'tif', 'tiff')

# Output formats by extension for `save_image`.
_SAVE_FORMATS = {'png': 'PNG', 'jpg': 'JPEG', 'jpeg': 'JPEG', 'webp': 'WEBP',
                 'bmp': 'BMP', 'tif': 'TIFF', 'tiff': 'TIFF'}

# Modes whose pixels are 16- or 32-bit integers: Pillow's own convert('RGB')
# clips them to 255 (a white image), so they are rescaled by hand.
_WIDE_INT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


class ImageError(errors.ZoomEnhanceError, ValueError):
  """A file that cannot be decoded as an image; `str()` is 'PATH: reason'."""

  def __init__(self, path, reason: str):
    self.path = os.fspath(path)
    self.reason = reason
    super().__init__(f'{self.path}: {reason}')


def _reason(err: Exception) -> str:
  """A short, user-facing reason for a Pillow failure."""
  if isinstance(err, FileNotFoundError):
    return 'no such file'
  if isinstance(err, IsADirectoryError):
    return 'is a directory'
  if isinstance(err, Image.UnidentifiedImageError):
    return 'not an image file (or a format Pillow cannot read)'
  if isinstance(err, Image.DecompressionBombError):
    return 'image too large to decode safely'
  msg = str(err).splitlines()[0] if str(err) else type(err).__name__
  if 'truncated' in msg:
    return 'truncated image file'
  return msg


def _wide_to_uint8(im: Image.Image) -> np.ndarray:
  """16/32-bit integer grey levels to 8 bits: full 16-bit range -> 0..255."""
  a = np.asarray(im).astype(np.float32)
  if im.mode.startswith('I;16') or a.max(initial=0) > 255:
    a = a / 257.0
  return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _to_rgb_array(im: Image.Image) -> np.ndarray:
  """Any Pillow mode to (H, W, 3) uint8; alpha is composited onto white."""
  if im.mode in _WIDE_INT_MODES:
    im = Image.fromarray(_wide_to_uint8(im))
  elif im.mode == 'F':
    im = Image.fromarray(np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8))
  has_alpha = im.mode in ('RGBA', 'LA', 'PA', 'RGBa', 'La') or (
      im.mode == 'P' and 'transparency' in im.info)
  if has_alpha:
    # White, as most viewers show it; dropping alpha would expose whatever
    # colour the encoder left under fully transparent pixels.
    rgba = im.convert('RGBA')
    im = Image.alpha_composite(Image.new('RGBA', rgba.size, (255, 255, 255, 255)), rgba)
  rgb = np.asarray(im.convert('RGB'), dtype=np.uint8)
  return np.ascontiguousarray(rgb)


# What Pillow raises for missing, corrupt or truncated files: its decoders
# signal bad data with a zoo of exception types.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
                 ZeroDivisionError)


def decode_error(path, err: Exception) -> ImageError:
  """The ImageError ('PATH: reason') for one of DECODE_ERRORS."""
  return ImageError(path, _reason(err))


def load_rgb(path) -> np.ndarray:
  """Decodes a whole image file to (H, W, 3) uint8 in display orientation.

  EXIF orientation is applied; any mode (L, P, RGBA, CMYK, I;16, ...) becomes
  RGB; multi-frame files give their first frame. Raises `ImageError` for
  missing, truncated, corrupt or non-image files.
  """
  try:
    with Image.open(path) as im:
      # load() decodes every byte now, so a truncated file fails here rather
      # than as a grey band in a training crop.
      im.load()
      return _to_rgb_array(ImageOps.exif_transpose(im))
  except DECODE_ERRORS as e:
    raise decode_error(path, e) from e


def scan_folder(folder) -> tuple[list[str], list[str]]:
  """(images, others): every file under `folder`, recursively, split by extension.

  Both lists are sorted by path so that every process sees the same order.
  """
  images, others = [], []
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    for name in files:
      path = os.path.join(root, name)
      ext = os.path.splitext(name)[1][1:].lower()
      (images if ext in IMAGE_EXTENSIONS else others).append(path)
  return sorted(images), sorted(others)


def list_images(folder) -> list[str]:
  """Sorted paths of the files under `folder` (recursive) with an image extension."""
  return scan_folder(folder)[0]


def _check_uint8_image(img) -> np.ndarray:
  img = np.asarray(img)
  if img.dtype != np.uint8 or img.ndim not in (2, 3) or (
      img.ndim == 3 and img.shape[-1] not in (1, 3, 4)):
    raise ValueError(f'expected a uint8 (H, W[, 1|3|4]) image, got {img.dtype} {img.shape}')
  return img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img


def save_image(path, img, *, quality: int = 95) -> None:
  """Writes a uint8 image; the format follows the extension (PNG, JPEG, WebP, ...).

  The bytes go to a temporary file in the same folder that is then renamed
  over `path`, so readers never see a half-written image.
  """
  img = _check_uint8_image(img)
  path = os.fspath(path)
  ext = os.path.splitext(path)[1][1:].lower()
  if ext not in _SAVE_FORMATS:
    raise ValueError(f'{path}: unknown image extension (use one of {", ".join(_SAVE_FORMATS)})')
  fmt = _SAVE_FORMATS[ext]
  im = Image.fromarray(img)
  if fmt == 'JPEG' and im.mode == 'RGBA':
    im = im.convert('RGB')
  buf = io.BytesIO()
  im.save(buf, format=fmt, **({'quality': quality} if fmt in ('JPEG', 'WEBP') else {}))
  write_atomic(path, buf.getvalue())


def write_atomic(path, data: bytes) -> None:
  """Writes bytes to a temporary file in the same folder, then renames it over `path`.

  Readers never see a half-written file, and a failed write leaves none.
  """
  folder, name = os.path.split(os.path.abspath(path))
  # A hidden name without an image extension, so a folder scan never lists it;
  # open(..., 'xb') keeps the user's umask (mkstemp would make it 0600).
  tmp = os.path.join(folder, f'.{name}.{uuid.uuid4().hex[:8]}.tmp')
  try:
    with open(tmp, 'xb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def save_png(path, img) -> None:
  """Writes a uint8 (H, W[, 3|4]) image as PNG, atomically (see `save_image`)."""
  if not os.fspath(path).lower().endswith('.png'):
    raise ValueError(f'{os.fspath(path)}: save_png needs a .png path')
  save_image(path, img)
