"""The command line's flags: each flag that several commands take is defined here once, with one type.

A flag function (`threads`, `steps`, `tile`, ...) adds one flag; the command
gives only its default and help. The parent parsers group the flags that
travel together:

  runtime       --bundle --threads --accelerator --quant        enhance, eval
  bundle_flags  --bundle --threads                              bench
  processes     --coordinator_address --num_processes --process_id
                --init_timeout --heartbeat_timeout --shutdown_timeout
                                                                train, distill, bench-train
  training      processes, --config (and its --config.SECTION.FIELD=VALUE
                overrides, read by load_config), --workdir      train, distill
  checkpoint    --workdir of a finished run                     sample, export, save-weights

A parent is built afresh for each command (argparse shares a parent's flags
with every command built from it, so one command's default would be all
of theirs). A shared whole-number flag is an `int`; the library behind a
command checks its range, or the command does with `at_least_one`, in the
words the `positive` type uses. Importing this module imports nothing heavy;
`runtime` reads the engine's accelerators (the runtime: numpy, no JAX).
"""

import argparse


class UsageError(ValueError):
  """Wrong command-line arguments: one line, exit status 2."""


class Parser(argparse.ArgumentParser):
  """argparse with its errors as UsageError: one line, exit status 2, no usage block."""

  def error(self, message):
    raise UsageError(message)


# --- types -------------------------------------------------------------------


def positive(text) -> int:
  """A whole number >= 1, for flags of one command whose library does not check it."""
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r}: not a whole number') from None
  if value < 1:
    raise argparse.ArgumentTypeError(f'{value}: must be at least 1')
  return value


