"""The imaging layer: the one photo decoder/encoder, the resampler and lr_up, atomic files."""

import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import ExifTags
from PIL import Image
from PIL import ImageCms

from zoom_enhance.imaging import consistency
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo
from zoom_enhance.imaging import resample
from zoom_enhance.imaging import save

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
  return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_raw(path, width, height, bit_depth, color_type, rows) -> None:
  """A PNG written by hand (Pillow cannot write 48-bit RGB): rows are bytes without filter byte."""
  z = zlib.compressobj(9)
  idat = b''.join(z.compress(b'\x00' + row) for row in rows) + z.flush()
  ihdr = struct.pack('>IIBBBBB', width, height, bit_depth, color_type, 0, 0, 0)
  with open(path, 'wb') as f:
    f.write(
      b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', ihdr) + _png_chunk(b'IDAT', idat) + _png_chunk(b'IEND', b'')
    )


def landscape(w=48, h=32) -> np.ndarray:
  """A picture with a red top-left corner, so orientation mistakes show."""
  img = np.full((h, w, 3), 40, np.uint8)
  img[:, :, 1] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
  img[: h // 3, : w // 3] = (255, 0, 0)
  return img


def exif_with(orientation: int, size) -> Image.Exif:
  exif = Image.Exif()
  exif[ExifTags.Base.Orientation] = orientation
  exif[ExifTags.Base.Make] = 'ZoomTest'
  sub = exif.get_ifd(ExifTags.IFD.Exif)
  sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight] = size
  return exif


def test_exif_orientation_is_applied_and_reset_with_icc_carried(tmp_path):
  stored = landscape()
  path = tmp_path / 'rotated.jpg'
  Image.fromarray(stored).save(path, quality=95, exif=exif_with(6, (48, 32)).tobytes(), icc_profile=SRGB)
  p = photo.open_photo(path)
  # Orientation 6: the camera was turned; upright is the stored image rotated 90 degrees clockwise.
  assert p.size == (32, 48)
  assert p.rgb[0, -1, 0] > 200 and p.rgb[0, -1, 2] < 60  # the red corner is now top-right
  assert p.icc_profile == SRGB and not p.gray and p.alpha is None

  out = save.to_image(p.rgb, None, gray=False)
  out.info.update(icc_profile=p.icc_profile, exif=save.output_exif(p.exif, (64, 96)))
  for ext in ('png', 'jpg', 'webp'):
    dst = tmp_path / f'out.{ext}'
    save.save_photo(dst, out, quality=90)
    with Image.open(dst) as im:
      assert im.size == (32, 48)
      assert im.info.get('icc_profile') == SRGB, ext
      exif = im.getexif()
      assert exif[ExifTags.Base.Orientation] == 1, ext
      assert exif[ExifTags.Base.Make] == 'ZoomTest', ext
      sub = exif.get_ifd(ExifTags.IFD.Exif)
      assert (sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight]) == (64, 96), ext
  # The source's own Exif object is not modified.
  assert p.exif[ExifTags.Base.Orientation] == 6


def test_a_pngs_orientation_is_read_from_its_header_wherever_its_exif_chunk_is(tmp_path):
  """upright_size and open_photo agree on a PNG whose eXIf chunk comes after the pixel data (Pillow reads
  it there only by decoding), and a truncated PNG's header says nothing (decoding says why)."""
  Image.fromarray(landscape()).save(tmp_path / 'early.png', exif=exif_with(6, (48, 32)).tobytes())
  plain = io.BytesIO()
  Image.fromarray(landscape()).save(plain, 'PNG')
  data = plain.getvalue()
  end = data.rindex(b'IEND') - 4
  late = data[:end] + _png_chunk(b'eXIf', exif_with(6, (48, 32)).tobytes()) + data[end:]
  (tmp_path / 'late.png').write_bytes(late)
  (tmp_path / 'cut.png').write_bytes(data[: end - 20])
  for name in ('early.png', 'late.png'):
    assert photo.upright_size(tmp_path / name) == photo.open_photo(tmp_path / name).size == (32, 48), name
  assert photo.upright_size(tmp_path / 'cut.png') is None
  with pytest.raises(photo.ImageError):
    photo.open_photo(tmp_path / 'cut.png')


