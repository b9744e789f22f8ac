"""Hostile inputs users found for `zoom-enhance enhance` (issue 30), run as the real command on real files.

Each case ends with one line on stderr, a non-zero exit and nothing left
behind, or works where it should. The command runs the embedded default
bundle in a fresh process (no trained test bundle needed), with the
bundle's own CPU variant (no timing of the candidates).
"""

import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from zoom_enhance import errors
from zoom_enhance.imaging import photo
from zoom_enhance.runtime import pipeline

ENV = dict(os.environ, PYTHONPATH=str(ROOT), ZOOM_ENHANCE_CPU_VARIANT='bundle')
PREFIX = 'zoom-enhance enhance: '


def command(*args) -> list:
  return [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', *map(str, args)]


def cli(*args, cwd=None, preexec_fn=None, timeout=300):
  """(exit status, stderr's non-empty lines) of the real command."""
  r = subprocess.run(
    command(*args),
    capture_output=True,
    text=True,
    env=ENV,
    cwd=cwd or ROOT,
    timeout=timeout,
    preexec_fn=preexec_fn,
  )
  return r.returncode, [line for line in r.stderr.splitlines() if line.strip()]


def one_line(rc, err, says: str, status: int = errors.EXIT_FAILED) -> str:
  assert rc == status and len(err) == 1 and err[0].startswith(PREFIX), (rc, err)
  assert 'Traceback' not in err[0] and says in err[0], err
  return err[0]


def small_photo(path, w=64, h=48, seed=0):
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)).save(path)


def test_a_fifo_is_refused_before_it_is_opened(tmp_path):
  """A FIFO never reaches Image.open (which would wait for a writer forever): given, it is one line; in a
  folder, it is skipped with its reason and the folder's photos are done."""
  fifo = tmp_path / 'pipe.jpg'
  os.mkfifo(fifo)
  rc, err = cli(fifo, '-o', tmp_path / 'out.png', timeout=60)
  one_line(rc, err, f'{fifo}: not a regular file but a named pipe (FIFO)')
  assert not (tmp_path / 'out.png').exists()
  with pytest.raises(photo.ImageError, match='not a regular file'):
    photo.open_photo(fifo)
  assert photo.upright_size(fifo) is None
  folder = tmp_path / 'photos'
  folder.mkdir()
  small_photo(folder / 'a.jpg')
  os.mkfifo(folder / 'b.jpg')
  rc, err = cli(folder, '-o', tmp_path / 'out', '--scale', '1', timeout=120)
  one_line(rc, err, f'{folder / "b.jpg"}: skipped, not a regular file but a named pipe (FIFO)')
  assert os.listdir(tmp_path / 'out') == ['a.png']


def test_thread_counts_above_a_sane_multiple_of_the_cores_are_refused(tmp_path):
  small_photo(tmp_path / 'a.jpg')
  limit = max(16, 4 * os.cpu_count())
  assert pipeline.max_threads() == limit
  rc, err = cli(tmp_path / 'a.jpg', '-o', tmp_path / 'out.png', '--threads', 1000, timeout=60)
  one_line(rc, err, f'--threads 1000: at most {limit} on this machine')
  with pytest.raises(errors.ConfigError, match=f'threads {limit + 1}: at most {limit}'):
    pipeline.Enhancer(threads=limit + 1)
  assert not (tmp_path / 'out.png').exists()


def _memory_limit(megabytes: int):
  def limit():
    resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))

  return limit


def test_a_decompression_bomb_under_a_memory_limit_is_one_line(tmp_path):
  """A 40000x40000 PNG of 200 KB (1.6 GB decoded) with --max-pixels raised, the process limited to 1200 MB
  of address space (the command needs about 600): the result's size is refused from the header, before
  decoding (a PNG's EXIF found without decoding it); a crop of it needs the whole decode, whose
  MemoryError is one line naming the file."""
  bomb = tmp_path / 'bomb.png'
  Image.new('1', (40000, 40000)).save(bomb)
  assert bomb.stat().st_size < 400_000
  out = tmp_path / 'out'
  out.mkdir()
  limited = _memory_limit(1200)
  rc, err = cli(bomb, '-o', out / 'r.png', '--max-pixels', 2_000_000_000, preexec_fn=limited)
  one_line(rc, err, f'{bomb}: the result would be 160000x160000, over 400 MP')
  rc, err = cli(bomb, '-o', out / 'r.png', '--max-pixels', 2_000_000_000, '--scale', '1', preexec_fn=limited)
  one_line(rc, err, f'{bomb}: the result would be 40000x40000, over 400 MP')
  rc, err = cli(
    bomb, '-o', out / 'r.png', '--max-pixels', 2_000_000_000, '--crop', '0,0,64,64', preexec_fn=limited
  )
  one_line(rc, err, f'{bomb}: not enough memory to decode its 40000x40000 pixels (1600 MP)')
  assert os.listdir(out) == []


