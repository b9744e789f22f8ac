"""The `zoom-enhance` command: parses arguments and calls library functions.

  zoom-enhance train --config configs/tiny.py --workdir W [--config.train.num_steps=30 ...]
  zoom-enhance distill --config configs/distill_tiny.py --workdir W2 --config.distill.teacher_workdir=W
  zoom-enhance export --workdir W2 --out BUNDLE [--quant fp32,fp16,int8] [--tile 128] [--steps N] [--npu]
  zoom-enhance sample --workdir W -i photo.jpg -o out.png --scale 4
  zoom-enhance enhance photo.jpg [--crop X,Y,W,H] [--scale S | --size WxH] -o out.png [--bundle B]
  zoom-enhance eval --hr-dir DIR --scale 4 [--degradation bicubic|realistic] [--bundle B] --out results.json
  zoom-enhance bench [--bundle B] [--threads 2] [--input-mp 1] [--out bench.json]
  zoom-enhance bench-train [--variants tiny,base]

Bad input ends with one line on stderr and a non-zero exit, not a traceback.
"""

import argparse
import logging
import os
import sys

USAGE = __doc__.split('\n\n')[1]

# Exit codes.
EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_PREEMPTED = 143  # 128 + SIGTERM: the run stopped early but cleanly


def _setup_logging(verbose: bool = False):
  logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                      format='%(asctime)s %(levelname)s %(message)s', datefmt='%H:%M:%S')
  for noisy in ('absl', 'jax._src', 'orbax', 'tensorflow'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # Orbax warns three times about its own options whenever a checkpoint is opened read-only
  # (export, distill, sample): the reader is read-only on purpose.
  logging.getLogger('absl').addFilter(
      lambda record: not any(s in record.getMessage() for s in _READ_ONLY_NOTICES))
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


_READ_ONLY_NOTICES = ('read_only=True, setting', 'Given directory is read only')


def _parse_train_flags(argv, prog):
  """absl flags with an ml_collections config file, in a private FlagValues."""
  from absl import flags
  from ml_collections import config_flags

  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', flag_values=fv,
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and samples.',
                      flag_values=fv)
  flags.DEFINE_string('coordinator_address', None,
                      'host:port of process 0, for multi-process runs started by hand.',
                      flag_values=fv)
  flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.', flag_values=fv)
  flags.DEFINE_integer('process_id', None, 'This process\'s index in a multi-process run.',
                       flag_values=fv)
  _define_timeouts(lambda name, default, text: flags.DEFINE_integer(name, default, text, flag_values=fv))
  if any(a in ('-h', '--help', '--helpfull') for a in argv[1:]):
    print(f'usage: {prog} --config configs/tiny.py --workdir W [--config.SECTION.FIELD=VALUE ...]\n')
    print(fv.main_module_help() if hasattr(fv, 'main_module_help') else '')
    for name in ('config', 'workdir', 'coordinator_address', 'num_processes', 'process_id',
                 *TIMEOUTS):
      print(f'  --{name}: {fv[name].help}')
    sys.exit(0)
  try:
    fv(argv)
  except flags.Error as e:
    raise UsageError(str(e).splitlines()[0]) from None
  except (OSError, SyntaxError, AttributeError, KeyError) as e:
    raise UsageError(f'bad --config: {e}') from None
  if fv.config is None:
    raise UsageError('--config is required (for example --config configs/tiny.py)')
  if not fv.workdir:
    raise UsageError('--workdir is required')
  return fv


def _load_config_file(path):
  from zoom_enhance import config_files
  return config_files.load_module(path).get_config()


class UsageError(ValueError):
  """Wrong command-line arguments."""


# Multi-process runs: seconds, with JAX's defaults.
TIMEOUTS = {
    'init_timeout': (300, 'Seconds to wait for all processes to join before failing.'),
    'heartbeat_timeout': (100, 'Seconds without a heartbeat after which a process is taken for '
                               'dead and the run stops.'),
    'shutdown_timeout': (300, 'Seconds to wait at exit for the other processes.'),
}


def _define_timeouts(define):
  for name, (default, text) in TIMEOUTS.items():
    define(name, default, text)


