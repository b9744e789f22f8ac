"""Training data: photo sources, deterministic (HR, upsampled-LR) examples, a prefetching iterator.

Every example is a pure function of (seed, k), k being its index in the global
example stream, so a resumed or multi-process run sees exactly the examples of
an uninterrupted single-process one. Sources: 'folder:PATH', 'skimage' (the
sample photos scikit-image ships) or a tensorflow-datasets name ('div2k').
"""

import collections
import concurrent.futures
import functools
import logging
import os
import queue
import threading

import numpy as np

from zoom_enhance import degrade
from zoom_enhance import errors
from zoom_enhance import images

logger = logging.getLogger(__name__)

# scikit-image's sample photos that are RGB natural photographs (not
# drawings, not greyscale) and ship with the package (no download).
SKIMAGE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry')
# TFDS features tried in order when `data.image_key` is ''.
TFDS_IMAGE_KEYS = ('hr', 'image')
# Salt of the per-epoch permutation stream, so it never equals an example's.
_ORDER_SALT = 7
# Offset of the sample-grid example streams, far beyond any training k.
_EVAL_STREAM = 10**9


class DataError(errors.ZoomEnhanceError, ValueError):
  """A data source that cannot give training examples."""


def _check_cfg(data_cfg) -> None:
  """Rejects data settings that would fail later, far from their cause."""
  c = data_cfg
  checks = [
      (c.patch_size >= 1, f'data.patch_size={c.patch_size} must be >= 1'),
      (1.0 <= c.min_scale <= c.max_scale,
       f'need 1 <= data.min_scale ({c.min_scale}) <= data.max_scale ({c.max_scale})'),
      (0.0 <= c.get('max_scale_prob', 0.0) <= 1.0,
       f'data.max_scale_prob={c.get("max_scale_prob")} not in [0, 1]'),
      (0.0 <= c.realistic_prob <= 1.0, f'data.realistic_prob={c.realistic_prob} not in [0, 1]'),
      (c.blur_sigma_max >= 0, f'data.blur_sigma_max={c.blur_sigma_max} must be >= 0'),
      (c.noise_sigma_max >= 0, f'data.noise_sigma_max={c.noise_sigma_max} must be >= 0'),
      (1 <= c.jpeg_quality_min <= c.jpeg_quality_max <= 100,
       f'need 1 <= data.jpeg_quality_min ({c.jpeg_quality_min}) <= '
       f'data.jpeg_quality_max ({c.jpeg_quality_max}) <= 100'),
      (c.cache_mb >= 0, f'data.cache_mb={c.cache_mb} must be >= 0'),
      (c.num_workers >= 1, f'data.num_workers={c.num_workers} must be >= 1'),
      (c.prefetch >= 0, f'data.prefetch={c.prefetch} must be >= 0'),
  ]
  for ok, message in checks:
    if not ok:
      raise errors.ConfigError(message)


class _ByteLRU:
  """Least-recently-used cache of arrays bounded by their total bytes; thread-safe."""

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self.nbytes = 0
    self._items = collections.OrderedDict()
    self._lock = threading.Lock()

  def __len__(self):
    return len(self._items)

  def get(self, key):
    with self._lock:
      value = self._items.get(key)
      if value is not None:
        self._items.move_to_end(key)
      return value

  def put(self, key, value: np.ndarray) -> None:
    if value.nbytes > self.max_bytes:
      return
    with self._lock:
      if key in self._items:
        return
      self._items[key] = value
      self.nbytes += value.nbytes
      while self.nbytes > self.max_bytes:
        _, old = self._items.popitem(last=False)
        self.nbytes -= old.nbytes


def _rgb_uint8(img, where: str) -> np.ndarray:
  """An in-memory image (H, W[, 1|3|4], uint8 or uint16) as (H, W, 3) uint8."""
  img = np.asarray(img)
  if img.dtype == np.uint16:
    img = degrade.to_uint8(img / 257.0)
  if img.dtype != np.uint8 or img.ndim not in (2, 3):
    raise images.ImageError(where, f'unsupported image array {img.dtype} {img.shape}')
  if img.ndim == 2:
    img = img[:, :, None]
  if img.shape[2] == 4:
    # Onto white, as `images.load_rgb` does.
    alpha = img[:, :, 3:].astype(np.float32) / 255.0
    img = degrade.to_uint8(img[:, :, :3] * alpha + 255.0 * (1.0 - alpha))
  if img.shape[2] == 1:
    img = np.repeat(img, 3, axis=2)
  if img.shape[2] != 3:
    raise images.ImageError(where, f'unsupported number of channels {img.shape[2]}')
  return np.ascontiguousarray(img)


