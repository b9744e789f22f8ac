"""enhance: photos through a LiteRT bundle on this device (numpy, Pillow and LiteRT only), and its report.

`--report-json PATH` (or - for standard output) writes what the run did, once
it ends, for scripts: per photo its input, output, crop and sizes, tiles and
seconds (or its one-line error); the engine that ran (accelerator, runtime,
variant, threads, and the accelerators passed over, with why); the totals.
Its keys: version, exit_status, bundle (--bundle, null for the embedded one),
engine {accelerator, runtime, variant, threads, passed_over}, photos [{input,
output, written, error, crop, input_size, output_size, model_scale,
resampled, steps, strength, detail, seed, tiles, tile_size, seconds,
seconds_per_mp}] in the order of the run, totals {photos, written, failed,
seconds (the whole run, loading included), enhance_seconds, output_megapixels,
seconds_per_mp}. It is written atomically (files.write_json).
Inputs refused while planning (a missing file, a FIFO) are not among its
photos: their lines are on stderr, and its exit_status is 1. A run that stops
before its first photo (a bad option, a bundle that cannot load) or is
stopped (Ctrl-C, SIGTERM) writes none.
"""

import json
import logging
import os
import sys
import time

from zoom_enhance import errors
from zoom_enhance.cli import flags
from zoom_enhance.imaging import save

REPORT_VERSION = 1


def register(commands) -> None:
  p = commands.add_parser(
    'enhance',
    parents=[
      flags.runtime(
        threads_default=None,
        threads_help='CPU threads (default: cores, at most 4); more than 4 per core (and 16) are refused',
      )
    ],
    description='Crop, zoom and enhance photos on this device with a LiteRT bundle (numpy, Pillow '
    'and LiteRT only).',
    help='crop, zoom and enhance photos on this device',
  )
  p.add_argument('inputs', nargs='+', metavar='INPUT', help='image files or folders')
  flags.output(p, 'output file (one input) or folder (same stems, extension from --ext)')
  p.add_argument(
    '--crop', default=None, help='X,Y,W,H in pixels of the upright photo, or fractions (0.25,0.1,0.5,0.5)'
  )
  flags.scale_or_size(
    p,
    None,
    "factor, any positive number such as 1.6; 1 enhances without zoom (default: the bundle's largest)",
  )
  p.add_argument(
    '--delegate',
    default=None,
    metavar='PATH',
    help='external delegate library (.so) for the classic interpreter, e.g. a GPU or Edge TPU delegate',
  )
  flags.tile(p, None, 'tile side; must match the bundle (its models have fixed shapes)')
  flags.steps(p, None, 'sampler steps; must match the bundle')
  p.add_argument(
    '--strength', type=float, default=1.0, help='0 = plain bicubic enlargement, 1 = the model (default)'
  )
  flags.detail(
    p,
    None,
    '0 = the fidelity output (best PSNR, the same for every seed), 1 = all the detail the model '
    "draws (default: the bundle's)",
  )
  p.add_argument('--quality', type=int, default=95, help='JPEG and WebP quality (default 95)')
  p.add_argument(
    '--png-level',
    type=int,
    default=None,
    help='PNG compression, 0-9: 9 writes the smallest file, slowest (default 1, fast; see the README)',
  )
  p.add_argument('--ext', default='png', help='output extension for folder outputs: png, jpg, webp, bmp, tif')
  flags.seed(p, 'seed of the starting noise')
  flags.max_pixels(p, None, 'refuse input images above this many pixels (default 120 million)')
  p.add_argument(
    '--report-json',
    default=None,
    metavar='PATH',
    help='also write a JSON report of the run there (- for standard output): per photo its sizes, tiles '
    'and seconds; the engine that ran; the totals',
  )
  p.add_argument(
    '-v', '--verbose', action='count', default=0, help="what ran and how long (-vv: LiteRT's own log too)"
  )
  p.set_defaults(run=run)


