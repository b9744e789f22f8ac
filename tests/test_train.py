"""Real training runs of the tiny config: loss, sharding equivalence, resume, NaN, CLI errors."""

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import PREEMPT_AFTER
from conftest import ROOT
from conftest import jax_env
from conftest import load_config
from conftest import train_args

from zoom_enhance import cli
from zoom_enhance import errors
from zoom_enhance.model import unet
from zoom_enhance.training import checkpoint
from zoom_enhance.training import metrics_log


def _losses(workdir):
  return [r['train/loss'] for r in metrics_log.read_metrics(workdir) if 'train/loss' in r]


def _cli(args, devices):
  """The real command in its own process, for a device count of its own."""
  return [sys.executable, '-m', 'zoom_enhance.cli', *args], jax_env(devices)


def _run(args, devices, timeout=300):
  cmd, env = _cli(args, devices)
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope='module')
def reference_run(trained_run):
  """The session's reference run (conftest.trained_run): 40 steps, preempted after step 25 and resumed."""
  assert trained_run.resumed == 0, trained_run.stderr[-2000:]
  return trained_run


def _preempted_at(run) -> int:
  """The step of the preemption checkpoint, from the command's one line on stderr."""
  (line,) = run.stderr.splitlines()
  found = re.fullmatch(r'zoom-enhance train: preempted \(SIGTERM\): saved a checkpoint at step (\d+); '
                       r'run the same command again to resume', line)  # fmt: skip
  assert found, line
  return int(found[1])


def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes(reference_run):
  run = reference_run
  assert run.preempted == errors.EXIT_PREEMPTED, run.stderr[-2000:]
  saved = _preempted_at(run)
  assert PREEMPT_AFTER <= saved < 40 and saved != 20
  assert f'resuming from step {saved} in {run.workdir}' in run.log
  assert checkpoint.Checkpointer(run.workdir, keep=3).all_steps() == [20, saved, 40]
  assert checkpoint.verify(run.workdir, saved) is None
  # Every step logged once: the resumed run went on from the preemption checkpoint.
  steps = [r['step'] for r in metrics_log.read_metrics(run.workdir) if 'train/loss' in r]
  assert steps == list(range(1, 41))


def test_cli_train_lowers_the_loss_and_writes_its_outputs(reference_run):
  workdir = reference_run.workdir
  losses = _losses(workdir)
  assert len(losses) == 40 and all(np.isfinite(losses))
  assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:5])
  for name in ('samples/step_000040.png', 'loss.png'):
    assert os.path.getsize(os.path.join(workdir, name)) > 1000, name
  params, saved_config, step = checkpoint.restore_params(str(workdir))
  config = load_config('tiny')
  config.unlock()
  config.update_from_flattened_dict({'data.source': saved_config.data.source, 'train.num_steps': 40,
                                     'train.log_every': 1, 'train.num_samples': 2, 'train.warmup_steps': 5,
                                     'train.checkpoint_every': 20, 'diffusion.sample_steps': 2,
                                     'mesh.data': 2, 'mesh.fsdp': 2})  # fmt: skip
  assert step == 40 and json.loads(saved_config.to_json()) == json.loads(config.to_json())
  # The EMA parameters of the model the config names, leaf for leaf, moved away from their initialisation.
  x = np.zeros((1, 64, 64, 3), np.float32)
  shapes = jax.eval_shape(unet.from_config(config).init, jax.random.PRNGKey(0), x, x, np.zeros(1), np.ones(1))
  assert jax.tree.structure(params) == jax.tree.structure(shapes['params'])
  assert [a.shape for a in jax.tree.leaves(params)] == [a.shape for a in jax.tree.leaves(shapes['params'])]
  assert all(isinstance(a, np.ndarray) and np.all(np.isfinite(a)) for a in jax.tree.leaves(params))
  # Trained away from the initialisation: flax zero-initialises every bias and the output layers' kernels.
  raw, _, _ = checkpoint.restore_params(str(workdir), ema=False)
  nonzero = [np.abs(a).max() > 0 for a in jax.tree.leaves(params)]
  assert sum(nonzero) > 0.9 * len(nonzero)
  ema_differs = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(raw))]
  assert sum(ema_differs) > 0.9 * len(ema_differs)  # the EMA, not the raw parameters


