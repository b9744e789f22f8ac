"""The `zoom-enhance` command: parses arguments and calls library functions.

  zoom-enhance train --config configs/tiny.py --workdir W [--config.train.num_steps=30 ...]
  zoom-enhance distill --config configs/distill_tiny.py --workdir W2 --config.distill.teacher_workdir=W
  zoom-enhance export --workdir W2 --out BUNDLE [--quant fp32,fp16,int8] [--tile 128] [--steps N]
  zoom-enhance sample --workdir W -i photo.jpg -o out.png --scale 4
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
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


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
  import importlib.util
  spec = importlib.util.spec_from_file_location('zoom_enhance_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


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
  args = p.parse_args(argv[1:])
  from export_tflite import export
  manifest = export.export(args.workdir, args.out, quants=[q for q in args.quant.split(',') if q],
                           tile=args.tile, steps=args.steps, overlap=args.overlap,
                           photos=args.photos)
  logging.info('wrote %s: %d steps, tile %d, models %s', args.out, manifest['steps'], args.tile,
               ', '.join(manifest['models']))
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
            'bench-train': cmd_bench_train}


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
