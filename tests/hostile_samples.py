"""Hostile inputs shared by the tests and tests/hostile_cases.py: EXIF Pillow cannot write, a Ctrl-C."""

import struct

_TIFF_HEADER = b'Exif\x00\x00' + b'MM\x00\x2a\x00\x00\x00\x08'

# Python run as `python -c CTRL_C_WHILE_LOADING enhance ...`: the real command, with Ctrl-C raised right
# after the CPU model compiled, when LiteRT's objects sit in the traceback.
CTRL_C_WHILE_LOADING = """
import sys
from zoom_enhance import cli
from zoom_enhance.runtime import engine
loaded = engine._load
def ctrl_c(path, accelerator, threads):
  backend = loaded(path, accelerator, threads)
  if accelerator == 'cpu':
    raise KeyboardInterrupt
  return backend
engine._load = ctrl_c
sys.exit(cli.main())
"""


def _one_tag(entry: bytes) -> bytes:
  return _TIFF_HEADER + struct.pack('>H', 1) + entry + b'\x00' * 4


def exif_with_text_orientation(value: bytes = b'6') -> bytes:
  """EXIF whose Orientation is ASCII text, as some tools write it (Pillow itself cannot write this)."""
  return _one_tag(struct.pack('>HHI4s', 0x0112, 2, len(value) + 1, value + b'\x00' * (4 - len(value))))


def exif_pointing_past_its_end() -> bytes:
  """EXIF with a 100-byte text tag whose offset lies past the block: Pillow warns 'Truncated File Read'."""
  return _one_tag(struct.pack('>HHII', 0x010F, 2, 100, 0xFFF0))
