"""The on-device runtime on a real bundle: LiteRT engines, seamless tiles, crops, sizes, photos, the CLI."""

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
import types

import numpy as np
import pytest
from conftest import BUNDLE_TILE
from conftest import ROOT
from hostile_samples import CTRL_C_WHILE_LOADING
from hostile_samples import exif_pointing_past_its_end
from hostile_samples import exif_with_text_orientation
from PIL import ExifTags
from PIL import Image
from PIL import ImageCms

import zoom_enhance
from zoom_enhance import errors
from zoom_enhance.imaging import resample
from zoom_enhance.runtime import backends
from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import cpu_variant
from zoom_enhance.runtime import engine
from zoom_enhance.runtime import geometry
from zoom_enhance.runtime import pipeline
from zoom_enhance.runtime import tiling

TILE = BUNDLE_TILE
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile('sRGB')).tobytes()


@pytest.fixture(scope='module')
def enhancer(bundle_dir):
  with pipeline.Enhancer(bundle_dir, accelerator='cpu', threads=2) as e:
    yield e


@pytest.fixture(scope='module')
def photo_path(photo_dir):
  return str(photo_dir / 'chelsea.jpg')


def cli(*args, cwd=None):
  """The real command in a fresh process: (exit code, stdout, stderr lines)."""
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  r = subprocess.run(
    [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', *map(str, args)],
    capture_output=True,
    text=True,
    env=env,
    cwd=cwd or ROOT,
    timeout=300,
  )
  return r.returncode, r.stdout, [ln for ln in r.stderr.splitlines() if ln.strip()]


# The runtime path.


def test_runtime_imports_no_jax_flax_or_tensorflow(bundle_dir, photo_path, tmp_path):
  code = textwrap.dedent(f"""
      import json, sys
      import zoom_enhance
      light = 'zoom_enhance.runtime' not in sys.modules
      from zoom_enhance import cli
      rc = cli.main(['zoom-enhance', 'enhance', {photo_path!r}, '--crop', '10,10,40,30', '--scale', '2',
                     '-o', {str(tmp_path / 'cli.png')!r}, '--bundle', {bundle_dir!r}])
      img = zoom_enhance.enhance({photo_path!r}, crop=(0, 0, 30, 30), scale=1.5, bundle={bundle_dir!r})
      heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'jax', 'jaxlib', 'flax', 'tensorflow',
                                                                 'keras', 'tf_keras', 'orbax'}})
      print(json.dumps({{'rc': rc, 'heavy': heavy, 'light': light, 'size': img.size,
                         'litert': 'ai_edge_litert' in sys.modules,
                         'ran': img.info['zoom_enhance'].accelerator}}))
  """)
  r = subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, PYTHONPATH=str(ROOT)),
    cwd=tmp_path,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  got = json.loads(r.stdout.strip().splitlines()[-1])
  assert got == {
    'rc': 0,
    'heavy': [],
    'light': True,
    'size': [45, 45],
    'litert': True,
    'ran': got['ran'],
  } and got['ran'] in ('npu', 'gpu', 'cpu')
  assert Image.open(tmp_path / 'cli.png').size == (80, 60)


def test_one_tile_matches_the_jax_sampler_with_the_same_noise(trained, enhancer):
  import jax

  from export_tflite import convert
  from zoom_enhance.training import checkpoint

  params, config, _ = checkpoint.restore_params(trained)
  reference = jax.jit(convert.make_tile_fn(params, config, 2))
  rng = np.random.default_rng(3)
  lr = rng.integers(0, 256, (10, 9, 3), dtype=np.uint8)
  out_hw, scale, seed = (29, 27), 3.0, 11  # odd sizes below one tile: mirror-padded to 32
  got = tiling.enhance_tiled(enhancer.engine.run, lr, out_hw, tile=TILE, overlap=4, scale=scale, seed=seed)

  lr_up = resample.lr_up(lr, out_hw)
  lr_up = np.pad(lr_up, ((0, TILE - 29), (0, TILE - 27), (0, 0)), mode='symmetric')
  noise = tiling.NoiseField(seed).region(0, 0, TILE, TILE)
  want = np.asarray(reference(lr_up[None], noise[None], np.array([scale], np.float32)))[0, :29, :27]
  want = np.clip(np.rint((want + 1) * 127.5), 0, 255)
  assert got.shape == (29, 27, 3)
  assert np.abs(got.astype(int) - want).max() <= 1
  # The model did something: the result is not the bicubic enlargement.
  bicubic = resample.from_signed(lr_up[:29, :27])
  assert np.abs(got.astype(int) - bicubic).mean() > 2


