"""What the runtime finds out about this machine once and keeps: JSON files in the user's cache directory.

Two things are kept: the CPU variant measured fastest (cpu_variant) and what
LiteRT's GPU accelerator finds (gpu_probe.probe_gpu). Each file holds entries
keyed by a digest of what decides the answer, so that another CPU, driver,
LiteRT or bundle finds again, and holds the newest few entries only.
"""

import json
import logging
import os
import sys
import time

from zoom_enhance.imaging import files

logger = logging.getLogger('zoom_enhance.runtime')

MAX_ENTRIES = 64


def cache_dir() -> str:
  """The user's cache directory for zoom-enhance (ZOOM_ENHANCE_CACHE_DIR, else the platform's).

  Hand-written rather than platformdirs' user_cache_dir, to keep the runtime's
  dependencies to numpy, Pillow and LiteRT: $XDG_CACHE_HOME or ~/.cache on
  Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows.
  """
  override = os.environ.get('ZOOM_ENHANCE_CACHE_DIR')
  if override:
    return override
  home = os.path.expanduser('~')
  if sys.platform == 'win32':
    base = os.environ.get('LOCALAPPDATA') or os.path.join(home, 'AppData', 'Local')
  elif sys.platform == 'darwin':
    base = os.path.join(home, 'Library', 'Caches')
  else:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(home, '.cache')
  return os.path.join(base, 'zoom-enhance')


def litert_version() -> str:
  from importlib import metadata

  for dist in ('ai-edge-litert', 'tflite-runtime'):
    try:
      return f'{dist} {metadata.version(dist)}'
    except metadata.PackageNotFoundError:
      continue
  return 'unknown'


def key_of(ident: dict) -> str:
  return files.text_digest(json.dumps(ident, sort_keys=True))[:24]


def path_of(name: str) -> str:
  return os.path.join(cache_dir(), name)


def read(name: str) -> dict:
  """{'entries': {key: entry}} of the cache file `name`; empty where it is missing or unreadable."""
  try:
    with open(path_of(name), encoding='utf-8') as f:
      data = json.load(f)
    return data if isinstance(data, dict) and isinstance(data.get('entries'), dict) else {'entries': {}}
  except (OSError, ValueError):
    return {'entries': {}}


def put(name: str, key: str, entry: dict):
  """Adds `entry` (stamped with the time) under `key`, keeping the newest MAX_ENTRIES.

  Atomically (files.write_json): a reader never sees half a file. Failing to
  write costs finding out again next time.
  """
  entries = dict(read(name)['entries'])
  entries[key] = dict(entry, measured=time.time())
  newest = sorted(entries.items(), key=lambda kv: kv[1].get('measured', 0), reverse=True)[:MAX_ENTRIES]
  path = path_of(name)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_json(path, {'format': 1, 'entries': dict(newest)}, indent=1, sort_keys=True)
  except OSError as e:
    logger.debug('could not write the cache %s: %s', path, e)
