"""Real photo files in and out: orientation, colour profile, EXIF, alpha, odd modes, bomb limit.

A photo is decoded to what a person sees (EXIF orientation applied) as RGB
uint8 plus, when it has one, an alpha channel that is enhanced apart from the
colour (Lanczos). Its ICC profile and EXIF travel to the result, with the
orientation reset to 1 because the pixels are already upright. Grayscale
sources come out grayscale (their ICC profile describes one channel);
palette, 16-bit and float images become 8-bit; CMYK goes through its ICC
profile to sRGB when it has one.
"""

import contextlib
import dataclasses
import io
import os
import warnings

import numpy as np
from PIL import ExifTags
from PIL import Image
from PIL import ImageOps

from zoom_enhance import images

# Decoded pixels above which a file is refused unless the caller raises the
# limit: a few-kilobyte PNG can claim 100 000 x 100 000 pixels. 120 MP covers
# the largest phone photos (a 108 MP sensor) with room to spare.
MAX_PIXELS = 120_000_000

# Output formats by extension.
SAVE_FORMATS = {'png': 'PNG', 'jpg': 'JPEG', 'jpeg': 'JPEG', 'webp': 'WEBP'}

_WIDE_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I', 'F')
_ALPHA_MODES = ('RGBA', 'RGBa', 'LA', 'La', 'PA')


@dataclasses.dataclass
class Photo:
  """A decoded photo in display orientation."""
  rgb: np.ndarray  # (H, W, 3) uint8
  alpha: np.ndarray | None  # (H, W) uint8, or None for opaque formats
  gray: bool  # no colour in the source: written back as grayscale
  icc_profile: bytes | None  # describes `rgb` (or the gray channel); None means sRGB
  exif: Image.Exif | None  # the source's EXIF, orientation already applied to the pixels
  source: str  # path, or a description of an in-memory image

  @property
  def size(self) -> tuple[int, int]:
    return self.rgb.shape[1], self.rgb.shape[0]


@contextlib.contextmanager
def _own_pixel_limit():
  """Lets `_check_pixels` decide, with its message and the caller's limit.

  Pillow's own check (a warning, then an error above 2 x MAX_IMAGE_PIXELS)
  would fire first with another limit; ours runs on the header's size right
  after open(), before any pixel is decoded.
  """
  old = Image.MAX_IMAGE_PIXELS
  Image.MAX_IMAGE_PIXELS = None
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      yield
  finally:
    Image.MAX_IMAGE_PIXELS = old


def _check_pixels(where: str, size, max_pixels: int):
  w, h = size
  if w * h > max_pixels:
    raise images.ImageError(where, f'{w}x{h} is {w * h / 1e6:.1f} MP, over the {max_pixels / 1e6:g} MP '
                                   'limit for decoding (a decompression bomb?); raise --max-pixels '
                                   'if the image is genuine')


def open_photo(source, *, max_pixels: int = MAX_PIXELS) -> Photo:
  """Decodes a path or a PIL image. Raises images.ImageError ('PATH: reason') for bad files."""
  if isinstance(source, Image.Image):
    where = f'<{source.mode} image {source.size[0]}x{source.size[1]}>'
    _check_pixels(where, source.size, max_pixels)
    try:
      source.load()
      return _decode(source, where)
    except images.DECODE_ERRORS as e:
      raise images.decode_error(where, e) from e
  where = os.fspath(source)
  try:
    with _own_pixel_limit(), Image.open(where) as im:
      _check_pixels(where, im.size, max_pixels)
      # load() decodes every byte now, so a truncated file is an error here
      # rather than a grey band in the result.
      im.load()
      return _decode(im, where)
  except Image.DecompressionBombError as e:
    raise images.ImageError(where, f'{e}'.split('.')[0] + '; refused as a possible decompression bomb') from e
  except images.DECODE_ERRORS as e:
    raise images.decode_error(where, e) from e


