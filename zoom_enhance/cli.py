"""The `zoom-enhance` command: parses arguments and calls library functions, nothing else.

  zoom-enhance train --config configs/tiny.py --workdir W [--config.train.num_steps=30 ...]
  zoom-enhance distill --config configs/distill_tiny.py --workdir W2 --config.distill.teacher_workdir=W
  zoom-enhance export --workdir W2 --out BUNDLE [--quant fp32,fp16,int8] [--tile 128] [--steps N] [--npu]
  zoom-enhance save-weights --workdir W --out DIR [--step N]
  zoom-enhance sample --workdir W -i photo.jpg -o out.png --scale 4
  zoom-enhance enhance photo.jpg [--crop X,Y,W,H] [--scale S | --size WxH] -o out.png [--bundle B]
  zoom-enhance eval --hr-dir DIR --scale 4 [--degradation bicubic|realistic|second_order | --lr-dir LR]
      [--bundle B] [--detail 0,0.5,1] [--results-dir DIR [--results-name NAME]] [--shave N] --out results.json
  zoom-enhance bench [--bundle B] [--threads 2] [--input-mp 1] [--out bench.json]
  zoom-enhance bench --folder DIR [--scales 4] [--out f.json]   (whole commands against Real-ESRGAN's compact
      anime-video model, animevideov3)
  zoom-enhance bench-train [--variants tiny,base]

Bad input ends with one line on stderr and a non-zero exit, not a traceback.
train and distill read an `ml_collections` config file and its overrides
through absl flags (config_flags); every other command uses argparse.
"""

import argparse
import logging
import os
import sys

from zoom_enhance import errors
from zoom_enhance import extras

USAGE = __doc__.split('\n\n')[1]

# Distributed start-up flags of train, distill and bench-train (their timeouts: distributed.TIMEOUTS).
_PROCESS_FLAGS = {
  'coordinator_address': 'host:port of process 0, for multi-process runs started by hand.',
  'num_processes': 'Processes in a multi-process run.',
  'process_id': "This process's index in a multi-process run.",
}
_ACCELERATORS = ('auto', 'npu', 'gpu', 'cpu')


class UsageError(ValueError):
  """Wrong command-line arguments."""


class _Parser(argparse.ArgumentParser):
  """argparse with its errors as UsageError: one line, exit status 2, no usage block."""

  def error(self, message):
    raise UsageError(message)


def _positive_int(text):
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r}: not a whole number') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'{value}: must be at least 1')
  return value


def _float_list(text):
  try:
    return [float(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r}: expected numbers separated by commas') from None


def _list(text):
  return [v.strip() for v in text.split(',') if v.strip()] if text else None


def _setup_logging():
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s', datefmt='%H:%M:%S')
  for noisy in ('absl', 'jax._src', 'orbax', 'tensorflow'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # Orbax warns three times about its own options whenever a checkpoint is opened read-only
  # (export, distill, sample): the reader is read-only on purpose.
  notices = ('read_only=True, setting', 'Given directory is read only')
  logging.getLogger('absl').addFilter(lambda record: not any(s in record.getMessage() for s in notices))
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


# --- train, distill ----------------------------------------------------------


def _parse_train_flags(argv, prog):
  """absl flags with an ml_collections config file, in a private FlagValues."""
  extras.require('train', prog)
  from absl import flags
  from ml_collections import config_flags

  from zoom_enhance.training import distributed

  fv = flags.FlagValues()
  # sys_argv: the overrides (--config.a.b=v) are found in `argv`, not in this process's sys.argv.
  config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py).', flag_values=fv, lock_config=True, sys_argv=list(argv)
  )
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and samples.', flag_values=fv)
  flags.DEFINE_string('coordinator_address', None, _PROCESS_FLAGS['coordinator_address'], flag_values=fv)
  flags.DEFINE_integer('num_processes', None, _PROCESS_FLAGS['num_processes'], flag_values=fv)
  flags.DEFINE_integer('process_id', None, _PROCESS_FLAGS['process_id'], flag_values=fv)
  for name, (default, text) in distributed.TIMEOUTS.items():
    flags.DEFINE_integer(name, default, text, flag_values=fv)
  if any(a in ('-h', '--help', '--helpfull') for a in argv[1:]):
    print(f'usage: {prog} --config configs/tiny.py --workdir W [--config.SECTION.FIELD=VALUE ...]\n')
    for name in ('config', 'workdir', *_PROCESS_FLAGS, *distributed.TIMEOUTS):
      print(f'  --{name}: {fv[name].help}')
    sys.exit(0)
  try:
    fv(argv)
  except flags.Error as e:
    raise UsageError(errors.first_line(e)) from None
  except (OSError, SyntaxError, AttributeError, KeyError) as e:
    raise UsageError(f'bad --config: {e}') from None
  if fv.config is None:
    raise UsageError('--config is required (for example --config configs/tiny.py)')
  if not fv.workdir:
    raise UsageError('--workdir is required')
  return fv