def run(args) -> int:
  logging.getLogger('zoom_enhance.runtime').setLevel(
    (logging.WARNING, logging.INFO)[args.verbose] if args.verbose < 2 else logging.DEBUG
  )
  if args.verbose < 2:
    from zoom_enhance.runtime import native_log

    native_log.quiet_native_exit()
  report_path = _report_path(args.report_json) if args.report_json else None
  from zoom_enhance.runtime import batch

  results = []
  t0 = time.perf_counter()
  status = batch.enhance_files(
    args.inputs,
    args.output,
    ext=args.ext,
    quality=args.quality,
    png_level=save.PNG_LEVEL if args.png_level is None else args.png_level,
    enhancer_options=dict(
      bundle=args.bundle,
      accelerator=args.accelerator,
      quant=args.quant,
      delegate=args.delegate,
      threads=args.threads,
      tile=args.tile,
      steps=args.steps,
    ),
    on_result=lambda job, report, error: results.append((job, report, error)),
    crop=args.crop,
    scale=args.scale,
    size=args.size,
    strength=args.strength,
    detail=args.detail,
    seed=args.seed,
    max_pixels=args.max_pixels,
  )
  if report_path:
    report = run_report(results, status, time.perf_counter() - t0, bundle=args.bundle, threads=args.threads)
    _write_report(report_path, report)
  return status


def _report_path(path: str) -> str:
  """`path`, once it is known that a file can be written there (its folder is made now): a bad path fails
  before any work."""
  if path == '-':
    return path
  if os.path.isdir(path):
    raise errors.ConfigError(f'--report-json {path}: is a folder; give the path of a .json file')
  from zoom_enhance.imaging import files

  blocker = files.file_in_the_way(path)
  if blocker:
    raise errors.ConfigError(
      f'--report-json {path}: cannot write (Not a directory: {blocker} is not a folder)'
    )
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  return path


def _write_report(path: str, report: dict) -> None:
  if path == '-':
    sys.stdout.write(json.dumps(report, indent=2) + '\n')
    sys.stdout.flush()
    return
  from zoom_enhance.imaging import files

  files.write_json(path, report)


def _per_mp(seconds: float, wh) -> float:
  return round(seconds / (wh[0] * wh[1] / 1e6), 4)


def _photo(job, report, error) -> dict:
  entry = {'input': job.source, 'output': job.output, 'written': error is None, 'error': error}
  if report is not None:
    entry.update(
      crop=list(report.crop),
      input_size=list(report.crop[2:]),
      output_size=list(report.output_size),
      model_scale=report.model_scale,
      resampled=report.resampled,
      steps=report.steps,
      strength=report.strength,
      detail=report.detail,
      seed=report.seed,
      tiles=report.tiles,
      tile_size=list(report.tile_size),
      seconds=round(report.seconds, 4),
      seconds_per_mp=_per_mp(report.seconds, report.output_size),
    )
  return entry


def run_report(results, status: int, seconds: float, *, bundle=None, threads=None) -> dict:
  """The --report-json document of a run: `results` are its (job, pipeline.Report or None, error or None)
  in order, `seconds` the whole run's (the bundle's loading included)."""
  reports = [report for _, report, _ in results if report is not None]
  engine = None
  if reports:
    from zoom_enhance.runtime import engine as engine_lib

    first = reports[0]
    engine = {
      'accelerator': first.accelerator,
      'runtime': first.runtime,
      'variant': first.variant,
      'threads': threads or engine_lib.default_threads(),
      'passed_over': list(first.fallbacks),
    }
  written = [report for _, report, error in results if report is not None and error is None]
  megapixels = sum(r.output_size[0] * r.output_size[1] for r in written) / 1e6
  enhance_seconds = sum(r.seconds for r in written)
  return {
    'version': REPORT_VERSION,
    'exit_status': status,
    'bundle': bundle,
    'engine': engine,
    'photos': [_photo(*result) for result in results],
    'totals': {
      'photos': len(results),
      'written': len(written),
      'failed': len(results) - len(written),
      'seconds': round(seconds, 4),
      'enhance_seconds': round(enhance_seconds, 4),
      'output_megapixels': round(megapixels, 6),
      'seconds_per_mp': round(enhance_seconds / megapixels, 4) if megapixels else None,
    },
  }