def test_sigterm_during_a_folder_run_leaves_no_temporary_file(tmp_path):
  """SIGTERM once the first result is written: the run unwinds (the result being written is finished),
  exit 143 with one line, every file in the output folder a complete result and no .tmp file."""
  folder, out = tmp_path / 'photos', tmp_path / 'out'
  folder.mkdir()
  for i in range(8):
    small_photo(folder / f'p{i}.png', 256, 192, seed=i)
  p = subprocess.Popen(
    command(folder, '-o', out, '--scale', '4'), stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT
  )
  try:
    deadline = time.monotonic() + 240
    while not (out.is_dir() and any(n.endswith('.png') for n in os.listdir(out))):
      assert p.poll() is None and time.monotonic() < deadline, p.stderr.read()
      time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    err = [line for line in p.communicate(timeout=120)[1].splitlines() if line.strip()]
  finally:
    p.kill()
  one_line(p.returncode, err, 'terminated (SIGTERM)', errors.EXIT_PREEMPTED)
  names = os.listdir(out)
  assert not [n for n in names if n.startswith('.') or n.endswith('.tmp')], names
  assert 1 <= len(names) < 8, names
  for name in names:
    with Image.open(out / name) as im:
      im.load()
      assert im.size == (1024, 768)


def test_an_output_through_a_file_says_not_a_directory(tmp_path):
  small_photo(tmp_path / 'a.jpg')
  (tmp_path / 'some_file.png').write_text('x')
  for output in ('some_file.png/x.png', 'some_file.png/sub/x.png', 'some_file.png/folder'):
    rc, err = cli(tmp_path / 'a.jpg', '-o', output, cwd=tmp_path, timeout=60)
    one_line(rc, err, f'{output}: cannot write (Not a directory: some_file.png is not a folder)')
  assert sorted(os.listdir(tmp_path)) == ['a.jpg', 'some_file.png']


def test_a_254_byte_output_name_is_written(tmp_path):
  """Its temporary file's name is shortened (files.temp_name) to fit NAME_MAX, 255 bytes."""
  small_photo(tmp_path / 'a.jpg')
  name = 'é' * 125 + '.png'  # 254 bytes in UTF-8
  assert len(os.fsencode(name)) == 254
  rc, err = cli(tmp_path / 'a.jpg', '-o', tmp_path / name, '--scale', '1', timeout=120)
  assert rc == 0 and err == [], err
  assert sorted(os.listdir(tmp_path)) == ['a.jpg', name]
  with Image.open(tmp_path / name) as im:
    assert im.size == (64, 48)


def test_output_dash_is_refused(tmp_path):
  small_photo(tmp_path / 'a.jpg')
  rc, err = cli('a.jpg', '-o', '-', cwd=tmp_path, timeout=60)
  one_line(rc, err, '-o -: the results cannot go to standard output')
  assert os.listdir(tmp_path) == ['a.jpg']


def test_the_output_folder_may_be_above_the_input_folder(tmp_path):
  """`enhance ~/Pictures/trip -o ~/Pictures`: the results go there, beside the input folder."""
  photos = tmp_path / 'photos'
  (photos / 'sub').mkdir(parents=True)
  small_photo(photos / 'a.jpg')
  small_photo(photos / 'sub' / 'b.png')
  rc, err = cli('photos', '-o', '.', '--scale', '1', cwd=tmp_path, timeout=120)
  assert rc == 0 and err == [], err
  assert sorted(os.listdir(tmp_path)) == ['a.png', 'photos', 'sub']
  assert os.listdir(tmp_path / 'sub') == ['b.png']
  assert sorted(os.listdir(photos)) == ['a.jpg', 'sub'] and os.listdir(photos / 'sub') == ['b.png']
  with Image.open(tmp_path / 'sub' / 'b.png') as im:
    assert im.size == (64, 48)


def test_an_output_folder_that_would_mix_results_with_photos_is_refused(tmp_path):
  """The input folder itself; above it, where a result would overwrite a photo or land among them (the
  input folder has a sub-folder of its own name); a file result onto the input. Inside it, the folder's
  earlier results are not read as photos."""
  photos = tmp_path / 'photos'
  (photos / 'photos').mkdir(parents=True)
  small_photo(photos / 'a.png')
  small_photo(photos / 'photos' / 'a.png')
  for output, says in (
    ('photos', '-o photos: is the input folder photos'),
    ('.', '-o .: the result of photos/photos/a.png would overwrite the photo ./photos/a.png'),
  ):
    rc, err = cli('photos', '-o', output, '--scale', '1', cwd=tmp_path, timeout=60)
    one_line(rc, err, says)
  os.remove(photos / 'photos' / 'a.png')
  small_photo(photos / 'photos' / 'b.png')
  rc, err = cli('photos', '-o', '.', '--scale', '1', cwd=tmp_path, timeout=60)
  one_line(
    rc, err, 'the result of photos/photos/b.png would be ./photos/b.png, among the photos of the input'
  )
  rc, err = cli('a.png', '-o', '.', '--scale', '1', cwd=photos, timeout=60)
  one_line(rc, err, '-o .: the result of a.png would overwrite the photo ./a.png')
  assert sorted(os.listdir(tmp_path)) == ['photos']
  for _ in range(2):
    rc, err = cli('photos', '-o', 'photos/enhanced', '--scale', '1', cwd=tmp_path, timeout=120)
    assert rc == 0 and err == [], err
  assert sorted(os.listdir(photos / 'enhanced')) == ['a.png', 'photos']
  assert os.listdir(photos / 'enhanced' / 'photos') == ['b.png']