def _start_processes(prog, args) -> bool:
  from zoom_enhance.training import distributed

  names = (*_PROCESS_FLAGS, *distributed.TIMEOUTS)
  return distributed.start(prog, **{name: getattr(args, name) for name in names})


def _run_training(argv, prog, module: str, function: str):
  """train and distill: flags, distributed start-up, the run; a failed collective is one line."""
  fv = _parse_train_flags(argv, prog)
  joined = _start_processes(prog, fv)
  import importlib

  import jax

  run = getattr(importlib.import_module(f'zoom_enhance.training.{module}'), function)
  os.makedirs(fv.workdir, exist_ok=True)
  try:
    step = run(fv.config, fv.workdir)
  except jax.errors.JaxRuntimeError as e:
    if not joined:
      raise
    from zoom_enhance.training import distributed

    distributed.exit_after_collective_failure(prog, e)
  logging.info('done: step %d, workdir %s', step, fv.workdir)
  return 0


def cmd_train(argv):
  return _run_training(argv, 'zoom-enhance train', 'train', 'train_and_evaluate')


def cmd_distill(argv):
  return _run_training(argv, 'zoom-enhance distill', 'distill', 'distill')


def cmd_bench_train(argv):
  extras.require('train', 'zoom-enhance bench-train')
  from zoom_enhance.training import distributed

  p = _Parser(
    prog='zoom-enhance bench-train', description='Training throughput (samples/s) of model variants.'
  )
  p.add_argument('--config', default='configs/tiny.py', help='config whose other settings are used')
  p.add_argument('--variants', default='tiny,base')
  p.add_argument('--dtypes', default='float32,bfloat16', help='compute dtypes to time')
  p.add_argument('--batch-size', type=_positive_int, default=8, help='global batch size')
  p.add_argument('--patch-size', type=_positive_int, default=64)
  p.add_argument('--steps', type=_positive_int, default=10, help='timed steps after warm-up')
  # Set by zoom_enhance.training.launcher (launch/bench_multiprocess.sh) to time one step over processes.
  p.add_argument('--coordinator_address', default=None, help=_PROCESS_FLAGS['coordinator_address'])
  p.add_argument('--num_processes', type=int, default=None, help=_PROCESS_FLAGS['num_processes'])
  p.add_argument('--process_id', type=int, default=None, help=_PROCESS_FLAGS['process_id'])
  for name, (default, text) in distributed.TIMEOUTS.items():
    p.add_argument(f'--{name}', type=int, default=default, help=text)
  args = p.parse_args(argv[1:])
  if not os.path.isfile(args.config):
    raise UsageError(f'--config {args.config}: no such file')
  _start_processes('zoom-enhance bench-train', args)
  from zoom_enhance.training import config
  from zoom_enhance.training import throughput

  throughput.main(
    _list(args.variants),
    batch_size=args.batch_size,
    patch_size=args.patch_size,
    steps=args.steps,
    base_config=lambda: config.load_config_file(args.config),
    dtypes=_list(args.dtypes),
  )
  return 0


# --- sample, export ----------------------------------------------------------


def cmd_sample(argv):
  p = _Parser(prog='zoom-enhance sample', description='Enhance one photo with a training checkpoint (JAX).')
  p.add_argument('--workdir', required=True, help='training workdir with checkpoints')
  p.add_argument('-i', '--input', dest='source', metavar='INPUT', required=True, help='input image')
  p.add_argument('-o', '--output', required=True, help='output image (PNG, JPEG, WebP, BMP or TIFF)')
  g = p.add_mutually_exclusive_group()
  g.add_argument('-s', '--scale', type=float, default=4.0, help='upscale factor (default 4)')
  g.add_argument('--size', help='output size WxH, e.g. 2048x1152')
  p.add_argument(
    '--steps',
    type=_positive_int,
    default=None,
    help="DDIM steps (default: the checkpoint's: a distilled student's, else the config's)",
  )
  p.add_argument('--seed', type=int, default=0)
  p.add_argument(
    '--max-pixels',
    type=_positive_int,
    default=4_000_000,
    help='refuse outputs larger than this (no tiling on this path)',
  )
  args = p.parse_args(argv[1:])
  from zoom_enhance.training import sample

  sample.sample_photo(**vars(args))
  return 0


