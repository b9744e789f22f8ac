"""`zoom-enhance bench`: seconds per output megapixel and peak memory per bundle variant and accelerator.

Each measurement runs in a fresh process (`python -m
zoom_enhance.evaluation.runtime_bench SPEC`), so its peak resident memory
(getrusage's ru_maxrss) is its own: the runtime's imports, the model loaded
on one accelerator, and one enhancement of the input photo, result included.
The input is the packaged chelsea.jpg enlarged with Lanczos and cut to
`input_mp` megapixels; the model's speed does not depend on the content,
every tile costs the same.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from zoom_enhance import errors
from zoom_enhance.evaluation import report
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo
from zoom_enhance.runtime import bundle as bundle_lib

SOURCE = files.asset_path('chelsea.jpg')
# Width over height of the input crop: a phone photo's.
ASPECT = 4 / 3
ACCELERATORS = ('npu', 'gpu', 'cpu')  # the runtime's chain (engine.CHAIN), each asked for alone
QUANT_ORDER = ('fp32', 'fp16', 'int8', 'int8_full')
MAX_INPUT_MP = 8.0
MEMORY = (
  'peak resident set (getrusage ru_maxrss) of a fresh process per row: Python, numpy, Pillow, '
  'LiteRT, the model on its accelerator and one enhancement with its result'
)


def input_size(mp: float) -> tuple[int, int]:
  """(w, h) of a 4:3 image of about `mp` megapixels."""
  h = max(8, round((mp * 1e6 / ASPECT) ** 0.5))
  return max(8, round(h * ASPECT)), h


def make_input(mp: float) -> Image.Image:
  """The packaged photo enlarged with Lanczos to cover `input_size(mp)`, centre crop."""
  w, h = input_size(mp)
  im = Image.fromarray(photo.load_rgb(SOURCE))
  k = max(w / im.width, h / im.height)
  big = im.resize((max(w, round(im.width * k)), max(h, round(im.height * k))), Image.Resampling.LANCZOS)
  x, y = (big.width - w) // 2, (big.height - h) // 2
  return big.crop((x, y, x + w, y + h))


def _peak_rss_mb() -> float | None:
  try:
    import resource
  except ImportError:  # Windows
    return None
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # Kilobytes on Linux, bytes on macOS.
  return round(peak / (2**20 if sys.platform == 'darwin' else 2**10), 1)


def measure(spec: dict) -> dict:
  """One row, in this process: load the variant on the accelerator, enhance the input once."""
  from zoom_enhance.runtime import engine
  from zoom_enhance.runtime import pipeline

  try:
    enhancer = pipeline.Enhancer(
      spec['bundle'], accelerator=spec['accelerator'], quant=spec['quant'], threads=spec['threads']
    )
  except engine.AcceleratorError as e:
    # The cause alone: '--accelerator npu: not available here (CAUSE); use ...' is for `enhance`.
    cause = re.search(r'not available here \((.*)\); use', str(e))
    return {'available': False, 'reason': cause.group(1) if cause else str(e)}
  with enhancer:
    img = Image.fromarray(photo.load_rgb(spec['input']))
    rss_before = _peak_rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    result = enhancer.enhance(img, scale=spec['scale'], max_output_pixels=10**9)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    ran = result.info['zoom_enhance']
    w, h = ran.output_size
    return {
      'available': True,
      'variant': ran.variant,
      'accelerator': ran.accelerator,
      'runtime': ran.runtime,
      'fallbacks': list(ran.fallbacks),
      'input_size': list(img.size),
      'output_size': [w, h],
      'tiles': ran.tiles,
      'seconds': round(seconds, 3),
      'sec_per_mp': seconds / (w * h / 1e6),
      'cpu_sec_per_mp': cpu / (w * h / 1e6),
      'load_seconds': round(enhancer.engine.load_seconds, 3),
      'rss_before_mb': rss_before,
      'peak_rss_mb': _peak_rss_mb(),
    }


def child_env() -> dict:
  """The environment of a measured child process: this very package on its path, wherever it was imported
  from (a checkout as well as an install)."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  paths = [root] + [p for p in [os.environ.get('PYTHONPATH')] if p]
  return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def last_error_line(r: subprocess.CompletedProcess) -> str:
  """What a failed child said last on stderr (its one-line error), else its exit status."""
  return ([ln for ln in r.stderr.splitlines() if ln.strip()][-1:] or [f'exit status {r.returncode}'])[0]


