"""`zoom-enhance enhance` over many files: inputs paired with outputs, one line per failure, progress bars.

A failure (unreadable file, bad crop, unwritable output) is reported as one
line naming the file and the rest of the batch goes on; the exit status says
whether everything was written. Outputs are encoded in memory and renamed
into place, so a failed file leaves nothing behind.
"""

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading

import tqdm

from zoom_enhance import errors
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo as photo_lib
from zoom_enhance.imaging import save
from zoom_enhance.runtime import geometry
from zoom_enhance.runtime import pipeline

logger = logging.getLogger('zoom_enhance.runtime')

PROG = 'zoom-enhance enhance'


@dataclasses.dataclass(frozen=True)
class Job:
  source: str
  output: str


def _key(path) -> str:
  """A path as compared with others: absolute, symbolic links resolved, case folded where the OS does."""
  return os.path.normcase(os.path.realpath(path))


def _inside(key: str, folder_key: str) -> bool:
  return key == folder_key or key.startswith(folder_key.rstrip(os.sep) + os.sep)


def _check_output(output: str) -> None:
  """Refuses, before any work, an output that names no place to write."""
  if output == '-':
    raise errors.ConfigError(
      '-o -: the results cannot go to standard output; give a file or a folder (./- for a folder named -)'
    )
  blocker = files.file_in_the_way(output)
  if blocker:
    raise errors.ConfigError(f'{output}: cannot write (Not a directory: {blocker} is not a folder)')


def _scan(item: str, out_key: str, problems: list) -> list:
  """(path, stem) of each photo under the folder `item`, less those inside the output folder (an earlier
  run's results); a FIFO or device named like a photo is skipped with a line in `problems`."""
  found, special = [], 0
  results = out_key if _inside(out_key, _key(item)) else None
  for path in files.list_images(item):
    if results and _inside(_key(path), results):
      continue
    kind = files.special_kind(path)
    if kind:
      special += 1
      problems.append(f'{path}: skipped, not a regular file but {kind}')
    else:
      found.append((path, os.path.splitext(os.path.relpath(path, item))[0]))
  if not found and not special:
    problems.append(f'{item}: no images in this folder')
  return found


def _sources(inputs, output: str) -> tuple[list, list, list]:
  """(sources as (path, stem), problems, input folders) of the command's inputs."""
  problems, sources, folders = [], [], []
  out_key = _key(output)
  for item in inputs:
    if os.path.isdir(item):
      if out_key == _key(item):
        raise errors.ConfigError(
          f'-o {output}: is the input folder {item}; the results would mix with the photos (and be read '
          'as inputs next time): choose another output folder (above it or beside it will do)'
        )
      folders.append(item)
      sources += _scan(item, out_key, problems)
    elif kind := files.special_kind(item):
      problems.append(f'{item}: not a regular file but {kind}; give a photo file or a folder')
    elif os.path.exists(item):
      sources.append((item, os.path.splitext(os.path.basename(item))[0]))
    else:
      problems.append(f'{item}: no such file or directory')
  return sources, problems, folders


def _check_results(jobs, sources, folders, output: str) -> None:
  """Refuses a folder run whose results would overwrite a photo, or land among the photos of an input
  folder that does not hold the output folder (-o above the input folder, where the input folder has a
  sub-folder of its own name)."""
  photos = {_key(src) for src, _ in sources}
  out_key = _key(output)
  roots = [(folder, _key(folder)) for folder in folders if not _inside(out_key, _key(folder))]
  for job in jobs:
    key = _key(job.output)
    if key in photos:
      raise errors.ConfigError(
        f'-o {output}: the result of {job.source} would overwrite the photo {job.output}; choose another '
        'output folder (or --ext)'
      )
    inside = next((folder for folder, root in roots if _inside(key, root)), None)
    if inside:
      raise errors.ConfigError(
        f'-o {output}: the result of {job.source} would be {job.output}, among the photos of the input '
        f'folder {inside}; choose another output folder'
      )


