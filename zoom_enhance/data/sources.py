"""Photo sources for training and evaluation: a folder, scikit-image's samples or a TFDS dataset.

Sources: 'folder:PATH', 'skimage' (the sample photos scikit-image ships) or
a tensorflow-datasets name ('div2k'). A source gives random access to decoded
RGB photos through a byte-bounded cache, skips (and counts) unreadable ones,
and can hold its last images out of training for evaluation.
"""

import collections
import logging
import os
import threading

import numpy as np

from zoom_enhance import errors
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo
from zoom_enhance.imaging import resample

logger = logging.getLogger(__name__)

# scikit-image's sample photos that are RGB natural photographs (not
# drawings, not greyscale) and ship with the package (no download).
SKIMAGE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'immunohistochemistry')
# TFDS features tried in order when `data.image_key` is ''.
TFDS_IMAGE_KEYS = ('hr', 'image')


class DataError(errors.ZoomEnhanceError, ValueError):
  """A data source that cannot give training examples."""


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


def _fit(img: np.ndarray, min_side: int) -> np.ndarray:
  """Upscales (bicubic, keeping the aspect ratio) so both sides are >= min_side."""
  h, w = img.shape[:2]
  if min(h, w) >= min_side:
    return img
  f = min_side / min(h, w)
  size = (max(min_side, round(h * f)), max(min_side, round(w * f)))
  return resample.bicubic_uint8(img, size)


class ImageSource:
  """Random access to decoded RGB photos, cached; unreadable ones give None.

  Subclasses implement `_read(i)` (a path, PIL image or array for
  imaging.photo to decode; raising `photo.ImageError`) and `_describe(i)`.
  An unreadable image is logged once, remembered and counted in
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

  def _read(self, i: int):
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
      img = _fit(self._decode(i), self._min_side)
    except photo.ImageError as e:
      with self._lock:
        if i not in self._bad:
          self._bad.add(i)
          logger.warning('skipping unreadable image %s', e)
      return None
    img.flags.writeable = False  # Shared through the cache.
    self._cache.put(i, img)
    return img

  def _decode(self, i: int) -> np.ndarray:
    """Image i as (H, W, 3) uint8, decoded by the one photo decoder; ImageError names the item."""
    try:
      return photo.load_rgb(self._read(i))
    except photo.ImageError as e:
      raise photo.ImageError(self._describe(i), e.reason) from None

  def hold_out(self, count: int) -> list[tuple[str, np.ndarray]]:
    """Takes the last `count` images out of training: (name, RGB uint8) of those that decode.

    The source then has `count` images fewer; call it before training reads it.
    """
    if not 0 < count < self._n:
      raise DataError(f'{self.name}: cannot hold out {count} of its {self._n} {self._unit}')
    self._n -= count
    held = []
    for i in range(self._n, self._n + count):
      try:
        held.append((os.path.basename(self._describe(i)), self._decode(i)))
      except photo.ImageError as e:
        logger.warning('skipping unreadable held-out image %s', e)
    return held

  def no_readable_error(self) -> DataError:
    return DataError(
      f'{self.name} holds no readable images ({self.num_skipped} {self._unit} skipped as unreadable)'
    )

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
    paths, others = files.scan_folder(folder)
    if not paths:
      raise DataError(
        f'{spec} holds no images (looked for .{", .".join(files.IMAGE_EXTENSIONS)}'
        f'; {len(others)} other files ignored)'
      )
    super().__init__(spec, len(paths), data_cfg, unit='files')
    self.paths = paths
    self.num_ignored = len(others)
    if others:
      logger.warning(
        '%s: ignoring %d file(s) without an image extension, e.g. %s', spec, len(others), others[0]
      )

  def _read(self, i):
    return self.paths[i]

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
      raise photo.ImageError(self._describe(i), errors.first_line(e)) from e

  def _describe(self, i):
    return f'skimage.data.{SKIMAGE_PHOTOS[i]}'


def skimage_photos() -> list[tuple[str, np.ndarray]]:
  """(name, RGB uint8) of scikit-image's sample photos: evaluation photos that every install has."""
  import skimage.data

  return [(f'{name}.png', photo.load_rgb(getattr(skimage.data, name)())) for name in SKIMAGE_PHOTOS]


def _tfds_image_key(features, wanted: str, spec: str) -> str:
  """`wanted` if set, else the first of TFDS_IMAGE_KEYS the dataset has."""
  keys = list(features.keys())
  candidates = (wanted,) if wanted else TFDS_IMAGE_KEYS
  for key in candidates:
    if key in keys:
      return key
  raise DataError(
    f'{spec}: no image feature {" or ".join(map(repr, candidates))} '
    f'(features: {", ".join(keys)}); set data.image_key'
  )


class TfdsSource(ImageSource):
  """A tensorflow-datasets split read by random access (ArrayRecord files)."""

  def __init__(self, spec: str, data_cfg):
    try:
      import tensorflow_datasets as tfds
    except ImportError:
      raise DataError(
        f'{spec!r} is not folder:PATH or skimage, and tensorflow-datasets is not installed'
      ) from None
    try:
      ds = tfds.data_source(spec, split=data_cfg.split, builder_kwargs={'file_format': 'array_record'})
    except tfds.core.registered.DatasetNotFoundError:
      raise DataError(
        f'{spec}: no such tensorflow-datasets dataset; sources are '
        "'folder:PATH', 'skimage' or a TFDS name such as 'div2k'"
      ) from None
    except Exception as e:  # Downloads and preparation fail in many ways.
      raise DataError(
        f'{spec}: cannot open split {data_cfg.split!r} with tensorflow-datasets: {errors.first_line(e)}'
      ) from e
    self._key = _tfds_image_key(ds.dataset_info.features, data_cfg.image_key, spec)
    super().__init__(spec, len(ds), data_cfg, unit='records')
    self._ds = ds

  def _read(self, i):
    try:
      return self._ds[i][self._key]
    except Exception as e:  # A corrupt record must not end the run.
      raise photo.ImageError(self._describe(i), errors.first_line(e)) from e


def make_source(spec: str, data_cfg) -> ImageSource:
  """The source named by `spec`: 'folder:PATH', 'skimage' or a TFDS name[/config]."""
  if spec.startswith('folder:'):
    source = FolderSource(spec, os.path.expanduser(spec[len('folder:') :]), data_cfg)
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