def test_alpha_is_kept_and_jpeg_composites_onto_white(tmp_path):
  rgba = np.zeros((20, 30, 4), np.uint8)
  rgba[..., :3] = landscape(30, 20)
  rgba[..., 3] = np.linspace(0, 255, 30, dtype=np.uint8)[None, :]
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'a.png')
  p = photo.open_photo(tmp_path / 'a.png')
  np.testing.assert_array_equal(p.alpha, rgba[..., 3])
  np.testing.assert_array_equal(p.rgb, rgba[..., :3])

  im = save.to_image(p.rgb, p.alpha, gray=False)
  assert im.mode == 'RGBA'
  save.save_photo(tmp_path / 'o.png', im)
  save.save_photo(tmp_path / 'o.webp', im)
  save.save_photo(tmp_path / 'o.jpg', im, quality=100)
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / 'o.png')), rgba)
  with Image.open(tmp_path / 'o.webp') as w:
    assert w.mode == 'RGBA'
    assert np.abs(np.asarray(w)[..., 3].astype(int) - rgba[..., 3]).max() <= 2
  with Image.open(tmp_path / 'o.jpg') as j:
    assert j.mode == 'RGB'
    assert np.asarray(j)[:, 0].min() > 245  # alpha 0 column is white

  # Palette with a transparent index and grayscale with alpha.
  pal = Image.fromarray(rgba[..., :3]).convert('P', palette=Image.Palette.ADAPTIVE, colors=8)
  pal.info['transparency'] = 0
  pal.save(tmp_path / 'p.png', transparency=0)
  pp = photo.open_photo(tmp_path / 'p.png')
  assert pp.alpha is not None and (pp.alpha == 0).any() and (pp.alpha == 255).any()
  Image.fromarray(rgba[..., :2].copy(), 'LA').save(tmp_path / 'la.png')
  la = photo.open_photo(tmp_path / 'la.png')
  assert la.gray and la.alpha is not None
  assert save.to_image(la.rgb, la.alpha, gray=True).mode == 'LA'


