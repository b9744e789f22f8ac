"""`zoom-enhance enhance-library` on Beam's direct runner with 2 worker processes: real photo trees, a
corrupt and a too-large photo among them, a run killed with SIGKILL and run again.

Beam lives in the `beam` extra, beside the runtime (not in `test`: its pins
would move TensorFlow's protobuf): CI runs this file in an environment of
its own (`pip install -e '.[beam]'`) with ZOOM_ENHANCE_BEAM_TESTS=require;
elsewhere it skips without apache_beam, and says so.
"""

import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from zoom_enhance.imaging import files
from zoom_enhance.library import ledger

CHELSEA = pathlib.Path(files.asset_path('chelsea.jpg'))


@pytest.fixture(autouse=True)
def _beam():
  if importlib.util.find_spec('apache_beam') is None:
    if os.environ.get('ZOOM_ENHANCE_BEAM_TESTS') == 'require':
      pytest.fail(
        "apache_beam not installed, though ZOOM_ENHANCE_BEAM_TESTS=require: pip install -e '.[beam]'"
      )
    pytest.skip("apache_beam not installed (pip install -e '.[beam]')")


def _command(*args) -> list[str]:
  return [sys.executable, '-m', 'zoom_enhance.cli', *map(str, args)]


def _run(*args, timeout=300):
  r = subprocess.run(_command(*args), capture_output=True, text=True, timeout=timeout)
  return r.returncode, r.stdout, r.stderr


def _crop(path: pathlib.Path, box, fmt=None) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  with Image.open(CHELSEA) as im:
    im.convert('RGB').crop(box).save(path, format=fmt)


def _leftovers(folder: pathlib.Path) -> list[str]:
  """Temporary files (write_atomic's hidden .tmp) anywhere under `folder`."""
  return [str(p) for p in folder.rglob('*') if p.name.endswith('.tmp')]


def _pixels(path) -> np.ndarray:
  with Image.open(path) as im:
    return np.asarray(im.convert('RGB'))


def test_a_tree_with_bad_photos_is_written_once_like_enhance_and_the_bad_ones_are_dead_letters(tmp_path):
  src, out, ref = tmp_path / 'library', tmp_path / 'out', tmp_path / 'ref'
  _crop(src / 'a.jpg', (100, 60, 160, 100), 'JPEG')
  _crop(src / 'trip' / 'day1' / 'b.png', (200, 100, 250, 150))
  _crop(src / 'trip' / 'c.png', (10, 10, 58, 42))
  (src / 'trip' / 'day1' / 'corrupt.jpg').write_bytes(b'not a photo at all')
  _crop(src / 'trip' / 'large.png', (0, 0, 200, 150))  # 30,000 pixels, over --max-pixels
  options = ['--scale', 2, '--seed', 7, '--max-pixels', 10000]

  rc, stdout, stderr = _run('enhance-library', src, out, '--workers', 2, *options)
  assert rc == 1, stderr[-2000:]
  assert '5 photos: 3 done, 0 skipped (done before), 2 failed' in stdout
  written = sorted(str(p.relative_to(out)) for p in out.rglob('*.png') if ledger.LEDGER not in str(p))
  assert written == ['a.png', 'trip/c.png', 'trip/day1/b.png']
  # Identical to enhance's output for the same seed (one tile thread each, as each worker here).
  subprocess.run(_command('enhance', src, '-o', ref, '--threads', 1, *options), capture_output=True)
  for name in written:
    np.testing.assert_array_equal(_pixels(out / name), _pixels(ref / name), err_msg=name)
  dead = [json.loads(line) for line in (out / ledger.DEAD_LETTER).read_text().splitlines()]
  reasons = {pathlib.Path(r['source']).name: r['reason'] for r in dead}
  assert set(reasons) == {'corrupt.jpg', 'large.png'}
  assert 'not an image file' in reasons['corrupt.jpg'] and '--max-pixels' in reasons['large.png']
  assert all(r['reason'] in stderr for r in dead) and 'Traceback' not in stderr
  assert not _leftovers(out)

  # Run again: the done photos are skipped (not rewritten), the bad ones tried and listed again.
  mtimes = {name: (out / name).stat().st_mtime_ns for name in written}
  rc, stdout, _ = _run('enhance-library', src, out, '--workers', 2, *options)
  assert rc == 1 and '5 photos: 0 done, 3 skipped (done before), 2 failed' in stdout
  assert mtimes == {name: (out / name).stat().st_mtime_ns for name in written}

  # A changed source (another checksum) is enhanced again; a fixed one leaves the dead letters.
  _crop(src / 'a.jpg', (120, 60, 180, 100), 'JPEG')
  (src / 'trip' / 'day1' / 'corrupt.jpg').unlink()
  (src / 'trip' / 'large.png').unlink()
  rc, stdout, _ = _run('enhance-library', src, out, '--workers', 2, *options)
  assert rc == 0 and '3 photos: 1 done, 2 skipped (done before), 0 failed' in stdout
  assert not (out / ledger.DEAD_LETTER).exists()


