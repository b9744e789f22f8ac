"""Files: folders of images, atomic writes, JSON, SHA-256 and the package's own assets.

Every file the project writes goes through `write_atomic`: the bytes go to a
hidden temporary file in the same folder that is then renamed over the
target, so a reader never sees a half-written file and a failed or
interrupted write leaves none; a directory (a bundle, a weights directory) is
built beside its target and renamed into place by `publish_dir`.
"""

import hashlib
import importlib.resources
import json
import os
import shutil
import stat
import uuid
from typing import Callable

# Extensions (lower case, no dot) that folders are scanned for.
IMAGE_EXTENSIONS = ('jpg', 'jpeg', 'png', 'webp', 'bmp', 'tif', 'tiff')


def scan_folder(folder) -> tuple[list[str], list[str]]:
  """(images, others): every file under `folder`, recursively, split by extension.

  Both lists are sorted by path so that every process sees the same order.
  """
  images, others = [], []
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    for name in files:
      path = os.path.join(root, name)
      ext = os.path.splitext(name)[1][1:].lower()
      (images if ext in IMAGE_EXTENSIONS else others).append(path)
  return sorted(images), sorted(others)


def list_images(folder) -> list[str]:
  """Sorted paths of the files under `folder` (recursive) with an image extension."""
  return scan_folder(folder)[0]


_SPECIAL_KINDS = (
  (stat.S_ISFIFO, 'a named pipe (FIFO)'),
  (stat.S_ISCHR, 'a character device'),
  (stat.S_ISBLK, 'a block device'),
  (stat.S_ISSOCK, 'a socket'),
)


def special_kind(path) -> str | None:
  """What `path` is when it is neither a regular file nor a folder ('a named pipe (FIFO)', ...): reading one
  may block forever. None for files, folders and paths that do not exist."""
  try:
    mode = os.stat(path).st_mode
  except (OSError, ValueError):
    return None
  if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
    return None
  return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), 'a special file')


def file_in_the_way(path) -> str | None:
  """The nearest existing folder above `path` when it is not a folder (a file), else None: then `path`
  cannot be created (Not a directory)."""
  parent = os.path.dirname(os.path.normpath(os.fspath(path)))
  while parent and not os.path.lexists(parent):
    parent = os.path.dirname(parent)
  return None if not parent or os.path.isdir(parent) else parent  # '': the working folder


# Longest file name most file systems take (Linux's NAME_MAX), in bytes.
NAME_MAX = 255
# What a temporary name adds after its stem: '.PID.RANDOM.tmp', a pid of up to 10 digits.
_TEMP_TAIL = len('.') + 10 + len('.') + 8 + len('.tmp')


def _temp_stem(name: str) -> str:
  """'.NAME', or where that leaves no room for the tail within NAME_MAX, '.HEAD~HASH': NAME cut to fit, and
  8 hex digits of its SHA-256, so that two long names sharing a head get different temporary files."""
  stem = f'.{name}'
  if len(os.fsencode(stem)) + _TEMP_TAIL <= NAME_MAX:
    return stem
  digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
  room = NAME_MAX - _TEMP_TAIL - len(f'.~{digest}')
  head = name
  while len(os.fsencode(head)) > room:  # whole characters only
    head = head[:-1]
  return f'.{head}~{digest}'


def temp_name(path) -> str:
  """The hidden temporary file `write_atomic` writes before renaming it to `path`: .NAME.PID.RANDOM.tmp
  (with NAME shortened where the whole would pass NAME_MAX)."""
  folder, name = os.path.split(os.path.abspath(path))
  # No image extension, so a folder scan never lists it; the writer's pid tells a leftover from a live write.
  return os.path.join(folder, f'{_temp_stem(name)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # another user's live process
    return True
  return True


def remove_stale_temps(path) -> int:
  """Removes the temporary files of writes to `path` whose writer is gone (killed); returns how many."""
  folder, name = os.path.split(os.path.abspath(path))
  prefix = f'{_temp_stem(name)}.'
  removed = 0
  try:
    entries = os.listdir(folder)
  except OSError:
    return 0
  for entry in entries:
    if not (entry.startswith(prefix) and entry.endswith('.tmp')):
      continue
    parts = entry[len(prefix) : -len('.tmp')].split('.')
    if len(parts) != 2 or not parts[0].isdigit() or _alive(int(parts[0])):
      continue
    try:
      os.remove(os.path.join(folder, entry))
      removed += 1
    except OSError:
      pass
  return removed


def write_atomic(path, data: bytes) -> None:
  """Writes bytes to a temporary file in the same folder, then renames it over `path`."""
  tmp = temp_name(path)
  try:
    # 'xb' keeps the user's umask (mkstemp would make the file 0600).
    with open(tmp, 'xb') as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def publish_dir(staging: str, out: str, *, is_ours: Callable[[str], bool], what: str) -> None:
  """Renames the finished directory `staging` to `out`, replacing an older one only once complete.

  An existing `out` must be empty or pass `is_ours` (an older copy of the
  same kind of directory); otherwise an OSError says to choose another path.
  `staging` must be on the same file system (a sibling of `out`).
  """
  old = None
  if os.path.exists(out):
    if os.listdir(out) and not is_ours(out):
      raise FileExistsError(f'{out}: exists and is not a {what}; choose another path')
    old = f'{out}.old-{os.getpid()}'
    os.replace(out, old)
  os.replace(staging, out)
  if old:
    shutil.rmtree(old, ignore_errors=True)


def write_json(path, obj, *, indent: int | None = 2, sort_keys: bool = False) -> None:
  """Writes `obj` as JSON (with a final newline), atomically."""
  text = json.dumps(obj, indent=indent, sort_keys=sort_keys)
  write_atomic(path, (text + '\n').encode('utf-8'))


def sha256(path) -> str:
  """Hex SHA-256 of a file's bytes."""
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, 'sha256').hexdigest()


def text_digest(text: str) -> str:
  """Hex SHA-256 of a string's UTF-8 bytes (cache keys)."""
  return hashlib.sha256(text.encode('utf-8')).hexdigest()


def asset_path(*parts: str) -> str:
  """A file or folder shipped in the package's assets/ (the sample photo, the default bundle)."""
  return str(importlib.resources.files('zoom_enhance').joinpath('assets', *parts))