STARTUP_RUNS = 3
_ENHANCE_SECONDS = re.compile(r', model \S+, ([0-9.]+) s \(')


def measure_startup(bundle_dir: str, threads: int, tmp: str, runs: int = STARTUP_RUNS) -> dict:
  """Seconds from starting `zoom-enhance enhance` to its first tile, the median of `runs` fresh processes.

  Each run enhances a 16x16 crop of the packaged photo at x1 (one tile) on
  the default accelerator chain with -v; start-up is its wall time less the
  seconds its report gives for the enhancement (decode and the tile), so it
  also holds the tiny PNG's write and the interpreter's exit: an upper bound.
  """
  out = os.path.join(tmp, 'startup.png')
  command = [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', SOURCE, '--crop', '0,0,16,16']
  command += ['--scale', '1', '--bundle', bundle_dir, '--threads', str(threads), '-o', out, '-v']
  seconds = []
  for _ in range(runs):
    t0 = time.perf_counter()
    r = subprocess.run(command, capture_output=True, text=True, env=child_env())
    wall = time.perf_counter() - t0
    found = _ENHANCE_SECONDS.search(r.stderr)
    if r.returncode != 0 or not found:
      raise errors.ZoomEnhanceError(f'start-up run failed: {last_error_line(r)}')
    seconds.append(round(wall - float(found.group(1)), 3))
  return {
    'seconds': float(np.median(seconds)),
    'runs': seconds,
    'how': f'median of {runs} fresh `zoom-enhance enhance` runs of one tile (default accelerator chain): '
    'wall time less the enhancement its report gives',
  }


def _measure_in_child(spec: dict) -> dict:
  r = subprocess.run(
    [sys.executable, '-m', 'zoom_enhance.evaluation.runtime_bench', json.dumps(spec)],
    capture_output=True,
    text=True,
    env=child_env(),
  )
  lines = r.stdout.strip().splitlines()
  if r.returncode != 0 or not lines:
    raise errors.ZoomEnhanceError(
      f'{spec["quant"]} on {spec["accelerator"]} at x{spec["scale"]:g} failed: {last_error_line(r)}'
    )
  return json.loads(lines[-1])


def _variants(manifest: bundle_lib.Manifest, quants) -> list[str]:
  have = list(manifest.models)
  if quants is None:
    return [q for q in QUANT_ORDER if q in have] + sorted(q for q in have if q not in QUANT_ORDER)
  missing = [q for q in quants if q not in have]
  if missing:
    raise errors.ConfigError(f'--quant {",".join(missing)}: not in this bundle (it has {", ".join(have)})')
  return list(quants)


def format_bench(rows: list[dict]) -> str:
  lines = [
    f'{"variant":9s} {"accel":5s} {"scale":>5s} {"output":>11s} {"s/MP":>6s} {"CPU s/MP":>8s} '
    f'{"peak MB":>8s} {"load s":>6s}  note'
  ]
  for r in rows:
    head = f'{r["quant"]:9s} {r["accelerator_asked"]:5s} {"x" + format(r["scale"], "g"):>5s}'
    if not r['available']:
      lines.append(f'{head} {"-":>11s} {"-":>6s} {"-":>8s} {"-":>8s} {"-":>6s}  unavailable: {r["reason"]}')
      continue
    peak = '-' if r['peak_rss_mb'] is None else f'{r["peak_rss_mb"]:.0f}'
    note = r['runtime'] + ('' if r['variant'] == r['quant'] else f', ran model {r["variant"]}')
    lines.append(
      f'{head} {"x".join(map(str, r["output_size"])):>11s} {r["sec_per_mp"]:6.2f} '
      f'{r["cpu_sec_per_mp"]:8.2f} {peak:>8s} {r["load_seconds"]:6.2f}  {note}'
    )
  return '\n'.join(lines)


def run_bench(
  bundle=None,
  *,
  threads: int = 2,
  input_mp: float = 1.0,
  scales=(2.0, 4.0),
  quants=None,
  accelerators=ACCELERATORS,
  out: str | None = None,
) -> dict:
  """Measures every (variant, accelerator, scale), prints the table, writes `out` (JSON) if given.

  First it measures afresh which variant the runtime runs on this CPU
  (cpu_variant.choose, which also refreshes the user's cache), so that the
  start-up runs after it find the cache as every later run does.
  """
  from zoom_enhance.runtime import cpu_variant
  from zoom_enhance.runtime import pipeline

  if threads < 1:
    raise errors.ConfigError(f'--threads {threads}: must be at least 1')
  if not 0 < input_mp <= MAX_INPUT_MP:
    raise errors.ConfigError(f'--input-mp {input_mp:g}: must be above 0 and at most {MAX_INPUT_MP:g}')
  bad = [s for s in scales if not 1.0 <= s <= 8.0]
  if bad or not scales:
    raise errors.ConfigError(f'--scales {",".join(format(s, "g") for s in scales)}: each must be in [1, 8]')
  accelerators = list(accelerators or ())
  unknown = [a for a in accelerators if a not in ACCELERATORS]
  if unknown or not accelerators:
    raise errors.ConfigError(
      f'--accelerators {",".join(accelerators)}: choose from {", ".join(ACCELERATORS)}'
    )
  bundle_dir = os.path.abspath(pipeline.resolve_bundle(bundle))
  manifest = bundle_lib.load_manifest(bundle_dir)
  variants = _variants(manifest, quants)
  if out:
    out = report.output_path(out)
  t0 = time.perf_counter()
  rows = []
  with tempfile.TemporaryDirectory(prefix='zoom-enhance-bench-') as tmp:
    photo = make_input(input_mp)
    path = os.path.join(tmp, 'input.png')
    photo.save(path)
    choice = cpu_variant.choose(bundle_dir, manifest, threads, refresh=True)
    startup = measure_startup(bundle_dir, threads, tmp)
    for quant in variants:
      for acc in accelerators:
        unavailable = None
        for scale in scales:
          row = {'quant': quant, 'accelerator_asked': acc, 'scale': float(scale)}
          if unavailable is None:
            spec = {
              'bundle': bundle_dir,
              'quant': quant,
              'accelerator': acc,
              'scale': float(scale),
              'threads': threads,
              'input': path,
            }
            row.update(_measure_in_child(spec))
            if not row['available']:
              unavailable = row['reason']
          else:  # the same model on the same accelerator: no second try
            row.update(available=False, reason=unavailable)
          rows.append(row)
  results = {
    'settings': {
      'bundle': bundle_dir,
      'steps': manifest.steps,
      'tile': manifest.tile.to_json(),
      'threads': threads,
      'input': {
        'source': 'zoom_enhance/assets/chelsea.jpg, Lanczos-enlarged, centre crop',
        'size': list(photo.size),
        'mp': round(photo.width * photo.height / 1e6, 3),
      },
      'scales': [float(s) for s in scales],
      'memory': MEMORY,
      'host': report.host(),
    },
    'startup': startup,
    'cpu_variant': dataclasses.asdict(choice) if choice else None,
    'rows': rows,
    'seconds': round(time.perf_counter() - t0, 2),
  }
  print(format_bench(rows))
  print(f'start-up to the first tile: {startup["seconds"]:.2f} s ({startup["how"]})')
  if choice:
    print(f'CPU variant the runtime runs here: {choice.describe()}')
  print(
    f'input {photo.width}x{photo.height} ({results["settings"]["input"]["mp"]:g} MP), {threads} threads, '
    f'bundle {bundle_dir} ({manifest.steps} steps, {manifest.tile.size}-px tiles); '
    f'peak MB: {MEMORY}'
  )
  if out:
    report.write_json(out, results)
    print(f'wrote {out}')
  return results


def _child_main(argv) -> int:
  from zoom_enhance.runtime import native_log

  native_log.quiet_native_exit()
  try:
    row = measure(json.loads(argv[0]))
  except errors.USER_ERRORS as e:
    print(errors.first_line(e, limit=1000), file=sys.stderr)
    return 1
  print(json.dumps(row, default=lambda o: o.item() if isinstance(o, np.generic) else str(o)))
  return 0


if __name__ == '__main__':
  sys.exit(_child_main(sys.argv[1:]))
