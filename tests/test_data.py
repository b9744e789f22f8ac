"""Tests of image decoding, degradations and the training input pipeline."""

import dataclasses
import logging
import threading

import numpy as np
import pytest
from PIL import Image

from zoom_enhance import errors
from zoom_enhance.data import degrade
from zoom_enhance.data import pipeline
from zoom_enhance.data import sources
from zoom_enhance.imaging import resample
from zoom_enhance.training import config

P = 32  # Small patches keep the whole file fast on two CPU cores.


def _tiny_data_cfg(**overrides):
  cfg = config.defaults().data
  cfg.patch_size = P
  cfg.cache_mb = 16
  cfg.num_workers = 2
  cfg.prefetch = 2
  cfg.update(overrides)
  return cfg


@pytest.fixture
def cfg():
  return _tiny_data_cfg()


def _small_photos():
  """A few of scikit-image's photos, shrunk so tests decode them quickly."""
  from skimage import data

  out = {}
  for name in ('astronaut', 'coffee', 'chelsea', 'rocket'):
    im = Image.fromarray(getattr(data, name)())
    im.thumbnail((96, 96), Image.Resampling.BICUBIC)
    out[name] = im
  return out


@pytest.fixture(scope='module')
def photo_dir(tmp_path_factory):
  """Four real photos as JPEG and PNG, one in a subfolder."""
  d = tmp_path_factory.mktemp('photos')
  (d / 'sub').mkdir()
  for i, (name, im) in enumerate(_small_photos().items()):
    im.save(d / ('sub' if i == 3 else '.') / f'{name}.{"png" if i % 2 else "jpg"}')
  return d


