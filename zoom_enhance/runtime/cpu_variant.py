"""The bundle variant that runs fastest on this machine's CPU: measured once through the engine, then cached.

Which variant is fastest depends on the CPU and on the LiteRT path: on a
2-core AMD EPYC (AVX2, no VNNI) through CompiledModel, the dynamic-range int8
model ran a 192-px tile in 4.9 ms and fp16 in 13.8 ms, while through the
classic interpreter on the same machine fp16 had been the faster; CPU feature
flags do not predict it, and timing the model alone may mislead (see
measure). So the first run on a machine times each candidate through the
runtime's tiling (about 1 s) and writes the result to the user's cache
directory; later runs read it.

Candidates are the bundle's own CPU default (export --cpu-quant) and its
plain models whose parity against JAX, measured at export, is at least
PARITY_FLOOR_DB (45 dB, "visually identical"), so that no choice changes
the picture: the full-integer model of the default bundle, 43 dB from JAX,
scored 0.09 dB less PSNR-Y on dev-val at x4 than int8 (59 dB). The choice
is the fastest, except that a candidate closer to JAX is kept while it is
within TIE_MARGIN of the fastest (timing noise must not trade accuracy for
nothing).

The cache entry is keyed by the CPU (model name, feature flags, cores), the
threads, the LiteRT version and the candidates' checksums: another bundle,
another LiteRT or another thread count measures again.
ZOOM_ENHANCE_CPU_VARIANT=bundle skips all this and runs the bundle's own
choice (export --cpu-quant); ZOOM_ENHANCE_CACHE_DIR moves the cache.
"""

import dataclasses
import logging
import math
import os
import platform
import time

import numpy as np

from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo
from zoom_enhance.runtime import backends
from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import engine as engine_lib
from zoom_enhance.runtime import machine_cache
from zoom_enhance.runtime import tiling

# Where the choice is kept (tests and launch/arm64_emulated.py find the cache here).
cache_dir = machine_cache.cache_dir

logger = logging.getLogger('zoom_enhance.runtime')

PARITY_FLOOR_DB = 45.0
TIE_MARGIN = 0.05
ROUNDS = 8  # timed enlargements (of 4 tiles) per candidate, interleaved across candidates
# The statistic of a candidate's times: the lower quartile. Interference from other work only ever adds
# time, and on a shared machine it came and went within a second (medians of 7 tiles flipped the order
# of two variants 9% apart, run to run).
QUANTILE = 25
CACHE_FILE = 'cpu_variant.json'
MODE_ENV = 'ZOOM_ENHANCE_CPU_VARIANT'
MODES = ('measure', 'bundle')


def cpu_identity() -> dict:
  """What makes kernels run at different speeds: architecture, CPU model, its feature flags, cores."""
  model, features = '', ''
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      for line in f:
        key, _, value = line.partition(':')
        key, value = key.strip().lower(), value.strip()
        if key in ('model name', 'hardware', 'cpu part', 'cpu model') and not model:
          model = value
        elif key in ('flags', 'features') and not features:
          features = value
  except OSError:
    pass
  return {
    'machine': platform.machine(),
    'model': model or platform.processor() or 'unknown',
    'features': files.text_digest(' '.join(sorted(features.split())))[:12],
    'cores': os.cpu_count() or 1,
  }


def candidates(manifest: bundle.Manifest) -> list[str]:
  """The bundle's CPU candidates, closest to JAX first: its own CPU default (export --cpu-quant), and
  every plain model with parity >= PARITY_FLOOR_DB."""
  default = manifest.default_quant.get('cpu')
  found = [
    (float(v.parity_psnr_db), k)
    for k, v in manifest.models.items()
    if k == default or float(v.parity_psnr_db) >= PARITY_FLOOR_DB
  ]
  return [k for _, k in sorted(found, key=lambda pk: (-pk[0], pk[1]))]


@dataclasses.dataclass(frozen=True)
class Choice:
  """The variant to run on this CPU, and the figures behind it."""

  variant: str
  tile_ms: dict  # candidate -> ms per tile in the runtime's tiling ({} where nothing was measured)
  how: str  # 'measured', 'cached in PATH', 'only candidate', 'bundle default'

  def describe(self) -> str:
    """What was chosen and why: 'int8, the fastest on this CPU (...)', or, where the tie rule kept a
    slower candidate, 'fp16: within 2% of the fastest (int8) and closer to JAX (...)'."""
    if not self.tile_ms:
      return f'{self.variant} ({self.how})'
    ranked = sorted(self.tile_ms.items(), key=lambda kv: kv[1])
    figures = ', '.join(f'{k} {ms:.1f}' for k, ms in ranked)
    fastest, best_ms = ranked[0]
    if self.variant == fastest or self.tile_ms.get(self.variant, best_ms) <= best_ms:
      return f'{self.variant}, the fastest on this CPU ({self.how}; ms per tile: {figures})'
    slower = 100.0 * (self.tile_ms[self.variant] / best_ms - 1.0)
    return (
      f'{self.variant}: within {max(1, math.ceil(slower))}% of the fastest ({fastest}) and closer to JAX '
      f'({self.how}; ms per tile: {figures})'
    )


