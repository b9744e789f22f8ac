"""What a photo library run has done, kept beside its results so that any run can resume it.

A library run (`zoom-enhance enhance-library SRC OUT`) pairs every photo of
SRC (a folder tree, read recursively, or a text file listing photos) with its
result under OUT, keeping the tree's structure (runtime.batch.plan_jobs).
Each worker, after writing a result atomically, writes a record of it:

  OUT/.zoom-enhance-library/done/<key>.json     {"source", "sha256", "output"}
  OUT/.zoom-enhance-library/failed/<key>.json   {"source", "reason"}

where <key> is a digest of the output's path relative to OUT. A photo is done
when its result exists and its record names the same source checksum: a
re-run skips it, and redoes a photo that changed, failed, or was stopped
between its result and its record (the result is then written again, as a
whole). Records are written atomically, so a run killed at any point leaves
records that are whole or absent. At the end the failures are gathered into
OUT/failed.jsonl, one {"source", "reason"} per line: the dead-letter file.
"""

import contextlib
import dataclasses
import json
import os

from zoom_enhance import errors
from zoom_enhance.imaging import files
from zoom_enhance.runtime import batch

LEDGER = '.zoom-enhance-library'
DEAD_LETTER = 'failed.jsonl'


@dataclasses.dataclass(frozen=True)
class Photo:
  """One photo of the library: where it is, where its result goes (absolute paths)."""

  source: str
  output: str


def _sources(src: str) -> list[str]:
  """SRC itself where it is a folder, else the photos its lines name (relative to the list's folder)."""
  if os.path.isdir(src):
    return [src]
  if not os.path.isfile(src):
    raise errors.ConfigError(f'{src}: no such folder or file list')
  base = os.path.dirname(os.path.abspath(src))
  try:
    with open(src, encoding='utf-8') as f:
      lines = [line.strip() for line in f]
  except (OSError, UnicodeDecodeError) as e:
    raise errors.ConfigError(f'{src}: cannot read the file list ({errors.first_line(e)})') from None
  paths = [os.path.join(base, line) for line in lines if line and not line.startswith('#')]
  if not paths:
    raise errors.ConfigError(f'{src}: the file list names no photos')
  return paths


def plan(src: str, out: str, ext: str = 'png') -> tuple[list[Photo], list[str]]:
  """(photos, problems) of a library run: enhance's pairing of inputs with outputs, the ledger's folder
  never read as input."""
  if os.path.exists(out) and not os.path.isdir(out):
    raise errors.ConfigError(f'{out}: exists and is not a folder; give the folder for the results')
  jobs, problems = batch.plan_jobs(_sources(src), out.rstrip(os.sep) + os.sep, ext)
  return [Photo(os.path.abspath(j.source), os.path.abspath(j.output)) for j in jobs], problems


def _key(out: str, output: str) -> str:
  # Of the path's bytes: a file name need not be valid UTF-8.
  return files.text_digest(os.fsencode(os.path.relpath(output, out)).hex())[:24]


def _record(out: str, kind: str, photo: Photo) -> str:
  return os.path.join(out, LEDGER, kind, _key(out, photo.output) + '.json')


def is_done(out: str, photo: Photo, sha256: str) -> bool:
  """Whether `photo`'s result exists and its record names this source checksum."""
  try:
    with open(_record(out, 'done', photo), encoding='utf-8') as f:
      record = json.load(f)
  except (OSError, ValueError):
    return False
  return record.get('sha256') == sha256 and os.path.isfile(photo.output)


def _put(path: str, record: dict) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  files.remove_stale_temps(path)  # of a run killed while writing it
  files.write_json(path, record)


def mark_done(out: str, photo: Photo, sha256: str) -> None:
  """Records a result written (after it was): a later run skips the photo while its source is unchanged."""
  rel = os.path.relpath(photo.output, out)
  _put(_record(out, 'done', photo), {'source': photo.source, 'sha256': sha256, 'output': rel})
  with contextlib.suppress(FileNotFoundError):
    os.remove(_record(out, 'failed', photo))


def mark_failed(out: str, photo: Photo, reason: str) -> None:
  """Records why a photo failed; it is tried again by the next run."""
  _put(_record(out, 'failed', photo), {'source': photo.source, 'reason': reason})


def count_done(out: str) -> int:
  """Results recorded so far (for progress: cheap, one directory listing)."""
  try:
    return sum(name.endswith('.json') for name in os.listdir(os.path.join(out, LEDGER, 'done')))
  except OSError:
    return 0


def write_dead_letter(out: str, photos: list[Photo]) -> list[dict]:
  """Gathers the failure records of `photos` into OUT/failed.jsonl (removed where none failed)."""
  failed = []
  for photo in photos:
    try:
      with open(_record(out, 'failed', photo), encoding='utf-8') as f:
        failed.append(json.load(f))
    except (OSError, ValueError):
      continue
  path = os.path.join(out, DEAD_LETTER)
  files.remove_stale_temps(path)
  if failed:
    text = ''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in failed)
    files.write_atomic(path, text.encode('utf-8'))
  else:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)
  return failed
