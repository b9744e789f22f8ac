"""Photo files in, the one decoder of the project (save.py is the encoder).

A photo (a file, a PIL image or a numpy array) is decoded to what a person
sees (EXIF orientation applied) as RGB uint8 plus, when it has one, an alpha
channel. Its ICC profile and EXIF travel with it, so that the runtime can
write them to the result (save.py) with the orientation reset to 1 (the
pixels are already upright). Grayscale sources are marked gray (their ICC profile
describes one channel); palette, 16-bit, 32-bit and float images become
8-bit; CMYK goes through its ICC profile to sRGB when it has one. Training,
evaluation and export calibration want plain RGB: `load_rgb` composites
alpha onto white, as viewers show it.
"""

import contextlib
import dataclasses
import io
import logging
import os
import threading
import warnings

import numpy as np
from PIL import ExifTags
from PIL import Image
from PIL import ImageOps
from PIL import PngImagePlugin

from zoom_enhance import errors
from zoom_enhance.imaging import files

# The runtime's logger (enhance -v shows its INFO lines).
logger = logging.getLogger('zoom_enhance.runtime')

# Decoded pixels above which a file is refused unless the caller raises the
# limit: a few-kilobyte PNG can claim 100 000 x 100 000 pixels. 120 MP covers
# the largest phone photos (a 108 MP sensor) with room to spare.
MAX_PIXELS = 120_000_000

# Modes whose pixels are 16- or 32-bit integers or floats: Pillow's own
# convert('RGB') clips them to 255 (a white image), so they are rescaled here.
WIDE_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')
ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')

# What Pillow raises for missing, corrupt or truncated files: its decoders
# signal bad data with a zoo of exception types.
DECODE_ERRORS = (
  OSError,
  ValueError,
  SyntaxError,
  EOFError,
  IndexError,
  KeyError,
  TypeError,
  ZeroDivisionError,
)


class ImageError(errors.ZoomEnhanceError, ValueError):
  """A file that cannot be decoded or written as an image; `str()` is 'PATH: reason'."""

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
  msg = errors.first_line(err)
  return 'truncated image file' if 'truncated' in msg else msg


def decode_error(path, err: Exception) -> ImageError:
  """The ImageError ('PATH: reason') for one of DECODE_ERRORS; an ImageError (a ValueError) stays as it is."""
  return err if isinstance(err, ImageError) else ImageError(path, _reason(err))


@dataclasses.dataclass
class Photo:
  """A decoded photo in display orientation."""

  rgb: np.ndarray  # (H, W, 3) uint8
  alpha: np.ndarray | None  # (H, W) uint8, or None for opaque images
  gray: bool  # no colour in the source: written back as grayscale
  icc_profile: bytes | None  # describes `rgb` (or the gray channel); None means sRGB
  exif: Image.Exif | None  # the source's EXIF, orientation already applied to the pixels
  source: str  # path, or a description of an in-memory image

  @property
  def size(self) -> tuple[int, int]:
    return self.rgb.shape[1], self.rgb.shape[0]

  def on_white(self) -> np.ndarray:
    """(H, W, 3) uint8 with transparent pixels composited onto white, as most viewers show them.

    Dropping alpha instead would expose whatever colour the encoder left under
    fully transparent pixels.
    """
    if self.alpha is None:
      return self.rgb
    a = self.alpha[:, :, None].astype(np.float32) / 255.0
    return np.clip(np.rint(self.rgb * a + 255.0 * (1.0 - a)), 0, 255).astype(np.uint8)


# Image.open reads Pillow's global bomb limit; ours replaces it while a file is
# opened, one thread at a time.
_OPEN_LOCK = threading.Lock()


@contextlib.contextmanager
def _own_pixel_limit():
  """Lets `_check_pixels` decide, with its message and the caller's limit.

  Pillow's own check (a warning, then an error above 2 x MAX_IMAGE_PIXELS)
  would fire first with another limit; ours runs on the header's size right
  after open(), before any pixel is decoded.
  """
  with _OPEN_LOCK:
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
      with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        yield
    finally:
      Image.MAX_IMAGE_PIXELS = old


def megapixels(pixels: int) -> str:
  """'1600 MP', '400 MP', '0.135 MP', '0.0001 MP': three significant digits, so that a small image is not
  '0.0 MP', and whole megapixels from 100 up (not '1.6e+03 MP')."""
  mp = pixels / 1e6
  return f'{mp:.0f} MP' if mp >= 100 else f'{mp:.3g} MP'


