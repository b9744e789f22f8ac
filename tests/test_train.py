"""Real training runs of the tiny config: loss, sharding equivalence, resume, NaN, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import ROOT
from conftest import load_config

from zoom_enhance import checkpoint
from zoom_enhance import metrics_log
from zoom_enhance import train


def _losses(workdir):
  return [r['train/loss'] for r in metrics_log.read_metrics(workdir) if 'train/loss' in r]


def _cli(args, devices, env_extra=None):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1', **(env_extra or {}))
  return [sys.executable, '-m', 'zoom_enhance.cli', *args], env


def _train_args(workdir, photo_dir, num_steps, *extra):
  return ['train', '--config', str(ROOT / 'configs' / 'tiny.py'), '--workdir', str(workdir),
          f'--config.train.num_steps={num_steps}', f'--config.data.source=folder:{photo_dir}',
          '--config.train.log_every=1', '--config.train.num_samples=2',
          '--config.diffusion.sample_steps=2', *extra]


def _run(args, devices, timeout=300):
  cmd, env = _cli(args, devices)
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_tiny_training_on_real_photos_lowers_the_loss(photo_dir, tmp_path):
  config = load_config('tiny')
  config.data.source = f'folder:{photo_dir}'
  config.train.num_steps = 40
  config.train.log_every = 1
  config.train.checkpoint_every = 20
  config.train.warmup_steps = 5
  config.train.num_samples = 2
  config.diffusion.sample_steps = 2
  config.mesh.data, config.mesh.fsdp = 4, 2  # 8 simulated devices, parameters sharded in 2
  workdir = str(tmp_path)
  assert train.train_and_evaluate(config, workdir) == 40
  losses = _losses(workdir)
  assert len(losses) == 40 and all(np.isfinite(losses))
  assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
  assert checkpoint.Checkpointer(workdir, keep=3).all_steps() == [20, 40]
  assert os.path.exists(os.path.join(workdir, 'samples', 'step_000040.png'))
  assert os.path.exists(os.path.join(workdir, 'loss.png'))
  rows = metrics_log.read_metrics(workdir)
  assert any('perf/samples_per_sec' in r for r in rows)
  assert any('sample/psnr' in r for r in rows)
  params, saved_config, step = checkpoint.restore_params(workdir)
  assert step == 40 and saved_config.data.source == config.data.source
  assert jax.tree.structure(params) is not None and len(jax.tree.leaves(params)) > 10


@pytest.fixture(scope='module')
def reference_run(photo_dir, tmp_path_factory):
  """The acceptance command: 4 simulated devices, 30 steps, then resumed to 40."""
  workdir = tmp_path_factory.mktemp('ref')
  r = _run(_train_args(workdir, photo_dir, 30), devices=4)
  assert r.returncode == 0, r.stderr[-2000:]
  first = _losses(workdir)
  r = _run(_train_args(workdir, photo_dir, 40), devices=4)
  assert r.returncode == 0, r.stderr[-2000:]
  assert 'resuming from step 30' in r.stderr
  return workdir, first


def test_cli_train_writes_metrics_and_checkpoint_and_resumes(reference_run):
  workdir, first = reference_run
  assert len(first) == 30 and first[-1] < first[0]
  steps = [r['step'] for r in metrics_log.read_metrics(workdir) if 'train/loss' in r]
  assert steps == list(range(1, 41))  # resumed at 31, no step repeated
  assert 40 in checkpoint.Checkpointer(str(workdir), keep=3).all_steps()


def test_one_device_and_four_devices_give_the_same_losses(reference_run, photo_dir, tmp_path):
  workdir, four = reference_run
  r = _run(_train_args(tmp_path, photo_dir, 30), devices=1)
  assert r.returncode == 0, r.stderr[-2000:]
  np.testing.assert_allclose(_losses(tmp_path), four, rtol=2e-4)


def test_sigterm_saves_and_resume_matches_an_uninterrupted_run(reference_run, photo_dir, tmp_path):
  workdir, _ = reference_run
  cmd, env = _cli(_train_args(tmp_path, photo_dir, 30, '--config.train.checkpoint_every=1000'), 4)
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    losses = _losses(tmp_path) if os.path.exists(tmp_path / 'metrics.jsonl') else []
    if len(losses) >= 3:
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.02)
  _, err = proc.communicate(timeout=240)
  assert proc.returncode == 143, err[-2000:]
  assert 'preempted' in err and 'Traceback' not in err
  saved = checkpoint.Checkpointer(str(tmp_path), keep=3).all_steps()
  assert len(saved) == 1 and 3 <= saved[0] < 30
  r = _run(_train_args(tmp_path, photo_dir, 30), devices=4)
  assert r.returncode == 0, r.stderr[-2000:]
  resumed, _, _ = checkpoint.restore_params(str(tmp_path), step=30, ema=False)
  reference, _, _ = checkpoint.restore_params(str(workdir), step=30, ema=False)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(photo_dir, tmp_path):
  config = load_config('tiny')
  config.data.source = f'folder:{photo_dir}'
  config.train.num_steps = 20
  config.train.warmup_steps = 1
  config.train.lr = 1e30  # the second update overflows the parameters
  config.train.checkpoint_every = 1
  config.train.log_every = 1
  config.mesh.data = 8
  with pytest.raises(train.TrainingError, match=r'became (nan|inf) at step \d+') as err:
    train.train_and_evaluate(config, str(tmp_path))
  bad_step = int(str(err.value).split('at step ')[1].split(';')[0])
  steps = checkpoint.Checkpointer(str(tmp_path), keep=3).all_steps()
  assert steps and max(steps) == bad_step - 1
  assert f'(step {bad_step - 1}) is kept' in str(err.value)


@pytest.mark.parametrize('extra, message', [
    (['--config.data.source=folder:{empty}'], 'holds no'),
    (['--config.train.bogus=1'], 'bogus'),
    (['--config.model.variant=huge'], 'variant'),
])
def test_cli_bad_input_is_one_line(tmp_path, photo_dir, extra, message):
  empty = tmp_path / 'empty'
  empty.mkdir()
  args = _train_args(tmp_path / 'w', photo_dir, 2, *[e.format(empty=empty) for e in extra])
  r = _run(args, devices=1, timeout=120)
  assert r.returncode != 0
  assert 'Traceback' not in r.stderr
  errors = [line for line in r.stderr.splitlines() if 'error' in line]
  assert len(errors) == 1 and message in errors[0], r.stderr[-2000:]


def test_metrics_jsonl_lines_are_json(reference_run):
  workdir, _ = reference_run
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      row = json.loads(line)
      assert isinstance(row['step'], int)


def test_sample_command_writes_the_requested_size(reference_run, tmp_path):
  workdir, _ = reference_run
  out = tmp_path / 'out.png'
  photo = ROOT / 'zoom_enhance' / 'assets' / 'chelsea.jpg'
  r = _run(['sample', '--workdir', str(workdir), '-i', str(photo), '-o', str(out),
            '--scale', '1.6', '--steps', '2'], devices=1)
  assert r.returncode == 0, r.stderr[-2000:]
  from PIL import Image
  with Image.open(out) as im:
    assert im.size == (round(226 * 1.6), round(150 * 1.6))
  bad = tmp_path / 'not_an_image.jpg'
  bad.write_text('hello')
  r = _run(['sample', '--workdir', str(workdir), '-i', str(bad), '-o', str(tmp_path / 'x.png')],
           devices=1)
  assert r.returncode != 0 and 'Traceback' not in r.stderr and 'not_an_image.jpg' in r.stderr
  assert not (tmp_path / 'x.png').exists()


def test_a_half_written_checkpoint_is_never_the_latest(reference_run, tmp_path):
  import shutil
  workdir, _ = reference_run
  copy = tmp_path / 'w'
  shutil.copytree(workdir, copy)
  # What a crash in the middle of saving step 50 leaves behind: Orbax's temporary directory.
  partial = copy / 'checkpoints' / '50.orbax-checkpoint-tmp-1234567890'
  (partial / 'state').mkdir(parents=True)
  (partial / 'state' / 'garbage').write_bytes(b'\0' * 100)
  assert checkpoint.Checkpointer(str(copy), keep=3).latest_step() == 40
  _, _, step = checkpoint.restore_params(str(copy))
  assert step == 40