def pick(tile_ms: dict, order: list[str]) -> str:
  """The fastest candidate, or one closer to JAX (earlier in `order`) within TIE_MARGIN of it."""
  fastest = min(tile_ms.values())
  return next(k for k in order if k in tile_ms and tile_ms[k] <= fastest * (1 + TIE_MARGIN))


def _timing_photo(manifest: bundle.Manifest) -> tuple[np.ndarray, tuple]:
  """A crop of the packaged photo whose x4 enlargement is 2 x 2 of the bundle's tiles, and that size."""
  tile, overlap = manifest.tile.size, manifest.tile.overlap
  side = 2 * tile - 2 * overlap
  lr = photo.load_rgb(files.asset_path('chelsea.jpg'))
  y, x = (lr.shape[0] - side // 4) // 2, (lr.shape[1] - side // 4) // 2
  return np.ascontiguousarray(lr[y : y + side // 4, x : x + side // 4]), (side // 4 * 4, side // 4 * 4)


def measure(
  bundle_dir: str, manifest: bundle.Manifest, keys: list[str], threads: int, rounds: int = ROUNDS
) -> dict:
  """Ms per tile of each variant in `keys` (lower quartile over rounds), as the runtime runs them.

  Each variant is loaded as the runtime loads it (engine.open_model) and
  enlarges a crop of the packaged photo through the runtime's own tiling
  (4 tiles at x4): the work between tiles can cost the variants unequally
  (likely by evicting the model's data from the caches), so the model alone
  timed tile after tile may rank them otherwise than the runtime runs them
  (here dynamic-range int8 ran 5% faster than int8_full tile after tile, and
  in one A/B through the whole pipeline 15% slower).
  Rounds are interleaved across the variants, so a change in the machine's
  load shifts them all alike; after two rounds a variant over 1.5 times the
  fastest is not timed further. A variant that cannot load is left out.
  """
  engines = {}
  try:
    for k in keys:
      try:
        engines[k] = engine_lib.open_model(
          os.path.join(bundle_dir, manifest.models[k].file), accelerator='cpu', threads=threads
        )
      except engine_lib.AcceleratorError as e:
        logger.debug('cpu variant %s cannot run here: %s', k, e)
    if not engines:
      return {}
    lr, out_hw = _timing_photo(manifest)
    tile, overlap = manifest.tile.size, manifest.tile.overlap
    count = tiling.count_tiles(out_hw, tile, overlap)
    times = {k: [] for k in engines}
    for r in range(rounds):
      for k in [k for k in engines if r < 2 or min(times[k]) <= 1.5 * min(min(v) for v in times.values())]:
        t0 = time.perf_counter()
        tiling.enhance_tiled(
          engines[k].run, lr, out_hw, tile=tile, overlap=overlap, scale=4.0, parallel=engines[k].parallel
        )
        times[k].append((time.perf_counter() - t0) / count)
  finally:
    for e in engines.values():
      e.close()
  return {k: round(1000 * float(np.percentile(v, QUANTILE)), 3) for k, v in times.items()}


def _cache_key(manifest: bundle.Manifest, keys: list[str], threads: int) -> tuple[str, dict]:
  """(key, what it stands for) of this machine, thread count, LiteRT and the candidates' files."""
  ident = {
    'cpu': cpu_identity(),
    'threads': threads,
    'tile_pool': backends.uses_tile_pool(threads),
    'litert': machine_cache.litert_version(),
    'models': {k: manifest.models[k].sha256 for k in keys},
  }
  return machine_cache.key_of(ident), ident


def choose(bundle_dir: str, manifest: bundle.Manifest, threads: int, *, refresh: bool = False) -> Choice:
  """The CPU variant for this bundle on this machine (see the module docstring).

  `refresh` measures again even where a cached figure exists (`bench` does).
  """
  default = manifest.default_quant.get('cpu')
  mode = os.environ.get(MODE_ENV, 'measure')
  if mode not in MODES:
    logger.warning('%s=%s: not one of %s; measuring', MODE_ENV, mode, ', '.join(MODES))
    mode = 'measure'
  keys = candidates(manifest)
  if mode == 'bundle' or not keys:
    return Choice(default, {}, 'bundle default') if default in manifest.models else None
  if len(keys) == 1:
    return Choice(keys[0], {}, 'only candidate')
  key, ident = _cache_key(manifest, keys, threads)
  entry = machine_cache.read(CACHE_FILE)['entries'].get(key)
  if entry and not refresh and entry.get('variant') in keys:
    return Choice(
      entry['variant'], entry.get('tile_ms', {}), f'cached in {machine_cache.path_of(CACHE_FILE)}'
    )
  t0 = time.perf_counter()
  tile_ms = measure(bundle_dir, manifest, keys, threads)
  if not tile_ms:
    return Choice(default, {}, 'bundle default') if default in manifest.models else None
  variant = pick(tile_ms, keys)
  logger.info('cpu variant: measured %s in %.2f s: %s', ', '.join(tile_ms), time.perf_counter() - t0, variant)
  machine_cache.put(CACHE_FILE, key, {'variant': variant, 'tile_ms': tile_ms, **ident})
  return Choice(variant, tile_ms, 'measured')
