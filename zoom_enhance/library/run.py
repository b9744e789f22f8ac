"""`zoom-enhance enhance-library SRC OUT`: a photo library through a Beam pipeline, resumable.

Without --runner the pipeline runs on Beam's embedded direct runner in
`workers` processes (default: one per core, each enhancing one photo at a
time on cores / workers tile threads). Any other runner (Prism, Dataflow,
Flink, Spark) takes its own pipeline options after the command's; the bundle
and OUT must then be reachable from the workers (OUT on a shared file
system). While it runs, a line every few seconds counts the results
recorded in OUT's ledger, with the rate and the time left.
"""

import dataclasses
import logging
import os
import threading
import time

from zoom_enhance import errors
from zoom_enhance import extras
from zoom_enhance.library import ledger

PROGRESS_SECONDS = 5.0


@dataclasses.dataclass
class Summary:
  photos: int
  done: int
  skipped: int
  failed: int
  seconds: float
  output_megapixels: float

  def line(self) -> str:
    rate = f', {self.seconds / self.output_megapixels:.3f} s/MP' if self.output_megapixels else ''
    return (
      f'{self.photos} photos: {self.done} done, {self.skipped} skipped (done before), {self.failed} failed '
      f'in {self.seconds:.1f} s ({self.output_megapixels:.2f} MP written{rate})'
    )


def _import_beam():
  """apache_beam, imported without its start-up warnings (missing Google Cloud clients), its loggers set to
  errors only: the command prints its own progress and results."""
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.ERROR)
  try:
    import apache_beam
  finally:
    root.setLevel(level)
  logging.getLogger('apache_beam').setLevel(logging.ERROR)
  return apache_beam


def _options(runner: str | None, workers: int, pipeline_args: list):
  from apache_beam.options import pipeline_options

  if runner in (None, 'direct', 'DirectRunner'):
    args = ['--runner=DirectRunner', f'--direct_num_workers={workers}']
    args += ['--direct_running_mode=' + ('multi_processing' if workers > 1 else 'in_memory')]
  else:
    args = [f'--runner={runner}']
  args.append('--default_sdk_harness_log_level=ERROR')
  return pipeline_options.PipelineOptions(args + list(pipeline_args))


def _check(enhancer: dict, quality: int, png_level: int) -> None:
  """The options every worker would refuse, refused once here: threads, quality, PNG level, the bundle."""
  from zoom_enhance.runtime import bundle as bundle_lib
  from zoom_enhance.runtime import pipeline

  pipeline.check_threads(enhancer['threads'])
  if not 1 <= quality <= 100:
    raise errors.ConfigError(f'--quality {quality}: must be in [1, 100]')
  if not 0 <= png_level <= 9:
    raise errors.ConfigError(f'--png-level {png_level}: must be in [0, 9] (9: the smallest file)')
  bundle_lib.load_manifest(pipeline.resolve_bundle(enhancer.get('bundle')))


def _progress(out: str, todo: int, before: int, stop: threading.Event, log) -> None:
  """Every PROGRESS_SECONDS: the results recorded so far by this run, their rate and the time left."""
  t0 = time.perf_counter()
  while not stop.wait(PROGRESS_SECONDS):
    done = ledger.count_done(out) - before
    seconds = time.perf_counter() - t0
    rate = done / seconds
    eta = f', about {(todo - done) / rate:.0f} s left' if rate > 0 and done < todo else ''
    log(f'{max(0, done)} of {todo} photos written ({rate:.2f}/s{eta})')


def enhance_library(
  src: str,
  out: str,
  *,
  runner: str | None = None,
  workers: int | None = None,
  pipeline_args: list | None = None,
  ext: str = 'png',
  enhancer: dict | None = None,
  enhance: dict | None = None,
  quality: int = 95,
  png_level: int | None = None,
  log=print,
) -> Summary:
  """Runs the library pipeline; returns its Summary. Dead letters: OUT/failed.jsonl (ledger)."""
  extras.require('beam', 'zoom-enhance enhance-library')
  beam = _import_beam()

  from zoom_enhance.imaging import save
  from zoom_enhance.library import transform
  from zoom_enhance.runtime import batch

  workers = workers or os.cpu_count() or 1
  if workers < 1:
    raise errors.ConfigError(f'--workers {workers}: must be at least 1')
  enhancer = dict(enhancer or {})
  if enhancer.get('threads') is None:
    enhancer['threads'] = max(1, (os.cpu_count() or 1) // workers)
  png_level = save.PNG_LEVEL if png_level is None else png_level
  _check(enhancer, quality, png_level)
  enhance = batch.check_options(**(enhance or {}))
  photos, problems = ledger.plan(src, out, ext)
  for line in problems:
    log(f'zoom-enhance enhance-library: {line}')
  if not photos:
    raise errors.ConfigError(f'{src}: no photos to enhance')
  out = os.path.abspath(out)
  os.makedirs(out, exist_ok=True)
  before = ledger.count_done(out)
  log(f'{len(photos)} photos from {src} to {out}, on {runner or "the direct runner"} with {workers} workers')
  stop = threading.Event()
  ticker = threading.Thread(target=_progress, args=(out, len(photos), before, stop, log), daemon=True)
  t0 = time.perf_counter()
  ticker.start()
  try:
    p = beam.Pipeline(options=_options(runner, workers, pipeline_args or []))
    _ = (
      p
      | 'Photos' >> beam.Create(photos)
      | 'Enhance library'
      >> transform.EnhanceLibrary(
        out,
        enhancer=enhancer,
        enhance=enhance,
        quality=quality,
        png_level=png_level,
      )
    )
    result = p.run()
    result.wait_until_finish()
  finally:
    stop.set()
  seconds = time.perf_counter() - t0
  counts = _counters(result)
  failed = ledger.write_dead_letter(out, photos)
  for record in failed:
    log(f'zoom-enhance enhance-library: error: {record["reason"]}')
  return Summary(
    photos=len(photos),
    done=counts.get('done', 0),
    skipped=counts.get('skipped', 0),
    failed=len(failed),
    seconds=seconds,
    output_megapixels=counts.get('output_pixels', 0) / 1e6,
  )


def _counters(result) -> dict:
  """The pipeline's zoom_enhance counters by name (committed values, attempted where a runner has none)."""
  from apache_beam.metrics import metric

  from zoom_enhance.library import transform

  query = result.metrics().query(metric.MetricsFilter().with_namespace(transform.NAMESPACE))
  out = {}
  for c in query['counters']:
    value = c.committed if c.committed is not None else c.attempted
    out[c.key.metric.name] = out.get(c.key.metric.name, 0) + (value or 0)
  return out
