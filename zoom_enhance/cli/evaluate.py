"""eval and bench: a bundle scored beside other upscalers, and timed on this machine."""

from zoom_enhance import errors
from zoom_enhance import extras
from zoom_enhance.cli import flags


def register(commands) -> None:
  p = commands.add_parser(
    'eval',
    parents=[
      flags.runtime(
        threads_default=2,
        threads_help='CPU threads of every method (default 2)',
        accelerator_help='for the bundle, as in enhance (default auto)',
        quant_help='bundle model variant (default: per accelerator)',
      )
    ],
    description='Score a bundle next to bicubic, Lanczos and Real-ESRGAN on a folder of '
    'ground-truth photos: PSNR-Y, SSIM-Y, LPIPS, the lattice score and seconds per output megapixel.',
    help='score a bundle beside bicubic, Lanczos and Real-ESRGAN',
  )
  p.add_argument('--hr-dir', required=True, help='folder of ground-truth photos')
  # Eval's own -s/--scale (1 to 16) and --detail (several values): the evaluation reads them.
  p.add_argument('-s', '--scale', default='4', help='upscale factor, 1 to 16 (default 4)')
  p.add_argument(
    '--degradation',
    default=None,
    choices=('bicubic', 'realistic', 'second_order'),
    help='how LR inputs are made: bicubic downscale, blur + noise + JPEG (realistic), or '
    "Real-ESRGAN's chain twice (second_order), with a seed per photo (default bicubic; not with --lr-dir)",
  )
  p.add_argument(
    '--lr-dir',
    default=None,
    help='folder of real LR images, one per photo of --hr-dir by file name (a tag such as _x4 or _LR4 '
    'may differ), each x --scale smaller: scored instead of degraded photos',
  )
  p.add_argument(
    '--results-dir',
    default=None,
    help='folder of results made elsewhere, one per photo by file name, scored beside the methods',
  )
  p.add_argument(
    '--results-name', default=None, help="the method name of --results-dir's images (default: the folder's)"
  )
  p.add_argument(
    '--shave',
    type=int,
    default=None,
    help='border pixels left out of PSNR, SSIM, LPIPS and DISTS (default: the scale rounded up)',
  )
  p.add_argument(
    '--lattice-period',
    type=flags.positive,
    default=4,
    help="the lattice score's grid, in pixels (default 4, the model's patch side)",
  )
  p.add_argument(
    '--detail',
    dest='details',
    type=flags.numbers,
    default=None,
    help="comma-separated detail values to score the bundle at, e.g. 0,0.5,1 (default: the bundle's)",
  )
  p.add_argument(
    '--baseline-bundle',
    dest='baselines',
    action='append',
    default=[],
    metavar='DIR',
    help='another bundle to score in the same run, at its default detail (repeatable)',
  )
  p.add_argument('--out', required=True, help='results JSON to write (only once every photo is scored)')
  p.add_argument(
    '--methods',
    default='all',
    help='comma-separated: bicubic, lanczos, zoom-enhance, realesrgan-compact (Real-ESRGAN compact, '
    'animevideov3: an anime-video model, the speed peer), realesrgan-x4plus (for photos, the quality peer); '
    'all (the default) or none (with --results-dir)',
  )
  p.add_argument('--max-images', type=int, default=0, help='first N photos by name (default all)')
  p.add_argument(
    '--peer-threads',
    type=flags.positive,
    default=None,
    help="CPU threads of Real-ESRGAN alone (default: --threads); ncnn's OpenMP threads spin "
    'while they wait, so on cores shared with other work one thread can be faster',
  )
  p.add_argument(
    '--crops', dest='num_crops', type=int, default=4, help='photos to write before/after crops for'
  )
  p.add_argument('--crops-dir', default=None, help='folder of the crops (default: OUT_crops/ beside --out)')
  p.set_defaults(run=run_eval)

  p = commands.add_parser(
    'bench',
    parents=[flags.bundle_flags(threads_default=2, threads_help='CPU threads (default 2)')],
    description='Seconds per output megapixel and peak memory of each quantization variant of a '
    'bundle on each accelerator here, for a photo crop upscaled 2x and 4x.',
    help="seconds per output megapixel of each of a bundle's variants on each accelerator here",
  )
  p.add_argument(
    '--input-mp', type=float, default=1.0, help='input crop size in megapixels, at most 8 (default 1)'
  )
  p.add_argument('--scales', type=flags.numbers, default=[2.0, 4.0], help='factors (default 2,4)')
  flags.quant(p, None, 'comma-separated variants (default: all in the bundle)')
  p.add_argument(
    '--accelerators', type=flags.names, default='npu,gpu,cpu', help='comma-separated, from npu, gpu, cpu'
  )
  p.add_argument('--out', default=None, help='also write the rows as JSON')
  p.add_argument(
    '--folder',
    default=None,
    help='instead: enlarge this folder of photos with `enhance` and with Real-ESRGAN compact '
    '(animevideov3, an anime-video model), each writing PNGs, and compare the whole commands (at the last '
    'of --scales: 4 by default)',
  )
  p.add_argument(
    '--result-mp',
    type=flags.numbers,
    default=None,
    metavar='MP,...',
    help='with --folder: time size classes made from its photos, results of these megapixels each (e.g. '
    '0.5,1,2.4,3: centre crops of each photo, enlarged where it is smaller), each class on its own',
  )
  p.add_argument(
    '--rounds',
    type=int,
    default=3,
    help='with --folder: times each command this many times, alternating, and takes the medians (default 3)',
  )
  p.set_defaults(run=run_bench)


def _quiet_litert():
  from zoom_enhance.runtime import native_log

  native_log.quiet_native_exit()


def run_eval(args) -> int:
  flags.at_least_one(threads=args.threads)
  extras.require('eval', 'zoom-enhance eval')
  _quiet_litert()
  from zoom_enhance.evaluation import bundle_eval

  bundle_eval.run_eval(
    args.hr_dir,
    args.out,
    scale=args.scale,
    degradation=args.degradation,
    lr_dir=args.lr_dir,
    results_dir=args.results_dir,
    results_name=args.results_name,
    bundle=args.bundle,
    methods=args.methods,
    max_images=args.max_images,
    threads=args.threads,
    quant=args.quant,
    accelerator=args.accelerator,
    crops_dir=args.crops_dir,
    num_crops=args.num_crops,
    peer_threads=args.peer_threads,
    details=args.details,
    baselines=args.baselines,
    shave=args.shave,
    lattice_period=args.lattice_period,
  )
  return 0


def run_bench(args) -> int:
  flags.at_least_one(threads=args.threads)
  if args.rounds < 1:
    raise errors.ConfigError(f'--rounds {args.rounds}: must be at least 1')
  if args.result_mp and not args.folder:
    raise errors.ConfigError('--result-mp: only with --folder (the photos it makes size classes of)')
  if args.folder:
    from zoom_enhance.evaluation import folder_bench

    folder_bench.run_folder_bench(
      args.folder,
      scale=args.scales[-1],
      threads=args.threads,
      bundle=args.bundle,
      out=args.out,
      rounds=args.rounds,
      result_mp=args.result_mp,
    )
    return 0
  from zoom_enhance.evaluation import runtime_bench

  runtime_bench.run_bench(
    args.bundle,
    threads=args.threads,
    input_mp=args.input_mp,
    scales=args.scales,
    quants=flags.names(args.quant),
    accelerators=args.accelerators,
    out=args.out,
  )
  return 0