@pytest.fixture(scope='module')
def mixed_dir(tmp_path_factory, photo_dir):
  """The photos plus a truncated JPEG, a text file named .jpg and a notes.txt."""
  d = tmp_path_factory.mktemp('mixed')
  for path in photo_dir.rglob('*.*'):
    (d / path.name).write_bytes(path.read_bytes())
  jpeg = (photo_dir / 'astronaut.jpg').read_bytes()
  (d / 'truncated.jpg').write_bytes(jpeg[: len(jpeg) // 2])
  (d / 'fake.jpg').write_text('not a photo\n')
  (d / 'notes.txt').write_text('shot on holiday\n')
  return d


def _batches(source, cfg, n, **kwargs):
  kwargs.setdefault('global_batch_size', 4)
  kwargs.setdefault('seed', 0)
  with pipeline.TrainIterator(source, cfg, **kwargs) as it:
    return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# --- degrade.py --------------------------------------------------------------


def test_realistic_degradation_changes_the_lr_deterministically(cfg):
  hr = np.asarray(_small_photos()['coffee'])[:P, :P]
  plain = degrade.degrade(hr, (16, 16), np.random.default_rng(0), cfg, realistic=False)
  np.testing.assert_array_equal(plain, resample.bicubic_uint8(hr, (16, 16)))
  real = [degrade.degrade(hr, (16, 16), np.random.default_rng(s), cfg, realistic=True) for s in (0, 0, 1)]
  assert real[0].shape == (16, 16, 3) and real[0].dtype == np.uint8
  assert np.abs(real[0].astype(int) - plain).mean() > 1.0
  np.testing.assert_array_equal(real[0], real[1])
  assert not np.array_equal(real[0], real[2])


def _photo_patch(name: str, side: int) -> np.ndarray:
  """The centre side x side crop of one of scikit-image's photos, at full resolution."""
  from skimage import data

  img = getattr(data, name)()
  y, x = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
  return np.ascontiguousarray(img[y : y + side, x : x + side])


@pytest.mark.parametrize('lr_hw', [(24, 24), (37, 37), (64, 64), (24, 16)], ids=str)
def test_second_order_makes_a_deterministic_lr_unlike_bicubic(lr_hw):
  hr = _photo_patch('astronaut', 64)
  hr = hr[:, :48] if lr_hw == (24, 16) else hr  # Non-square, as eval's photos are.
  lrs = [degrade.second_order(hr, lr_hw, np.random.default_rng(s)) for s in (0, 0, 1)]
  assert lrs[0].shape == lr_hw + (3,) and lrs[0].dtype == np.uint8
  np.testing.assert_array_equal(lrs[0], lrs[1])
  assert not np.array_equal(lrs[0], lrs[2])
  assert np.abs(lrs[0].astype(int) - resample.bicubic_uint8(hr, lr_hw)).mean() > 1.0


def _noise_only(first_sigma: float, second_sigma: float) -> degrade.SecondOrderDegradation:
  """The chain with grey Gaussian noise of these sigmas alone: no blur, resize factor or sinc, JPEG q100."""
  quiet = dict(blur_prob=0.0, resize_probs=(0.0, 0.0, 1.0), gaussian_noise_prob=1.0, gray_noise_prob=1.0)
  return degrade.SecondOrderDegradation(
    first=dataclasses.replace(
      degrade.FIRST_PASS, noise_sigma=(first_sigma,) * 2, jpeg_quality=(100, 100), **quiet
    ),
    second=dataclasses.replace(
      degrade.SECOND_PASS, noise_sigma=(second_sigma,) * 2, jpeg_quality=(100, 100), **quiet
    ),
    final_sinc_prob=0.0,
  )


def test_second_order_second_pass_adds_its_own_noise():
  hr = _photo_patch('chelsea', 64)

  def noise_level(first, second):
    """Std of the LR's difference from the same chain without noise (the draws are the same)."""
    runs = [
      degrade.second_order(hr, (32, 32), np.random.default_rng(0), s)
      for s in (_noise_only(first, second), _noise_only(0, 0))
    ]
    return np.std(runs[0].astype(float) - runs[1])

  # x2: the first pass's noise is scaled by 2/4 on the HR image, then about halved by the shrink.
  first, second, both = noise_level(32, 0), noise_level(0, 8), noise_level(32, 8)
  assert min(first, second) > 5.0
  assert both**2 == pytest.approx(first**2 + second**2, rel=0.15)  # Independent noises: variances add.


# --- sources -----------------------------------------------------------------


def test_folder_source_skips_bad_files_and_ignores_others(mixed_dir, cfg, caplog):
  caplog.set_level(logging.WARNING, logger='zoom_enhance.data.sources')
  source = sources.make_source(f'folder:{mixed_dir}', cfg)
  assert len(source) == 6 and source.num_ignored == 1
  assert any('notes.txt' in r.getMessage() for r in caplog.records)
  # Two epochs of batches of 4: every file is tried, twice over.
  for batch in _batches(source, cfg, 3):
    assert batch['hr'].shape == (4, P, P, 3) and batch['scale'].shape == (4,)
  assert source.num_skipped == 2
  warnings = [r.getMessage() for r in caplog.records if 'unreadable' in r.getMessage()]
  assert len(warnings) == 2  # One per bad file, however often it is drawn.
  assert any('truncated.jpg: truncated image file' in w for w in warnings)
  assert any('fake.jpg: not an image file' in w for w in warnings)


def test_unusable_folders_raise_data_error(tmp_path, cfg):
  with pytest.raises(sources.DataError, match='no such folder'):
    sources.make_source(f'folder:{tmp_path / "missing"}', cfg)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(sources.DataError, match='holds no images'):
    sources.make_source(f'folder:{tmp_path / "empty"}', cfg)
  bad = tmp_path / 'bad'
  bad.mkdir()
  for name in ('a.jpg', 'b.png', 'c.webp'):
    (bad / name).write_text('not an image')
  with pytest.raises(sources.DataError, match=r'holds no readable images \(3 files skipped as unreadable\)'):
    sources.make_source(f'folder:{bad}', cfg)
  with pytest.raises(sources.DataError, match='folder:'):
    sources.make_source(str(bad), cfg)


def test_small_images_are_upscaled_to_the_patch(tmp_path, cfg):
  Image.fromarray(np.full((10, 20, 3), 128, np.uint8)).save(tmp_path / 'small.png')
  source = sources.make_source(f'folder:{tmp_path}', cfg)
  assert source.load(0).shape == (P, 2 * P, 3)
  assert pipeline.make_example(source, 0, cfg, 0)['hr'].shape == (P, P, 3)


def test_skimage_source(cfg):
  source = sources.make_source('skimage', cfg)
  assert source.name == 'skimage' and len(source) == len(sources.SKIMAGE_PHOTOS)
  img = source.load(0)
  assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
  assert pipeline.make_example(source, 3, cfg, 0)['lr_up'].shape == (P, P, 3)


class _FakeTfds(list):
  """A list of records with the attribute `tfds.data_source` results carry."""

  def __init__(self, records, keys):
    super().__init__(records)
    self.dataset_info = type('Info', (), {'features': dict.fromkeys(keys)})()


def test_tfds_source_reads_the_image_feature(monkeypatch, cfg):
  tfds = pytest.importorskip('tensorflow_datasets')
  calls = []
  gray = np.full((40, 50, 1), 9, np.uint8)

  def fake_data_source(name, *, split, builder_kwargs):
    calls.append((name, split, builder_kwargs))
    return _FakeTfds([{'lr': None, 'hr': gray}], ('lr', 'hr'))

  monkeypatch.setattr(tfds, 'data_source', fake_data_source)
  source = sources.make_source('div2k/bicubic_x4', cfg)
  assert calls == [('div2k/bicubic_x4', 'train', {'file_format': 'array_record'})]
  assert len(source) == 1 and (source.load(0) == 9).all() and source.load(0).shape == (40, 50, 3)
  cfg.image_key = 'pixels'
  with pytest.raises(sources.DataError, match="no image feature 'pixels'"):
    sources.make_source('div2k', cfg)


def test_unknown_tfds_name_raises_data_error(cfg):
  pytest.importorskip('tensorflow_datasets')
  with pytest.raises(sources.DataError, match='no_such_dataset_zz: no such tensorflow'):
    sources.make_source('no_such_dataset_zz', cfg)


def test_byte_lru_evicts_least_recently_used():
  cache = sources._ByteLRU(300)
  for key in 'abc':
    cache.put(key, np.zeros(100, np.uint8))
  cache.get('a')  # Now 'b' is the least recently used.
  cache.put('d', np.zeros(100, np.uint8))
  assert cache.get('b') is None and cache.get('a') is not None
  assert cache.nbytes == 300 and len(cache) == 3
  cache.put('huge', np.zeros(301, np.uint8))  # Larger than the budget: not kept.
  assert cache.get('huge') is None


# --- examples and batches ----------------------------------------------------


@pytest.fixture(scope='module')
def source(photo_dir):
  return sources.make_source(f'folder:{photo_dir}', _tiny_data_cfg())


def test_batches_hold_valid_values_and_scales(source, cfg):
  for batch in _batches(source, cfg, 3):
    for key in ('hr', 'lr_up'):
      assert batch[key].dtype == np.float32 and batch[key].shape == (4, P, P, 3)
      assert batch[key].min() >= -1.0 and batch[key].max() <= 1.0
    scale = batch['scale']
    assert scale.dtype == np.float32
    lr_side = np.round(P / scale)
    np.testing.assert_allclose(scale, P / lr_side, rtol=1e-6)  # P / an integer.
    assert (scale >= cfg.min_scale).all() and (scale <= cfg.max_scale).all()


@pytest.mark.parametrize('shares', [(1.0, 0.0), (0.0, 1.0)], ids=['realistic', 'second_order'])
def test_realistic_examples_differ_only_in_lr(source, cfg, shares):
  plain = pipeline.make_example(source, 5, _tiny_data_cfg(realistic_prob=0.0), 0)
  real = pipeline.make_example(
    source, 5, _tiny_data_cfg(realistic_prob=shares[0], second_order_prob=shares[1]), 0
  )
  np.testing.assert_array_equal(plain['hr'], real['hr'])
  assert plain['scale'] == real['scale']
  assert np.abs(plain['lr_up'] - real['lr_up']).mean() > 0.005


def test_second_order_share_zero_keeps_every_example(source, monkeypatch):
  calls, chain = [], degrade.second_order

  def counted(*args, **kwargs):
    calls.append(1)
    return chain(*args, **kwargs)

  monkeypatch.setattr(degrade, 'second_order', counted)
  today = [pipeline.make_example(source, k, _tiny_data_cfg(realistic_prob=0.3), 0) for k in range(40)]
  assert not calls  # The default share, 0: the chain never runs and no draw moves.
  mixed = [
    pipeline.make_example(source, k, _tiny_data_cfg(realistic_prob=0.3, second_order_prob=0.4), 0)
    for k in range(40)
  ]
  assert 6 <= len(calls) <= 26
  # The share is taken from the bicubic examples' draws: every other example is today's, bit for bit.
  same = [np.array_equal(a['lr_up'], b['lr_up']) for a, b in zip(today, mixed)]
  assert sum(same) == 40 - len(calls)
  for a, b in zip(today, mixed):
    np.testing.assert_array_equal(a['hr'], b['hr'])
    assert a['scale'] == b['scale']


@pytest.mark.parametrize(
  'shares, message',
  [
    ((0.0, 1.5), r'data.second_order_prob=1.5 not in \[0, 1\]'),
    ((0.0, -0.1), r'data.second_order_prob=-0.1 not in \[0, 1\]'),
    ((0.6, 0.5), r'data.realistic_prob \(0.6\) \+ data.second_order_prob \(0.5\) must be at most 1'),
  ],
)
def test_second_order_share_is_validated(shares, message):
  c = config.defaults()
  c.data.realistic_prob, c.data.second_order_prob = shares
  with pytest.raises(errors.ConfigError, match=message) as e:
    config.validate(c)
  assert '\n' not in str(e.value)
  c.data.realistic_prob, c.data.second_order_prob = 0.3, 0.7
  config.validate(c)


def test_same_seed_same_batches_other_seed_differs(source, cfg):
  a, b = _batches(source, cfg, 2), _batches(source, cfg, 2)
  for x, y in zip(a, b):
    _assert_batches_equal(x, y)
  c = _batches(source, cfg, 1, seed=1)
  assert not np.array_equal(a[0]['hr'], c[0]['hr'])


def test_resumed_iterator_continues_exactly(source, cfg):
  fresh = _batches(source, cfg, 5)
  resumed = _batches(source, cfg, 2, start_step=3)
  _assert_batches_equal(fresh[3], resumed[0])
  _assert_batches_equal(fresh[4], resumed[1])


def test_processes_split_the_global_batch(source, cfg):
  whole = _batches(source, cfg, 2)[1]
  parts = [_batches(source, cfg, 2, process_index=p, process_count=2)[1] for p in (0, 1)]
  for key in whole:
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  with pytest.raises(ValueError, match='split evenly'):
    pipeline.TrainIterator(source, cfg, global_batch_size=5, seed=0, process_count=2)


def test_synchronous_mode_gives_the_same_batches(source, cfg):
  sync = _batches(source, _tiny_data_cfg(prefetch=0, num_workers=1), 2)
  for x, y in zip(sync, _batches(source, cfg, 2)):
    _assert_batches_equal(x, y)


class _FailingSource(sources.ImageSource):
  def __init__(self, cfg):
    super().__init__('failing', 3, cfg)

  def load(self, i):
    raise RuntimeError(f'disk on fire at {i}')


def test_worker_errors_reach_the_caller(cfg):
  it = pipeline.TrainIterator(_FailingSource(cfg), cfg, global_batch_size=2, seed=0)
  with pytest.raises(RuntimeError, match='disk on fire'):
    next(it)
  with pytest.raises(RuntimeError, match='disk on fire'):
    next(it)  # Still failing, not hanging.
  it.close()


def test_close_stops_the_background_threads(source, cfg):
  before = set(threading.enumerate())
  with pipeline.TrainIterator(source, cfg, global_batch_size=4, seed=0) as it:
    next(it)
    assert it.step == 1
  assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
  with pytest.raises(RuntimeError, match='closed'):
    next(it)


def test_eval_batch_is_fixed_and_spreads_scales(source, cfg):
  a = pipeline.make_eval_batch(source, cfg, 4, seed=0)
  _assert_batches_equal(a, pipeline.make_eval_batch(source, cfg, 4, seed=0))
  assert a['hr'].shape == (4, P, P, 3)
  lr_side = np.round(P / np.linspace(2.0, cfg.max_scale, 4))
  np.testing.assert_allclose(a['scale'], P / lr_side, rtol=1e-6)
  # Four images over a four-image source: all different.
  assert len({a['hr'][i].tobytes() for i in range(4)}) == 4


def test_max_scale_prob_puts_that_share_at_the_largest_scale(source, cfg):
  def share_at_max(prob):
    c = cfg.copy_and_resolve_references()
    c.max_scale_prob = prob
    scales = np.array([pipeline.make_example(source, k, c, seed=0)['scale'] for k in range(300)])
    assert (scales >= c.min_scale).all() and (scales <= c.max_scale).all()
    return np.mean(np.isclose(scales, c.max_scale))

  # Uniform scales also land on exactly max_scale now and then (the LR side is rounded).
  assert 0.35 < share_at_max(0.5) - share_at_max(0.0) < 0.65