def plan_jobs(inputs, output: str, ext: str = 'png') -> tuple[list[Job], list[str]]:
  """Pairs input files with output paths: (jobs, problems), one line per problem.

  One input file and an output with an image extension: that file. Otherwise
  the output is a folder and each image keeps its stem (and, from an input
  folder, its sub-folder) with extension `ext`. The output folder may be
  anywhere but the input folder itself: above it, beside it, or inside it
  (its files are then not read as inputs).
  """
  ext = ext.lower().lstrip('.')
  if ext not in save.SAVE_FORMATS:
    raise errors.ConfigError(f'--ext {ext}: choose one of {", ".join(save.SAVE_FORMATS)}')
  _check_output(output)
  sources, problems, folders = _sources(inputs, output)
  if os.path.splitext(output)[1] != '' and not os.path.isdir(output):
    save.format_for(output)  # an unknown extension is an error before any work
    if len(inputs) > 1 or folders:
      raise errors.ConfigError(f'-o {output}: several inputs need an output folder, not a file')
    if any(_key(src) == _key(output) for src, _ in sources):
      raise errors.ConfigError(f'-o {output}: is the input itself; choose another output file')
    return [Job(src, output) for src, _ in sources], problems
  if os.path.exists(output) and not os.path.isdir(output):
    raise errors.ConfigError(
      f'-o {output}: exists and is not a folder; give a folder, or a file name ending in '
      + ', '.join(f'.{e}' for e in save.SAVE_FORMATS)
    )
  jobs, taken = [], {}
  for src, stem in sources:
    dst = os.path.join(output, f'{stem}.{ext}')
    key = _key(dst)
    if key in taken:
      problems.append(f'{src}: skipped, its output {dst} is already the output of {taken[key]}')
    else:
      taken[key] = src
      jobs.append(Job(src, dst))
  _check_results(jobs, sources, folders, output)
  return jobs, problems


def _fail(message: str):
  tqdm.tqdm.write(f'{PROG}: error: {message}', file=sys.stderr)


def _name_file(err: Exception, path: str) -> str:
  text = errors.first_line(err, limit=1000)
  return text if text.startswith(path) else f'{path}: {text}'


def _write(job: Job, image, quality: int, png_level: int) -> str | None:
  """Writes one result (atomically: save.save_photo); the one-line error, or None."""
  try:
    os.makedirs(os.path.dirname(os.path.abspath(job.output)), exist_ok=True)
    save.save_photo(job.output, image, quality=quality, png_level=png_level)
  except OSError as e:  # from makedirs: a file where a folder should be is 'File exists' there
    return f'{job.output}: {save.cannot_write(job.output, e)}'
  except errors.ZoomEnhanceError as e:
    return _name_file(e, job.output)
  logger.info('%s -> %s: %s', job.source, job.output, image.info['zoom_enhance'].summary())
  return None


def run_jobs(
  jobs,
  enhancer: pipeline.Enhancer,
  *,
  quality: int = 95,
  png_level: int = save.PNG_LEVEL,
  on_result=None,
  **enhance_options,
) -> int:
  """Enhances and writes every job; returns how many failed.

  `on_result(job, report, error)`, where given, hears of each job once it is
  done, in the jobs' order: its pipeline.Report (None where the enhancement
  failed) and its one-line error (None where the result was written).

  Each result is encoded and written on a thread of its own while the next
  photo is enhanced (zlib and libjpeg release the GIL): on a folder at x4
  writing the PNGs took a fifth of the time. At most one result waits to be
  written, so memory holds two results at most.
  """
  from concurrent import futures

  failed = 0
  many = len(jobs) > 1
  progress = tqdm.tqdm(total=len(jobs), unit='file', disable=None if many else True, dynamic_ncols=True)
  writing = None
  done = on_result or (lambda job, report, error: None)
  pending = None  # (job, report) of the result being written

  def written():
    nonlocal failed, writing
    if writing is not None:
      error, writing = writing.result(), None
      if error:
        failed += 1
        _fail(error)
      done(*pending, error)

  with futures.ThreadPoolExecutor(1, thread_name_prefix='zoom-enhance-write') as writer:
    try:
      for job in jobs:
        bar = None

        def on_start(count, job=job):
          nonlocal bar
          bar = tqdm.tqdm(
            total=count,
            unit='tile',
            desc=os.path.basename(job.source),
            leave=False,
            disable=None,
            position=1 if many else 0,
            dynamic_ncols=True,
          )

        files.remove_stale_temps(job.output)  # left by a run killed while writing this output
        try:
          image = enhancer.enhance(
            job.source,
            on_start=on_start,
            on_tile=lambda: bar.update(),
            check_output=lambda wh, job=job: save.check_output_size(job.output, wh),
            **enhance_options,
          )
        except errors.USER_ERRORS as e:
          error = _name_file(e, job.source)
          written()  # the result before it is done first: on_result hears of the jobs in order
          failed += 1
          _fail(error)
          done(job, None, error)
          continue
        except MemoryError:
          error = f'{job.source}: not enough memory to enhance it'
          written()  # the result before it is done first: on_result hears of the jobs in order
          failed += 1
          _fail(error)
          done(job, None, error)
          continue
        finally:
          if bar is not None:
            bar.close()
          progress.update()
        written()
        writing = writer.submit(_write, job, image, quality, png_level)
        pending = (job, image.info['zoom_enhance'])
      written()
    finally:
      if writing is not None:
        writing.cancel()
  progress.close()
  return failed


