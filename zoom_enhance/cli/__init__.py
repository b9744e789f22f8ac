"""The `zoom-enhance` command: parses arguments and calls library functions, nothing else.

  zoom-enhance train --config configs/tiny.py --workdir W [--config.train.num_steps=30 ...]
  zoom-enhance distill --config configs/distill_tiny.py --workdir W2 --config.distill.teacher_workdir=W
  zoom-enhance export --workdir W2 --out BUNDLE [--quant fp32,fp16,int8] [--tile 128] [--steps N] [--npu]
  zoom-enhance save-weights --workdir W --out DIR [--step N]
  zoom-enhance sample --workdir W -i photo.jpg -o out.png --scale 4
  zoom-enhance enhance photo.jpg [--crop X,Y,W,H] [--scale S | --size WxH] -o out.png [--bundle B]
      [--report-json report.json]
  zoom-enhance enhance-library SRC OUT [--runner direct|prism|...] [--workers N] [enhance's options]
  zoom-enhance eval --hr-dir DIR --scale 4 [--degradation bicubic|realistic|second_order | --lr-dir LR]
      [--bundle B] [--detail 0,0.5,1] [--results-dir DIR [--results-name NAME]] [--shave N] --out results.json
  zoom-enhance bench [--bundle B] [--threads 2] [--input-mp 1] [--out bench.json]
  zoom-enhance bench --folder DIR [--scales 4] [--out f.json]   (whole commands against Real-ESRGAN's compact
      anime-video model, animevideov3)
  zoom-enhance bench-train [--variants tiny,base]

Bad input ends with one line on stderr and a non-zero exit, not a traceback.
One argparse parser, a sub-parser per command (cli/enhance.py, evaluate.py,
checkpoints.py, training.py, library.py), their shared flags defined once (cli/flags.py).
train and distill read an `ml_collections` config file, whose fields
--config.SECTION.FIELD=VALUE flags override, through absl's config_flags.
Only the command that runs imports its library: enhance never imports JAX.
"""

import logging
import os
import sys

from zoom_enhance import errors
from zoom_enhance.cli import checkpoints
from zoom_enhance.cli import enhance
from zoom_enhance.cli import evaluate
from zoom_enhance.cli import flags
from zoom_enhance.cli import library
from zoom_enhance.cli import training

USAGE = __doc__.split('\n\n')[1]
COMMANDS = (
  'train',
  'distill',
  'export',
  'save-weights',
  'sample',
  'enhance',
  'enhance-library',
  'eval',
  'bench',
  'bench-train',
)
UsageError = flags.UsageError


def build_parser() -> flags.Parser:
  """The command line: one sub-parser per command, each with its `run(args)` as the default `run`."""
  parser = flags.Parser(prog='zoom-enhance', description=__doc__.split('\n')[0])
  commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
  for module in (training, checkpoints, enhance, library, evaluate):
    module.register(commands)
  return parser


def _setup_logging():
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s', datefmt='%H:%M:%S')
  for noisy in ('absl', 'jax._src', 'orbax', 'tensorflow'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # Orbax warns three times about its own options whenever a checkpoint is opened read-only
  # (export, distill, sample): the reader is read-only on purpose.
  notices = ('read_only=True, setting', 'Given directory is read only')
  logging.getLogger('absl').addFilter(lambda record: not any(s in record.getMessage() for s in notices))
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def _parse(argv: list):
  """The parsed arguments of `argv` (without the program name); the arguments train and distill do not know
  themselves become their `overrides` (for the config file), elsewhere an error."""
  args, rest = build_parser().parse_known_args(argv)
  if rest:
    if not hasattr(args, 'overrides'):
      raise UsageError(f'unrecognized arguments: {" ".join(rest)}')
    args.overrides = rest
  return args


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
    args = _parse(argv[1:])
    return args.run(args)
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