def test_grayscale_16_bit_cmyk_and_bilevel_inputs(tmp_path):
  ramp16 = (np.arange(40 * 50).reshape(40, 50) * 30).astype(np.uint16)
  Image.fromarray(ramp16).save(tmp_path / 'g16.png')
  g = photo.open_photo(tmp_path / 'g16.png')
  assert g.gray and g.rgb.dtype == np.uint8
  np.testing.assert_array_equal(g.rgb[..., 0], np.clip(np.rint(ramp16 / 257.0), 0, 255).astype(np.uint8))
  assert save.to_image(g.rgb, None, gray=True).mode == 'L'

  rgb16 = np.zeros((6, 7, 3), np.uint16)
  rgb16[..., 0], rgb16[..., 1], rgb16[..., 2] = 65535, 32768, 257 * 10
  write_png_raw(tmp_path / 'rgb48.png', 7, 6, 16, 2, [r.astype('>u2').tobytes() for r in rgb16])
  c = photo.open_photo(tmp_path / 'rgb48.png')
  assert not c.gray
  assert np.abs(c.rgb.astype(int) - [255, 128, 10]).max() <= 1

  cmyk = Image.new('CMYK', (9, 5), (0, 255, 255, 0))  # pure red ink
  cmyk.save(tmp_path / 'cmyk.jpg', quality=100)
  k = photo.open_photo(tmp_path / 'cmyk.jpg')
  assert k.rgb.shape == (5, 9, 3) and k.icc_profile is None
  assert k.rgb[..., 0].min() > 200 and k.rgb[..., 1:].max() < 60

  Image.fromarray(np.eye(8, dtype=bool)).save(tmp_path / 'bw.png')
  b = photo.open_photo(tmp_path / 'bw.png')
  assert b.gray and b.rgb[0, 0, 0] == 255 and b.rgb[0, 1, 0] == 0


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
  side = 20_000  # 400 MP of 1-bit pixels in a file of about 50 KB
  row = bytes(side // 8)
  write_png_raw(tmp_path / 'bomb.png', side, side, 1, 0, (row for _ in range(side)))
  assert os.path.getsize(tmp_path / 'bomb.png') < 200_000
  t0 = time.perf_counter()
  with pytest.raises(photo.ImageError, match=r'bomb\.png: 20000x20000 is 400 MP, over the 120 MP limit'):
    photo.open_photo(tmp_path / 'bomb.png')
  assert time.perf_counter() - t0 < 2.0
  # A caller's own lower limit applies the same way.
  Image.fromarray(landscape()).save(tmp_path / 'small.png')
  with pytest.raises(photo.ImageError, match='over the 0.001 MP limit'):
    photo.open_photo(tmp_path / 'small.png', max_pixels=1000)


def test_bad_files_are_one_line_errors(tmp_path):
  (tmp_path / 'text.jpg').write_text('not an image at all\n')
  buf = io.BytesIO()
  Image.fromarray(landscape(200, 150)).save(buf, format='JPEG', quality=95)
  (tmp_path / 'cut.jpg').write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  for name, reason in (
    ('text.jpg', 'not an image file'),
    ('cut.jpg', 'truncated'),
    ('missing.png', 'no such file'),
  ):
    with pytest.raises(photo.ImageError, match=reason) as e:
      photo.open_photo(tmp_path / name)
    assert str(e.value).startswith(str(tmp_path / name)) and '\n' not in str(e.value)


def test_save_is_atomic_and_checks_the_extension(tmp_path):
  im = Image.fromarray(landscape())
  with pytest.raises(photo.ImageError, match='unknown output extension'):
    save.save_photo(tmp_path / 'out.gif', im)
  (tmp_path / 'a_file').write_text('x')
  with pytest.raises(
    photo.ImageError, match=r'out\.png: cannot write \(Not a directory: .*a_file is not a folder'
  ):
    save.save_photo(tmp_path / 'a_file' / 'out.png', im)
  # A missing folder is named as given, not the hidden temporary file that failed.
  missing = tmp_path / 'missing' / 'out.png'
  with pytest.raises(photo.ImageError) as e:
    save.save_photo(missing, im)
  assert str(e.value) == f'{missing}: cannot write (No such directory: {tmp_path / "missing"})'
  save.save_photo(tmp_path / 'ok.png', im)
  assert sorted(os.listdir(tmp_path)) == ['a_file', 'ok.png']


@pytest.mark.parametrize(
  'mode,ext,expect',
  [
    ('F', 'jpg', 'L'),
    ('I;16', 'jpg', 'L'),
    ('I', 'jpg', 'L'),
    ('F', 'png', 'L'),
    ('I;16', 'png', 'I;16'),  # PNG stores 16 bits
    ('CMYK', 'png', 'RGB'),
    ('CMYK', 'webp', 'RGB'),
    ('CMYK', 'bmp', 'RGB'),
    ('La', 'png', 'LA'),
    ('LAB', 'png', 'RGB'),
    ('P', 'jpg', 'RGB'),
  ],
)
def test_images_of_any_mode_are_saved_in_a_mode_the_format_holds(tmp_path, mode, ext, expect):
  """Pillow raised a bare OSError ('cannot write mode F as JPEG'); the wide modes go to 8 bits as decoding
  takes them (the full 16-bit range, floats in [0, 1]), CMYK through RGB."""
  ramp = np.linspace(0, 1, 16 * 8).reshape(8, 16)
  im = {
    'F': lambda: Image.fromarray(ramp.astype(np.float32)),
    'I;16': lambda: Image.fromarray((ramp * 65535).astype(np.uint16)),
    'I': lambda: Image.fromarray((ramp * 65535).astype(np.int32)),
  }.get(mode, lambda: Image.new(mode, (16, 8)))()
  assert im.mode == mode
  save.save_photo(tmp_path / f'out.{ext}', im)
  with Image.open(tmp_path / f'out.{ext}') as saved:
    assert saved.mode == expect and saved.size == (16, 8)
    if mode in ('F', 'I;16', 'I') and expect == 'L':
      assert abs(saved.getpixel((15, 7)) - 255) <= 2 and saved.getpixel((0, 0)) <= 2
  assert sorted(os.listdir(tmp_path)) == [f'out.{ext}']


def test_temporary_names_fit_name_max_and_leftovers_are_still_found(tmp_path):
  """A legal 254-byte file name: its temporary file's name is cut (with a hash of the whole) to fit 255 bytes;
  a killed writer's leftover of that name is removed as any other."""
  for name in ('a' * 250 + '.png', 'é' * 125 + '.png', 'short.png'):
    tmp = os.path.basename(files.temp_name(tmp_path / name))
    assert tmp.startswith('.') and tmp.endswith('.tmp') and len(os.fsencode(tmp)) <= files.NAME_MAX
    save.save_photo(tmp_path / name, np.zeros((4, 4, 3), np.uint8))
    stale = tmp.replace(f'.{os.getpid()}.', f'.{2**31 - 2}.')  # a writer that cannot be running
    (tmp_path / stale).write_bytes(b'partial')
    assert files.remove_stale_temps(tmp_path / name) == 1 and not (tmp_path / stale).exists()
  # Two long names that differ after the cut still get temporary files of their own.
  stems = {
    os.path.basename(files.temp_name(tmp_path / f'{"a" * 240}{c}.png')).rsplit('.', 3)[0] for c in 'xy'
  }
  assert len(stems) == 2
  assert sorted(os.listdir(tmp_path)) == sorted(('a' * 250 + '.png', 'é' * 125 + '.png', 'short.png'))


# --- decoding to RGB for training, evaluation and export ------------------------


def _mode_image(mode):
  grey = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))  # (8, 16)
  if mode == 'I;16':
    return Image.fromarray(grey.astype(np.uint16) * 257)
  if mode == 'RGBA':
    return Image.fromarray(np.dstack([grey] * 3 + [np.full_like(grey, 255)]))
  return Image.fromarray(grey).convert(mode)