@contextlib.contextmanager
def _sigterm_unwinds():
  """Meanwhile a SIGTERM raises errors.Terminated in the main thread, which unwinds the run: the result
  being written is finished and renamed (the writer's thread is waited for), nothing else is started, and
  no temporary file is left (killed outright, the writer left its .tmp file behind). Later SIGTERMs are
  ignored while it unwinds. Off the main thread (no handler can be set there) it does nothing."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return

  def terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise errors.Terminated()

  previous = signal.signal(signal.SIGTERM, terminate)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def check_options(
  *,
  crop=None,
  scale=None,
  size=None,
  strength: float = 1.0,
  detail: float | None = None,
  seed: int = 0,
  max_pixels=None,
) -> dict:
  """Enhancer.enhance's options, parsed and checked before any work is done."""
  if isinstance(crop, str):
    crop = geometry.parse_crop(crop)
  if isinstance(size, str):
    size = geometry.parse_size(size)
  if scale is not None and not scale > 0:
    raise errors.ConfigError(f'--scale {scale:g}: must be positive')
  if not 0.0 <= strength <= 1.0:
    raise errors.ConfigError(f'--strength {strength:g}: must be in [0, 1]')
  if detail is not None and not 0.0 <= detail <= 1.0:
    raise errors.ConfigError(f'--detail {detail:g}: must be in [0, 1] (0 fidelity, 1 all the drawn detail)')
  if max_pixels is not None and max_pixels < 1:
    raise errors.ConfigError(f'--max-pixels {max_pixels}: must be at least 1')
  if seed < 0:
    raise errors.ConfigError(f'--seed {seed}: must be >= 0')
  return dict(
    crop=crop,
    scale=scale,
    size=size,
    strength=strength,
    detail=detail,
    seed=seed,
    max_pixels=max_pixels or photo_lib.MAX_PIXELS,
  )


def enhance_files(
  inputs,
  output: str,
  *,
  ext: str = 'png',
  quality: int = 95,
  png_level: int = save.PNG_LEVEL,
  enhancer_options=None,
  on_result=None,
  **enhance_options,
) -> int:
  """The whole command: check, plan, load the bundle once, enhance each file. Returns the exit status.

  `on_result`: called once per planned file as it is done (run_jobs).
  """
  options = check_options(**enhance_options)
  threads = (enhancer_options or {}).get('threads')
  if threads is not None and threads < 1:
    raise errors.ConfigError(f'--threads {threads}: must be at least 1')
  pipeline.check_threads(threads)
  if not 1 <= quality <= 100:
    raise errors.ConfigError(f'--quality {quality}: must be in [1, 100]')
  if not 0 <= png_level <= 9:
    raise errors.ConfigError(f'--png-level {png_level}: must be in [0, 9] (9: the smallest file)')
  jobs, problems = plan_jobs(inputs, output, ext)
  for problem in problems:
    _fail(problem)
  if not jobs:
    return 1
  with _sigterm_unwinds(), pipeline.Enhancer(**(enhancer_options or {})) as enhancer:
    failed = run_jobs(jobs, enhancer, quality=quality, png_level=png_level, on_result=on_result, **options)
  if failed or problems:
    logger.info('%d of %d file(s) failed', failed + len(problems), len(jobs) + len(problems))
    return 1
  return 0
