"""Multi-process training on the JAX distributed runtime, and its faults: real local runs of the tiny config.

Every run here is real: N processes joined through jax.distributed (gloo CPU
collectives, K simulated devices each) started by zoom_enhance.training.launcher.
Each spawned process is bounded by a timeout and killed if the test fails.
To fit a 2-core CI machine the runs share the session's compilation cache
and compile with XLA's LLVM backend at -O0 (conftest.jax_env).
"""

import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import typing

import numpy as np
import pytest
from conftest import ROOT
from conftest import jax_env
from conftest import load_config

from zoom_enhance import cli
from zoom_enhance.data import pipeline
from zoom_enhance.data import sources
from zoom_enhance.training import checkpoint
from zoom_enhance.training import launcher
from zoom_enhance.training import metrics_log

STEPS = 12
CHECKPOINT_EVERY = 4
# Two runs of the same global computation on differently split devices agree this closely
# (measured: 1.2e-7, float32 rounding of a different reduction order).
RTOL = 1e-6


@pytest.fixture(scope='module')
def cache_dir():
  """The session's compilation cache (conftest), which every process started here shares."""
  return os.environ['JAX_COMPILATION_CACHE_DIR']


def _env(cache_dir, devices=1):
  """For a CLI run with `devices` simulated devices; the launcher sets each process's own."""
  return jax_env(devices, JAX_COMPILATION_CACHE_DIR=str(cache_dir))


def _train_args(workdir, photo_dir, *extra):
  return [
    'train',
    '--config',
    str(ROOT / 'configs' / 'tiny.py'),
    '--workdir',
    str(workdir),
    f'--config.train.num_steps={STEPS}',
    f'--config.data.source=folder:{photo_dir}',
    '--config.data.patch_size=32',
    '--config.train.log_every=1',
    f'--config.train.checkpoint_every={CHECKPOINT_EVERY}',
    '--config.train.sample_every=0',
    '--config.train.num_samples=2',
    '--config.diffusion.sample_steps=2',
    '--init_timeout=120',
    '--heartbeat_timeout=15',
    '--shutdown_timeout=60',
    *extra,
  ]