def _fit(img: np.ndarray, min_side: int) -> np.ndarray:
  """Upscales (bicubic, keeping the aspect ratio) so both sides are >= min_side."""
  h, w = img.shape[:2]
  if min(h, w) >= min_side:
    return img
  f = min_side / min(h, w)
  size = (max(min_side, round(h * f)), max(min_side, round(w * f)))
  return degrade.to_uint8(degrade.bicubic_resize(img, size))


class ImageSource:
  """Random access to decoded RGB photos, cached; unreadable ones give None.

  Subclasses implement `_read(i)` (raising `images.ImageError`) and
  `_describe(i)`. An unreadable image is logged once, remembered and counted in
  `num_skipped`; `num_ignored` counts files that were never candidates.
  """

  def __init__(self, name: str, num_images: int, data_cfg, unit: str = 'images'):
    self.name = name
    self.num_ignored = 0
    self._n = num_images
    self._unit = unit
    self._min_side = data_cfg.patch_size
    self._cache = _ByteLRU(int(data_cfg.cache_mb * 2**20))
    self._bad = set()
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return self._n

  def __repr__(self) -> str:
    return f'<{type(self).__name__} {self.name}: {self._n} {self._unit}>'

  @property
  def num_skipped(self) -> int:
    return len(self._bad)

  def _read(self, i: int) -> np.ndarray:
    raise NotImplementedError

  def _describe(self, i: int) -> str:
    return f'{self.name}[{i}]'

  def load(self, i: int):
    """Image i as read-only (H, W, 3) uint8 with both sides >= patch_size, or None."""
    if not 0 <= i < self._n:
      raise IndexError(f'{self.name}: image {i} out of range [0, {self._n})')
    img = self._cache.get(i)
    if img is not None or i in self._bad:
      return img
    try:
      img = _fit(_rgb_uint8(self._read(i), self._describe(i)), self._min_side)
    except images.ImageError as e:
      with self._lock:
        if i not in self._bad:
          self._bad.add(i)
          logger.warning('skipping unreadable image %s', e)
      return None
    img.flags.writeable = False  # Shared through the cache.
    self._cache.put(i, img)
    return img

  def no_readable_error(self) -> DataError:
    return DataError(f'{self.name} holds no readable images '
                     f'({self.num_skipped} {self._unit} skipped as unreadable)')

  def check_readable(self) -> None:
    """Raises DataError unless some image decodes (normally only image 0 is read)."""
    for i in range(self._n):
      if self.load(i) is not None:
        return
    raise self.no_readable_error()


class FolderSource(ImageSource):
  """Every file with an image extension under a folder, recursively, in sorted order."""

  def __init__(self, spec: str, folder: str, data_cfg):
    if not os.path.isdir(folder):
      raise DataError(f'{spec}: no such folder')
    paths, others = images.scan_folder(folder)
    if not paths:
      raise DataError(f'{spec} holds no images (looked for .{", .".join(images.IMAGE_EXTENSIONS)}'
                      f'; {len(others)} other files ignored)')
    super().__init__(spec, len(paths), data_cfg, unit='files')
    self.paths = paths
    self.num_ignored = len(others)
    if others:
      logger.warning('%s: ignoring %d file(s) without an image extension, e.g. %s',
                     spec, len(others), others[0])

  def _read(self, i):
    return images.load_rgb(self.paths[i])

  def _describe(self, i):
    return self.paths[i]


class SkimageSource(ImageSource):
  """The RGB sample photos bundled with scikit-image (offline, for tests and smoke runs)."""

  def __init__(self, data_cfg):
    try:
      import skimage.data
    except ImportError:
      raise DataError("source 'skimage' needs scikit-image: pip install scikit-image") from None
    super().__init__('skimage', len(SKIMAGE_PHOTOS), data_cfg)
    self._data = skimage.data

  def _read(self, i):
    try:
      return getattr(self._data, SKIMAGE_PHOTOS[i])()
    except Exception as e:  # Missing optional data files surface as many types.
      raise images.ImageError(self._describe(i), str(e).splitlines()[0]) from e

  def _describe(self, i):
    return f'skimage.data.{SKIMAGE_PHOTOS[i]}'


def _tfds_image_key(features, wanted: str, spec: str) -> str:
  """`wanted` if set, else the first of TFDS_IMAGE_KEYS the dataset has."""
  keys = list(features.keys())
  candidates = (wanted,) if wanted else TFDS_IMAGE_KEYS
  for key in candidates:
    if key in keys:
      return key
  raise DataError(f'{spec}: no image feature {" or ".join(map(repr, candidates))} '
                  f'(features: {", ".join(keys)}); set data.image_key')