def _join_distributed(prog, args):
  """Joins the multi-process runtime if asked; quiets the INFO logs of processes other than 0."""
  from zoom_enhance import sharding

  def on_timeout(message):
    print(f'{prog}: error: {message}', file=sys.stderr, flush=True)
    os._exit(EXIT_FAILED)  # from the watchdog thread: the main thread is stuck inside JAX
  joined = sharding.initialize_distributed(
      args.coordinator_address, args.num_processes, args.process_id,
      init_timeout=args.init_timeout, heartbeat_timeout=args.heartbeat_timeout,
      shutdown_timeout=args.shutdown_timeout, on_timeout=on_timeout)
  if joined and not sharding.is_main_process():
    logging.getLogger().setLevel(logging.WARNING)
  return joined


def _collective_failure(prog, e):
  """A multi-process step failed, nearly always because another process died: one line, exit now."""
  import jax
  first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  print(f'{prog}: error: process {jax.process_index()}: a step across {jax.process_count()} '
        f'processes failed (did another process die?): {first}', file=sys.stderr, flush=True)
  sys.stdout.flush()
  # Not sys.exit: JAX's exit handler would wait at a shutdown barrier for the dead process.
  os._exit(EXIT_FAILED)


def _run_training(argv, prog, run):
  """Shared by train and distill: flags, distributed start-up, preemption exit code."""
  fv = _parse_train_flags(argv, prog)
  distributed = _join_distributed(prog, fv)
  import jax

  from zoom_enhance import train
  os.makedirs(fv.workdir, exist_ok=True)
  try:
    step = run(fv.config, fv.workdir)
  except train.Preempted as e:
    logging.warning('%s', e)
    return EXIT_PREEMPTED
  except jax.errors.JaxRuntimeError as e:
    if not distributed:
      raise
    _collective_failure(prog, e)
  logging.info('done: step %d, workdir %s', step, fv.workdir)
  return 0


def cmd_train(argv):
  from zoom_enhance import train
  return _run_training(argv, 'zoom-enhance train', train.train_and_evaluate)


def cmd_distill(argv):
  from zoom_enhance import distill
  return _run_training(argv, 'zoom-enhance distill', distill.distill)


def cmd_sample(argv):
  p = argparse.ArgumentParser(prog='zoom-enhance sample',
                              description='Enhance one photo with a training checkpoint (JAX).')
  p.add_argument('--workdir', required=True, help='training workdir with checkpoints')
  p.add_argument('-i', '--input', required=True, help='input image')
  p.add_argument('-o', '--output', required=True, help='output image (PNG, JPEG or WebP)')
  g = p.add_mutually_exclusive_group()
  g.add_argument('-s', '--scale', type=float, default=4.0, help='upscale factor (default 4)')
  g.add_argument('--size', help='output size WxH, e.g. 2048x1152')
  p.add_argument('--steps', type=int, default=None, help='DDIM steps (default: the config\'s)')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--max-pixels', type=int, default=4_000_000,
                 help='refuse outputs larger than this (no tiling on this path)')
  args = p.parse_args(argv[1:])

  from zoom_enhance import checkpoint
  from zoom_enhance import images
  from zoom_enhance import sampler
  lr = images.load_rgb(args.input)
  if args.size:
    try:
      w, h = (int(v) for v in args.size.lower().split('x'))
    except ValueError:
      raise UsageError(f'--size {args.size!r}: expected WxH, e.g. 2048x1152') from None
  else:
    h, w = round(lr.shape[0] * args.scale), round(lr.shape[1] * args.scale)
  if h < 1 or w < 1:
    raise UsageError('the output would be empty')
  if h * w > args.max_pixels:
    raise UsageError(f'output {w}x{h} is over --max-pixels={args.max_pixels}')
  params, config, step = checkpoint.restore_params(args.workdir)
  steps = args.steps or config.diffusion.sample_steps
  logging.info('checkpoint step %d, %d DDIM steps, %dx%d -> %dx%d', step, steps,
               lr.shape[1], lr.shape[0], w, h)
  out = sampler.upscale_image(params, config, lr, (h, w), num_steps=steps, seed=args.seed)
  images.save_image(args.output, out)
  logging.info('wrote %s', args.output)
  return 0


