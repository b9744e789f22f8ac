"""Training examples: deterministic (HR, lr_up, scale) triples and the prefetching batch iterator.

Every example is a pure function of (seed, k), k being its index in the global
example stream, so a resumed or multi-process run sees exactly the examples of
an uninterrupted single-process one.
"""

import concurrent.futures
import functools
import queue
import threading

import numpy as np

from zoom_enhance.data import degrade
from zoom_enhance.data import sources
from zoom_enhance.imaging import resample

# Salt of the per-epoch permutation stream, so it never equals an example's.
_ORDER_SALT = 7
# Offset of the sample-grid example streams, far beyond any training k.
_EVAL_STREAM = 10**9


@functools.lru_cache(maxsize=8)
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The shuffled image order of one epoch (a full pass over the source)."""
  order = np.random.default_rng([seed, epoch, _ORDER_SALT]).permutation(n)
  order.flags.writeable = False
  return order


def _load_readable(source: sources.ImageSource, order, pos: int) -> np.ndarray:
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


def _degradation(u: float, data_cfg) -> str:
  """An example's degradation from its draw u ~ U[0, 1): the first realistic_prob, then second_order_prob.

  One draw, as before second_order_prob existed: at 0 every example is what it was.
  """
  if u < data_cfg.realistic_prob:
    return 'realistic'
  return 'second_order' if u < data_cfg.realistic_prob + data_cfg.second_order_prob else 'bicubic'


def _pair(patch: np.ndarray, rng, data_cfg, scale: float, degradation: str) -> dict:
  """{hr, lr_up, scale}: the HR patch, its degraded LR upsampled back, P / lr_side.

  `degradation` is 'bicubic', 'realistic' (degrade.degrade with the config's
  ranges) or 'second_order' (degrade.second_order with its own).
  """
  p = patch.shape[0]
  lr_side = resample.lr_size_for(p, scale)
  if degradation == 'second_order':
    lr = degrade.second_order(patch, (lr_side, lr_side), rng)
  else:
    lr = degrade.degrade(patch, (lr_side, lr_side), rng, data_cfg, realistic=degradation == 'realistic')
  return {
    'hr': resample.to_signed(patch),
    'lr_up': resample.lr_up(lr, (p, p)),
    'scale': np.float32(p / lr_side),
  }


def make_example(source: sources.ImageSource, k: int, data_cfg, seed: int) -> dict:
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
  patch = _augment(img[y : y + p, x : x + p], rng)
  scale = rng.uniform(data_cfg.min_scale, data_cfg.max_scale)
  if data_cfg.max_scale_prob > 0 and rng.random() < data_cfg.max_scale_prob:
    scale = data_cfg.max_scale  # the most common zoom, and the hardest one
  return _pair(patch, rng, data_cfg, scale, _degradation(rng.random(), data_cfg))


def _stack(examples) -> dict:
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


def make_eval_batch(source: sources.ImageSource, data_cfg, n: int, seed: int) -> dict:
  """n fixed examples for sample grids: centre crops, plain bicubic LR.

  Scales run over linspace(max(min_scale, 2), max_scale, n) so a grid shows
  each zoom level; images are spread over the source. Streams are
  default_rng([seed, 1e9 + i]), disjoint from the training examples'.
  """
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
    examples.append(_pair(img[y : y + p, x : x + p], rng, data_cfg, scales[i], 'bicubic'))
  return _stack(examples)


class TrainIterator:
  """This process's batches of the global example stream, built ahead in threads.

  Batch s holds global examples k in [s*B + p*b, s*B + (p+1)*b), B the global
  batch size, b = B / process_count and p the process index: processes split
  each global batch without overlap, and starting at `start_step` gives what an
  uninterrupted run would. `step` is the index of the next batch.
  """

  def __init__(
    self,
    source: sources.ImageSource,
    data_cfg,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
  ):
    if not 0 <= process_index < process_count:
      raise ValueError(f'process_index {process_index} not in [0, {process_count})')
    if global_batch_size < 1 or global_batch_size % process_count:
      raise ValueError(
        f'global batch size {global_batch_size} does not split evenly over {process_count} processes'
      )
    if start_step < 0:
      raise ValueError(f'start_step {start_step} < 0')
    self.step = start_step
    self.local_batch_size = global_batch_size // process_count
    self._global_batch_size = global_batch_size
    self._offset = process_index * self.local_batch_size
    self._example = functools.partial(make_example, source, data_cfg=data_cfg, seed=seed)
    self._pool = concurrent.futures.ThreadPoolExecutor(data_cfg.num_workers, thread_name_prefix='zoom-data')
    self._stop = threading.Event()
    self._error = None
    self._closed = False
    self._queue = queue.Queue(maxsize=data_cfg.prefetch) if data_cfg.prefetch else None
    self._thread = None
    if self._queue is not None:
      self._thread = threading.Thread(
        target=self._produce, args=(start_step,), name='zoom-data-prefetch', daemon=True
      )
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