class TfdsSource(ImageSource):
  """A tensorflow-datasets split read by random access (ArrayRecord files)."""

  def __init__(self, spec: str, data_cfg):
    try:
      import tensorflow_datasets as tfds
    except ImportError:
      raise DataError(f'{spec!r} is not folder:PATH or skimage, and tensorflow-datasets '
                      'is not installed') from None
    try:
      ds = tfds.data_source(spec, split=data_cfg.split,
                            builder_kwargs={'file_format': 'array_record'})
    except tfds.core.registered.DatasetNotFoundError:
      raise DataError(f"{spec}: no such tensorflow-datasets dataset; sources are "
                      "'folder:PATH', 'skimage' or a TFDS name such as 'div2k'") from None
    except Exception as e:  # Downloads and preparation fail in many ways.
      reason = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
      raise DataError(f'{spec}: cannot open split {data_cfg.split!r} with '
                      f'tensorflow-datasets: {reason}') from e
    self._key = _tfds_image_key(ds.dataset_info.features, data_cfg.image_key, spec)
    super().__init__(spec, len(ds), data_cfg, unit='records')
    self._ds = ds

  def _read(self, i):
    try:
      return self._ds[i][self._key]
    except Exception as e:  # A corrupt record must not end the run.
      raise images.ImageError(self._describe(i), str(e).splitlines()[0] or type(e).__name__) from e


def make_source(spec: str, data_cfg) -> ImageSource:
  """The source named by `spec`: 'folder:PATH', 'skimage' or a TFDS name[/config]."""
  _check_cfg(data_cfg)
  if spec.startswith('folder:'):
    source = FolderSource(spec, os.path.expanduser(spec[len('folder:'):]), data_cfg)
  elif spec == 'skimage':
    source = SkimageSource(data_cfg)
  elif spec.startswith(('/', '.', '~')):
    # TFDS names are snake_case; this is a path given without its prefix.
    raise DataError(f"{spec}: folders are given as 'folder:{spec}'")
  elif spec:
    source = TfdsSource(spec, data_cfg)
  else:
    raise DataError("empty data source; use 'folder:PATH', 'skimage' or a TFDS name")
  source.check_readable()
  return source