def cmd_enhance(argv):
  p = argparse.ArgumentParser(
      prog='zoom-enhance enhance',
      description='Crop, zoom and enhance photos on this device with a LiteRT bundle '
                  '(numpy, Pillow and LiteRT only).')
  p.add_argument('inputs', nargs='+', metavar='INPUT', help='image files or folders')
  p.add_argument('-o', '--output', required=True,
                 help='output file (one input) or folder (same stems, extension from --ext)')
  p.add_argument('--bundle', default=None, help='bundle directory (default: the embedded one)')
  p.add_argument('--crop', default=None,
                 help='X,Y,W,H in pixels of the upright photo, or fractions (0.25,0.1,0.5,0.5)')
  g = p.add_mutually_exclusive_group()
  g.add_argument('-s', '--scale', type=float, default=None,
                 help='factor, any positive number such as 1.6; 1 enhances without zoom '
                      '(default: the bundle\'s largest)')
  g.add_argument('--size', default=None, help='output size WxH, e.g. 2048x1152')
  p.add_argument('--accelerator', default='auto', choices=('auto', 'npu', 'gpu', 'cpu'),
                 help='auto tries NPU, then GPU, then CPU; naming one makes it required')
  p.add_argument('--delegate', default=None, metavar='PATH',
                 help='external delegate library (.so) for the classic interpreter, e.g. a GPU or '
                      'Edge TPU delegate')
  p.add_argument('--quant', default=None, help='model variant: fp32, fp16, int8, ... (default: per '
                                               'accelerator)')
  p.add_argument('--tile', type=int, default=None,
                 help='tile side; must match the bundle (its models have fixed shapes)')
  p.add_argument('--steps', type=int, default=None, help='sampler steps; must match the bundle')
  p.add_argument('--strength', type=float, default=1.0,
                 help='0 = plain bicubic enlargement, 1 = the model (default)')
  p.add_argument('--quality', type=int, default=95, help='JPEG and WebP quality (default 95)')
  p.add_argument('--ext', default='png', help='output extension for folder outputs: png, jpg, webp')
  p.add_argument('--seed', type=int, default=0, help='seed of the starting noise')
  p.add_argument('--threads', type=int, default=None, help='CPU threads (default: cores, at most 4)')
  p.add_argument('--max-pixels', type=int, default=None,
                 help='refuse input images above this many pixels (default 120 million)')
  p.add_argument('-v', '--verbose', action='count', default=0,
                 help='what ran and how long (-vv: LiteRT\'s own log too)')
  args = p.parse_args(argv[1:])
  logging.getLogger('zoom_enhance.runtime').setLevel(
      (logging.WARNING, logging.INFO)[args.verbose] if args.verbose < 2 else logging.DEBUG)

  from zoom_enhance.runtime import batch
  from zoom_enhance.runtime import engine
  from zoom_enhance.runtime import geometry
  from zoom_enhance.runtime import photo
  if args.verbose < 2:
    engine.quiet_native_exit()
  try:
    crop = geometry.parse_crop(args.crop) if args.crop else None
    size = geometry.parse_size(args.size) if args.size else None
  except geometry.GeometryError as e:
    raise UsageError(str(e)) from None
  if args.scale is not None and not args.scale > 0:
    raise UsageError(f'--scale {args.scale:g}: must be positive')
  if not 0.0 <= args.strength <= 1.0:
    raise UsageError(f'--strength {args.strength:g}: must be in [0, 1]')
  if not 1 <= args.quality <= 100:
    raise UsageError(f'--quality {args.quality}: must be in [1, 100]')
  return batch.enhance_files(
      args.inputs, args.output, ext=args.ext, quality=args.quality,
      enhancer_options=dict(bundle=args.bundle, accelerator=args.accelerator, quant=args.quant,
                            delegate=args.delegate, threads=args.threads, tile=args.tile,
                            steps=args.steps),
      crop=crop, scale=args.scale, size=size, strength=args.strength, seed=args.seed,
      max_pixels=args.max_pixels or photo.MAX_PIXELS)