@pytest.mark.parametrize('out_hw', [(320, 480), (480, 320), (29, 27), (37, 61), (1080, 1920), (12, 500)])
@pytest.mark.parametrize('parallel', [1, 2])
def test_tiles_of_a_resizable_model_fit_the_photo(out_hw, parallel):
  """plan_tile: multiples of 8 within the size cap that cover the result, as few pixels as it takes:
  one tile up to the cap on one thread, at least two where two run at once (if the result is wide
  enough for two), and far fewer wasted pixels than square 192-px tiles."""
  th, tw = tiling.plan_tile(out_hw, overlap=24, multiple=8, parallel=parallel)
  assert th % 8 == 0 and tw % 8 == 0 and th * tw <= tiling.MAX_TILE_PIXELS
  n = tiling.count_tiles(out_hw, (th, tw), 24)
  ys, xs = tiling.tile_starts(out_hw[0], th, 24), tiling.tile_starts(out_hw[1], tw, 24)
  assert ys[-1] + th >= out_hw[0] and xs[-1] + tw >= out_hw[1]  # covered
  computed = n * th * tw
  square = tiling.count_tiles(out_hw, 192, 24) * 192 * 192
  if out_hw[0] * out_hw[1] <= tiling.MAX_TILE_PIXELS and parallel == 1:
    assert n == 1 and (th, tw) == tuple(-(-s // 8) * 8 for s in out_hw)
  if parallel == 2 and max(out_hw) >= 100:
    assert n >= 2
  assert computed <= 0.5 * square or computed <= 1.2 * out_hw[0] * out_hw[1]


def test_two_tiles_at_once_give_the_same_picture_as_one_at_a_time(enhancer, photo_path):
  """On 2 threads the CPU runs two single-threaded copies of the model, a tile each, from two threads;
  blended in raster order, the result is the same as one tile after another, to the bit."""
  assert enhancer.engine.parallel == 2
  assert enhancer.engine.runtime == 'LiteRT interpreter, XNNPACK, 2 tiles at once, 1 thread each'
  from zoom_enhance.imaging import photo

  lr = photo.load_rgb(photo_path)[40:80, 60:110]
  out_hw = (97, 123)  # 4 x 5 tiles of 32 with overlap 4, the last ones partly outside
  kwargs = dict(tile=TILE, overlap=4, scale=2.5, seed=5, strength=0.8, detail=0.7)
  one = tiling.enhance_tiled(enhancer.engine.run, lr, out_hw, parallel=1, **kwargs)
  two = tiling.enhance_tiled(enhancer.engine.run, lr, out_hw, parallel=2, **kwargs)
  assert tiling.count_tiles(out_hw, TILE, 4) == 20
  np.testing.assert_array_equal(one, two)
  assert np.abs(one.astype(int) - resample.from_signed(resample.lr_up(lr, out_hw))).mean() > 1


@pytest.mark.parametrize('tile', [TILE, (24, 40)])
@pytest.mark.parametrize('out_hw', [(32, 32), (33, 61), (100, 77), (5, 140), (64, 64)])
def test_tiles_blend_without_seams(out_hw, tile):
  """A pointwise model must come out of the tiler exactly as from the whole image at once, square tiles
  or not."""
  rng = np.random.default_rng(sum(out_hw))
  lr = rng.integers(0, 256, (max(1, out_hw[0] // 3), max(1, out_hw[1] // 3), 3), dtype=np.uint8)
  pointwise = lambda lr_up, noise, scale, detail: np.clip(lr_up + 0.1 * noise * scale[0] / 3, -1, 1)
  got = tiling.enhance_tiled(pointwise, lr, out_hw, tile=tile, overlap=6, scale=3.0, seed=7)
  lr_up = resample.lr_up(lr, out_hw)
  noise = tiling.NoiseField(7).region(0, 0, *out_hw)
  want = np.clip(np.rint((np.clip(lr_up + 0.1 * noise, -1, 1) + 1) * 127.5), 0, 255)
  assert np.abs(got.astype(int) - want).max() <= 1


@pytest.mark.parametrize('detail', [0.0, 0.35, 1.0])
def test_detail_scales_the_noise_and_tiles_stay_seamless(detail):
  """detail D feeds D * noise (the sampler's temperature); tiled, a pointwise model still equals the whole
  image at once; at D = 0 the noise is zeros, so the output is the same for every seed."""
  rng = np.random.default_rng(5)
  lr = rng.integers(0, 256, (30, 27, 3), dtype=np.uint8)
  out_hw = (90, 81)
  fed = set()

  def pointwise(lr_up, noise, scale, detail_in):
    fed.add(float(detail_in[0]))  # a model that reads the detail gets it as an input too
    return np.clip(lr_up + 0.1 * noise, -1, 1)

  runs = {
    seed: tiling.enhance_tiled(
      pointwise, lr, out_hw, tile=TILE, overlap=6, scale=3.0, seed=seed, detail=detail
    )
    for seed in (7, 8)
  }
  lr_up = resample.lr_up(lr, out_hw)
  noise = tiling.NoiseField(7).region(0, 0, *out_hw)
  want = np.clip(np.rint((np.clip(lr_up + 0.1 * detail * noise, -1, 1) + 1) * 127.5), 0, 255)
  assert np.abs(runs[7].astype(int) - want).max() <= 1
  changed = np.abs(runs[7].astype(int) - runs[8]).max()
  assert changed == 0 if detail == 0 else changed > 5
  assert fed == {np.float32(detail)}


def test_noise_blocks_are_drawn_once_per_seed_and_position_and_cannot_be_changed():
  """The runtime caches noise blocks between photos (a folder shares its seed): the same numbers as a fresh
  draw from the block's seed, read-only so no caller can alter the next photo's noise."""
  tiling.noise_block.cache_clear()
  a = tiling.noise_block(5, 2, 3)
  assert tiling.noise_block(5, 2, 3) is a and tiling.noise_block.cache_info().hits == 1
  fresh = np.random.default_rng(np.random.SeedSequence([5, 2, 3])).standard_normal((64, 64, 3), np.float32)
  np.testing.assert_array_equal(a, fresh)
  assert not np.array_equal(a, tiling.noise_block(6, 2, 3))
  with pytest.raises(ValueError):
    a[0, 0, 0] = 0.0


def test_a_bundle_without_noise_gets_zeros_instead():
  """noise_used=False (the export measured the output ignores it): every tile is fed zeros."""
  lr = np.random.default_rng(3).integers(0, 256, (20, 24, 3), dtype=np.uint8)
  seen = []

  def pointwise(lr_up, noise, scale, detail):
    seen.append(float(np.abs(noise).max()))
    return np.clip(lr_up + 0.1 * noise, -1, 1)

  got = tiling.enhance_tiled(
    pointwise, lr, (60, 72), tile=TILE, overlap=6, scale=3.0, seed=7, noise_used=False
  )
  assert len(seen) > 1 and max(seen) == 0.0
  want = resample.bicubic_uint8(lr, (60, 72))
  assert np.abs(got.astype(int) - want).max() <= 1


@pytest.mark.parametrize(
  'lr_hw, out_hw',
  [((37, 53), (100, 133)), ((37, 53), (148, 212)), ((40, 30), (13, 11)), ((300, 20), (1200, 80))],
)
def test_strips_of_lr_up_equal_the_whole_image_lr_up(lr_hw, out_hw):
  lr = np.random.default_rng(1).integers(0, 256, (*lr_hw, 3), dtype=np.uint8)
  whole = resample.lr_up(lr, out_hw)
  up = resample.LrUpStrips(lr, out_hw)
  for y0 in range(0, out_hw[0], 9):
    for y1 in {min(out_hw[0], y0 + 5), min(out_hw[0], y0 + 32), out_hw[0]}:
      assert np.abs(up.rows(y0, y1) - whole[y0:y1]).max() < 1e-5


def test_tile_grid_and_weights():
  assert tiling.tile_starts(32, 32, 4) == [0] and tiling.tile_starts(20, 32, 4) == [0]
  assert tiling.tile_starts(100, 32, 4) == [0, 23, 45, 68]
  assert tiling.tile_starts(60, 32, 4) == [0, 28]
  for length in range(33, 300, 7):
    starts = tiling.tile_starts(length, 32, 4)
    assert starts[0] == 0 and starts[-1] == length - 32
    assert all(b - a <= 28 for a, b in zip(starts, starts[1:]))  # every seam has >= 4 px of overlap
  w = tiling.edge_weights(32, 4, True, False)
  assert 0 < w[0] < 0.05 and np.all(np.diff(w[:4]) > 0) and np.all(w[4:] == 1)


def test_large_outputs_stay_within_a_strip_of_float32():
  """12 MP out: the float32 working set is a strip of tiles, not the image (which would be 144 MB)."""
  lr = np.random.default_rng(0).integers(0, 256, (750, 1000, 3), dtype=np.uint8)
  pointwise = lambda lr_up, noise, scale, detail: lr_up
  tiling.noise_block.cache_clear()
  tracemalloc.start()
  try:
    out = tiling.enhance_tiled(pointwise, lr, (3000, 4000), tile=128, overlap=16, scale=4.0)
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert out.shape == (3000, 4000, 3) and out.dtype == np.uint8
  result = out.nbytes  # 36 MB of uint8, the one full-size buffer
  float32_image = out.size * 4  # 144 MB
  # Measured: 70 MB (result, strip accumulators and conditioning, a strip of noise blocks), plus the
  # noise blocks kept for the next photo (at most NOISE_CACHE_BLOCKS of them).
  cache = tiling.NOISE_CACHE_BLOCKS * tiling.BLOCK * tiling.BLOCK * 3 * 4
  assert peak < result + float32_image / 3 + cache, f'peak {peak / 1e6:.0f} MB'


# Crops, sizes and factors.


def test_crop_and_size_arithmetic():
  assert geometry.parse_crop('100,80,320,180') == (100, 80, 320, 180)
  assert geometry.parse_crop('0.25, 0.1, 0.5, 0.5') == (0.25, 0.1, 0.5, 0.5)
  assert geometry.resolve_crop((0.25, 0.1, 0.5, 0.5), (451, 300)) == geometry.Box(113, 30, 225, 150)
  assert geometry.resolve_crop(None, (7, 5)) == geometry.Box(0, 0, 7, 5)
  # Adjacent normalized crops share an edge, whatever the rounding.
  left, right = (geometry.resolve_crop(c, (101, 11)) for c in ((0.0, 0, 1 / 3, 1.0), (1 / 3, 0, 2 / 3, 1.0)))
  assert left.x + left.w == right.x and right.x + right.w == 101
  assert geometry.output_size((1280, 720), size=(2048, 1152)) == (2048, 1152)
  assert geometry.output_size((1280, 720), scale=1.6) == (2048, 1152)
  assert geometry.output_size((101, 37), scale=1.6) == (162, 59)
  assert geometry.output_size((3, 1), scale=0.1) == (1, 1)
  assert geometry.parse_size('2048x1152') == (2048, 1152)
  for bad, match in (
    (lambda: geometry.resolve_crop((10, 10, 0, 5), (50, 50)), 'zero area'),
    (lambda: geometry.resolve_crop((40, 10, 20, 5), (50, 50)), 'extends past the 50x50'),
    (lambda: geometry.resolve_crop((-1, 0, 5, 5), (50, 50)), 'extends past'),
    (lambda: geometry.resolve_crop((0.5, 0.0, 0.6, 1.0), (50, 50)), 'not inside'),
    (lambda: geometry.resolve_crop((0.0, 0.0, 0.001, 0.5), (50, 50)), 'zero area'),
    (lambda: geometry.parse_crop('1,2,3'), 'X,Y,W,H'),
    (lambda: geometry.parse_size('2048'), 'WxH'),
    (lambda: geometry.output_size((5, 5), scale=-2), 'positive'),
  ):
    with pytest.raises(geometry.GeometryError, match=match):
      bad()
  # Inside the bundle's range the model renders the output itself; outside, Lanczos finishes.
  p = geometry.plan((320, 180), (512, 288), (1.0, 4.0))
  assert p.model_wh == (512, 288) and p.model_scale == pytest.approx(1.6) and not p.resample
  p = geometry.plan((320, 180), (2048, 1152), (1.0, 4.0))
  assert p.model_wh == (1280, 720) and p.model_scale == 4.0 and p.resample
  p = geometry.plan((320, 180), (160, 90), (1.0, 4.0))
  assert p.model_wh == (320, 180) and p.model_scale == 1.0 and p.resample


def test_enhance_sizes_crops_and_strength(enhancer, photo_path):
  src = Image.open(photo_path)
  w, h = src.size
  # Non-integer scale on an odd crop.
  out = enhancer.enhance(photo_path, crop=(11, 7, 41, 23), scale=1.6)
  r = out.info['zoom_enhance']
  assert out.size == (66, 37) and r.crop == (11, 7, 41, 23) and not r.resampled
  assert r.model_scale == pytest.approx(0.5 * (66 / 41 + 37 / 23))
  # Normalized crop, exact size, scale 1 (enhance without zoom), above the range.
  out = enhancer.enhance(src, crop='0.5,0.5,0.1,0.1', size='50x30')
  assert out.size == (50, 30) and out.info['zoom_enhance'].crop[:2] == (round(w / 2), round(h / 2))
  same = enhancer.enhance(photo_path, crop=(0, 0, 40, 24), scale=1)
  assert same.size == (40, 24) and same.info['zoom_enhance'].model_size == (40, 24)
  big = enhancer.enhance(photo_path, crop=(0, 0, 10, 6), scale=6)
  r = big.info['zoom_enhance']
  assert big.size == (60, 36) and r.resampled and r.model_size == (40, 24) and r.model_scale == 4.0
  # Strength 0 is exactly the bicubic enlargement; 0.5 lies halfway to the model.
  crop = np.asarray(src.convert('RGB'))[7:30, 11:52]
  bicubic = resample.bicubic_uint8(crop, (46, 82))
  zero = np.asarray(enhancer.enhance(photo_path, crop=(11, 7, 41, 23), scale=2, strength=0))
  full = np.asarray(enhancer.enhance(photo_path, crop=(11, 7, 41, 23), scale=2, strength=1))
  half = np.asarray(enhancer.enhance(photo_path, crop=(11, 7, 41, 23), scale=2, strength=0.5))
  assert np.abs(zero.astype(int) - bicubic).max() <= 1
  assert np.abs(half.astype(int) - (zero.astype(int) + full) / 2).max() <= 1.5
  assert np.abs(full.astype(int) - zero).mean() > 2
  # Deterministic in the seed.
  again = np.asarray(enhancer.enhance(photo_path, crop=(11, 7, 41, 23), scale=2, strength=1))
  other = np.asarray(enhancer.enhance(photo_path, crop=(11, 7, 41, 23), scale=2, seed=1))
  assert np.array_equal(full, again) and not np.array_equal(full, other)
  # Detail 0 is the same for every seed; the API refuses a detail outside [0, 1] in one line.
  calm = [enhancer.enhance(photo_path, crop=(11, 7, 41, 23), scale=2, detail=0, seed=s) for s in (0, 1)]
  assert np.array_equal(np.asarray(calm[0]), np.asarray(calm[1]))
  assert not np.array_equal(np.asarray(calm[0]), full)
  assert calm[0].info['zoom_enhance'].detail == 0 and out.info['zoom_enhance'].detail == 1
  with pytest.raises(errors.ConfigError, match=r'^detail 2: must be in \[0, 1\]'):
    enhancer.enhance(photo_path, detail=2)


def test_toward_the_fidelity_end_the_result_shrunk_gives_back_its_input(bundle_dir, photo_path, tmp_path):
  """A bundle whose manifest asks for back-projection (export does where the noise is used) runs it at detail
  D < 1 with weight (1 - D) x strength: at detail 0 the result, shrunk, is nearer its input than the same
  bundle's without; at detail 1 and strength 0 nothing changes; the report gives the weight."""
  manifest = bundle.load_manifest(bundle_dir)
  assert manifest.detail.back_projection_iterations == 2 and manifest.inputs.noise.used
  plain = tmp_path / 'plain'
  shutil.copytree(bundle_dir, plain)
  detail = dataclasses.replace(manifest.detail, back_projection_iterations=0)
  bundle.write_manifest(str(plain), dataclasses.replace(manifest, detail=detail))
  crop = (11, 7, 41, 23)
  lr = np.asarray(Image.open(photo_path).convert('RGB'))[7:30, 11:52]
  runs = {}
  for name, where in (('bp', bundle_dir), ('plain', str(plain))):
    with pipeline.Enhancer(where, accelerator='cpu', threads=2) as e:
      runs[name] = {
        key: e.enhance(photo_path, crop=crop, scale=3, **kw)
        for key, kw in (('d0', dict(detail=0)), ('d1', dict(detail=1)), ('s0', dict(detail=0, strength=0)))
      }
  gap = lambda img: np.abs(resample.bicubic_resize(np.asarray(img), lr.shape[:2]) - lr).mean()  # noqa: E731
  assert gap(runs['bp']['d0']) < 0.7 * gap(runs['plain']['d0'])
  for key in ('d1', 's0'):
    np.testing.assert_array_equal(np.asarray(runs['bp'][key]), np.asarray(runs['plain'][key]))
  assert runs['bp']['d0'].info['zoom_enhance'].back_projection == 1.0
  assert runs['bp']['d1'].info['zoom_enhance'].back_projection == 0.0
  assert runs['plain']['d0'].info['zoom_enhance'].back_projection == 0.0


def test_python_api_arguments_are_checked_first_with_the_librarys_own_errors(
  enhancer, bundle_dir, photo_path
):
  """Each malformed argument of Enhancer.enhance is the library's own error (a ZoomEnhanceError) with a short
  message, raised before the photo is enhanced."""
  from zoom_enhance.imaging import photo as photo_lib

  image_error, geometry_error = photo_lib.ImageError, geometry.GeometryError
  cases = [
    (dict(image={}), image_error, r'^<dict>: not an image: pass a file path, a PIL image or an array$'),
    (dict(image=7), image_error, '<int>: not an image'),
    (dict(image=None), image_error, '<NoneType>: not an image'),
    (dict(image=b'\xff\xd8' + bytes(30000)), image_error, r'^<bytes>: not an image: .*io\.BytesIO.{0,40}$'),
    (dict(image=Image.new('RGB', (0, 0))), image_error, '0x0: the image has no pixels'),
    (dict(image=np.zeros((0, 5, 3), np.uint8)), image_error, 'the image has no pixels'),
    (dict(crop=(1, 2, 3)), geometry_error, r'crop \(1, 2, 3\): expected \(x, y, w, h\), four numbers'),
    (dict(crop=(0, 0, 'w', 4)), geometry_error, 'expected \\(x, y, w, h\\), four numbers'),
    (dict(crop=object()), geometry_error, 'four numbers'),
    (dict(size=(10,)), geometry_error, r'size \(10,\): expected \(width, height\)'),
    (dict(size=(10.5, 3)), geometry_error, 'width and height must be whole numbers'),
    (dict(scale='2'), geometry_error, "scale '2': must be a positive number"),
    (dict(scale=float('inf')), geometry_error, 'must be a positive number'),
    (dict(seed='abc'), errors.ConfigError, "seed 'abc': must be a whole number >= 0"),
    (dict(seed=-3), errors.ConfigError, 'seed -3: must be a whole number >= 0'),
    (dict(strength='x'), errors.ConfigError, "strength 'x': must be in"),
    (dict(detail=True), errors.ConfigError, 'detail True: must be in'),
    (dict(max_pixels=0), errors.ConfigError, 'max_pixels 0: must be a whole number >= 1'),
  ]
  for kwargs, error, message in cases:
    image = kwargs.pop('image', photo_path)
    with pytest.raises(error, match=message) as caught:
      enhancer.enhance(image, **kwargs)
    assert isinstance(caught.value, errors.ZoomEnhanceError) and len(str(caught.value)) < 200, kwargs
  # numpy whole numbers are pixels, as Python ints are (not fractions of the photo).
  out = enhancer.enhance(photo_path, crop=tuple(np.array([0, 0, 16, 12])), scale=1)
  assert out.size == (16, 12) and out.info['zoom_enhance'].crop == (0, 0, 16, 12)
  # A float image in [0, 1] is read as 1 = white, not as near-black levels.
  grey = enhancer.enhance(Image.fromarray(np.full((12, 16), 0.5, np.float32)), scale=1, strength=0)
  assert abs(float(np.asarray(grey).mean()) - 127.5) < 2
  with pytest.raises(errors.ConfigError, match="threads 'two': must be a whole number >= 1"):
    pipeline.Enhancer(bundle_dir, threads='two')


def test_photo_metadata_orientation_and_alpha_end_to_end(bundle_dir, photo_path, tmp_path):
  upright = np.asarray(Image.open(photo_path).convert('RGB'))[:60, :90]
  # Stored rotated, with orientation 8 telling viewers to turn it back upright.
  stored = np.ascontiguousarray(np.rot90(upright, k=-1))
  exif = Image.Exif()
  exif[ExifTags.Base.Orientation] = 8
  exif[ExifTags.Base.Make] = 'ZoomTest'
  Image.fromarray(stored).save(tmp_path / 'in.jpg', quality=98, exif=exif.tobytes(), icc_profile=SRGB)
  decoded_upright = np.asarray(Image.open(tmp_path / 'in.jpg').transpose(Image.Transpose.ROTATE_90))
  rc, _, err = cli(
    tmp_path / 'in.jpg',
    '--crop',
    '10,5,40,30',
    '--scale',
    '2',
    '--strength',
    '0',
    '-o',
    tmp_path / 'out.png',
    '--bundle',
    bundle_dir,
  )
  assert rc == 0 and err == []
  with Image.open(tmp_path / 'out.png') as im:
    assert im.size == (80, 60) and im.info['icc_profile'] == SRGB
    assert im.getexif()[ExifTags.Base.Orientation] == 1
    assert im.getexif()[ExifTags.Base.Make] == 'ZoomTest'
    got = np.asarray(im).astype(int)
  want = resample.bicubic_uint8(decoded_upright[5:35, 10:50], (60, 80))
  assert np.abs(got - want).max() <= 1  # upright, cropped where asked, and exactly bicubic at strength 0

  rgba = np.zeros((24, 30, 4), np.uint8)
  rgba[..., :3] = upright[:24, :30]
  rgba[..., 3] = np.linspace(0, 255, 30, dtype=np.uint8)[None, :]
  rgba[8:16, 10:20, 3] = 0
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'alpha.png')
  rc, _, err = cli(
    tmp_path / 'alpha.png', '--scale', '2.5', '-o', tmp_path / 'alpha_out.png', '--bundle', bundle_dir
  )
  assert rc == 0 and err == []
  with Image.open(tmp_path / 'alpha_out.png') as im:
    assert im.mode == 'RGBA' and im.size == (75, 60)
    want = Image.fromarray(rgba[..., 3]).resize((75, 60), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(np.asarray(im)[..., 3], np.asarray(want))

  gray = Image.fromarray(upright[:20, :20]).convert('L')
  gray.save(tmp_path / 'gray.png')
  out = zoom_enhance.enhance(str(tmp_path / 'gray.png'), scale=2, bundle=bundle_dir)
  assert out.mode == 'L' and out.size == (40, 40)


# The accelerator chain.


def test_auto_falls_back_to_the_cpu_and_reports_it(bundle_dir, photo_path, tmp_path):
  out = zoom_enhance.enhance(photo_path, crop=(0, 0, 16, 16), scale=2, bundle=bundle_dir)
  r = out.info['zoom_enhance']
  tried = [f.split(':')[0] for f in r.fallbacks]
  if r.accelerator == 'cpu':  # no NPU or GPU on this machine: both were tried first and said why
    assert tried == ['npu', 'gpu'] and all(len(f) > 6 for f in r.fallbacks)
    assert 'XNNPACK' in r.runtime
  # On the CPU, the candidate measured fastest here (runtime.cpu_variant); fp32 is the bundle's default.
  assert r.variant in cpu_variant.candidates(bundle.load_manifest(bundle_dir)) and r.tiles == 1
  rc, _, err = cli(
    photo_path, '--crop', '0,0,16,16', '-o', tmp_path / 'v.png', '--bundle', bundle_dir, '--verbose'
  )
  assert rc == 0 and any(f'accelerator: {r.accelerator}' in line for line in err)


@pytest.mark.parametrize('accelerator', ['gpu', 'npu'])
def test_a_named_accelerator_is_required_not_a_silent_fallback(accelerator, bundle_dir, photo_path, tmp_path):
  out = tmp_path / 'out.png'
  rc, _, err = cli(
    photo_path, '--crop', '0,0,16,16', '-o', out, '--bundle', bundle_dir, '--accelerator', accelerator, '-v'
  )
  if rc == 0:  # a machine that has one
    assert any(f'accelerator: {accelerator}' in line for line in err)
    return
  assert rc == 1 and not out.exists()
  assert len(err) == 1 and err[0].startswith(
    f'zoom-enhance enhance: error: --accelerator {accelerator}: not available here ('
  )


def test_a_bundle_npu_model_is_tried_first_then_the_chain_goes_on(bundle_dir, photo_path, tmp_path):
  npu_bundle = tmp_path / 'npu_bundle'
  shutil.copytree(bundle_dir, npu_bundle)
  manifest = bundle.load_manifest(str(npu_bundle))
  # Laid out as `export --npu` lists a compiled model (a copy stands in for the vendor's output).
  shutil.copy(npu_bundle / 'zoom_enhance_int8.tflite', npu_bundle / 'zoom_enhance_int8_npu.tflite')
  npu_model = bundle.NpuModel(
    file='zoom_enhance_int8_npu.tflite',
    vendor='test',
    soc='Test SoC',
    sha256=manifest.models['int8'].sha256,
    source_quantization='int8',
  )
  bundle.write_manifest(str(npu_bundle), dataclasses.replace(manifest, npu_models={'int8_npu': npu_model}))
  manifest = bundle.load_manifest(str(npu_bundle))
  with pipeline.Enhancer(npu_bundle, threads=2) as e:
    if e.engine.accelerator == 'cpu':
      assert e.engine.fallbacks[0].startswith('npu:')
    assert e.engine.variant in ('int8_npu', *cpu_variant.candidates(manifest))  # the CPU's measured choice
    assert e.engine.variant != 'int8_npu' or e.engine.accelerator == 'npu'
  assert engine._candidates(manifest, 'npu', None) == ['int8_npu', 'int8']
  assert engine._candidates(manifest, 'cpu', None) == ['fp32']
  assert engine._candidates(manifest, 'cpu', 'int8_npu') == []


def test_without_compiled_model_the_classic_interpreter_runs_the_same_model(
  enhancer, bundle_dir, photo_path, tmp_path
):
  """An install with the interpreter only (older ai-edge-litert, tflite_runtime) still enhances."""
  want = enhancer.enhance(photo_path, crop=(5, 5, 40, 40), scale=1.5)
  code = textwrap.dedent(f"""
      import json, sys
      sys.modules['ai_edge_litert.compiled_model'] = None  # import fails, as where it is missing
      import numpy as np
      import zoom_enhance
      img = zoom_enhance.enhance({photo_path!r}, crop=(5, 5, 40, 40), scale=1.5, bundle={bundle_dir!r},
                                 threads=2)
      np.save({str(tmp_path / 'out.npy')!r}, np.asarray(img))
      r = img.info['zoom_enhance']
      print(json.dumps({{'acc': r.accelerator, 'runtime': r.runtime, 'fallbacks': r.fallbacks}}))
  """)
  r = subprocess.run(
    [sys.executable, '-c', code],
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, PYTHONPATH=str(ROOT)),
    cwd=tmp_path,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  got = json.loads(r.stdout.strip().splitlines()[-1])
  assert got['acc'] == 'cpu'
  assert got['runtime'] == 'LiteRT interpreter, XNNPACK, 2 tiles at once, 1 thread each'
  assert [f.split(':')[0] for f in got['fallbacks']] == ['npu', 'gpu']
  assert all('CompiledModel API' in f for f in got['fallbacks'])
  assert np.abs(np.load(tmp_path / 'out.npy').astype(int) - np.asarray(want)).max() <= 1


def test_quant_tile_and_steps_options(enhancer, bundle_dir, photo_path, tmp_path):
  fp32 = np.asarray(enhancer.enhance(photo_path, crop=(0, 0, 30, 30), scale=2)).astype(float)
  with pipeline.Enhancer(bundle_dir, accelerator='cpu', quant='int8', tile=TILE, steps=2) as e:
    out = e.enhance(photo_path, crop=(0, 0, 30, 30), scale=2)
  assert out.info['zoom_enhance'].variant == 'int8'
  mse = np.mean((np.asarray(out).astype(float) - fp32) ** 2)
  assert mse == 0 or 10 * np.log10(255**2 / mse) > 25  # int8 weights stay close to fp32
  cases = (
    ('--quant', 'fp16', "no 'fp16' model in this bundle"),
    ('--tile', '64', 'compiled for 32x32 tiles and LiteRT cannot resize them'),
    ('--steps', '4', 'run 2 sampler steps, fixed at export'),
  )
  for flag, value, message in cases:
    rc, _, err = cli(photo_path, '-o', tmp_path / 'x.png', '--bundle', bundle_dir, flag, value)
    assert rc == 1 and len(err) == 1 and message in err[0], err
  assert not (tmp_path / 'x.png').exists()


def test_external_delegates_through_the_classic_interpreter(bundle_dir, photo_path, tmp_path):
  cc = shutil.which('cc') or shutil.which('gcc')
  if not cc:
    pytest.skip('no C compiler to build a test delegate')
  # A real external delegate library that declines every op, as a GPU or
  # Edge TPU delegate does with a model it cannot run.
  src = tmp_path / 'noop.c'
  src.write_text(
    textwrap.dedent("""
      #include <stdint.h>
      #include <stdlib.h>
      typedef struct D { void* data; int (*Prepare)(void*, struct D*); void* c1; void* c2; void* f;
                         int64_t flags; void* opaque; } D;
      static int prepare(void* context, D* d) { (void)context; (void)d; return 0; }
      D* tflite_plugin_create_delegate(char** k, char** v, size_t n, void (*report)(const char*)) {
        D* d = calloc(1, sizeof *d); d->Prepare = prepare; return d; }
      void tflite_plugin_destroy_delegate(D* d) { free(d); }
  """)
  )
  lib = tmp_path / 'libnoop_delegate.so'
  subprocess.run([cc, '-shared', '-fPIC', '-o', str(lib), str(src)], check=True)
  out = tmp_path / 'out.png'
  for delegate, message in (
    (lib, "the delegate took none of model fp32's ops"),
    (src, 'cannot load it as a TFLite delegate'),
    (tmp_path / 'nope.so', 'no such file'),
  ):
    rc, _, err = cli(
      photo_path, '--crop', '0,0,16,16', '-o', out, '--bundle', bundle_dir, '--delegate', delegate
    )
    assert rc == 1 and len(err) == 1 and message in err[0] and str(delegate) in err[0], err
  assert not out.exists()


# The command line: acceptance and bad input.


def test_acceptance_crop_to_2048x1152_and_a_folder_at_4x(bundle_dir, photo_dir, tmp_path):
  out = tmp_path / 'out.png'
  rc, _, err = cli(
    photo_dir / 'astronaut.jpg',
    '--crop',
    '100,80,320,180',
    '--size',
    '2048x1152',
    '-o',
    out,
    '--bundle',
    bundle_dir,
  )
  assert rc == 0 and err == []
  with Image.open(out) as im:
    assert im.format == 'PNG' and im.size == (2048, 1152)

  lr_dir = tmp_path / 'LR'
  (lr_dir / 'sub').mkdir(parents=True)
  sizes = {}
  for i, name in enumerate(('coffee.jpg', 'rocket.png', 'sub/chelsea.jpg')):
    with Image.open(photo_dir / os.path.basename(name)) as im:
      small = im.convert('RGB').resize((40 + 7 * i, 30 + 3 * i))
    small.save(lr_dir / name)
    sizes[os.path.splitext(name)[0]] = small.size
  rc, _, err = cli(lr_dir, '-o', tmp_path / 'SR', '--scale', '4', '--bundle', bundle_dir)
  assert rc == 0 and err == []
  for stem, (w, h) in sizes.items():
    with Image.open(tmp_path / 'SR' / f'{stem}.png') as im:
      assert im.size == (4 * w, 4 * h)
  rc, _, err = cli(
    lr_dir / 'coffee.jpg',
    lr_dir / 'rocket.png',
    '-o',
    tmp_path / 'WEBP',
    '--ext',
    'webp',
    '--scale',
    '1.5',
    '--bundle',
    bundle_dir,
  )
  assert rc == 0 and sorted(os.listdir(tmp_path / 'WEBP')) == ['coffee.webp', 'rocket.webp']


def test_each_bad_input_is_one_line_naming_the_file_and_leaves_no_file(bundle_dir, photo_dir, tmp_path):
  good = photo_dir / 'chelsea.jpg'
  (tmp_path / 'text.jpg').write_text('hello, not a photo\n')
  data = good.read_bytes()
  (tmp_path / 'cut.jpg').write_bytes(data[: len(data) // 3])
  from test_imaging import write_png_raw

  write_png_raw(tmp_path / 'bomb.png', 20_000, 20_000, 1, 0, (bytes(2500) for _ in range(20_000)))
  broken = tmp_path / 'broken_bundle'
  shutil.copytree(bundle_dir, broken)
  with open(broken / 'zoom_enhance_fp32.tflite', 'r+b') as f:
    f.truncate(5000)
  (tmp_path / 'a_file').write_text('x')
  out = tmp_path / 'out' / 'result.png'
  out.parent.mkdir()
  cases = [
    ((tmp_path / 'text.jpg',), 'text.jpg: not an image file'),
    ((tmp_path / 'cut.jpg',), 'cut.jpg: truncated image file'),
    ((tmp_path / 'missing.jpg',), 'missing.jpg: no such file'),
    ((good, '--crop', '10,10,0,20'), 'chelsea.jpg: crop 10,10,0,20 has zero area'),
    ((good, '--crop', '400,250,100,100'), 'chelsea.jpg: crop 400,250,100,100 extends past the 451x300 image'),
    ((tmp_path / 'bomb.png',), 'bomb.png: 20000x20000 is 400 MP, over the 120 MP limit'),
    ((good, '--max-pixels', '1000'), 'chelsea.jpg: 451x300 is 0.135 MP, over the 0.001 MP limit'),
    ((good, '--bundle', tmp_path / 'nowhere'), 'nowhere: no such bundle directory'),
    ((good, '--bundle', broken), 'zoom_enhance_fp32.tflite: checksum mismatch'),
    ((good, '--detail', '1.5'), '--detail 1.5: must be in [0, 1]'),
    ((good, '--detail', '-0.1'), '--detail -0.1: must be in [0, 1]'),
    ((good, '--detail', 'nan'), '--detail nan: must be in [0, 1]'),
    ((good, '--threads', '0'), '--threads 0: must be at least 1'),
    ((good, '--max-pixels', '-5'), '--max-pixels -5: must be at least 1'),
    ((good, '--seed', '-1'), '--seed -1: must be >= 0'),
    ((good, '--png-level', '10'), '--png-level 10: must be in [0, 9]'),
  ]
  for args, message in cases:
    extra = () if '--bundle' in args else ('--bundle', bundle_dir)
    rc, _, err = cli(*args, '-o', out, *extra)
    assert rc == 1 and len(err) == 1, (args, err)
    assert err[0].startswith('zoom-enhance enhance: error: ') and message in err[0], (args, err)
    assert err[0].count(os.path.basename(str(args[0]))) <= 1, err  # the file is named once
    assert os.listdir(out.parent) == [], args
  rc, _, err = cli(good, '-o', tmp_path / 'a_file', '--bundle', bundle_dir)  # as -o /dev/null
  assert rc == 1 and len(err) == 1 and 'a_file: exists and is not a folder' in err[0], err
  unwritable = tmp_path / 'a_file' / 'result.png'  # its folder is a file
  rc, _, err = cli(good, '--crop', '0,0,16,16', '-o', unwritable, '--bundle', bundle_dir)
  assert rc == 1 and len(err) == 1 and f'{unwritable}: cannot write' in err[0], err
  assert os.listdir(tmp_path / 'out') == []


def test_ctrl_c_while_a_model_loads_is_one_line(bundle_dir, photo_path, tmp_path):
  """Ctrl-C (here raised just after the CPU model compiled) is 'interrupted' and exit 130; the LiteRT objects
  it leaves in the traceback log their destruction, which stays off stderr (-vv shows it)."""
  out = tmp_path / 'out.png'
  for verbose, quiet in ((), True), (('-vv',), False):
    # One thread: the CPU's CompiledModel (on more, single-threaded interpreters: backends.uses_tile_pool).
    args = ['enhance', photo_path, '-o', out, '--bundle', bundle_dir, '--accelerator', 'cpu']
    args += ['--threads', '1']
    command = [sys.executable, '-c', CTRL_C_WHILE_LOADING, *map(str, args + list(verbose))]
    r = subprocess.run(command, capture_output=True, text=True, timeout=120)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 130 and not out.exists(), r.stderr
    if quiet:
      assert lines == ['zoom-enhance enhance: interrupted'], r.stderr
    else:
      assert 'zoom-enhance enhance: interrupted' in lines, lines
      assert any('DestroyAccelerator' in line for line in lines), lines


def test_a_folder_survives_every_kind_of_bad_photo_and_old_temp_files(bundle_dir, photo_dir, tmp_path):
  """Good photos between a text EXIF orientation, a non-image and a result too wide for WebP: one line per bad
  file, every good one written (the text orientation applied; a corrupt EXIF without Pillow's warnings),
  temp files of a killed run removed (a live writer's kept); an output that is the input folder, or the input
  file, is refused before any work (above the input folder: tests/test_hostile_inputs.py)."""
  src, out = tmp_path / 'in', tmp_path / 'out'
  src.mkdir()
  out.mkdir()
  with Image.open(photo_dir / 'coffee.jpg') as im:
    small = im.convert('RGB').resize((24, 16))
  small.save(src / 'a_good.jpg')
  small.save(src / 'b_text_orientation.jpg', exif=exif_with_text_orientation())
  (src / 'c_not_an_image.jpg').write_text('hello')
  Image.new('RGB', (4200, 4)).save(src / 'd_too_wide.png')  # x4 is 16800 px: over WebP's 16383
  small.save(src / 'e_good.png')
  small.save(src / 'f_corrupt_exif.jpg', exif=exif_pointing_past_its_end())  # Pillow tolerates it, warning
  stale = out / f'.e_good.webp.{2**31 - 2}.deadbeef.tmp'  # a pid that cannot be running
  live = out / f'.a_good.webp.{os.getpid()}.cafebabe.tmp'
  stale.write_bytes(b'partial')
  live.write_bytes(b'partial')
  rc, _, err = cli(src, '-o', out, '--scale', '4', '--ext', 'webp', '--bundle', bundle_dir)
  assert rc == 1 and len(err) == 2, err
  assert 'c_not_an_image.jpg: not an image file' in err[0]
  assert 'd_too_wide.png: ' in err[1] and 'the result would be 16800x16; WEBP stores at most 16383' in err[1]
  written = sorted(p.name for p in out.iterdir() if not p.name.startswith('.'))
  assert written == ['a_good.webp', 'b_text_orientation.webp', 'e_good.webp', 'f_corrupt_exif.webp']
  with Image.open(out / 'b_text_orientation.webp') as im:
    assert im.size == (64, 96)  # upright: orientation 6 turns 24x16 into 16x24
  assert not stale.exists() and live.exists()
  # The output folder is the input folder; the output file is the input.
  rc, _, err = cli(src, '-o', src, '--bundle', bundle_dir)
  assert rc == 1 and len(err) == 1 and 'is the input folder' in err[0], err
  rc, _, err = cli(src / 'a_good.jpg', '-o', src / 'a_good.jpg', '--bundle', bundle_dir)
  assert rc == 1 and len(err) == 1 and 'is the input itself' in err[0], err
  # JPEG's limit, found from the header: the 16400-px wide photo is never decoded.
  Image.new('RGB', (16400, 2)).save(tmp_path / 'wide.png')
  rc, _, err = cli(tmp_path / 'wide.png', '-o', tmp_path / 'wide.jpg', '--scale', '4', '--bundle', bundle_dir)
  assert rc == 1 and len(err) == 1 and 'JPEG stores at most 65500 pixels a side' in err[0], err
  assert not (tmp_path / 'wide.jpg').exists()


def test_a_batch_goes_on_past_bad_files(bundle_dir, photo_dir, tmp_path):
  batch = tmp_path / 'in'
  batch.mkdir()
  with Image.open(photo_dir / 'coffee.jpg') as im:
    im.resize((40, 30)).save(batch / 'a.jpg')
    im.resize((20, 30)).save(batch / 'c.png')
  (batch / 'b.jpg').write_bytes(b'\xff\xd8\xff\xe0 junk')
  rc, _, err = cli(
    batch, tmp_path / 'gone.png', '-o', tmp_path / 'out', '--scale', '2', '--bundle', bundle_dir
  )
  assert rc == 1 and len(err) == 2
  assert any('b.jpg: ' in line for line in err) and any('gone.png: no such file' in line for line in err)
  assert sorted(os.listdir(tmp_path / 'out')) == ['a.png', 'c.png']


def test_report_json_says_what_ran_per_photo_and_in_all(tmp_path):
  """--report-json of a real run of the embedded bundle: a small photo written, a broken one failed (exit 1),
  the engine that ran, the totals; `-` prints it; a path that cannot be written is refused before any work."""
  env = dict(os.environ, PYTHONPATH=str(ROOT), ZOOM_ENHANCE_CPU_VARIANT='bundle')

  def run(*args):
    r = subprocess.run(
      [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', *map(str, args)],
      capture_output=True,
      text=True,
      env=env,
      cwd=tmp_path,
      timeout=300,
    )
    return r.returncode, r.stdout, [ln for ln in r.stderr.splitlines() if ln.strip()]

  photos = tmp_path / 'photos'
  photos.mkdir()
  with Image.open(ROOT / 'zoom_enhance' / 'assets' / 'chelsea.jpg') as im:
    im.resize((48, 32)).save(photos / 'a.png')
  (photos / 'b.jpg').write_text('not a photo')
  report_path = tmp_path / 'reports' / 'run.json'
  rc, stdout, err = run(photos, '-o', 'out', '--scale', '2', '--threads', '2', '--report-json', report_path)
  assert rc == 1 and len(err) == 1 and 'b.jpg: not an image file' in err[0], err
  assert stdout == '' and sorted(os.listdir(tmp_path / 'out')) == ['a.png']
  assert not [n for n in os.listdir(report_path.parent) if n != 'run.json']  # written atomically
  report = json.loads(report_path.read_text())
  assert report['exit_status'] == 1 and report['bundle'] is None
  written, failed = report['photos']
  assert written['input'] == str(photos / 'a.png') and written['output'] == os.path.join('out', 'a.png')
  assert written['written'] and written['error'] is None
  assert written['crop'] == [0, 0, 48, 32] and written['input_size'] == [48, 32]
  assert written['output_size'] == [96, 64] and written['model_scale'] == 2
  assert written['tiles'] >= 1 and written['seconds'] > 0 and written['seconds_per_mp'] > 0
  assert failed['input'] == str(photos / 'b.jpg') and not failed['written']
  assert 'b.jpg: not an image file' in failed['error'] and 'tiles' not in failed
  ran = report['engine']
  assert ran['accelerator'] in ('npu', 'gpu', 'cpu') and ran['variant'] in ('fp16', 'int8', 'int8_full')
  assert ran['threads'] == 2 and isinstance(ran['passed_over'], list) and ran['runtime']
  totals = report['totals']
  assert (totals['photos'], totals['written'], totals['failed']) == (2, 1, 1)
  assert totals['output_megapixels'] == 96 * 64 / 1e6 and totals['seconds'] >= totals['enhance_seconds'] > 0
  # Both are rounded to 4 decimals: enhance_seconds's half-step of 0.00005 s is 0.008 s/MP here.
  assert totals['seconds_per_mp'] == pytest.approx(totals['enhance_seconds'] / 0.006144, abs=0.0082)

  rc, stdout, err = run(photos / 'a.png', '-o', 'one.png', '--scale', '1', '--report-json', '-')
  assert rc == 0 and err == [], err
  report = json.loads(stdout)
  assert report['exit_status'] == 0 and [p['output'] for p in report['photos']] == ['one.png']
  assert report['photos'][0]['output_size'] == [48, 32] and report['engine']['threads'] >= 1

  (tmp_path / 'a_file').write_text('x')
  rc, stdout, err = run(photos / 'a.png', '-o', 'two.png', '--report-json', tmp_path / 'a_file' / 'r.json')
  assert rc == 1 and len(err) == 1 and 'cannot write (Not a directory' in err[0], err
  assert not (tmp_path / 'two.png').exists()


def test_without_a_bundle_the_error_asks_for_one(tmp_path, photo_path, monkeypatch, capsys):
  """An install without the embedded bundle (a source tree that has not trained one yet)."""
  from zoom_enhance import cli as cli_lib

  monkeypatch.setattr(pipeline, 'DEFAULT_BUNDLE', str(tmp_path / 'no-default-bundle'))
  rc = cli_lib.main(['zoom-enhance', 'enhance', photo_path, '-o', str(tmp_path / 'o.png')])
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  assert rc == 1 and len(err) == 1 and 'pass --bundle DIR' in err[0], err
  assert not (tmp_path / 'o.png').exists()


def _random_tile(seed: int, scale: float) -> dict:
  """Model inputs of one tile of the test bundle, random."""
  rng = np.random.default_rng(seed)
  return {
    'lr_up': rng.uniform(-1, 1, (1, BUNDLE_TILE, BUNDLE_TILE, 3)).astype(np.float32),
    'noise': rng.standard_normal((1, BUNDLE_TILE, BUNDLE_TILE, 3)).astype(np.float32),
    'scale': np.array([scale], np.float32),
  }


def _cannot_compile(*args, **kwargs):
  """backends.CompiledBackend where LiteRT's CompiledModel fails for the CPU."""
  raise backends.Unavailable('unknown LiteRT error')


def test_cpu_falls_back_to_the_interpreter_where_compiled_model_cannot_compile(bundle_dir, monkeypatch):
  """As where LiteRT's CompiledModel fails for the CPU ('unknown LiteRT error', as in an arm64 root
  without /proc and /sys): the classic interpreter runs the same model, the same output, and the report
  says why it was chosen."""
  manifest = bundle.load_manifest(bundle_dir)
  tile = _random_tile(0, 3.0)
  # One thread: one model (on more, the CPU runs single-threaded interpreters anyway: uses_tile_pool).
  compiled = engine.open_engine(manifest, bundle_dir, accelerator='cpu', quant='fp32', threads=1)
  try:
    want = compiled.run(**tile)
  finally:
    compiled.close()

  monkeypatch.setattr(backends, 'CompiledBackend', _cannot_compile)
  for accelerator in ('cpu', 'auto'):
    fallen = engine.open_engine(manifest, bundle_dir, accelerator=accelerator, quant='fp32', threads=1)
    try:
      assert fallen.accelerator == 'cpu'
      assert fallen.runtime == (
        'LiteRT interpreter, XNNPACK, 1 thread (CompiledModel could not compile for the CPU: '
        'unknown LiteRT error)'
      )
      np.testing.assert_allclose(fallen.run(**tile), want, atol=1e-5)
    finally:
      fallen.close()
  with pytest.raises(engine.AcceleratorError, match='--accelerator gpu: not available here'):
    engine.open_engine(manifest, bundle_dir, accelerator='gpu', quant='fp32', threads=1)


def test_the_report_says_when_xnnpack_did_not_start(bundle_dir, monkeypatch):
  """Where XNNPACK cannot start (in an arm64 root without /proc and /sys its CPU detection fails), LiteRT
  runs its built-in kernels without a word; the runtime counts XNNPACK's partition and says which ran."""
  manifest = bundle.load_manifest(bundle_dir)
  tile = _random_tile(1, 2.0)
  pool = engine.open_engine(manifest, bundle_dir, accelerator='cpu', quant='fp32', threads=2)
  try:
    assert pool.runtime == 'LiteRT interpreter, XNNPACK, 2 tiles at once, 1 thread each'
    want = pool.run(**tile)
  finally:
    pool.close()
  real = backends.interpreter_module()
  builtin_only = types.SimpleNamespace(
    Interpreter=functools.partial(
      real.Interpreter, experimental_op_resolver_type=real.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
  )
  monkeypatch.setattr(backends, 'interpreter_module', lambda: builtin_only)

  monkeypatch.setattr(backends, 'CompiledBackend', _cannot_compile)
  for threads, runtime in [
    (2, 'LiteRT interpreter, built-in kernels (XNNPACK did not start), 2 tiles at once, 1 thread each'),
    (1, 'LiteRT interpreter, built-in kernels (XNNPACK did not start), 1 thread'),
  ]:
    eng = engine.open_engine(manifest, bundle_dir, accelerator='cpu', quant='fp32', threads=threads)
    try:
      assert eng.runtime.startswith(runtime), eng.runtime
      np.testing.assert_allclose(eng.run(**tile), want, atol=1e-4)
    finally:
      eng.close()
