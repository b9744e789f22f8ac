"""Seamless tiling: any output size through a fixed-size model, one strip of tiles at a time.

The model contract (the bundle's manifest): a T x T tile of the LR image
(or, for a model that takes any size, th x tw: plan_tile picks it per photo)
upsampled bicubic to the output size, in [-1, 1], plus T x T standard-normal
noise and the scale, gives T x T output pixels. Tiles overlap by the
manifest's overlap and are blended with raised-cosine weights, normalized by
their sum, so every output pixel is a convex mix of the tiles that cover it.

Two things keep the seams out. The starting noise is a function of the global
pixel position (drawn per BLOCK x BLOCK block from (seed, block row, block
column)), so overlapping tiles start from the same noise where they overlap.
And each tile's conditioning is its window of one global `lr_up`
(imaging.resample.LrUpStrips.window, built on the tile's thread), which
matches the whole-image resize to float rounding.

Memory is bounded by a strip: one row of tiles keeps T output rows of float32
accumulators; finished rows go straight to the uint8 result.
"""

import collections
import contextlib
import functools
import math
from typing import Callable

import numpy as np

from zoom_enhance.imaging import resample

# Side of the square blocks the starting noise is drawn in. A constant of the
# runtime, not of a bundle: changing it changes every output for a given seed.
BLOCK = 64
# Noise blocks kept between photos (48 KB each, 24 MB in all: a 2 MP result's).
NOISE_CACHE_BLOCKS = 512

# Weight at the outermost pixel of a tile's overlapping edge; above zero so a
# pixel seen by one tile only still normalizes.
_MIN_WEIGHT = 1e-3

TileFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
  """First pixel of each tile along an axis: as few tiles as keep every overlap >= `overlap`, spread evenly.

  Even spacing shares the spare overlap among all seams instead of leaving a
  last tile that is almost all overlap. A length up to one tile gets one tile
  at 0 (the caller pads to the tile).
  """
  if length <= tile:
    return [0]
  if not 0 <= overlap < tile:
    raise ValueError(f'overlap {overlap} must be in [0, tile={tile})')
  count = _count(length, tile, overlap)
  return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _count(length: int, side: int, overlap: int) -> int:
  """How many tiles tile_starts places."""
  return 1 if length <= side else math.ceil((length - side) / (side - overlap)) + 1


def edge_weights(tile: int, overlap: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
  """1-D blend weights of a tile: raised-cosine ramps over `overlap` pixels on sides with a neighbour.

  Sides at the image border keep weight 1: no other tile covers them.
  """
  w = np.ones(tile, np.float32)
  if overlap > 0:
    t = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
    ramp = np.maximum(0.5 - 0.5 * np.cos(np.pi * t), _MIN_WEIGHT).astype(np.float32)
    if ramp_start:
      w[:overlap] = np.minimum(w[:overlap], ramp)
    if ramp_end:
      w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
  return w


@functools.lru_cache(maxsize=NOISE_CACHE_BLOCKS)
def noise_block(seed: int, by: int, bx: int) -> np.ndarray:
  """The (BLOCK, BLOCK, 3) standard-normal noise of block (by, bx) for this seed, read-only.

  Cached: the photos of a folder share a seed, so each position's noise is
  drawn once (drawing is 8 ns a number, a sixth of the model's time at x4).
  """
  rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, by, bx]))
  block = rng.standard_normal((BLOCK, BLOCK, 3), dtype=np.float32)
  block.flags.writeable = False
  return block


