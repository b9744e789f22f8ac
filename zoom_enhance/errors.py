"""Errors that are the input's fault or end a run, the CLI's exit codes, and their one-line form."""

# Exit codes of the command line and of the multi-process launcher.
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PREEMPTED = 143  # 128 + SIGTERM: the run stopped early but cleanly
EXIT_INTERRUPTED = 130  # 128 + SIGINT


class ZoomEnhanceError(Exception):
  """Base class: the message is complete and meant for the user."""


class ConfigError(ZoomEnhanceError, ValueError):
  """A config value or an option that cannot work."""


class Stopped(ZoomEnhanceError):
  """A run that stopped early but cleanly (a preemption): exit status EXIT_PREEMPTED, not a failure."""


class OutOfMemory(ZoomEnhanceError, MemoryError):
  """Not enough memory for one photo (to decode it, enhance it or encode its result); the message names it."""


class Terminated(BaseException):
  """A SIGTERM, raised by the handler a command installs for it: unwinds like Ctrl-C (every `finally` and
  `with` runs, so no temporary file is left), then exit status EXIT_PREEMPTED. A BaseException, so that no
  `except Exception` on the way swallows it."""


# What the command line reports as one line instead of a traceback. OSError
# covers unwritable outputs, missing files and full disks.
USER_ERRORS = (ZoomEnhanceError, OSError)


def first_line(err: BaseException, limit: int = 300) -> str:
  """The first non-empty line of an exception's message (its type's name if it has none), cut at `limit`."""
  for line in str(err).splitlines():
    if line.strip():
      return line.strip()[:limit]
  return type(err).__name__