def test_one_device_uninterrupted_gives_the_losses_of_four_devices_preempted_and_resumed(
  reference_run, photo_dir, tmp_path
):
  """The same run on 1 device, not sharded and not stopped: the same losses at every step, before and
  after the reference run's preemption (a resumption that lost the data position, the optimizer state
  or the schedule would differ after it). The exact resumption is test_multiprocess's (rtol 1e-6).
  """
  r = _run(train_args(tmp_path, photo_dir, 40), devices=1)
  assert r.returncode == 0, r.stderr[-2000:]
  np.testing.assert_allclose(_losses(tmp_path), _losses(reference_run.workdir), rtol=2e-4)
  one, _, _ = checkpoint.restore_params(str(tmp_path), ema=False)
  four, _, _ = checkpoint.restore_params(reference_run.workdir, ema=False)
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(four)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_init_from_starts_a_new_run_from_a_trained_models_ema_parameters(reference_run, photo_dir, tmp_path,
                                                                        caplog, capsys):  # fmt: skip
  """Fine-tuning from a weights directory (`zoom-enhance save-weights`, what ships in the repository): at
  learning rate 0 the new run's parameters stay the reference run's EMA parameters."""
  caplog.set_level('INFO')
  saved = tmp_path / 'weights'
  rc = cli.main(['zoom-enhance', 'save-weights', '--workdir', reference_run.workdir, '--out', str(saved)])
  assert rc == 0 and sorted(os.listdir(saved)) == ['config.json', 'params.msgpack', 'weights.json']
  info = json.loads((saved / 'weights.json').read_text())
  assert info['step'] == 40 and info['position']['task'] == 'train' and info['parameters'] > 0
  start = f'--config.train.init_from={saved}'
  args = train_args(tmp_path / 'tuned', photo_dir, 2, start, '--config.train.lr=0')
  assert cli.main(['zoom-enhance', *args]) == 0, capsys.readouterr().err[-2000:]
  assert f'starting from the EMA parameters of {saved} (step 40)' in caplog.messages
  ema, config, _ = checkpoint.restore_params(reference_run.workdir)
  assert checkpoint.restore_config(str(saved)).to_dict() == config.to_dict()
  for a, b in zip(
    jax.tree.leaves(checkpoint.restore_params(str(saved))[0]), jax.tree.leaves(ema), strict=True
  ):
    np.testing.assert_array_equal(a, b)
  for which in (False, True):
    tuned, _, step = checkpoint.restore_params(str(tmp_path / 'tuned'), ema=which)
    assert step == 2
    for a, b in zip(jax.tree.leaves(tuned), jax.tree.leaves(ema), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6)  # the EMA update of equal values rounds at 1 ulp
  # Another model: one line naming the parameter that does not fit, and nothing written.
  args = train_args(tmp_path / 'other', photo_dir, 2, start, '--config.model.variant=small')
  assert cli.main(['zoom-enhance', *args]) == 1
  errors_ = [line for line in capsys.readouterr().err.splitlines() if 'error' in line]
  assert len(errors_) == 1, errors_
  assert f'train.init_from={saved}: its parameter' in errors_[0]
  assert 'is model.variant the one it was trained with?' in errors_[0]
  assert not list((tmp_path / 'other').glob('checkpoints/[0-9]*'))
  # A damaged weights file is refused in one line, not loaded.
  with open(saved / 'params.msgpack', 'r+b') as f:
    f.seek(100)
    f.write(b'\x00\x01\x02')
  args = train_args(tmp_path / 'damaged', photo_dir, 2, start)
  assert cli.main(['zoom-enhance', *args]) == 1
  err = [line for line in capsys.readouterr().err.splitlines() if 'error' in line]
  assert len(err) == 1 and 'params.msgpack: its SHA-256 differs' in err[0], err


@pytest.mark.parametrize('name', sorted(p.stem for p in (ROOT / 'configs').glob('*.py')))
def test_every_config_file_validates(name):
  """Each experiment's config file, as shipped, passes the schema (a distillation's with a teacher set)."""
  from zoom_enhance.training import config as config_lib

  c = load_config(name)
  is_distill = name.startswith('distill')
  if is_distill and not c.distill.teacher_workdir:
    c.distill.teacher_workdir = 'W'
  config_lib.validate(c, distill=is_distill)


@pytest.mark.parametrize(
  'extra, code, message',
  [
    (['--config.data.source=folder:{empty}'], 1, 'holds no'),
    (['--config.train.bogus=1'], 2, 'bogus'),
    (['--config.model.variant=huge'], 1, "model.variant='huge': choose one of"),
    (['--config.data.min_scale=5'], 1, 'need 1 <= data.min_scale (5.0) <= data.max_scale (4.0)'),
    (
      ['--config.diffusion.prediction=noise', '--config.train.num_steps=0'],
      1,
      "diffusion.prediction='noise': choose one of v, eps, x; train.num_steps and train.batch_size must be",
    ),
  ],
)
def test_cli_bad_input_is_one_line(tmp_path, photo_dir, capsys, extra, code, message):
  empty = tmp_path / 'empty'
  empty.mkdir()
  args = train_args(tmp_path / 'w', photo_dir, 2, *[e.format(empty=empty) for e in extra])
  rc = cli.main(['zoom-enhance', *args])
  err = capsys.readouterr().err
  assert rc == code and 'Traceback' not in err
  errors = [line for line in err.splitlines() if 'error' in line]
  assert len(errors) == 1 and message in errors[0], err[-2000:]
  assert not list((tmp_path / 'w').glob('checkpoints/[0-9]*'))