class Started:
  """A process whose merged output is collected by a thread, killed (with its group) on exit."""

  def __init__(self, argv, env):
    self.proc = subprocess.Popen(
      argv,
      env=env,
      cwd=ROOT,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
      start_new_session=True,
    )
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line)

  @property
  def output(self) -> str:
    return ''.join(self.lines)

  def child_pids(self) -> dict:
    """{rank: pid} as the launcher reports them."""
    return {int(r): int(p) for r, p in re.findall(r'\[launcher\] rank (\d+): pid (\d+)', self.output)}

  def wait(self, timeout: float) -> int:
    try:
      self.proc.wait(timeout)
    except subprocess.TimeoutExpired:
      pytest.fail(f'still running after {timeout} s:\n{self.output[-3000:]}')
    self._reader.join(timeout=10)
    return self.proc.returncode

  def wait_for(self, condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not condition():
      if self.proc.poll() is not None:
        pytest.fail(f'exited ({self.proc.returncode}) before {what}:\n{self.output[-3000:]}')
      if time.monotonic() > deadline:
        pytest.fail(f'no {what} after {timeout} s:\n{self.output[-3000:]}')
      time.sleep(0.05)

  def kill(self):
    # The launcher's children die with it (PR_SET_PDEATHSIG); kill them too in case.
    pids = list(self.child_pids().values()) if self.proc.poll() is None else []
    for pid in [self.proc.pid, *pids]:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    self.proc.wait(30)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.kill()


def _launch(args, cache_dir, num_processes=2, devices=2, grace=20) -> Started:
  argv = [
    sys.executable,
    '-m',
    'zoom_enhance.training.launcher',
    '--num_processes',
    str(num_processes),
    '--devices_per_process',
    str(devices),
    '--grace',
    str(grace),
    '--',
    *args,
  ]
  return Started(argv, _env(cache_dir))


def _cli(args, cache_dir, devices) -> Started:
  return Started([sys.executable, '-m', 'zoom_enhance.cli', *args], _env(cache_dir, devices))


def _rows(workdir):
  return [r for r in metrics_log.read_metrics(workdir) if 'train/loss' in r]


def _last_step(workdir) -> int:
  rows = _rows(workdir) if os.path.exists(os.path.join(workdir, 'metrics.jsonl')) else []
  return rows[-1]['step'] if rows else 0


def _complete_checkpoints(workdir):
  """Steps with a finished checkpoint directory (Orbax renames a step's directory when done)."""
  names = (
    os.listdir(checkpoint.checkpoint_dir(workdir))
    if os.path.isdir(checkpoint.checkpoint_dir(workdir))
    else []
  )
  return sorted(int(n) for n in names if n.isdigit())


def _alive(pid) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A zombie is dead too.
  with open(f'/proc/{pid}/stat') as f:
    return f.read().split(') ')[1][0] != 'Z'


# --- the data split ------------------------------------------------------------


def test_processes_load_disjoint_shares_of_every_global_batch(photo_dir):
  cfg = load_config('tiny').data
  source = sources.make_source(f'folder:{photo_dir}', cfg)
  for count in (1, 2, 4):
    iterators = [
      pipeline.TrainIterator(
        source, cfg, global_batch_size=8, seed=0, start_step=3, process_index=p, process_count=count
      )
      for p in range(count)
    ]
    for step in (3, 4, 10):
      shares = [list(it.example_indices(step)) for it in iterators]
      assert sorted(sum(shares, [])) == list(range(step * 8, (step + 1) * 8))  # no gaps, no repeats
      assert all(len(s) == 8 // count for s in shares)
    for it in iterators:
      it.close()


# --- the launcher, with stand-in processes (no JAX) ----------------------------


def _fake_launch(tmp_path, child_code, grace, cache_dir) -> Started:
  child = tmp_path / 'child.py'
  child.write_text(textwrap.dedent(child_code))
  code = (
    'import sys; from zoom_enhance.training import launcher; '
    f'sys.exit(launcher.launch([sys.executable, {str(child)!r}], num_processes=2, '
    f'devices_per_process=1, grace={grace}))'
  )
  return Started([sys.executable, '-c', code], _env(cache_dir))


def test_launcher_prefixes_output_and_stops_the_others_after_a_failure(tmp_path, cache_dir):
  child = """
      import sys, time
      rank = int(sys.argv[sys.argv.index('--process_id') + 1])
      print('hello from', rank, 'with', sys.argv[sys.argv.index('--num_processes') + 1], flush=True)
      if rank == 1:
          time.sleep(0.5)
          sys.exit(3)
      time.sleep(600)
  """
  with _fake_launch(tmp_path, child, grace=2, cache_dir=cache_dir) as run:
    t0 = time.monotonic()
    assert run.wait(timeout=30) == 3
    assert time.monotonic() - t0 < 20
  out = run.output
  assert '[rank 0] hello from 0 with 2' in out and '[rank 1] hello from 1 with 2' in out
  assert 'rank 1 exited with status 3' in out and 'killing rank(s) 0' in out
  assert not any(_alive(pid) for pid in run.child_pids().values())


def test_launcher_kills_the_others_at_once_when_one_is_killed(tmp_path, cache_dir):
  child = """
      import os, signal, sys, time
      signal.signal(signal.SIGTERM, signal.SIG_IGN)
      rank = int(sys.argv[sys.argv.index('--process_id') + 1])
      print('up', flush=True)
      if rank == 1:
          time.sleep(0.5)
          os.kill(os.getpid(), signal.SIGKILL)
      time.sleep(600)
  """
  with _fake_launch(tmp_path, child, grace=600, cache_dir=cache_dir) as run:
    t0 = time.monotonic()
    assert run.wait(timeout=30) == 128 + signal.SIGKILL
    assert time.monotonic() - t0 < 15  # not the 600 s grace
  assert 'rank 1 killed by SIGKILL; stopping the others now' in run.output


def test_launcher_passes_sigterm_on_and_exits_143(tmp_path, cache_dir):
  child = """
      import signal, sys, time
      def stop(signum, frame):
          print('saving and stopping', flush=True)
          sys.exit(143)
      signal.signal(signal.SIGTERM, stop)
      print('ready', flush=True)
      time.sleep(600)
  """
  with _fake_launch(tmp_path, child, grace=20, cache_dir=cache_dir) as run:
    run.wait_for(lambda: run.output.count('ready') == 2, 30, 'two ready children')
    run.proc.send_signal(signal.SIGTERM)
    assert run.wait(timeout=30) == 143
  assert run.output.count('saving and stopping') == 2


# --- real runs ---------------------------------------------------------------


@pytest.fixture(scope='module')
def one_process_run(photo_dir, tmp_path_factory):
  """The reference: 1 process x 4 simulated devices (this test process's own)."""
  workdir = tmp_path_factory.mktemp('one_process')
  assert cli.main(['zoom-enhance', *_train_args(workdir, photo_dir)]) == 0
  return workdir


class Stage(typing.NamedTuple):
  """One launch of the two-process run: its exit status, output, last logged step and checkpoints."""

  code: int
  output: str
  last_step: int
  checkpoints: list
  stopped_after: float = 0.0
  pids: dict = {}


@pytest.fixture(scope='module')
def two_process_run(photo_dir, tmp_path_factory, cache_dir):
  """The same run as 2 processes x 2 simulated devices through the local launcher, stopped twice on the
  way as clusters stop jobs, and each time launched again with the same command:
  1. a SIGTERM to process 1 only (a preemption notice): both save at the same step and exit 143;
  2. resumed, then process 1 killed with SIGKILL (a crash) once a later checkpoint is complete;
  3. resumed from the last complete checkpoint, to the end.
  """
  workdir = tmp_path_factory.mktemp('two_processes')
  args = _train_args(workdir, photo_dir)

  def stage(run, code, **extra):
    return Stage(code, run.output, _last_step(workdir), _complete_checkpoints(workdir), **extra)

  with _launch(args, cache_dir) as run:
    run.wait_for(lambda: _last_step(workdir) >= 1, 400, 'step 1')
    os.kill(run.child_pids()[1], signal.SIGTERM)  # the notice reaches one process only
    preempted = stage(run, run.wait(timeout=120))
  assert preempted.code == 143 and preempted.checkpoints, preempted.output[-3000:]
  resumed_from = max(preempted.checkpoints)

  def two_steps_past_a_new_checkpoint():
    newer = [s for s in _complete_checkpoints(workdir) if s > resumed_from]
    return bool(newer) and _last_step(workdir) >= newer[0] + 2

  with _launch(args, cache_dir) as run:
    run.wait_for(two_steps_past_a_new_checkpoint, 400, 'a checkpoint after the resumption')
    pids = run.child_pids()
    os.kill(pids[1], signal.SIGKILL)
    t0 = time.monotonic()
    code = run.wait(timeout=90)
    killed = stage(run, code, stopped_after=time.monotonic() - t0, pids=pids)

  with _launch(args, cache_dir) as run:
    finished = stage(run, run.wait(timeout=500))
  assert finished.code == 0, finished.output[-3000:]
  return workdir, {'preempted': preempted, 'killed': killed, 'finished': finished}


def test_sigterm_to_one_process_checkpoints_and_every_process_exits_cleanly(two_process_run):
  workdir, stages = two_process_run
  run = stages['preempted']
  line = r'\[rank {}\] .*preempted \(SIGTERM\): saved a checkpoint at step (\d+)'
  saved = [int(re.search(line.format(rank), run.output)[1]) for rank in (0, 1)]
  assert saved[0] == saved[1] == run.last_step == max(run.checkpoints), run.output[-3000:]
  assert saved[0] < STEPS
  assert 'Traceback' not in run.output and 'killing' not in run.output
  assert f'resuming from step {saved[0]} ' in stages['killed'].output


def test_kill_9_of_one_process_stops_the_run_and_a_relaunch_resumes(two_process_run):
  workdir, stages = two_process_run
  run = stages['killed']
  assert run.code != 0, run.output[-3000:]
  assert run.stopped_after < 60, run.output[-3000:]
  assert not any(_alive(pid) for pid in run.pids.values())
  last = max(run.checkpoints)
  # At most the steps since the last complete checkpoint are lost (a save may still be under way).
  assert run.last_step < STEPS and 0 <= run.last_step - last < 2 * CHECKPOINT_EVERY
  assert last > stages['preempted'].last_step
  assert f'resuming from step {last} ' in stages['finished'].output


def test_two_processes_give_the_losses_of_one(one_process_run, two_process_run):
  """Through both stops and resumptions, every step's loss is the one-process run's."""
  workdir, stages = two_process_run
  one, two = _rows(one_process_run), _rows(workdir)
  preempted_at, killed_at = stages['preempted'].last_step, stages['killed'].last_step
  resumed_at = max(stages['killed'].checkpoints)
  # Process 0 alone wrote the metrics: each launch's steps once.
  expected = [*range(1, killed_at + 1), *range(resumed_at + 1, STEPS + 1)]
  assert preempted_at < killed_at and [r['step'] for r in two] == expected
  reference = {r['step']: r for r in one}
  for key in ('train/loss', 'train/grad_norm'):
    np.testing.assert_allclose([r[key] for r in two], [reference[r['step']][key] for r in two], rtol=RTOL)
  assert os.listdir(os.path.join(workdir, 'samples')) == [f'step_{STEPS:06d}.png']
  # Only process 0 logs once joined (the others show warnings and errors only).
  output = stages['finished'].output
  assert f'INFO step {STEPS}/{STEPS}' in output
  rank1_info = re.findall(r'\[rank 1\] .* INFO (.*)', output)
  assert rank1_info == ['process 1 of 2 joined the distributed runtime'], rank1_info
  # Both processes wrote their part of each checkpoint; the last three are kept.
  assert _complete_checkpoints(workdir)[-2:] == [STEPS - CHECKPOINT_EVERY, STEPS]
  assert len(_complete_checkpoints(workdir)) == 3
  # Each sealed, the one written just before the kill too (its checksums were recorded when it restored).
  for step in _complete_checkpoints(workdir):
    assert os.path.exists(os.path.join(workdir, checkpoint.CHECKSUMS, f'{step}.json'))
    assert checkpoint.verify(str(workdir), step) is None
  state = os.path.join(checkpoint.step_dir(workdir, STEPS), 'state')
  assert {'ocdbt.process_0', 'ocdbt.process_1'} <= set(os.listdir(state))


def test_nan_loss_stops_every_process_and_keeps_the_last_good_checkpoint(photo_dir, tmp_path, cache_dir):
  args = _train_args(
    tmp_path,
    photo_dir,
    '--config.train.lr=1e30',
    '--config.train.warmup_steps=1',
    '--config.train.checkpoint_every=1',
  )
  with _launch(args, cache_dir) as run:
    assert run.wait(timeout=400) == 1, run.output[-3000:]
  errors = re.findall(
    r'\[rank (\d)\] zoom-enhance train: error: train/loss became (?:nan|inf) at '
    r'step (\d+); stopping, the last good checkpoint \(step (\d+)\) is kept',
    run.output,
  )
  assert sorted(rank for rank, _, _ in errors) == ['0', '1'], run.output[-3000:]
  bad, kept = int(errors[0][1]), int(errors[0][2])
  assert kept == bad - 1 and max(_complete_checkpoints(tmp_path)) == kept
  assert 'Traceback' not in run.output


# --- damaged checkpoints ---------------------------------------------------------


def _damage(workdir, step, how):
  state = os.path.join(checkpoint.step_dir(workdir, step), 'state')
  biggest = max(glob.glob(os.path.join(state, 'ocdbt.process_*', 'd', '*')), key=os.path.getsize)
  if how == 'flip':  # a few bytes of array data changed: Orbax alone would restore it silently
    with open(biggest, 'r+b') as f:
      f.seek(os.path.getsize(biggest) // 2)
      data = f.read(64)
      f.seek(os.path.getsize(biggest) // 2)
      f.write(bytes(b ^ 0xFF for b in data))
  elif how == 'truncate':
    os.truncate(biggest, os.path.getsize(biggest) // 2)
  elif how == 'truncate_unchecked':  # no checksums (e.g. killed before they were written)
    os.remove(os.path.join(workdir, checkpoint.CHECKSUMS, f'{step}.json'))
    os.truncate(biggest, os.path.getsize(biggest) // 2)


@pytest.mark.parametrize('how', ['flip', 'truncate'])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(two_process_run, tmp_path, how, caplog):
  workdir = tmp_path / 'w'
  shutil.copytree(two_process_run[0], workdir)
  _damage(str(workdir), STEPS, how)
  _, _, step = checkpoint.restore_params(str(workdir))
  assert step == STEPS - CHECKPOINT_EVERY
  bad = checkpoint.step_dir(str(workdir), STEPS)
  assert any(r.levelname == 'WARNING' and bad in r.getMessage() for r in caplog.records)
  with pytest.raises(checkpoint.CheckpointError, match=re.escape(bad)):
    checkpoint.restore_params(str(workdir), step=STEPS)  # asked for by name: no fallback


def test_a_truncated_checkpoint_without_checksums_falls_back_too(two_process_run, tmp_path, cache_dir):
  workdir = tmp_path / 'w'
  shutil.copytree(two_process_run[0], workdir)
  _damage(str(workdir), STEPS, 'truncate_unchecked')
  # In a process of its own: Orbax's failed read leaves TensorStore tasks that print at exit.
  code = (
    'import sys; from zoom_enhance.training import checkpoint; '
    f'print("restored step", checkpoint.restore_params({str(workdir)!r})[2])'
  )
  with Started([sys.executable, '-c', code], _env(cache_dir)) as run:
    assert run.wait(timeout=120) == 0, run.output[-3000:]
  assert f'restored step {STEPS - CHECKPOINT_EVERY}' in run.output
  bad = checkpoint.step_dir(str(workdir), STEPS)
  assert re.search(
    rf'checkpoint {re.escape(bad)} is unreadable \(.*error.*\); trying an older one',
    run.output,
    re.IGNORECASE,
  ), run.output[-3000:]


def test_no_readable_checkpoint_is_an_error(two_process_run, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(two_process_run[0], workdir)
  for step in _complete_checkpoints(str(workdir)):
    _damage(str(workdir), step, 'flip')
  with pytest.raises(checkpoint.CheckpointError, match='none of the checkpoints'):
    checkpoint.restore_params(str(workdir))


def test_training_resumes_from_the_previous_checkpoint_when_the_latest_is_damaged(
  one_process_run, two_process_run, photo_dir, tmp_path, caplog
):
  workdir = tmp_path / 'w'
  shutil.copytree(two_process_run[0], workdir)
  _damage(str(workdir), STEPS, 'flip')
  caplog.set_level('INFO')
  assert cli.main(['zoom-enhance', *_train_args(workdir, photo_dir)]) == 0  # this process: 4 devices
  bad = checkpoint.step_dir(str(workdir), STEPS)
  messages = [(r.levelname, r.getMessage()) for r in caplog.records]
  assert any(level == 'WARNING' and re.match(rf'checkpoint {re.escape(bad)} is unreadable \(.*checksum', m)
             for level, m in messages), messages  # fmt: skip
  assert ('INFO', f'resuming from step {STEPS - CHECKPOINT_EVERY} in {workdir}') in messages
  assert os.path.isdir(os.path.join(workdir, checkpoint.SET_ASIDE, str(STEPS)))
  assert checkpoint.verify(str(workdir), STEPS) is None  # written again, sound
  reference = {r['step']: r['train/loss'] for r in _rows(one_process_run)}
  redone = _rows(workdir)[-CHECKPOINT_EVERY:]
  assert [r['step'] for r in redone] == list(range(STEPS - CHECKPOINT_EVERY + 1, STEPS + 1))
  np.testing.assert_allclose(
    [r['train/loss'] for r in redone], [reference[r['step']] for r in redone], rtol=RTOL
  )


# --- start-up errors -------------------------------------------------------------


def _error_lines(output):
  return [line for line in output.splitlines() if 'error' in line.lower()]


def test_unreachable_coordinator_is_a_one_line_error(tmp_path, photo_dir, cache_dir):
  address = f'127.0.0.1:{launcher.free_port()}'  # nobody listens there
  args = _train_args(
    tmp_path,
    photo_dir,
    '--coordinator_address',
    address,
    '--num_processes=2',
    '--process_id=1',
    '--init_timeout=3',
  )
  with _cli(args, cache_dir, devices=1) as run:
    t0 = time.monotonic()
    assert run.wait(timeout=60) == 1
    assert time.monotonic() - t0 < 40
  errors = _error_lines(run.output)
  assert len(errors) == 1 and f'nothing answers at {address}' in errors[0], run.output[-3000:]
  assert 'Traceback' not in run.output and 'Check failure' not in run.output


def test_a_missing_process_is_a_one_line_error(tmp_path, photo_dir, cache_dir):
  address = f'127.0.0.1:{launcher.free_port()}'
  args = _train_args(
    tmp_path,
    photo_dir,
    '--coordinator_address',
    address,
    '--num_processes=2',
    '--process_id=0',
    '--init_timeout=3',
  )  # process 1 is never started
  with _cli(args, cache_dir, devices=1) as run:
    t0 = time.monotonic()
    assert run.wait(timeout=60) == 1
    assert time.monotonic() - t0 < 40
  errors = _error_lines(run.output)
  assert len(errors) == 1 and 'not all 2 processes joined' in errors[0], run.output[-3000:]
  assert 'Traceback' not in run.output and 'Check failure' not in run.output


def test_a_process_id_beyond_the_process_count_is_a_one_line_error(tmp_path, photo_dir, cache_dir):
  args = _train_args(
    tmp_path, photo_dir, '--coordinator_address', '127.0.0.1:1', '--num_processes=2', '--process_id=2'
  )
  with _cli(args, cache_dir, devices=1) as run:
    assert run.wait(timeout=60) == 1
  errors = _error_lines(run.output)
  assert len(errors) == 1 and '--process_id=2 is not in [0, 2)' in errors[0], run.output[-3000:]