def _decode(im: Image.Image, where: str) -> Photo:
  exif = im.getexif()
  icc = im.info.get('icc_profile') or None
  im = ImageOps.exif_transpose(im)
  if im.mode == 'CMYK':
    im, icc = _cmyk_to_rgb(im, icc)
  elif im.mode in _WIDE_MODES:
    im = Image.fromarray(_wide_to_uint8(im))
  elif im.mode == '1':
    im = im.convert('L')
  elif im.mode == 'P':
    im = im.convert('RGBA' if 'transparency' in im.info else 'RGB')
  elif im.mode not in ('L', 'LA', 'La', 'RGB', 'RGBA', 'RGBa', 'PA'):
    try:
      im = im.convert('RGB')  # YCbCr, HSV, ...
    except ValueError:
      raise images.ImageError(where, f'unsupported colour mode {im.mode}') from None
  alpha = None
  if im.mode in _ALPHA_MODES:
    im = im.convert('LA' if im.mode in ('LA', 'La') else 'RGBA')
    alpha = np.asarray(im.getchannel('A'), np.uint8).copy()
  gray = im.mode in ('L', 'LA')
  rgb = np.ascontiguousarray(np.asarray(im.convert('RGB'), np.uint8))
  return Photo(rgb, alpha, gray, icc, exif if len(exif) else None, where)


def _wide_to_uint8(im: Image.Image) -> np.ndarray:
  """16-bit, 32-bit or float grey levels to 8 bits: 16-bit full range -> 0..255."""
  a = np.asarray(im).astype(np.float64)
  if im.mode.startswith('I;16') or (im.mode == 'I' and a.max(initial=0) > 255):
    a = a / 257.0
  return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None):
  """CMYK through its own profile to sRGB when it has one (then the result is tagged sRGB)."""
  if icc:
    try:
      from PIL import ImageCms
      srgb = ImageCms.createProfile('sRGB')
      rgb = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb,
                                      outputMode='RGB')
      return rgb, ImageCms.ImageCmsProfile(srgb).tobytes()
    except (ImportError, OSError, ValueError, TypeError) as e:
      # ImageCms.PyCMSError is an OSError; an unusable profile falls back to
      # Pillow's naive conversion below, without a profile that would lie.
      del e
  return im.convert('RGB'), None


def output_exif(exif: Image.Exif | None, size) -> bytes | None:
  """EXIF for the result: orientation 1 (the pixels are upright) and its real pixel size.

  Works on a copy: the Exif of a caller's PIL image stays as it was.
  """
  if exif is None:
    return None
  out = Image.Exif()
  out.load(exif.tobytes())
  out[ExifTags.Base.Orientation] = 1
  sub = out.get_ifd(ExifTags.IFD.Exif)
  if ExifTags.Base.ExifImageWidth in sub or ExifTags.Base.ExifImageHeight in sub:
    sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight] = int(size[0]), int(size[1])
  return out.tobytes()


def to_image(rgb: np.ndarray, alpha: np.ndarray | None, *, gray: bool) -> Image.Image:
  """uint8 planes to a PIL image: L, LA, RGB or RGBA."""
  im = Image.fromarray(rgb)
  if gray:
    im = im.convert('L')
  if alpha is not None:
    im = im.convert('LA' if gray else 'RGBA')
    im.putalpha(Image.fromarray(alpha))
  return im


def format_for(path) -> str:
  ext = os.path.splitext(os.fspath(path))[1][1:].lower()
  if ext not in SAVE_FORMATS:
    raise images.ImageError(path, f'unknown output extension {ext!r} (use one of {", ".join(SAVE_FORMATS)})')
  return SAVE_FORMATS[ext]


def save_photo(path, im: Image.Image, *, quality: int = 95) -> None:
  """Encodes by extension (PNG, JPEG, WebP) with im.info's ICC profile and EXIF; written atomically.

  JPEG has no alpha: transparent pixels are composited onto white, as viewers
  show them. The whole file is encoded in memory first, so a failure leaves
  no partial file.
  """
  fmt = format_for(path)
  icc_profile, exif = im.info.get('icc_profile'), im.info.get('exif')
  if fmt == 'JPEG' and im.mode in ('RGBA', 'LA'):
    base = Image.new(im.mode, im.size, (255,) * len(im.mode))
    im = Image.alpha_composite(base.convert('RGBA'), im.convert('RGBA'))
    im = im.convert('L' if base.mode == 'LA' else 'RGB')
  if fmt == 'WEBP' and im.mode in ('L', 'LA'):
    # WebP stores colour only; a gray profile cannot describe RGB pixels.
    im = im.convert('RGBA' if im.mode == 'LA' else 'RGB')
    icc_profile = None
  kwargs = {}
  if fmt in ('JPEG', 'WEBP'):
    kwargs['quality'] = int(quality)
  if icc_profile:
    kwargs['icc_profile'] = icc_profile
  if exif:
    kwargs['exif'] = exif
  buf = io.BytesIO()
  im.save(buf, format=fmt, **kwargs)
  images.write_atomic(path, buf.getvalue())