def _check_pixels(where: str, size, max_pixels: int):
  w, h = size
  if w < 1 or h < 1:
    raise ImageError(where, f'{w}x{h}: the image has no pixels')
  if w * h > max_pixels:
    raise ImageError(
      where,
      f'{w}x{h} is {megapixels(w * h)}, over the {megapixels(max_pixels)} '
      'limit for decoding (a decompression bomb?); raise --max-pixels '
      'if the image is genuine',
    )


def wide_to_uint8(a: np.ndarray, sixteen_bit: bool, unit_float: bool = False) -> np.ndarray:
  """16-bit, 32-bit or float grey levels to 8 bits: the full 16-bit range maps to 0..255.

  With `unit_float` (a float image), values all within [0, 1] are read as
  the usual float convention, 1 = white.
  """
  a = np.asarray(a, np.float64)
  a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
  if unit_float and a.size and a.min() >= 0.0 and a.max() <= 1.0:
    a = a * 255.0
  elif sixteen_bit or a.max(initial=0) > 255:
    a = a / 257.0
  return np.clip(np.rint(a), 0, 255).astype(np.uint8)


_ARRAY_MODES = {2: 'LA', 3: 'RGB', 4: 'RGBA'}


def _array_image(a, where: str) -> Image.Image:
  """An (H, W[, 1|2|3|4]) uint8 or uint16 array as a PIL image (TFDS records, scikit-image samples)."""
  a = np.asarray(a)
  if a.dtype == np.uint16:
    a = wide_to_uint8(a, sixteen_bit=True)
  if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)):
    raise ImageError(where, f'unsupported image array {a.dtype} {a.shape}')
  if a.ndim == 3 and a.shape[2] == 1:
    a = a[:, :, 0]
  a = np.ascontiguousarray(a)
  return Image.fromarray(a) if a.ndim == 2 else Image.fromarray(a, _ARRAY_MODES[a.shape[2]])


