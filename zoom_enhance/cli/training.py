"""train, distill and bench-train: JAX runs, single- or multi-process (the 'train' extra)."""

import argparse
import logging
import os

from zoom_enhance import extras
from zoom_enhance.cli import flags

TRAIN_USAGE = '%(prog)s --config configs/tiny.py --workdir W [--config.SECTION.FIELD=VALUE ...]'


def register(commands) -> None:
  for name, description in (
    ('train', 'Train the upscaler as the config says; the same command resumes where it stopped.'),
    ('distill', 'Progressive distillation of a teacher (--config.distill.teacher_workdir) to fewer steps.'),
  ):
    # No abbreviations: a flag these commands do not know goes to the config's parser, which names it.
    p = commands.add_parser(
      name,
      parents=[flags.training()],
      usage=TRAIN_USAGE,
      description=description,
      help=description,
      allow_abbrev=False,
    )
    p.add_argument('--helpfull', action='help', help=argparse.SUPPRESS)  # absl's name for it
    # overrides: the arguments argparse leaves, for load_config (cli.main fills it).
    p.set_defaults(run=run_train if name == 'train' else run_distill, overrides=())

  p = commands.add_parser(
    'bench-train',
    parents=[flags.processes()],
    description='Training throughput (samples/s) of model variants.',
    help='training throughput (samples/s) of model variants',
  )
  flags.config(p, 'configs/tiny.py', 'config whose other settings are used')
  p.add_argument('--variants', default='tiny,base')
  p.add_argument('--dtypes', default='float32,bfloat16', help='compute dtypes to time')
  p.add_argument('--batch-size', type=flags.positive, default=8, help='global batch size')
  p.add_argument('--patch-size', type=flags.positive, default=64)
  flags.steps(p, 10, 'timed steps after warm-up')
  p.set_defaults(run=run_bench_train)


def _start_processes(prog: str, args) -> bool:
  from zoom_enhance.training import distributed

  return distributed.start(prog, **flags.process_options(args))


def _run_training(args, prog: str, module: str, function: str) -> int:
  """train and distill: the config, distributed start-up, the run; a failed collective is one line."""
  extras.require('train', prog)
  config = flags.load_config(args.config, list(args.overrides), prog)
  if config is None:
    raise flags.UsageError('--config is required (for example --config configs/tiny.py)')
  if not args.workdir:
    raise flags.UsageError('--workdir is required')
  joined = _start_processes(prog, args)
  import importlib

  import jax

  run = getattr(importlib.import_module(f'zoom_enhance.training.{module}'), function)
  os.makedirs(args.workdir, exist_ok=True)
  try:
    step = run(config, args.workdir)
  except jax.errors.JaxRuntimeError as e:
    if not joined:
      raise
    from zoom_enhance.training import distributed

    distributed.exit_after_collective_failure(prog, e)
  logging.info('done: step %d, workdir %s', step, args.workdir)
  return 0


def run_train(args) -> int:
  return _run_training(args, 'zoom-enhance train', 'train', 'train_and_evaluate')


def run_distill(args) -> int:
  return _run_training(args, 'zoom-enhance distill', 'distill', 'distill')


def run_bench_train(args) -> int:
  prog = 'zoom-enhance bench-train'
  extras.require('train', prog)
  flags.at_least_one(steps=args.steps)
  if not os.path.isfile(args.config):
    raise flags.UsageError(f'--config {args.config}: no such file')
  _start_processes(prog, args)
  from zoom_enhance.training import config
  from zoom_enhance.training import throughput

  throughput.main(
    flags.names(args.variants),
    batch_size=args.batch_size,
    patch_size=args.patch_size,
    steps=args.steps,
    base_config=lambda: config.load_config_file(args.config),
    dtypes=flags.names(args.dtypes),
  )
  return 0