def test_metrics_jsonl_has_one_row_per_logged_step_with_every_metric(reference_run):
  workdir = reference_run.workdir
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  train_rows = [r for r in rows if 'train/loss' in r]
  assert [r['step'] for r in train_rows] == list(range(1, 41))  # log_every=1, each step once
  for r in train_rows:
    assert isinstance(r['step'], int) and isinstance(r['data/skipped'], int) and r['data/skipped'] == 0
    for key in ('train/loss', 'train/grad_norm', 'train/lr'):
      assert isinstance(r[key], float) and np.isfinite(r[key]) and r[key] >= 0, (key, r)
  lrs = [r['train/lr'] for r in train_rows]
  assert lrs[0] < lrs[19] and lrs[-1] < max(lrs)  # warm-up, then cosine decay
  # Throughput on every row but a run's first (nothing to measure it from yet).
  rated = [r['step'] for r in train_rows if 'perf/steps_per_sec' in r]
  assert rated == [s for s in range(1, 41) if s not in (1, _preempted_at(reference_run) + 1)]
  assert all(
    r['perf/samples_per_sec'] == pytest.approx(8 * r['perf/steps_per_sec'])
    for r in train_rows
    if 'perf/steps_per_sec' in r
  )
  samples = [r for r in rows if 'sample/psnr' in r]
  assert [r['step'] for r in samples] == [40] and all(r['sample/steps'] == 2 for r in samples)
  assert all(10 < r['sample/psnr'] < 60 and 10 < r['sample/psnr_bicubic'] < 60 for r in samples)


def test_sample_command_writes_the_requested_size(reference_run, tmp_path, capsys):
  workdir = reference_run.workdir
  out = tmp_path / 'out.png'
  photo = ROOT / 'zoom_enhance' / 'assets' / 'chelsea.jpg'
  rc = cli.main(
    [
      'zoom-enhance',
      'sample',
      '--workdir',
      str(workdir),
      '-i',
      str(photo),
      '-o',
      str(out),
      '--scale',
      '1.6',
      '--steps',
      '2',
    ]
  )
  assert rc == 0, capsys.readouterr().err[-2000:]
  from PIL import Image

  with Image.open(out) as im:
    assert im.size == (round(226 * 1.6), round(150 * 1.6))
  bad = tmp_path / 'not_an_image.jpg'
  bad.write_text('hello')
  for args, message in (
    (['-i', str(bad)], 'not_an_image.jpg: not an image file'),
    (['-i', str(photo), '--size', '4000x4000'], 'over --max-pixels=4000000'),
  ):
    rc = cli.main(['zoom-enhance', 'sample', '--workdir', str(workdir), '-o', str(tmp_path / 'x.png'), *args])
    err = [ln for ln in capsys.readouterr().err.splitlines() if 'error' in ln]
    assert rc == 1 and len(err) == 1 and message in err[0], err
  assert not (tmp_path / 'x.png').exists()


def test_a_half_written_checkpoint_is_never_the_latest(reference_run, tmp_path):
  import shutil

  workdir = reference_run.workdir
  copy = tmp_path / 'w'
  shutil.copytree(workdir, copy)
  # What a crash in the middle of saving step 50 leaves behind: Orbax's temporary directory.
  partial = copy / 'checkpoints' / '50.orbax-checkpoint-tmp-1234567890'
  (partial / 'state').mkdir(parents=True)
  (partial / 'state' / 'garbage').write_bytes(b'\0' * 100)
  assert checkpoint.Checkpointer(str(copy), keep=3).latest_step() == 40
  _, _, step = checkpoint.restore_params(str(copy))
  assert step == 40


def test_a_checkpoint_of_an_older_run_gets_the_fields_it_lacks_when_restored(trained, tmp_path):
  """Fields added since a run was saved come from the schema's defaults, at restore, with the old meaning."""
  import shutil

  from zoom_enhance.training import config as config_lib

  old = tmp_path / 'old'
  shutil.copytree(trained, old)
  shutil.rmtree(old / checkpoint.CHECKSUMS)  # older runs wrote none either
  step = max(int(n) for n in os.listdir(old / 'checkpoints') if n.isdigit())  # the one restored
  saved = old / 'checkpoints' / str(step) / 'config' / 'metadata'
  values = json.loads(saved.read_text())
  missing = (('diffusion', 'time_power'), ('diffusion', 'max_time_prob'), ('data', 'max_scale_prob'))
  for section, key in missing + (('data', 'eval_source'),):
    del values[section][key]
  del values['distill']
  saved.write_text(json.dumps(values))
  restored = checkpoint.restore_config(str(old))
  defaults = config_lib.defaults()
  assert restored.diffusion.time_power == 1.0 and restored.diffusion.max_time_prob == 0.0
  assert restored.data.max_scale_prob == 0.0 and restored.data.eval_source == ''
  assert restored.distill.to_dict() == defaults.distill.to_dict()
  assert restored.data.source == values['data']['source']  # what it had stays
  config_lib.validate(restored)
  _, config, got = checkpoint.restore_params(str(old))
  assert got == step and config.diffusion.time_power == 1.0
  assert checkpoint.read_position(str(old), step)['task'] == 'train'
