"""Errors that are the input's fault or end a run; the CLI prints them as one line."""


class ZoomEnhanceError(Exception):
  """Base class: the message is complete and meant for the user."""


class ConfigError(ZoomEnhanceError, ValueError):
  """A config value that cannot work."""


# What the command line reports as one line instead of a traceback. OSError
# covers unwritable outputs, missing files and full disks.
USER_ERRORS = (ZoomEnhanceError, OSError)