@contextlib.contextmanager
def pillow_warnings_logged(where: str):
  """Pillow's warnings meanwhile (a corrupt but tolerated EXIF: 'Truncated File Read') go to the log (-v)."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    yield
  for w in caught:
    logger.info('%s: %s (tolerated)', where, errors.first_line(w.message))


def open_photo(source, *, max_pixels: int = MAX_PIXELS) -> Photo:
  """Decodes a path, a PIL image or a uint8/uint16 array; raises ImageError ('PATH: reason')."""
  where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else f'<{type(source).__name__}>'
  with pillow_warnings_logged(where):
    return _open_photo(source, max_pixels)


def _open_photo(source, max_pixels: int) -> Photo:
  if isinstance(source, np.ndarray):
    source = _array_image(source, f'<array {source.dtype} {source.shape}>')
  if isinstance(source, Image.Image):
    where = f'<{source.mode} image {source.size[0]}x{source.size[1]}>'
    _check_pixels(where, source.size, max_pixels)
    try:
      source.load()
      return _decode(source, where)
    except DECODE_ERRORS as e:
      raise decode_error(where, e) from e
    except MemoryError:
      raise out_of_memory(where, _decoding(source.size)) from None
  if not isinstance(source, (str, os.PathLike)):
    kind = type(source).__name__
    hint = ' (encoded bytes: wrap them in io.BytesIO and open with PIL.Image.open)' if kind == 'bytes' else ''
    raise ImageError(f'<{kind}>', f'not an image: pass a file path, a PIL image or an array{hint}')
  where = os.fspath(source)
  special = files.special_kind(where)
  if special:
    # Opened, a FIFO would wait for a writer forever.
    raise ImageError(where, f'not a regular file but {special}; give a photo file')
  size = None
  try:
    with _own_pixel_limit():
      im = Image.open(where)
    with im:
      size = im.size
      _check_pixels(where, size, max_pixels)
      # load() decodes every byte now, so a truncated file is an error here
      # rather than a grey band in the result.
      im.load()
      return _decode(im, where)
  except Image.DecompressionBombError as e:
    raise ImageError(where, f'{e}'.split('.')[0] + '; refused as a possible decompression bomb') from e
  except DECODE_ERRORS as e:
    raise decode_error(where, e) from e
  except MemoryError:
    raise out_of_memory(where, _decoding(size)) from None


def out_of_memory(where: str, doing: str) -> errors.OutOfMemory:
  """The one-line error for a MemoryError on the photo `where`: 'WHERE: not enough memory DOING'."""
  return errors.OutOfMemory(f'{where}: not enough memory {doing}')


def _decoding(size) -> str:
  return (
    f'to decode its {size[0]}x{size[1]} pixels ({megapixels(size[0] * size[1])})' if size else 'to decode it'
  )


def load_rgb(source, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
  """(H, W, 3) uint8 of a photo in display orientation, transparent pixels on white."""
  return open_photo(source, max_pixels=max_pixels).on_white()


def _decode(im: Image.Image, where: str) -> Photo:
  exif = im.getexif()
  if isinstance(exif.get(ExifTags.Base.Orientation), (str, bytes)):
    # Written as text by some tools ('6'): the number it spells, which exif_transpose then applies.
    orientation = _orientation(exif)
    if orientation:
      exif[ExifTags.Base.Orientation] = orientation
    else:
      del exif[ExifTags.Base.Orientation]
  icc = im.info.get('icc_profile') or None
  im = ImageOps.exif_transpose(im)
  if im.mode == 'CMYK':
    im, icc = cmyk_to_rgb(im, icc)
  elif im.mode in WIDE_MODES:
    im = Image.fromarray(wide_to_uint8(np.asarray(im), im.mode.startswith('I;16'), unit_float=im.mode == 'F'))
  elif im.mode == '1':
    im = im.convert('L')
  elif im.mode == 'P':
    im = im.convert('RGBA' if 'transparency' in im.info else 'RGB')
  elif im.mode not in ('L', 'RGB') + ALPHA_MODES:
    try:
      im = im.convert('RGB')  # YCbCr, HSV, ...
    except ValueError:
      raise ImageError(where, f'unsupported colour mode {im.mode}') from None
  alpha = None
  if im.mode in ALPHA_MODES:
    im = im.convert('LA' if im.mode in ('LA', 'La') else 'RGBA')
    alpha = np.asarray(im.getchannel('A'), np.uint8).copy()
  gray = im.mode in ('L', 'LA')
  rgb = np.ascontiguousarray(np.asarray(im.convert('RGB'), np.uint8))
  return Photo(rgb, alpha, gray, icc, exif if len(exif) else None, where)


def cmyk_to_rgb(im: Image.Image, icc: bytes | None):
  """CMYK through its own profile to sRGB when it has one (then the result is tagged sRGB)."""
  if icc:
    try:
      from PIL import ImageCms

      srgb = ImageCms.createProfile('sRGB')
      rgb = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, outputMode='RGB')
      return rgb, ImageCms.ImageCmsProfile(srgb).tobytes()
    except (ImportError, OSError, ValueError, TypeError):
      # ImageCms.PyCMSError is an OSError; an unusable profile falls back to
      # Pillow's naive conversion below, without a profile that would lie.
      pass
  return im.convert('RGB'), None


def upright_size(source) -> tuple[int, int] | None:
  """(width, height) of a photo file as it will be decoded (EXIF orientation applied), from its header
  alone; None when the header cannot be read (decoding then says why)."""
  if not isinstance(source, (str, os.PathLike)) or files.special_kind(source):
    return None
  try:
    # Whatever the header holds (Pillow's warnings included), decoding reports it properly.
    with warnings.catch_warnings():
      warnings.simplefilter('ignore')
      with _own_pixel_limit():
        im = Image.open(source)
      with im:
        w, h = im.size
        orientation = _orientation(_header_exif(im, source))
  except Exception:
    return None
  return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _header_exif(im: Image.Image, source) -> Image.Exif:
  """The EXIF of an opened, undecoded file. Pillow's PNG getexif() decodes the whole image when the eXIf
  chunk is not before the pixel data (a 40000 x 40000 PNG of 200 KB: 1.6 GB); here the chunks after the
  data are found by their headers alone (Pillow's ChunkStream), nothing decompressed."""
  if im.format != 'PNG' or 'exif' in im.info:
    return im.getexif()
  exif = Image.Exif()
  with open(source, 'rb') as f:
    f.seek(8)  # the PNG signature
    chunks = PngImagePlugin.ChunkStream(f)
    while True:
      cid, _, length = chunks.read()  # SyntaxError on a damaged or truncated file
      if cid == b'eXIf':
        exif.load(b'Exif\x00\x00' + f.read(length))
        return exif
      if cid == b'IEND':
        return exif
      f.seek(length + 4, os.SEEK_CUR)  # the chunk's data and CRC


def _orientation(exif: Image.Exif) -> int | None:
  """The EXIF orientation 1-8, also when a tool wrote it as text ('6'); None when absent or not one."""
  value = exif.get(ExifTags.Base.Orientation)
  if isinstance(value, bytes):
    value = value.decode('latin-1')
  if isinstance(value, str):
    value = value.strip().strip('\x00')
    value = int(value) if value.isdigit() else None
  return value if isinstance(value, int) and 1 <= value <= 8 else None