def cmd_export(argv):
  p = argparse.ArgumentParser(prog='zoom-enhance export',
                              description='Export a checkpoint to a LiteRT bundle (TFLite models + '
                                          'manifest.json), checked against JAX.')
  p.add_argument('--workdir', required=True, help='training or distillation workdir')
  p.add_argument('--out', required=True, help='bundle directory to write')
  p.add_argument('--quant', default='fp32,fp16,int8',
                 help='comma-separated variants: fp32, fp16, int8 (dynamic range), int8_full')
  p.add_argument('--tile', type=int, default=128, help='output tile side in pixels')
  p.add_argument('--overlap', type=int, default=None, help='tile overlap (default tile/8)')
  p.add_argument('--steps', type=int, default=None,
                 help='sampler steps (default: the distilled student\'s, else the config\'s)')
  p.add_argument('--photos', default='',
                 help='folder of real photos for calibration and parity tiles '
                      '(default: the training config\'s, else a packaged photo)')
  p.add_argument('--step', type=int, default=None,
                 help='checkpoint step to export (default: the latest); with a distillation, a '
                      'round\'s last step exports that round\'s student')
  p.add_argument('--noise-temperature', type=float, default=1.0,
                 help='scale of the sampler\'s starting noise, baked into the models: 1 samples, '
                      'lower trades generated texture for fidelity (default 1)')
  p.add_argument('--cpu-quant', default='fp32',
                 help='variant the runtime runs on the CPU when none is asked for (default fp32)')
  p.add_argument('--npu', action='store_true',
                 help='also compile for phone NPUs (Google Tensor, Qualcomm, MediaTek) with LiteRT\'s '
                      'AOT compiler, for each vendor whose SDK package is installed')
  args = p.parse_args(argv[1:])
  from export_tflite import export
  manifest = export.export(args.workdir, args.out, quants=[q for q in args.quant.split(',') if q],
                           tile=args.tile, steps=args.steps, overlap=args.overlap,
                           photos=args.photos, npu=args.npu, step=args.step,
                           cpu_quant=args.cpu_quant, noise_temperature=args.noise_temperature)
  logging.info('wrote %s: %d steps, tile %d, models %s', args.out, manifest['steps'], args.tile,
               ', '.join(manifest['models']))
  return 0


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


class _ArgumentParser(argparse.ArgumentParser):
  """argparse with its errors as UsageError: one line, exit status 2, no usage block."""

  def error(self, message):
    raise UsageError(message)


def cmd_eval(argv):
  from zoom_enhance import evaluate
  p = _ArgumentParser(
      prog='zoom-enhance eval',
      description='Score a bundle next to bicubic, Lanczos and Real-ESRGAN on a folder of ground-truth '
                  'photos: PSNR-Y, SSIM-Y, LPIPS and seconds per output megapixel.')
  p.add_argument('--hr-dir', required=True, help='folder of ground-truth photos')
  p.add_argument('-s', '--scale', default='4', help='upscale factor, 1 to 16 (default 4)')
  p.add_argument('--degradation', default='bicubic', choices=evaluate.DEGRADATIONS,
                 help='how LR inputs are made: bicubic downscale, or blur + noise + JPEG with a seed per '
                      'photo (default bicubic)')
  p.add_argument('--bundle', default=None, help='bundle directory (default: the embedded one)')
  p.add_argument('--out', required=True, help='results JSON to write (only once every photo is scored)')
  p.add_argument('--methods', default='all',
                 help='comma-separated: bicubic, lanczos, zoom-enhance, realesrgan-compact, '
                      'realesrgan-x4plus (default all)')
  p.add_argument('--max-images', type=int, default=0, help='first N photos by name (default all)')
  p.add_argument('--threads', type=_positive_int, default=2, help='CPU threads of every method (default 2)')
  p.add_argument('--peer-threads', type=_positive_int, default=None,
                 help='CPU threads of Real-ESRGAN alone (default: --threads); ncnn\'s OpenMP threads spin '
                      'while they wait, so on cores shared with other work one thread can be faster')
  p.add_argument('--quant', default=None, help='bundle model variant (default: per accelerator)')
  p.add_argument('--accelerator', default='auto', choices=('auto', 'npu', 'gpu', 'cpu'),
                 help='for the bundle, as in enhance (default auto)')
  p.add_argument('--crops', type=int, default=4, help='photos to write before/after crops for (default 4)')
  p.add_argument('--crops-dir', default=None, help='folder of the crops (default: OUT_crops/ beside --out)')
  args = p.parse_args(argv[1:])
  from zoom_enhance import eval_run
  from zoom_enhance.runtime import engine
  engine.quiet_native_exit()
  eval_run.run_eval(args.hr_dir, args.out, scale=args.scale, degradation=args.degradation,
                    bundle=args.bundle, methods=args.methods, max_images=args.max_images,
                    threads=args.threads, quant=args.quant, accelerator=args.accelerator,
                    crops_dir=args.crops_dir, num_crops=args.crops, peer_threads=args.peer_threads)
  return 0