@functools.lru_cache(maxsize=8)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The shuffled image order of one epoch (a full pass over the source)."""
  order = np.random.default_rng([seed, epoch, _ORDER_SALT]).permutation(n)
  order.flags.writeable = False
  return order


def _load_readable(source: ImageSource, order, pos: int) -> np.ndarray:
  """Image order[pos], or the first readable one after it (wrapping around)."""
  n = len(order)
  for j in range(n):
    img = source.load(int(order[(pos + j) % n]))
    if img is not None:
      return img
  raise source.no_readable_error()


def _augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """One of the 8 symmetries of the square: a mirror, then 0-3 quarter turns."""
  if rng.random() < 0.5:
    patch = patch[:, ::-1]
  return np.ascontiguousarray(np.rot90(patch, int(rng.integers(4))))


def _pair(patch: np.ndarray, rng, data_cfg, scale: float, realistic: bool) -> dict:
  """{hr, lr_up, scale}: the HR patch, its degraded LR upsampled back, P / lr_side."""
  p = patch.shape[0]
  lr_side = degrade.lr_size_for(p, scale)
  lr = degrade.degrade(patch, (lr_side, lr_side), rng, data_cfg, realistic)
  return {'hr': degrade.to_signed(patch),
          'lr_up': degrade.to_signed(degrade.bicubic_resize(lr, (p, p))),
          'scale': np.float32(p / lr_side)}


def make_example(source: ImageSource, k: int, data_cfg, seed: int) -> dict:
  """Global example k: a random P x P crop, its symmetry, scale and degradation.

  The image is order[k % n] of epoch k // n's permutation (or the next readable
  one); everything random comes from default_rng([seed, k]). Returns hr and
  lr_up as float32 (P, P, 3) in [-1, 1] and the effective scale P / lr_side.
  """
  rng = np.random.default_rng([seed, k])
  epoch, pos = divmod(k, len(source))
  img = _load_readable(source, _epoch_order(seed, epoch, len(source)), pos)
  p = data_cfg.patch_size
  h, w = img.shape[:2]
  y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
  patch = _augment(img[y:y + p, x:x + p], rng)
  scale = rng.uniform(data_cfg.min_scale, data_cfg.max_scale)
  if data_cfg.get('max_scale_prob', 0.0) > 0 and rng.random() < data_cfg.max_scale_prob:
    scale = data_cfg.max_scale  # the most common zoom, and the hardest one
  realistic = bool(rng.random() < data_cfg.realistic_prob)
  return _pair(patch, rng, data_cfg, scale, realistic)


def _stack(examples) -> dict:
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def make_eval_batch(source: ImageSource, data_cfg, n: int, seed: int) -> dict:
  """n fixed examples for sample grids: centre crops, plain bicubic LR.

  Scales run over linspace(max(min_scale, 2), max_scale, n) so a grid shows
  each zoom level; images are spread over the source. Streams are
  default_rng([seed, 1e9 + i]), disjoint from the training examples'.
  """
  _check_cfg(data_cfg)
  if n < 1:
    raise ValueError(f'make_eval_batch needs n >= 1, got {n}')
  top = data_cfg.max_scale
  scales = np.linspace(min(max(data_cfg.min_scale, 2.0), top), top, n)
  order, m, p = np.arange(len(source)), len(source), data_cfg.patch_size
  examples = []
  for i in range(n):
    rng = np.random.default_rng([seed, _EVAL_STREAM + i])
    img = _load_readable(source, order, i * m // n if n <= m else i % m)
    y, x = (img.shape[0] - p) // 2, (img.shape[1] - p) // 2
    examples.append(_pair(img[y:y + p, x:x + p], rng, data_cfg, scales[i], realistic=False))
  return _stack(examples)


class TrainIterator:
  """This process's batches of the global example stream, built ahead in threads.

  Batch s holds global examples k in [s*B + p*b, s*B + (p+1)*b), B the global
  batch size, b = B / process_count and p the process index: processes split
  each global batch without overlap, and starting at `start_step` gives what an
  uninterrupted run would. `step` is the index of the next batch.
  """

  def __init__(self, source: ImageSource, data_cfg, *, global_batch_size: int, seed: int,
               start_step: int = 0, process_index: int = 0, process_count: int = 1):
    _check_cfg(data_cfg)
    if not 0 <= process_index < process_count:
      raise ValueError(f'process_index {process_index} not in [0, {process_count})')
    if global_batch_size < 1 or global_batch_size % process_count:
      raise ValueError(f'global batch size {global_batch_size} does not split evenly '
                       f'over {process_count} processes')
    if start_step < 0:
      raise ValueError(f'start_step {start_step} < 0')
    self.step = start_step
    self.local_batch_size = global_batch_size // process_count
    self._global_batch_size = global_batch_size
    self._offset = process_index * self.local_batch_size
    self._example = functools.partial(make_example, source, data_cfg=data_cfg, seed=seed)
    self._pool = concurrent.futures.ThreadPoolExecutor(data_cfg.num_workers,
                                                       thread_name_prefix='zoom-data')
    self._stop = threading.Event()
    self._error = None
    self._closed = False
    self._queue = queue.Queue(maxsize=data_cfg.prefetch) if data_cfg.prefetch else None
    self._thread = None
    if self._queue is not None:
      self._thread = threading.Thread(target=self._produce, args=(start_step,),
                                      name='zoom-data-prefetch', daemon=True)
      self._thread.start()

  def example_indices(self, step: int) -> range:
    """Global example indices of this process's batch at `step`."""
    start = step * self._global_batch_size + self._offset
    return range(start, start + self.local_batch_size)

  def _build(self, step: int) -> dict:
    return _stack(list(self._pool.map(self._example, self.example_indices(step))))

  def _produce(self, step: int) -> None:
    """Background thread: batches in order into the queue until stopped or failed."""
    while not self._stop.is_set():
      try:
        item = (self._build(step), None)
      except Exception as e:  # Handed to the caller, which re-raises it.
        item = (None, e)
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          break
        except queue.Full:
          pass
      if item[1] is not None:
        return
      step += 1

  def _get(self):
    while True:
      try:
        return self._queue.get(timeout=0.5)
      except queue.Empty:
        if not self._thread.is_alive() and self._queue.empty():
          raise RuntimeError('the data prefetch thread stopped unexpectedly') from None

  def __next__(self) -> dict:
    if self._closed:
      raise RuntimeError('TrainIterator is closed')
    if self._error is not None:
      raise self._error
    if self._queue is None:
      batch = self._build(self.step)
    else:
      batch, self._error = self._get()
      if self._error is not None:
        raise self._error
    self.step += 1
    return batch

  def __iter__(self):
    return self

  def close(self) -> None:
    """Stops the prefetch thread and the workers; idempotent."""
    if self._closed:
      return
    self._closed = True
    self._stop.set()
    self._pool.shutdown(wait=False, cancel_futures=True)
    if self._thread is not None:
      self._thread.join()
    self._pool.shutdown(wait=True)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
