"""Photo files out, the one encoder of the project (photo.py is the decoder).

A result (a PIL image or a uint8 array) is encoded in memory in the format its
extension names (PNG, JPEG, WebP, BMP, TIFF), with the source's ICC profile
and EXIF (orientation reset to 1, the real pixel size) where the format
carries them, and written atomically: a failure leaves no partial file.
Modes a format cannot store are converted as decoding would (16-bit and float
to 8-bit gray, CMYK through its profile); alpha is composited onto white for
JPEG and BMP, as viewers show it.
"""

import io
import logging
import os

import numpy as np
from PIL import ExifTags
from PIL import Image

from zoom_enhance import errors
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo

logger = logging.getLogger('zoom_enhance.runtime')

# Output formats by extension.
SAVE_FORMATS = {
  'png': 'PNG',
  'jpg': 'JPEG',
  'jpeg': 'JPEG',
  'webp': 'WEBP',
  'bmp': 'BMP',
  'tif': 'TIFF',
  'tiff': 'TIFF',
}
# Formats that carry an ICC profile and EXIF (BMP carries neither).
METADATA_FORMATS = ('PNG', 'JPEG', 'WEBP', 'TIFF')


def output_exif(exif: Image.Exif | None, size) -> bytes | None:
  """EXIF for the result: orientation 1 (the pixels are upright) and its real pixel size.

  Works on a copy: the Exif of a caller's PIL image stays as it was.
  """
  if exif is None:
    return None
  with photo.pillow_warnings_logged('EXIF of the result'):
    out = Image.Exif()
    try:
      out.load(exif.tobytes())
    # Pillow raises struct.error, TypeError, ... for a tag whose value does not fit its type.
    except Exception as e:
      out = _writable_tags(exif, e)
    out[ExifTags.Base.Orientation] = 1
    sub = out.get_ifd(ExifTags.IFD.Exif)
    if ExifTags.Base.ExifImageWidth in sub or ExifTags.Base.ExifImageHeight in sub:
      sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight] = int(size[0]), int(size[1])
    return out.tobytes()


def _writable_tags(exif: Image.Exif, error: Exception) -> Image.Exif:
  """The base-IFD tags of `exif` that can be written one by one; the others are dropped and logged."""
  out, dropped = Image.Exif(), []
  for tag, value in exif.items():
    if tag in (ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo, ExifTags.IFD.Interop):
      dropped.append(f'{tag:#x} (sub-IFD)')
      continue
    trial = Image.Exif()
    trial[tag] = value
    try:
      trial.tobytes()
    except Exception:
      dropped.append(f'{ExifTags.TAGS.get(tag, hex(tag))}')
      continue
    out[tag] = value
  logger.info('EXIF cannot be written as read (%s); dropped: %s', error, ', '.join(dropped) or 'nothing')
  return out


def to_image(rgb: np.ndarray, alpha: np.ndarray | None = None, *, gray: bool = False) -> Image.Image:
  """uint8 planes to a PIL image: L, LA, RGB or RGBA."""
  im = Image.fromarray(rgb)
  if gray:
    im = im.convert('L')
  if alpha is not None:
    im = im.convert('LA' if gray else 'RGBA')
    im.putalpha(Image.fromarray(alpha))
  return im


# Largest side each format can store (libwebp: 16383; libjpeg: 65500).
MAX_SIDE = {'WEBP': 16383, 'JPEG': 65500, 'PNG': 2**31 - 1, 'BMP': 2**31 - 1, 'TIFF': 2**31 - 1}


def check_output_size(path, size) -> None:
  """Raises ImageError when a (width, height) result cannot be stored in the format of `path`."""
  fmt = format_for(path)
  limit = MAX_SIDE.get(fmt)
  if limit is not None and max(size) > limit:
    raise photo.ImageError(
      path,
      f'the result would be {size[0]}x{size[1]}; {fmt} stores at most {limit} pixels a side '
      '(choose a smaller --scale or --size, or PNG)',
    )


def format_for(path) -> str:
  """The Pillow format of an output path, by its extension."""
  ext = os.path.splitext(os.fspath(path))[1][1:].lower()
  if ext not in SAVE_FORMATS:
    raise photo.ImageError(path, f'unknown output extension {ext!r} (use one of {", ".join(SAVE_FORMATS)})')
  return SAVE_FORMATS[ext]


def _as_image(image) -> Image.Image:
  if isinstance(image, Image.Image):
    return image
  if not isinstance(image, np.ndarray):
    raise photo.ImageError(f'<{type(image).__name__}>', 'cannot be saved: pass a PIL image or a uint8 array')
  a = image
  if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (1, 3, 4)):
    raise photo.ImageError(
      f'<array {a.dtype} {a.shape}>', 'cannot be saved: expected a uint8 (H, W[, 1|3|4]) array or a PIL image'
    )
  return Image.fromarray(np.ascontiguousarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a))


# zlib level of written PNGs. Pillow's default (6) took longer than the model
# on a 2-core CPU; see the README's "Output files" for the measured trade.
PNG_LEVEL = 1
# zlib strategy per level where it is not zlib's default: level 1 is written Huffman-only
# (Z_HUFFMAN_ONLY). On the 32 dev-val enhancements at x4 (4.9 MP) that took 0.30 s for 7.95 MB,
# against 0.43 s for 8.74 MB with the default strategy at level 1 and 2.2 s for 7.95 MB at level
# 9: after PNG's row filters, photos leave LZ77 little to find. On raw photos (scikit-image's)
# level 9 still wins by 3%, so the other levels keep zlib's default.
Z_HUFFMAN_ONLY = 2
PNG_STRATEGY = {1: Z_HUFFMAN_ONLY}