def cmd_bench(argv):
  from zoom_enhance import benchmark
  p = _ArgumentParser(
      prog='zoom-enhance bench',
      description='Seconds per output megapixel and peak memory of each quantization variant of a bundle '
                  'on each accelerator here, for a photo crop upscaled 2x and 4x.')
  p.add_argument('--bundle', default=None, help='bundle directory (default: the embedded one)')
  p.add_argument('--threads', type=_positive_int, default=2, help='CPU threads (default 2)')
  p.add_argument('--input-mp', type=float, default=1.0,
                 help=f'input crop size in megapixels, at most {benchmark.MAX_INPUT_MP:g} (default 1)')
  p.add_argument('--scales', type=_float_list, default=[2.0, 4.0], help='factors (default 2,4)')
  p.add_argument('--quant', default=None, help='comma-separated variants (default: all in the bundle)')
  p.add_argument('--accelerators', default=','.join(benchmark.ACCELERATORS),
                 help='comma-separated, from npu, gpu, cpu (default all)')
  p.add_argument('--out', default=None, help='also write the rows as JSON')
  args = p.parse_args(argv[1:])
  benchmark.run_bench(args.bundle, threads=args.threads, input_mp=args.input_mp, scales=args.scales,
                      quants=[q for q in args.quant.split(',') if q] if args.quant else None,
                      accelerators=[a for a in args.accelerators.split(',') if a], out=args.out)
  return 0


def cmd_bench_train(argv):
  p = argparse.ArgumentParser(prog='zoom-enhance bench-train',
                              description='Training throughput (samples/s) of model variants.')
  p.add_argument('--config', default='configs/tiny.py', help='config whose other settings are used')
  p.add_argument('--variants', default='tiny,base')
  p.add_argument('--dtypes', default='float32,bfloat16', help='compute dtypes to time')
  p.add_argument('--batch-size', type=int, default=8, help='global batch size')
  p.add_argument('--patch-size', type=int, default=64)
  p.add_argument('--steps', type=int, default=10, help='timed steps after warm-up')
  # Set by zoom_enhance.local_launch (launch/bench_multiprocess.sh) to time one step over processes.
  p.add_argument('--coordinator_address', default=None, help='host:port of process 0')
  p.add_argument('--num_processes', type=int, default=None)
  p.add_argument('--process_id', type=int, default=None)
  _define_timeouts(lambda name, default, text: p.add_argument(f'--{name}', type=int,
                                                             default=default, help=text))
  args = p.parse_args(argv[1:])
  if not os.path.isfile(args.config):
    raise UsageError(f'--config {args.config}: no such file')
  _join_distributed('zoom-enhance bench-train', args)
  from zoom_enhance import bench_train
  bench_train.main(args.variants.split(','), batch_size=args.batch_size, patch_size=args.patch_size,
                   steps=args.steps, base_config=lambda: _load_config_file(args.config),
                   dtypes=args.dtypes.split(','))
  return 0


COMMANDS = {'train': cmd_train, 'distill': cmd_distill, 'export': cmd_export, 'sample': cmd_sample,
            'enhance': cmd_enhance, 'eval': cmd_eval, 'bench': cmd_bench, 'bench-train': cmd_bench_train}


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ('-h', '--help'):
    print(f'usage:\n{USAGE}\n\ncommands: {", ".join(COMMANDS)}')
    return 0 if len(argv) >= 2 else EXIT_USAGE
  name = argv[1]
  if name not in COMMANDS:
    print(f'zoom-enhance: unknown command {name!r}; choose one of {", ".join(COMMANDS)}',
          file=sys.stderr)
    return EXIT_USAGE
  _setup_logging()
  from zoom_enhance import errors
  try:
    return COMMANDS[name]([f'zoom-enhance {name}'] + argv[2:])
  except UsageError as e:
    print(f'zoom-enhance {name}: error: {e}', file=sys.stderr)
    return EXIT_USAGE
  except errors.USER_ERRORS as e:
    print(f'zoom-enhance {name}: error: {e}', file=sys.stderr)
    return EXIT_FAILED
  except KeyboardInterrupt:
    print(f'zoom-enhance {name}: interrupted', file=sys.stderr)
    return 130


if __name__ == '__main__':
  sys.exit(main())