@pytest.mark.parametrize(
  'mode,ext',
  [
    ('L', 'png'),
    ('P', 'png'),
    ('RGBA', 'png'),
    ('LA', 'png'),
    ('I;16', 'png'),
    ('1', 'png'),
    ('CMYK', 'jpg'),
    ('L', 'webp'),
    ('RGB', 'bmp'),
    ('CMYK', 'tif'),
  ],
)
def test_any_mode_loads_as_rgb_uint8(tmp_path, mode, ext):
  im = _mode_image(mode)
  path = tmp_path / f'x.{ext}'
  im.save(path)
  if ext == 'png':
    assert Image.open(path).mode == mode  # The file really holds that mode.
  img = photo.load_rgb(path)
  assert img.shape == (8, 16, 3) and img.dtype == np.uint8
  if mode in ('L', 'P', 'RGBA', 'LA', 'I;16') and ext == 'png':
    np.testing.assert_array_equal(img[0, :, 0], np.arange(0, 256, 16))


def test_transparent_pixels_become_white(tmp_path):
  rgba = np.zeros((4, 4, 4), np.uint8)  # Black, fully transparent.
  Image.fromarray(rgba).save(tmp_path / 't.png')
  assert (photo.load_rgb(tmp_path / 't.png') == 255).all()