def encode(image, fmt: str, *, quality: int = 95, png_level: int = PNG_LEVEL) -> bytes:
  """The file's bytes (PNG, JPEG, WebP, BMP or TIFF) with im.info's ICC profile and EXIF where they fit.

  JPEG and BMP have no alpha: transparent pixels are composited onto white,
  as viewers show them. `quality` is JPEG's and WebP's, `png_level` PNG's
  zlib level (0-9; 9 the smallest file, the slowest).
  """
  im = _as_image(image)
  exif = im.info.get('exif')
  im, icc_profile = _writable(im, fmt, im.info.get('icc_profile'))
  if fmt in ('JPEG', 'BMP') and im.mode in ('RGBA', 'LA'):
    gray = im.mode == 'LA'
    white = Image.new('RGBA', im.size, (255, 255, 255, 255))
    im = Image.alpha_composite(white, im.convert('RGBA')).convert('L' if gray else 'RGB')
  if fmt == 'WEBP' and im.mode in ('L', 'LA'):
    # WebP stores colour only; a gray profile cannot describe RGB pixels.
    im = im.convert('RGBA' if im.mode == 'LA' else 'RGB')
    icc_profile = None
  kwargs = {}
  if fmt in ('JPEG', 'WEBP'):
    kwargs['quality'] = int(quality)
  if fmt == 'PNG':
    kwargs['compress_level'] = int(png_level)
    if int(png_level) in PNG_STRATEGY:
      kwargs['compress_type'] = PNG_STRATEGY[int(png_level)]
  if fmt in METADATA_FORMATS:
    if icc_profile:
      kwargs['icc_profile'] = icc_profile
    if exif:
      kwargs['exif'] = exif
  buf = io.BytesIO()
  with photo.pillow_warnings_logged(f'<{fmt} encoder>'):
    try:
      im.save(buf, format=fmt, **kwargs)
    except (OSError, ValueError) as e:
      raise photo.ImageError(
        f'<{im.mode} image {im.size[0]}x{im.size[1]}>', f'{fmt} cannot store it: {e}'
      ) from None
  return buf.getvalue()


# Modes each format stores as they are (Pillow 12); JPEG and BMP also take RGBA and LA, composited onto white
# by `encode`. Other modes are converted by `_writable` (CMYK to PNG raised Pillow's bare OSError).
_SAVE_MODES = {
  'PNG': ('1', 'L', 'LA', 'P', 'RGB', 'RGBA', 'I', 'I;16', 'I;16B'),
  'JPEG': ('1', 'L', 'LA', 'RGB', 'RGBA', 'RGBX', 'CMYK', 'YCbCr'),
  'WEBP': ('1', 'L', 'LA', 'P', 'PA', 'RGB', 'RGBA', 'RGBX'),
  'BMP': ('1', 'L', 'LA', 'P', 'RGB', 'RGBA'),
  'TIFF': ('1', 'L', 'LA', 'P', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK', 'YCbCr', 'LAB')
  + ('I', 'I;16', 'I;16B', 'I;16L', 'F'),
}


def _writable(im: Image.Image, fmt: str, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
  """(image, ICC profile) in a mode `fmt` stores: 16-bit, 32-bit and float to 8-bit gray (as decoding does),
  CMYK to RGB through its profile, any other mode to RGB(A); ImageError where Pillow cannot convert it."""
  if im.mode in _SAVE_MODES[fmt]:
    return im, icc
  if im.mode == 'CMYK':
    return photo.cmyk_to_rgb(im, icc)
  if im.mode in photo.WIDE_MODES:
    gray = photo.wide_to_uint8(np.asarray(im), im.mode.startswith('I;16'), unit_float=im.mode == 'F')
    return Image.fromarray(gray), icc
  if im.mode == 'La':
    return im.convert('LA'), icc  # premultiplied gray: its profile still describes it
  alpha = im.mode in photo.ALPHA_MODES or 'transparency' in im.info
  mode = im.mode
  try:
    im = im.convert('RGBA' if alpha else 'RGB')
  except ValueError:
    raise photo.ImageError(
      f'<{mode} image>', f'{fmt} cannot store mode {mode}, nor can it be converted'
    ) from None
  # The profile of another colour space (LAB, HSV) would not describe the RGB pixels.
  return im, icc if mode in ('P', 'PA', 'RGBa', 'RGBX', 'YCbCr') else None


def save_photo(path, image, *, quality: int = 95, png_level: int = PNG_LEVEL) -> None:
  """Writes a PIL image or uint8 array, format by extension, written atomically (see `encode`).

  The whole file is encoded in memory first, so a failure leaves no partial file.
  """
  for name, value, lo, hi in (('quality', quality, 1, 100), ('png_level', png_level, 0, 9)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
      raise errors.ConfigError(f'{name}={value!r}: must be a whole number in [{lo}, {hi}]')
  check_output_size(path, _as_image(image).size)
  try:
    data = encode(image, format_for(path), quality=quality, png_level=png_level)
  except MemoryError:
    raise photo.out_of_memory(os.fspath(path), 'to encode it') from None
  try:
    files.write_atomic(path, data)
  except OSError as e:
    raise photo.ImageError(path, cannot_write(path, e)) from None


def cannot_write(path, err: OSError) -> str:
  """Why `path` cannot be written, naming the folder the caller gave (never the hidden temporary file)."""
  folder = os.path.dirname(os.fspath(path)) or '.'
  blocker = files.file_in_the_way(path)
  if blocker:
    return f'cannot write (Not a directory: {blocker} is not a folder)'
  if isinstance(err, FileNotFoundError) and not os.path.isdir(folder):
    return f'cannot write (No such directory: {folder})'
  return f'cannot write ({err.strerror or errors.first_line(err)})'
