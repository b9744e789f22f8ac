"""enhance-library: a photo library (a folder tree or a file list) through Apache Beam, resumable.

  zoom-enhance enhance-library SRC OUT [--runner direct|prism|...] [--workers N] [enhance's options]
      [-- PIPELINE OPTIONS]

Pipeline options that the command does not know (a runner's --project,
--region, --temp_location, ...) go to Beam as they are.
"""

import sys

from zoom_enhance import errors
from zoom_enhance.cli import flags
from zoom_enhance.imaging import save


def register(commands) -> None:
  p = commands.add_parser(
    'enhance-library',
    parents=[
      flags.runtime(
        threads_default=None,
        threads_help='CPU threads of each worker (default: cores / workers)',
      )
    ],
    description='Enhance a photo library (a folder tree, read recursively, or a text file listing photos) '
    'with Apache Beam: results written atomically under OUT in the same tree, photos done by an earlier '
    'run skipped, failures listed in OUT/failed.jsonl. Needs the beam extra.',
    help='enhance a whole photo library with Apache Beam, resumable',
  )
  p.add_argument(
    'src', metavar='SRC', help='folder of photos (read recursively) or a text file listing photos'
  )
  p.add_argument('out', metavar='OUT', help='folder for the results (the same tree as SRC)')
  p.add_argument(
    '--runner',
    default=None,
    help='Beam runner (default: the embedded direct runner); others take their pipeline options',
  )
  p.add_argument(
    '--workers', type=flags.positive, default=None, help='direct runner processes (default: one per core)'
  )
  flags.scale_or_size(p, None, "factor, any positive number such as 1.6 (default: the bundle's largest)")
  p.add_argument(
    '--strength', type=float, default=1.0, help='0 = plain bicubic enlargement, 1 = the model (default)'
  )
  flags.detail(p, None, "0 = the fidelity output, 1 = all the detail the model draws (default: the bundle's)")
  flags.seed(p, 'seed of the starting noise')
  flags.max_pixels(p, None, 'refuse input images above this many pixels (default 120 million)')
  p.add_argument('--ext', default='png', help='output extension: png, jpg, webp, bmp, tif')
  p.add_argument('--quality', type=int, default=95, help='JPEG and WebP quality (default 95)')
  p.add_argument('--png-level', type=int, default=None, help='PNG compression, 0-9 (default 1, fast)')
  p.set_defaults(run=run, overrides=[])


def run(args) -> int:
  from zoom_enhance.library import run as library

  enhance = dict(scale=args.scale, size=args.size, strength=args.strength, detail=args.detail, seed=args.seed)
  if args.max_pixels is not None:
    enhance['max_pixels'] = args.max_pixels
  summary = library.enhance_library(
    args.src,
    args.out,
    runner=args.runner,
    workers=args.workers,
    pipeline_args=args.overrides,
    ext=args.ext,
    enhancer=dict(bundle=args.bundle, accelerator=args.accelerator, quant=args.quant, threads=args.threads),
    enhance=enhance,
    quality=args.quality,
    png_level=save.PNG_LEVEL if args.png_level is None else args.png_level,
    log=lambda line: print(line, file=sys.stderr, flush=True),
  )
  print(summary.line())
  return errors.EXIT_FAILED if summary.failed else 0