def cmd_export(argv):
  p = _Parser(
    prog='zoom-enhance export',
    description='Export a checkpoint to a LiteRT bundle (TFLite models + manifest.json), checked '
    'against JAX.',
  )
  p.add_argument('--workdir', required=True, help='training or distillation workdir')
  p.add_argument('--out', required=True, help='bundle directory to write')
  p.add_argument(
    '--quant',
    dest='quants',
    type=_list,
    default='fp32,fp16,int8',
    help='comma-separated variants: fp32, fp16, int8 (dynamic range), int8_full',
  )
  p.add_argument('--tile', type=_positive_int, default=128, help='output tile side in pixels')
  p.add_argument('--overlap', type=int, default=None, help='tile overlap (default tile/8)')
  p.add_argument(
    '--steps',
    type=_positive_int,
    default=None,
    help="sampler steps (default: the checkpoint's: a distilled student's, else the config's)",
  )
  p.add_argument(
    '--photos',
    default='',
    help='folder of real photos for calibration and parity tiles (default: the training '
    "config's, else a packaged photo)",
  )
  p.add_argument(
    '--step',
    type=int,
    default=None,
    help="checkpoint step to export (default: the latest); with a distillation, a round's "
    "last step exports that round's student",
  )
  p.add_argument(
    '--noise-temperature',
    type=float,
    default=1.0,
    help="scale of the sampler's starting noise, baked into the models: 1 samples, lower "
    'trades generated texture for fidelity (default 1)',
  )
  p.add_argument(
    '--detail',
    type=float,
    default=1.0,
    help="the bundle's default detail (enhance --detail): the scale of the noise the runtime feeds, "
    '0 fidelity, 1 all the drawn detail (default 1)',
  )
  p.add_argument(
    '--cpu-quant',
    default='fp32',
    help='variant the runtime runs on the CPU when none is asked for (default fp32)',
  )
  p.add_argument(
    '--npu',
    action='store_true',
    help="also compile for phone NPUs (Google Tensor, Qualcomm, MediaTek) with LiteRT's AOT "
    'compiler, for each vendor whose SDK package is installed',
  )
  args = p.parse_args(argv[1:])
  from export_tflite import export

  manifest = export.export(**vars(args))
  models = ', '.join(manifest['models'])
  logging.info('wrote %s: %d steps, tile %d, models %s', args.out, manifest['steps'], args.tile, models)
  return 0


def cmd_save_weights(argv):
  p = _Parser(
    prog='zoom-enhance save-weights',
    description="Write a checkpoint's EMA parameters and config to a weights directory (params.msgpack, "
    'config.json, weights.json): what ships in the repository, and what --config.train.init_from, '
    '--config.distill.teacher_workdir and export --workdir accept in place of a workdir.',
  )
  p.add_argument('--workdir', required=True, help='training or distillation workdir')
  p.add_argument('--out', required=True, help='weights directory to write (replaced if it exists)')
  p.add_argument('--step', type=int, default=None, help='checkpoint step (default: the latest)')
  args = p.parse_args(argv[1:])
  from zoom_enhance.training import checkpoint
  from zoom_enhance.training import weights

  params, config, step = checkpoint.restore_params(args.workdir, args.step)
  position = checkpoint.read_position(args.workdir, step)
  info = weights.write(args.out, params, config, source=args.workdir, step=step, position=position)
  size = os.path.getsize(os.path.join(args.out, weights.PARAMS))
  logging.info(
    'wrote %s: %s parameters of step %d (%s bytes)', args.out, f'{info["parameters"]:,}', step, f'{size:,}'
  )
  return 0


# --- enhance, eval, bench ----------------------------------------------------


def _quiet_litert():
  from zoom_enhance.runtime import native_log

  native_log.quiet_native_exit()