class NoiseField:
  """Starting noise as a function of global pixel position; caches the blocks of the current strip.

  region() runs on the tile threads: a block that forget_above drops while a
  tile above still reads it comes back from noise_block's cache, the same
  numbers.
  """

  def __init__(self, seed: int):
    self.seed = seed
    self._blocks = {}

  def region(self, y: int, x: int, h: int, w: int) -> np.ndarray:
    """Noise of pixels [y, y+h) x [x, x+w), float32 (h, w, 3)."""
    out = np.empty((h, w, 3), np.float32)
    for by in range(y // BLOCK, (y + h - 1) // BLOCK + 1):
      for bx in range(x // BLOCK, (x + w - 1) // BLOCK + 1):
        block = self._blocks.get((by, bx))
        if block is None:
          block = self._blocks[(by, bx)] = noise_block(self.seed, by, bx)
        y0, x0 = max(y, by * BLOCK), max(x, bx * BLOCK)
        y1, x1 = min(y + h, (by + 1) * BLOCK), min(x + w, (bx + 1) * BLOCK)
        out[y0 - y : y1 - y, x0 - x : x1 - x] = block[
          y0 - by * BLOCK : y1 - by * BLOCK, x0 - bx * BLOCK : x1 - bx * BLOCK
        ]
    return out

  def forget_above(self, y: int):
    """Drops blocks that lie wholly above row y: strips only move down."""
    self._blocks = {k: v for k, v in self._blocks.items() if (k[0] + 1) * BLOCK > y}


def _pad_to(a: np.ndarray, h: int, w: int) -> np.ndarray:
  """Mirror-pads (rows, cols, 3) up to (h, w): a model tile larger than the image."""
  ph, pw = h - a.shape[0], w - a.shape[1]
  if ph <= 0 and pw <= 0:
    return a
  return np.pad(a, ((0, max(ph, 0)), (0, max(pw, 0)), (0, 0)), mode='symmetric')


def _hw(tile) -> tuple[int, int]:
  """A tile given as a side or as (height, width)."""
  return (int(tile), int(tile)) if isinstance(tile, (int, np.integer)) else (int(tile[0]), int(tile[1]))


def count_tiles(out_hw, tile, overlap: int) -> int:
  th, tw = _hw(tile)
  return len(tile_starts(out_hw[0], th, overlap)) * len(tile_starts(out_hw[1], tw, overlap))


# Largest tile a resizable model is run at, in pixels. Larger tiles waste fewer pixels on overlap, but
# each new tile shape costs an interpreter per model copy whose arena grows with the tile, and XNNPACK
# ran large tiles slower per pixel on a 2-core Xeon; the measurements are in docs/runtime.md ("Tiles of
# the photo's shape").
MAX_TILE_PIXELS = 256 * 256
# What a tile costs besides its pixels (noise, blending, the call), in pixels' worth.
TILE_COST_PIXELS = 2048


def _side(length: int, count: int, overlap: int, multiple: int) -> int:
  """The smallest side, a multiple of `multiple`, with which `count` tiles overlapping by `overlap`
  cover `length`."""
  need = math.ceil((length + (count - 1) * overlap) / count)
  return max(multiple, -(-need // multiple) * multiple)


@functools.lru_cache(maxsize=256)  # a folder's photos share a few sizes
def plan_tile(out_hw, *, overlap: int, multiple: int, parallel: int = 1, max_pixels: int = MAX_TILE_PIXELS):
  """(height, width) of the tiles of a model that takes any size (export_tflite/resizable.py); out_hw a tuple.

  The shape whose tiles compute the fewest pixels, each tile also costing
  TILE_COST_PIXELS, with `parallel` tiles running at once: so a result of up
  to max_pixels is one tile, or `parallel` tiles where they run side by
  side. A 480x320 result at 2 tiles at once: four 176x256 tiles (180,224
  pixels computed) where 192-px tiles compute six (221,184).
  """
  # Sides below this are all overlap and padding.
  smallest = max(multiple, 2 * overlap + multiple)

  def sides(length):
    out, n = [], 1
    while True:
      side = _side(length, n, overlap, multiple)
      if n > 1 and side < smallest:
        return out
      if not out or side < out[-1][1]:
        out.append((_count(length, side, overlap), side))
      if side <= smallest:
        return out
      n += 1

  best = None
  for ny, th in sides(out_hw[0]):
    for nx, tw in sides(out_hw[1]):
      if th * tw > max_pixels:
        continue
      cost = math.ceil(ny * nx / parallel) * (th * tw + TILE_COST_PIXELS)
      if best is None or cost < best[0]:
        best = (cost, (th, tw))
  if best is None:  # max_pixels below the smallest useful tile
    return smallest, smallest
  return best[1]


def enhance_tiled(
  run_tile: TileFn,
  lr_uint8: np.ndarray,
  out_hw,
  *,
  tile,
  overlap: int,
  scale: float,
  seed: int = 0,
  strength: float = 1.0,
  detail: float = 1.0,
  noise_used: bool = True,
  on_tile: Callable[[], None] | None = None,
  parallel: int = 1,
  executor=None,
) -> np.ndarray:
  """Enhances a uint8 (h, w, 3) image to `out_hw`, returning uint8 (out_h, out_w, 3).

  `tile` is a side T or (height, width); run_tile(lr_up, noise, scale,
  detail) takes and returns float32 (1, th, tw, 3) in [-1, 1] (scale and
  detail (1,)). `strength` mixes each pixel between the bicubic upsampling
  (0) and the model (1). Images smaller than a tile are mirror-padded, run,
  cropped. `detail` scales the starting noise (the sampler's temperature),
  and models that read it get it as an input: 0 is the deterministic
  fidelity output, 1 draws all the detail the model learned.
  With `noise_used` False (a bundle whose export measured that its output
  does not move with the noise) or detail 0, every tile gets zeros instead
  of drawn noise.
  `parallel` > 1 runs that many tiles at once on worker threads (run_tile
  must then be thread-safe and release the GIL: engine.Engine.parallel), on
  `executor`'s threads where given (engine.Engine.executor), else on threads
  started for this call;
  tiles are still blended in raster order, so the result is the same.
  """
  out_h, out_w = out_hw
  th, tw = _hw(tile)
  ys, xs = tile_starts(out_h, th, overlap), tile_starts(out_w, tw, overlap)
  canvas_w = max(out_w, tw)
  wx = [edge_weights(tw, overlap, x > 0, x + tw < out_w) for x in xs]
  up = resample.LrUpStrips(lr_uint8, out_hw)
  draw = noise_used and detail != 0.0
  noise = NoiseField(seed) if draw else None
  zeros = None if draw else np.zeros((th, tw, 3), np.float32)
  detail_in = np.array([detail], np.float32)
  detail = np.float32(detail)
  scale_in = np.array([scale], np.float32)
  strength = np.float32(strength)
  # 2-D blend weights per column, for each kind of row (first, inner, last): at most three strips' worth.
  tile_weights = {}

  def jobs():
    """(y, x, blend weights) of each tile in raster order."""
    for y in ys:
      kind = (y > 0, y + th < out_h)
      if kind not in tile_weights:
        wy = edge_weights(th, overlap, *kind)
        tile_weights[kind] = [wy[:, None] * w[None, :] for w in wx]
      if noise is not None:
        noise.forget_above(y)
      for col, x in enumerate(xs):
        yield y, x, tile_weights[kind][col]

  def run(job):
    """One tile through the model, mixed by strength and weighted for blending.

    Its `lr_up` and noise are built here, on the tile's thread: the bicubic
    enlargement of the tile's window (mirror-padded where the tile is larger
    than the image) and the noise of its pixels, not a strip's on the calling
    thread while the model waits.
    """
    y, x, w = job
    z = zeros if noise is None else noise.region(y, x, th, tw)
    if noise is not None and detail != 1.0:
      z *= detail  # region() returns a fresh array
    lr_tile = _pad_to(up.window(y, min(y + th, out_h), x, min(x + tw, out_w)), th, tw)
    out = np.array(run_tile(lr_tile[None], z[None], scale_in, detail_in), np.float32)[0]
    if strength != 1.0:
      out -= lr_tile
      out *= strength
      out += lr_tile
    out *= w[:, :, None]
    return y, x, out, w

  result = np.empty((out_h, out_w, 3), np.uint8)
  # Accumulators for the rows of the current strip only: [top, top + th).
  acc = np.zeros((th, canvas_w, 3), np.float32)
  wsum = np.zeros((th, canvas_w), np.float32)
  top = 0
  for y, x, weighted, w in _in_order(run, jobs(), parallel, executor):
    if y > top:  # rows above this strip are done
      _finish(result, acc, wsum, top, y - top, out_h, out_w)
      acc, wsum = _shift(acc, y - top), _shift(wsum, y - top)
      top = y
    acc[:, x : x + tw] += weighted
    wsum[:, x : x + tw] += w
    if on_tile:
      on_tile()
  _finish(result, acc, wsum, top, out_h - top, out_h, out_w)
  return result


def _in_order(fn, jobs, parallel: int, executor=None):
  """fn over jobs, results in order; with parallel > 1 on that many threads, a few jobs ahead at most.

  The look-ahead is bounded (parallel + 1 jobs in flight), so memory stays a
  strip or two whatever the image.
  """
  if parallel <= 1:
    yield from map(fn, jobs)
    return
  from concurrent import futures

  with contextlib.ExitStack() as stack:
    if executor is None:
      executor = stack.enter_context(
        futures.ThreadPoolExecutor(parallel, thread_name_prefix='zoom-enhance-tile')
      )
    pending = collections.deque()
    try:
      for job in jobs:
        pending.append(executor.submit(fn, job))
        if len(pending) > parallel:
          yield pending.popleft().result()
      while pending:
        yield pending.popleft().result()
    finally:
      for f in pending:
        f.cancel()
      futures.wait(pending)  # none may still write into this call's buffers


def _finish(result, acc, wsum, top: int, count: int, out_h: int, out_w: int):
  """Normalizes `count` accumulated rows starting at `top` into the uint8 result."""
  count = min(count, out_h - top)
  if count <= 0:
    return
  x = acc[:count, :out_w] / wsum[:count, :out_w, None]
  x += 1.0
  x *= 127.5
  np.rint(x, out=x)
  result[top : top + count] = np.clip(x, 0, 255, out=x)


def _shift(a: np.ndarray, n: int) -> np.ndarray:
  """Moves rows up by n in place and zeroes the freed rows at the bottom."""
  n = min(n, a.shape[0])
  a[: a.shape[0] - n] = a[n:]
  a[a.shape[0] - n :] = 0
  return a