def test_unreadable_files_raise_image_error(tmp_path, photo_dir):
  jpeg = (photo_dir / 'astronaut.jpg').read_bytes()
  (tmp_path / 'photo.jpg').write_bytes(jpeg[: len(jpeg) // 2])
  (tmp_path / 'fake.jpg').write_text('hello')
  with pytest.raises(photo.ImageError, match=r'photo\.jpg: truncated image file'):
    photo.load_rgb(tmp_path / 'photo.jpg')
  with pytest.raises(ValueError, match=r'fake\.jpg: not an image file'):
    photo.load_rgb(tmp_path / 'fake.jpg')
  with pytest.raises(photo.ImageError, match='no such file'):
    photo.load_rgb(tmp_path / 'missing.png')


def test_list_images_is_recursive_sorted_and_case_insensitive(tmp_path):
  for rel in ('b.JPG', 'a.png', 'z/c.TIFF', 'z/d.webp', 'notes.txt', 'e.jpeg.bak'):
    (tmp_path / rel).parent.mkdir(exist_ok=True)
    (tmp_path / rel).write_bytes(b'')
  got = [os.path.relpath(p, tmp_path) for p in files.list_images(tmp_path)]
  assert got == ['a.png', 'b.JPG', os.path.join('z', 'c.TIFF'), os.path.join('z', 'd.webp')]


def test_arrays_save_and_load_round_trip_atomically(tmp_path):
  img = np.random.default_rng(0).integers(0, 256, (9, 7, 3), dtype=np.uint8)
  save.save_photo(tmp_path / 'out.png', img)
  save.save_photo(tmp_path / 'out.png', img[::-1])  # Overwrites in place.
  np.testing.assert_array_equal(photo.load_rgb(tmp_path / 'out.png'), img[::-1])
  assert os.listdir(tmp_path) == ['out.png']  # No temporary file left behind.
  for ext in ('jpg', 'bmp', 'tif', 'webp'):
    save.save_photo(tmp_path / f'out.{ext}', img)
    assert photo.load_rgb(tmp_path / f'out.{ext}').shape == img.shape, ext
  np.testing.assert_array_equal(photo.load_rgb(tmp_path / 'out.bmp'), img)  # lossless formats are exact
  np.testing.assert_array_equal(photo.load_rgb(tmp_path / 'out.tif'), img)
  with pytest.raises(ValueError, match='uint8'):
    save.save_photo(tmp_path / 'f.png', img.astype(np.float32))


@pytest.mark.parametrize(
  'array, want',
  [
    (np.full((3, 4), 200, np.uint8), 200),  # grey
    (np.full((3, 4, 1), 7, np.uint8), 7),  # grey with a channel axis (a TFDS record)
    (np.full((3, 4), 257 * 90, np.uint16), 90),  # 16-bit
    (np.dstack([np.full((3, 4, 3), 10, np.uint8), np.zeros((3, 4), np.uint8)]), 255),  # transparent: white
  ],
)
def test_arrays_decode_like_files(array, want):
  """In-memory images (scikit-image samples, TFDS records) go through the same decoder as files."""
  rgb = photo.load_rgb(array)
  assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8 and (rgb == want).all()
  with pytest.raises(photo.ImageError, match='unsupported image array'):
    photo.load_rgb(np.zeros((3, 4, 5), np.uint8))


# --- the resampler and lr_up --------------------------------------------------


def test_lr_size_for():
  assert resample.lr_size_for(64, 4.0) == 16
  assert resample.lr_size_for(64, 3.0) == 21  # Effective scale 64 / 21.
  assert resample.lr_size_for(64, 1.0) == 64
  assert resample.lr_size_for(3, 100.0) == 1


def _camera(hw=(150, 120)) -> np.ndarray:
  from skimage import data

  return np.ascontiguousarray(np.repeat(data.camera()[100 : 100 + hw[0], 200 : 200 + hw[1], None], 3, axis=2))


@pytest.mark.parametrize('scale', [4, 2.5])
def test_back_projection_strip_by_strip_is_the_whole_image_iteration_and_gives_back_the_input(
  scale, monkeypatch
):
  """consistency.back_project, a few output rows at a time, equals x += w * U(y - D(x)) on whole images (to
  rounding); each round shrinks the distance between D(x) and the input; weight 0 leaves the image."""
  hr = _camera()
  small = (resample.lr_size_for(hr.shape[0], scale), resample.lr_size_for(hr.shape[1], scale))
  lr = resample.bicubic_uint8(hr, small)
  # A smooth enlargement that does not reproduce its input: the bicubic one, blurred further.
  start = resample.bicubic_uint8(resample.bicubic_uint8(lr, (small[0] // 2, small[1] // 2)), hr.shape[:2])

  def whole(iterations, weight):
    x = start.astype(np.float32)
    for _ in range(iterations):
      x += weight * resample.bicubic_resize(
        lr.astype(np.float32) - resample.bicubic_resize(x, small), hr.shape[:2]
      )
    return x

  monkeypatch.setattr(consistency, 'STRIP', 16)  # many strips
  gaps = []
  for iterations, weight in ((1, 1.0), (2, 1.0), (2, 0.4)):
    got = consistency.back_project(start.copy(), lr, weight=weight, iterations=iterations)
    want = resample.to_uint8(whole(iterations, weight))
    assert np.abs(got.astype(int) - want).max() <= 1 and (got != want).mean() < 1e-3
    if weight == 1.0:
      gaps.append(np.abs(resample.bicubic_resize(got, small) - lr).mean())
  before = np.abs(resample.bicubic_resize(start, small) - lr).mean()
  assert before > 2 * gaps[0] > 2 * gaps[1]
  np.testing.assert_array_equal(consistency.back_project(start.copy(), lr, weight=0.0, iterations=2), start)


@pytest.mark.parametrize('size', [(5, 7), (40, 30), (13, 17)])
def test_bicubic_resize_keeps_a_constant_image_constant(size):
  out = resample.bicubic_resize(np.full((13, 17, 3), 77, np.uint8), size)
  assert out.shape == size + (3,) and out.dtype == np.float32
  np.testing.assert_allclose(out, 77.0, atol=1e-3)


def test_bicubic_resize_is_deterministic_and_float_precise():
  img = np.random.default_rng(1).uniform(0, 255, (20, 24, 3)).astype(np.float32)
  a, b = resample.bicubic_resize(img, (7, 9)), resample.bicubic_resize(img.copy(), (7, 9))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, np.rint(a))  # Not rounded to 8 bits on the way.
  np.testing.assert_array_equal(resample.bicubic_resize(img, (20, 24)), img)


def test_png_level_trades_time_for_size_and_is_lossless_at_every_level(tmp_path):
  """save_photo's png_level: the default (save.PNG_LEVEL, fast) and 9 (smallest) decode to the same pixels;
  9 is not larger; a level outside 0-9 is the library's ConfigError before anything is written."""
  from skimage import data

  from zoom_enhance import errors

  img = data.astronaut()
  sizes = {}
  for level in (save.PNG_LEVEL, 9):
    path = tmp_path / f'l{level}.png'
    save.save_photo(path, img, png_level=level)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), img)
    sizes[level] = path.stat().st_size
  assert sizes[9] < sizes[save.PNG_LEVEL]
  # Level 1 is written Huffman-only (save.PNG_STRATEGY): smaller than zlib's default strategy at level 1.
  default_strategy = io.BytesIO()
  Image.fromarray(img).save(default_strategy, 'PNG', compress_level=1)
  assert save.PNG_LEVEL == 1 and sizes[1] < default_strategy.tell()
  for bad in (10, -1, 1.5, True):
    with pytest.raises(errors.ConfigError, match='png_level'):
      save.save_photo(tmp_path / 'bad.png', img, png_level=bad)
  with pytest.raises(errors.ConfigError, match='quality'):
    save.save_photo(tmp_path / 'bad.jpg', img, quality=0)
  assert not (tmp_path / 'bad.png').exists() and not (tmp_path / 'bad.jpg').exists()


def test_megapixels_are_written_with_three_significant_digits_and_no_exponent():
  sizes = (100, 135_000, 2_359_296, 99_950_000, 120_000_000, 1_600_000_000, 6_400_000_000)
  assert [photo.megapixels(n) for n in sizes] == [
    '0.0001 MP', '0.135 MP', '2.36 MP', '100 MP', '120 MP', '1600 MP', '6400 MP'
  ]  # fmt: skip
