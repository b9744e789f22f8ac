"""LiteRT's native log: what its C++ code writes to file descriptors 1 and 2, captured, silenced and read.

LiteRT logs from C++ straight to the process's stdout and stderr (INFO lines
as models load, every vendor plugin that failed to load, destructors' lines at
exit). The command line owes the user one line per error, so the runtime
captures that output around every LiteRT call (`capture`, to the debug log),
silences it at exit (`quiet_native_exit`), and reads a failure's root cause
from it (`short_reason`).
"""

import atexit
import contextlib
import dataclasses
import logging
import os
import re
import sys
import tempfile

logger = logging.getLogger('zoom_enhance.runtime')


@dataclasses.dataclass
class NativeLog:
  text: str = ''


@contextlib.contextmanager
def capture():
  """Captures what LiteRT's C++ code writes to file descriptors 1 and 2 meanwhile.

  Loading a model prints INFO lines and every vendor plugin that failed to
  load (on stderr; the GPU accelerator's OpenCL probe on stdout); the CLI owes
  the user one line per error, so this goes to the debug log (`--verbose`)
  instead.
  """
  log = NativeLog()
  try:
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
  except (OSError, ValueError, AttributeError):
    saved = None
  if saved is None:
    yield log
    return
  with tempfile.TemporaryFile() as f:
    for fd in saved:
      os.dup2(f.fileno(), fd)
    try:
      yield log
    finally:
      for fd, copy in saved.items():
        os.dup2(copy, fd)
        os.close(copy)
      f.seek(0)
      log.text = f.read().decode('utf-8', 'replace')
  for line in log.text.splitlines():
    if line.strip():
      logger.debug('litert: %s', line.rstrip())


_exit_quiet = False


def _silence_fd2():
  try:
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
  except (OSError, ValueError, AttributeError):
    pass


def quiet_native_exit():
  """Silences fd 2 at interpreter exit, where LiteRT's destructors print INFO lines.

  The first run of a CompiledModel creates an environment inside LiteRT that
  no Python object owns, destroyed (and logged) only at exit. For the command
  line only: by then every message of ours is out.
  """
  global _exit_quiet
  if _exit_quiet:
    return
  _exit_quiet = True
  atexit.register(_silence_fd2)


def quiet_native_now():
  """After quiet_native_exit, silences fd 2 at once: for the command line's last message.

  An error or Ctrl-C while a model loads leaves LiteRT's objects in the
  traceback; they are destroyed, and log, as soon as the handler is done.
  """
  if _exit_quiet:
    _silence_fd2()


# Log prefixes of LiteRT's C++ code: 'ERROR: [file.cc:12] ' and glog's 'E0000 00:00:17.5 123 file.cc:7] '.
LOG_PREFIX = re.compile(r'^(?:(?:INFO|WARNING|ERROR): \[[^\]]*\] ?|[IWEF]\d{4} [\d:.]+ +\d+ [^\]]*\] ?)')
# Native log lines that say why an accelerator is missing better than the
# exception does (for a missing NPU LiteRT raises "Some ops are not accelerated").
ROOT_CAUSES = {
  'npu': ('NPU accelerator could not be loaded',),
  'gpu': ('GPU accelerator could not be loaded', 'No adapters found'),
}


def short_reason(message: str, native: str = '', accelerator: str = '') -> str:
  """One line for the report: a root cause from the native log, else the exception's last worded line."""
  logged = [LOG_PREFIX.sub('', ln.strip().strip('└ ')) for ln in native.splitlines()]
  for line in logged:
    if any(cause in line for cause in ROOT_CAUSES.get(accelerator, ())):
      return line.rstrip('.')[:300]
  lines = [LOG_PREFIX.sub('', ln.strip().strip('└ ')) for ln in message.splitlines()]
  lines = [ln.replace('CompiledModel error: ', '') for ln in lines]
  lines = [ln for ln in lines if ln and not ln.startswith('code=')]
  if not lines:
    lines = [ln for ln in logged if 'ERROR' in ln or 'Failed' in ln] or ['unknown LiteRT error']
  return lines[-1].rstrip('.')[:300]