def numbers(text) -> list[float]:
  try:
    return [float(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r}: expected numbers separated by commas') from None


def names(text) -> list[str] | None:
  """'fp32, int8' -> ['fp32', 'int8']; None or '' -> None."""
  return [v.strip() for v in text.split(',') if v.strip()] if text else None


def at_least_one(**values) -> None:
  """The check of `positive`, for a shared whole-number flag that this command needs to be at least 1
  (the command's library does not check it): threads=args.threads -> argument --threads: 0: must be ..."""
  for name, value in values.items():
    if value is not None and value < 1:
      raise UsageError(f'argument --{name.replace("_", "-")}: {value}: must be at least 1')


# --- flags several commands take ------------------------------------------------------------------


def bundle(p):
  p.add_argument('--bundle', default=None, help='bundle directory (default: the embedded one)')


def threads(p, default, help):
  p.add_argument('--threads', type=int, default=default, help=help)


def accelerator(p, help):
  from zoom_enhance.runtime import engine

  p.add_argument('--accelerator', default='auto', choices=engine.ACCELERATORS, help=help)


def quant(p, default, help):
  """One variant (enhance, eval) or, split by the command with `names`, several (export, bench)."""
  p.add_argument('--quant', default=default, help=help)


def steps(p, default, help):
  p.add_argument('--steps', type=int, default=default, help=help)


def tile(p, default, help):
  p.add_argument('--tile', type=int, default=default, help=help)


def max_pixels(p, default, help):
  p.add_argument('--max-pixels', type=int, default=default, help=help)


def seed(p, help=None):
  p.add_argument('--seed', type=int, default=0, help=help)


def detail(p, default, help):
  p.add_argument('--detail', type=float, default=default, help=help)


def output(p, help):
  p.add_argument('-o', '--output', required=True, help=help)


def scale_or_size(p, default, scale_help, size_help='output size WxH, e.g. 2048x1152'):
  g = p.add_mutually_exclusive_group()
  g.add_argument('-s', '--scale', type=float, default=default, help=scale_help)
  g.add_argument('--size', default=None, help=size_help)


def config(p, default, help):
  p.add_argument('--config', default=default, help=help)


def step(p, help):
  p.add_argument('--step', type=int, default=None, help=help)


# --- parent parsers ------------------------------------------------------------------------------


def bundle_flags(threads_default, threads_help) -> Parser:
  """--bundle, --threads: which bundle, on how many CPU threads."""
  p = Parser(add_help=False)
  bundle(p)
  threads(p, threads_default, threads_help)
  return p


ENHANCE_ACCELERATOR_HELP = 'auto tries NPU, then GPU, then CPU; naming one makes it required'
ENHANCE_QUANT_HELP = 'model variant: fp32, fp16, int8, ... (default: per accelerator)'


def runtime(
  threads_default, threads_help, accelerator_help=ENHANCE_ACCELERATOR_HELP, quant_help=ENHANCE_QUANT_HELP
) -> Parser:
  """bundle_flags, and where it runs: --accelerator, --quant (the help as enhance gives it, by default)."""
  p = Parser(add_help=False, parents=[bundle_flags(threads_default, threads_help)])
  accelerator(p, accelerator_help)
  quant(p, None, quant_help)
  return p


# Distributed start-up flags of train, distill and bench-train (distributed.start's arguments).
PROCESS_FLAGS = {
  'coordinator_address': (None, 'host:port of process 0, for multi-process runs started by hand.'),
  'num_processes': (int, 'Processes in a multi-process run.'),
  'process_id': (int, "This process's index in a multi-process run."),
}
# Multi-process runs: seconds, with JAX's defaults (distributed.initialize's).
TIMEOUTS = {
  'init_timeout': (300, 'Seconds to wait for all processes to join before failing.'),
  'heartbeat_timeout': (
    100,
    'Seconds without a heartbeat after which a process is taken for dead and the run stops.',
  ),
  'shutdown_timeout': (300, 'Seconds to wait at exit for the other processes.'),
}


def processes() -> Parser:
  """Joining a multi-process run (zoom_enhance.training.launcher sets them)."""
  p = Parser(add_help=False)
  for name, (kind, text) in PROCESS_FLAGS.items():
    p.add_argument(f'--{name}', type=kind, default=None, help=text)
  for name, (default, text) in TIMEOUTS.items():
    p.add_argument(f'--{name}', type=int, default=default, help=text)
  return p


def process_options(args) -> dict:
  """distributed.start's keyword arguments from parsed `processes` flags."""
  return {name: getattr(args, name) for name in (*PROCESS_FLAGS, *TIMEOUTS)}


def training() -> Parser:
  """A run's config file and workdir (the ml_collections overrides are read by load_config)."""
  p = Parser(add_help=False, parents=[processes()])
  config(p, None, 'config file (configs/*.py); --config.SECTION.FIELD=VALUE flags override its fields')
  p.add_argument('--workdir', default=None, help='directory for checkpoints, metrics and samples')
  return p


def checkpoint() -> Parser:
  """The workdir of a training or distillation run to read."""
  p = Parser(add_help=False)
  p.add_argument('--workdir', required=True, help='training or distillation workdir')
  return p


def load_config(path: str | None, overrides: list, prog: str):
  """The ml_collections config of --config `path` with its --config.SECTION.FIELD=VALUE `overrides`,
  read by absl's config_flags as a flag of its own; None without --config. Any other flag in
  `overrides` is an error, in absl's words."""
  from absl import flags
  from ml_collections import config_flags

  from zoom_enhance import errors

  argv = [prog, *([f'--config={path}'] if path is not None else []), *overrides]
  fv = flags.FlagValues()
  # sys_argv: the overrides are found in `argv`, not in this process's sys.argv.
  config_flags.DEFINE_config_file(
    'config', None, 'Config file (configs/*.py).', flag_values=fv, lock_config=True, sys_argv=argv
  )
  try:
    fv(argv)
  except flags.Error as e:
    raise UsageError(errors.first_line(e)) from None
  except (OSError, SyntaxError, AttributeError, KeyError) as e:
    raise UsageError(f'bad --config: {e}') from None
  return fv.config