def cmd_enhance(argv):
  p = _Parser(
    prog='zoom-enhance enhance',
    description='Crop, zoom and enhance photos on this device with a LiteRT bundle (numpy, Pillow '
    'and LiteRT only).',
  )
  p.add_argument('inputs', nargs='+', metavar='INPUT', help='image files or folders')
  p.add_argument(
    '-o',
    '--output',
    required=True,
    help='output file (one input) or folder (same stems, extension from --ext)',
  )
  p.add_argument('--bundle', default=None, help='bundle directory (default: the embedded one)')
  p.add_argument(
    '--crop', default=None, help='X,Y,W,H in pixels of the upright photo, or fractions (0.25,0.1,0.5,0.5)'
  )
  g = p.add_mutually_exclusive_group()
  g.add_argument(
    '-s',
    '--scale',
    type=float,
    default=None,
    help="factor, any positive number such as 1.6; 1 enhances without zoom (default: the bundle's largest)",
  )
  g.add_argument('--size', default=None, help='output size WxH, e.g. 2048x1152')
  p.add_argument(
    '--accelerator',
    default='auto',
    choices=_ACCELERATORS,
    help='auto tries NPU, then GPU, then CPU; naming one makes it required',
  )
  p.add_argument(
    '--delegate',
    default=None,
    metavar='PATH',
    help='external delegate library (.so) for the classic interpreter, e.g. a GPU or Edge TPU delegate',
  )
  p.add_argument(
    '--quant', default=None, help='model variant: fp32, fp16, int8, ... (default: per accelerator)'
  )
  p.add_argument(
    '--tile', type=int, default=None, help='tile side; must match the bundle (its models have fixed shapes)'
  )
  p.add_argument('--steps', type=int, default=None, help='sampler steps; must match the bundle')
  p.add_argument(
    '--strength', type=float, default=1.0, help='0 = plain bicubic enlargement, 1 = the model (default)'
  )
  p.add_argument(
    '--detail',
    type=float,
    default=None,
    help='0 = the fidelity output (best PSNR, the same for every seed), 1 = all the detail the model '
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
  p.add_argument('--seed', type=int, default=0, help='seed of the starting noise')
  p.add_argument(
    '--threads',
    type=int,
    default=None,
    help='CPU threads (default: cores, at most 4); more than 4 per core (and 16) are refused',
  )
  p.add_argument(
    '--max-pixels',
    type=int,
    default=None,
    help='refuse input images above this many pixels (default 120 million)',
  )
  p.add_argument(
    '-v', '--verbose', action='count', default=0, help="what ran and how long (-vv: LiteRT's own log too)"
  )
  args = p.parse_args(argv[1:])
  logging.getLogger('zoom_enhance.runtime').setLevel(
    (logging.WARNING, logging.INFO)[args.verbose] if args.verbose < 2 else logging.DEBUG
  )
  if args.verbose < 2:
    _quiet_litert()
  from zoom_enhance.runtime import batch

  return batch.enhance_files(
    args.inputs,
    args.output,
    ext=args.ext,
    quality=args.quality,
    **({} if args.png_level is None else {'png_level': args.png_level}),
    enhancer_options=dict(
      bundle=args.bundle,
      accelerator=args.accelerator,
      quant=args.quant,
      delegate=args.delegate,
      threads=args.threads,
      tile=args.tile,
      steps=args.steps,
    ),
    crop=args.crop,
    scale=args.scale,
    size=args.size,
    strength=args.strength,
    detail=args.detail,
    seed=args.seed,
    max_pixels=args.max_pixels,
  )


def cmd_eval(argv):
  p = _Parser(
    prog='zoom-enhance eval',
    description='Score a bundle next to bicubic, Lanczos and Real-ESRGAN on a folder of '
    'ground-truth photos: PSNR-Y, SSIM-Y, LPIPS, the lattice score and seconds per output megapixel.',
  )
  p.add_argument('--hr-dir', required=True, help='folder of ground-truth photos')
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
    type=_positive_int,
    default=4,
    help="the lattice score's grid, in pixels (default 4, the model's patch side)",
  )
  p.add_argument('--bundle', default=None, help='bundle directory (default: the embedded one)')
  p.add_argument(
    '--detail',
    dest='details',
    type=_float_list,
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
  p.add_argument('--threads', type=_positive_int, default=2, help='CPU threads of every method (default 2)')
  p.add_argument(
    '--peer-threads',
    type=_positive_int,
    default=None,
    help="CPU threads of Real-ESRGAN alone (default: --threads); ncnn's OpenMP threads spin "
    'while they wait, so on cores shared with other work one thread can be faster',
  )
  p.add_argument('--quant', default=None, help='bundle model variant (default: per accelerator)')
  p.add_argument(
    '--accelerator',
    default='auto',
    choices=_ACCELERATORS,
    help='for the bundle, as in enhance (default auto)',
  )
  p.add_argument(
    '--crops', dest='num_crops', type=int, default=4, help='photos to write before/after crops for'
  )
  p.add_argument('--crops-dir', default=None, help='folder of the crops (default: OUT_crops/ beside --out)')
  args = p.parse_args(argv[1:])
  extras.require('eval', 'zoom-enhance eval')
  _quiet_litert()
  from zoom_enhance.evaluation import bundle_eval

  bundle_eval.run_eval(**vars(args))
  return 0


def cmd_bench(argv):
  p = _Parser(
    prog='zoom-enhance bench',
    description='Seconds per output megapixel and peak memory of each quantization variant of a '
    'bundle on each accelerator here, for a photo crop upscaled 2x and 4x.',
  )
  p.add_argument('--bundle', default=None, help='bundle directory (default: the embedded one)')
  p.add_argument('--threads', type=_positive_int, default=2, help='CPU threads (default 2)')
  p.add_argument(
    '--input-mp', type=float, default=1.0, help='input crop size in megapixels, at most 8 (default 1)'
  )
  p.add_argument('--scales', type=_float_list, default=[2.0, 4.0], help='factors (default 2,4)')
  p.add_argument(
    '--quant', dest='quants', type=_list, help='comma-separated variants (default: all in the bundle)'
  )
  p.add_argument(
    '--accelerators', type=_list, default='npu,gpu,cpu', help='comma-separated, from npu, gpu, cpu'
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
    '--rounds',
    type=int,
    default=3,
    help='with --folder: times each command this many times, alternating, and takes the medians (default 3)',
  )
  args = p.parse_args(argv[1:])
  if args.rounds < 1:
    raise errors.ConfigError(f'--rounds {args.rounds}: must be at least 1')
  if args.folder:
    from zoom_enhance.evaluation import folder_bench

    folder_bench.run_folder_bench(
      args.folder,
      scale=args.scales[-1],
      threads=args.threads,
      bundle=args.bundle,
      out=args.out,
      rounds=args.rounds,
    )
    return 0
  del args.folder, args.rounds
  from zoom_enhance.evaluation import runtime_bench

  runtime_bench.run_bench(**vars(args))
  return 0


COMMANDS = {
  'train': cmd_train,
  'distill': cmd_distill,
  'export': cmd_export,
  'save-weights': cmd_save_weights,
  'sample': cmd_sample,
  'enhance': cmd_enhance,
  'eval': cmd_eval,
  'bench': cmd_bench,
  'bench-train': cmd_bench_train,
}


def main(argv=None) -> int:
  as_command = argv is None
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help'):
    print(f'usage:\n{USAGE}\n\ncommands: {", ".join(COMMANDS)}')
    return 0 if len(argv) >= 2 else errors.EXIT_USAGE
  name = argv[1]
  prog = f'zoom-enhance {name}'
  if name not in COMMANDS:
    print(f'zoom-enhance: unknown command {name!r}; choose one of {", ".join(COMMANDS)}', file=sys.stderr)
    return errors.EXIT_USAGE
  _setup_logging()
  try:
    return COMMANDS[name]([prog] + argv[2:])
  except UsageError as e:
    return _last_words(f'{prog}: error: {e}', errors.EXIT_USAGE, as_command)
  except errors.Stopped as e:
    return _last_words(f'{prog}: {e}', errors.EXIT_PREEMPTED, as_command)
  except errors.USER_ERRORS as e:
    return _last_words(f'{prog}: error: {e}', errors.EXIT_FAILED, as_command)
  except MemoryError:
    return _last_words(f'{prog}: error: not enough memory', errors.EXIT_FAILED, as_command)
  except KeyboardInterrupt:
    return _last_words(f'{prog}: interrupted', errors.EXIT_INTERRUPTED, as_command)
  except errors.Terminated:
    message = f'{prog}: terminated (SIGTERM); what was written is complete, and no partial file is left'
    return _last_words(message, errors.EXIT_PREEMPTED, as_command)


def _last_words(message: str, status: int, as_command: bool) -> int:
  """Prints the command's one line; then, run as a command, keeps LiteRT's destructor log off stderr.

  The exception being handled may hold LiteRT objects (a model that was
  loading), destroyed and logged as the handler ends. In-process callers
  (tests) keep their stderr.
  """
  print(message, file=sys.stderr)
  native_log = sys.modules.get('zoom_enhance.runtime.native_log')
  if as_command and native_log is not None:
    native_log.quiet_native_now()
  return status


if __name__ == '__main__':
  sys.exit(main())