def test_a_run_killed_midway_resumes_without_losing_or_redoing_a_result(tmp_path):
  src, out = tmp_path / 'album', tmp_path / 'out'
  count = 12
  for i in range(count):
    _crop(src / f'{i:02d}.png', (i * 10, i * 5, i * 10 + 240, i * 5 + 160))
  args = _command('enhance-library', src, out, '--workers', 2, '--scale', 4)
  proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    deadline = time.monotonic() + 240
    while ledger.count_done(str(out)) < 3 and proc.poll() is None and time.monotonic() < deadline:
      time.sleep(0.05)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its Beam workers, as a crash would
    proc.wait()
  recorded = [p for p in (out / ledger.LEDGER / 'done').glob('*.json')]
  assert 3 <= len(recorded) < count, 'the run was not stopped midway: make the photos larger'
  done_before = {
    json.loads(p.read_text())['output']: (out / json.loads(p.read_text())['output']) for p in recorded
  }
  mtimes = {name: path.stat().st_mtime_ns for name, path in done_before.items()}

  rc, stdout, stderr = _run('enhance-library', src, out, '--workers', 2, '--scale', 4)
  assert rc == 0, stderr[-2000:]
  done_now = count - len(done_before)
  assert f'{count} photos: {done_now} done, {len(done_before)} skipped (done before), 0 failed' in stdout
  assert mtimes == {name: path.stat().st_mtime_ns for name, path in done_before.items()}
  for i in range(count):
    with Image.open(out / f'{i:02d}.png') as im:
      im.load()  # whole, not truncated
      assert im.size == (960, 640)
  assert not _leftovers(out)
  assert sorted(p.name for p in out.iterdir()) == [ledger.LEDGER] + [f'{i:02d}.png' for i in range(count)]


def test_enhance_library_refuses_bad_options_in_one_line(tmp_path):
  src = tmp_path / 'library'
  _crop(src / 'a.png', (0, 0, 40, 30))
  for args, message in (
    ((tmp_path / 'nowhere', tmp_path / 'out'), 'no such folder or file list'),
    ((src, tmp_path / 'out', '--detail', 2), '--detail 2: must be in [0, 1]'),
    ((src, tmp_path / 'out', '--workers', 0), '--workers'),
  ):
    rc, _, stderr = _run('enhance-library', *args)
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert rc != 0 and len(lines) == 1 and message in lines[0], stderr
  assert not (tmp_path / 'out').exists()


def test_a_file_list_names_the_photos(tmp_path):
  _crop(tmp_path / 'photos' / 'one.png', (0, 0, 40, 30))
  _crop(tmp_path / 'photos' / 'two.png', (50, 50, 90, 80))
  listing = tmp_path / 'list.txt'
  listing.write_text('# my picks\nphotos/one.png\n\nphotos/two.png\n')
  rc, stdout, stderr = _run('enhance-library', listing, tmp_path / 'out', '--workers', 1, '--scale', 2)
  assert rc == 0, stderr[-2000:]
  assert '2 photos: 2 done' in stdout
  assert _pixels(tmp_path / 'out' / 'two.png').shape == (60, 80, 3)
