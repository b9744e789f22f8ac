"""Progressive distillation: the target maths, a real round with its report, resume mid-round."""

import functools
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from conftest import load_config
from flax import traverse_util
from PIL import Image

from zoom_enhance import cli
from zoom_enhance import errors
from zoom_enhance.data import sources
from zoom_enhance.evaluation import metrics
from zoom_enhance.evaluation import protocol
from zoom_enhance.model import diffusion
from zoom_enhance.model import sampler
from zoom_enhance.training import checkpoint
from zoom_enhance.training import config as config_lib
from zoom_enhance.training import distill
from zoom_enhance.training import distill_loss
from zoom_enhance.training import distill_report
from zoom_enhance.training import metrics_log


def _toy_teacher(z, logsnr):
  """A smooth, imperfect denoiser standing in for a network."""
  x = jnp.tanh(0.7 * z + 0.05 * logsnr[:, None, None, None])
  return x, diffusion.eps_from_x(z=z, x=x, logsnr=logsnr)


def test_distillation_target_reproduces_two_teacher_ddim_steps():
  logsnr_fn = functools.partial(diffusion.logsnr_schedule_cosine, logsnr_min=-20.0, logsnr_max=20.0)
  z_t = jax.random.normal(jax.random.PRNGKey(0), (3, 8, 8, 3))
  n = 4.0
  i = jnp.array([4.0, 2.0, 1.0])  # includes the last step, which lands on t = 0
  lt, lm, ls = logsnr_fn(i / n), logsnr_fn((i - 0.5) / n), logsnr_fn((i - 1.0) / n)
  x1, e1 = _toy_teacher(z_t, lt)
  z_mid = diffusion.ddim_step(x_pred=x1, eps_pred=e1, logsnr_s=lm)
  x2, e2 = _toy_teacher(z_mid, lm)
  z_s = diffusion.ddim_step(x_pred=x2, eps_pred=e2, logsnr_s=ls)
  target = diffusion.distill_x_target(z_t=z_t, z_s=z_s, logsnr_t=lt, logsnr_s=ls)
  # One student DDIM step that predicts `target` lands where the two teacher steps did.
  one_step = diffusion.ddim_step(
    x_pred=target, eps_pred=diffusion.eps_from_x(z=z_t, x=target, logsnr=lt), logsnr_s=ls
  )
  np.testing.assert_allclose(one_step, z_s, atol=2e-4)
  # And the 2N-step teacher sampler equals the N-step sampler of a perfect student.
  run = functools.partial(diffusion.ddim_sample, logsnr_fn=logsnr_fn)
  teacher_out = run(_toy_teacher, z_t, num_steps=4)

  def perfect_student(z, logsnr):  # two teacher steps folded into one, per distill_x_target
    t = jnp.arctan(jnp.exp(-0.5 * logsnr)) / (0.5 * jnp.pi)  # inverse of the full-range schedule
    step = jnp.round(t * 2.0) / 2.0
    l_mid, l_s = logsnr_fn(step - 0.25), logsnr_fn(step - 0.5)
    a, b = _toy_teacher(z, logsnr)
    zm = diffusion.ddim_step(x_pred=a, eps_pred=b, logsnr_s=l_mid)
    c, d = _toy_teacher(zm, l_mid)
    zs = diffusion.ddim_step(x_pred=c, eps_pred=d, logsnr_s=l_s)
    x = diffusion.distill_x_target(z_t=z, z_s=zs, logsnr_t=logsnr, logsnr_s=l_s)
    return x, diffusion.eps_from_x(z=z, x=x, logsnr=logsnr)

  student_out = run(perfect_student, z_t, num_steps=2)
  np.testing.assert_allclose(student_out, teacher_out, atol=2e-3)


def test_teacher_target_is_the_x_of_one_student_step_landing_on_two_teacher_steps():
  """distill_loss.teacher_target, the target the loss is given, against the two teacher steps it replaces."""
  diff = diffusion.Diffusion.from_config(config_lib.defaults().diffusion)
  x = jnp.tanh(jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 3)))
  n = jnp.full((6,), 4.0)
  target, z_t, logsnr_t, final, detail = distill_loss.teacher_target(
    diff, lambda z, logsnr, detail: _toy_teacher(z, logsnr), x, jax.random.PRNGKey(2), n, False
  )
  assert np.array_equal(final, logsnr_t == diff.logsnr(jnp.full((6,), 0.25))) and np.all(detail == 1)
  # Recover each example's time from its noise level, and replay the two teacher steps.
  t = np.array([float(jnp.argmin(jnp.abs(diff.logsnr(jnp.arange(1, 5) / 4.0) - lt))) + 1 for lt in logsnr_t])
  assert sorted(set(t)) == [1, 2, 3, 4]  # stratified over the batch: every student step appears
  lm, ls = diff.logsnr((t - 0.5) / 4.0), diff.logsnr((t - 1.0) / 4.0)
  x1, e1 = _toy_teacher(z_t, logsnr_t)
  x2, e2 = _toy_teacher(diffusion.ddim_step(x_pred=x1, eps_pred=e1, logsnr_s=lm), lm)
  z_s = diffusion.ddim_step(x_pred=x2, eps_pred=e2, logsnr_s=ls)
  student = diffusion.ddim_step(
    x_pred=target, eps_pred=diffusion.eps_from_x(z=z_t, x=target, logsnr=logsnr_t), logsnr_s=ls
  )
  np.testing.assert_allclose(student, z_s, atol=2e-4)


def test_round_plan_and_its_validation():
  assert config_lib.round_plan(64, 4) == [32, 16, 8, 4]
  assert config_lib.round_plan(8, 1) == [4, 2, 1]
  for bad in ((48, 4), (8, 3), (4, 4)):
    c = load_config('distill_tiny')
    c.distill.teacher_workdir = 'W'
    c.distill.start_steps, c.distill.end_steps = bad
    with pytest.raises(errors.ConfigError, match='distill.'):
      config_lib.validate(c, distill=True)
  # The detail branch needs a fixed teacher beside it: distillation only, and no input added to the trunk.
  c = load_config('distill_tiny')
  c.distill.teacher_workdir = 'W'
  c.model.detail_branch = True
  config_lib.validate(c, distill=True)
  with pytest.raises(errors.ConfigError, match='model.detail_branch trains a branch beside a fixed teacher'):
    config_lib.validate(c)
  c.model.direct_noise = True
  with pytest.raises(errors.ConfigError, match='not with model.direct_noise or model.detail_input'):
    config_lib.validate(c, distill=True)


def _small_photo_folder(folder, count):
  from skimage import data

  folder.mkdir()
  for i in range(count):
    Image.fromarray(data.astronaut()[40 * i : 40 * i + 64, 50:130]).save(folder / f'p{i}.png')
  return folder


def test_rounds_are_scored_on_held_out_photos_without_an_eval_source(tmp_path):
  """The default: the last eval_holdout images of the source, out of training; else scikit-image's photos."""
  c = load_config('distill_tiny')
  c.data.patch_size = 32
  c.data.source = f'folder:{_small_photo_folder(tmp_path / "six", 6)}'
  c.distill.eval_holdout = 2
  source = sources.make_source(c.data.source, c.data)
  photos, where = distill.round_photos(c, source)
  assert [name for name, _ in photos] == ['p4.png', 'p5.png'] and len(source) == 4
  assert where.startswith('the last 2 images of folder:') and 'held out of distillation' in where
  c.distill.eval_holdout = 3  # 6 images cannot spare 3 and keep most for training
  photos, where = distill.round_photos(c, sources.make_source(c.data.source, c.data))
  assert len(photos) == len(sources.SKIMAGE_PHOTOS) and "scikit-image's sample photos" in where
  c.distill.eval_holdout = 0
  assert distill.round_photos(c, source)[0] == []


@pytest.fixture(scope='module')
def teacher(trained):
  """The session's tiny model trained a few steps (conftest.trained): the teacher to distill."""
  return trained


def test_distillation_through_the_command_reports_held_out_photos_and_resumes_mid_round(
  teacher, tmp_path, capsys, caplog
):
  """`zoom-enhance distill --config ... --config.data.source=folder:PHOTOS`, no eval source: two real rounds
  (4 -> 2 -> 1 steps), each reported on photos held out of training (as the log and the report say),
  checkpoints that record each round's student, and a run stopped inside round 2 (its step 5 checkpoint,
  the state after it gone) that resumes exactly. The stop itself (SIGTERM, a crash) is the training
  loop's, tested in test_train and test_multiprocess.
  """
  photos = _small_photo_folder(tmp_path / 'photos', 6)
  workdir = tmp_path / 'W2'

  def distill(workdir):
    return cli.main([
      'zoom-enhance', 'distill', '--config', str(ROOT / 'configs' / 'distill_tiny.py'),
      '--workdir', str(workdir), f'--config.distill.teacher_workdir={teacher}',
      f'--config.data.source=folder:{photos}', '--config.data.patch_size=32',
      '--config.distill.start_steps=4', '--config.distill.end_steps=1', '--config.distill.steps_per_round=3',
      '--config.distill.eval_holdout=2', '--config.distill.eval_scales=(4.0,)',
      '--config.train.num_samples=2', '--config.train.log_every=1', '--config.train.checkpoint_every=5',
      '--config.mesh.data=2', '--config.mesh.fsdp=2',
      # The shipped recipe: a student with the ungated noise input, LPIPS-VGG + L1 against the teacher's
      # images (and LPIPS against the ground truth), trained over the detail range.
      '--config.model.direct_noise=True', '--config.model.detail_input=True',
      '--config.distill.loss=perceptual',
      '--config.distill.train_detail=True', '--config.distill.hr_lpips_weight=0.5',
      '--config.distill.fidelity_from_data=True', '--config.distill.fidelity_weight=4',
      '--config.distill.fidelity_blend=True',
    ])  # fmt: skip

  caplog.set_level('INFO')
  assert distill(workdir) == 0, capsys.readouterr().err[-2000:]
  report = json.loads((workdir / distill_report.REPORT).read_text())
  assert report['images'] == 2 and report['reference'] == 'teacher@4'
  loss_keys = ('loss', 'l1_weight', 'lpips_weight', 'hr_lpips_weight', 'train_detail', 'fidelity_from_data')
  assert [report['loss'][k] for k in loss_keys] == ['perceptual', 1.0, 1.0, 0.5, True, True]
  assert report['loss']['fidelity_weight'] == 4.0 and report['loss']['fidelity_blend'] is True
  assert report['eval_source'] == f'the last 2 images of folder:{photos}, held out of distillation'
  assert any('distillation rounds are scored on 2 photos: the last 2 images' in r.getMessage()
             for r in caplog.records)  # fmt: skip
  assert [(r['round'], r['student_steps']) for r in report['rounds']] == [(1, 2), (2, 1)]
  for r in report['rounds']:
    n = r['student_steps']
    assert set(r['methods']) == {
      f'student@{n}',
      f'student@{n} detail=0',
      f'teacher_ddim@{n}',
      'teacher@4',
      'bicubic',
    }
    assert r['noise_effect']['used'] and r['noise_effect']['mean_abs_8bit'] > 0.1
    for method, by_scale in r['methods'].items():
      (m,) = by_scale.values()
      assert list(by_scale) == ['x4']
      assert 15 < m['psnr_y'] < 40 and 0 <= m['lpips'] < 1 and 0 < m['ssim_y'] <= 1
      assert m['sec_per_mp'] > 0 and m['cpu_sec_per_mp'] > 0
      if method != 'teacher@4':
        assert 'psnr_y_vs_ref' in m and 'lpips_vs_ref' in m
    # Teacher DDIM in fewer steps from the same noise is a different sampler from 4 steps.
    assert r['methods'][f'teacher_ddim@{n}']['x4']['psnr_y_vs_ref'] < 60
  # The bicubic row is the held-out photos' own bicubic PSNR-Y (p4, p5: not trained on).
  want = []
  for i in (4, 5):
    hr, lr = protocol.make_pair(np.asarray(Image.open(photos / f'p{i}.png').convert('RGB')), 4.0)
    want.append(metrics.psnr_y(protocol.bicubic(lr, hr.shape[:2]), hr, 4))
  assert report['rounds'][0]['methods']['bicubic']['x4']['psnr_y'] == pytest.approx(np.mean(want), abs=1e-9)
  # One checkpoint at each round's end and at checkpoint_every, each knowing its round's student.
  assert checkpoint.Checkpointer(str(workdir), keep=3).all_steps() == [3, 5, 6]
  for step, round_index, student in ((3, 0, 2), (6, 1, 1)):
    position = checkpoint.read_position(str(workdir), step)
    assert {k: position[k] for k in ('step', 'task', 'round', 'student_steps')} == {
      'step': step, 'task': 'distill', 'round': round_index, 'student_steps': student}  # fmt: skip
  params, student_config, step = checkpoint.restore_params(str(workdir))
  teacher_params, _, _ = checkpoint.restore_params(teacher)
  student_flat, teacher_flat = (traverse_util.flatten_dict(p) for p in (params, teacher_params))
  moved = max(float(np.abs(student_flat[k] - v).max()) for k, v in teacher_flat.items())
  assert step == 6 and moved > 0  # the student trained away from its teacher
  # ... and learned to use the noise input it added (zero at the start).
  assert student_config.model.direct_noise and float(np.abs(params['noise_in']['kernel']).max()) > 0
  # ... and the detail input: one network, switched by the detail.
  assert student_config.model.detail_input and float(np.abs(params['detail_in']['kernel']).max()) > 0
  assert report['loss']['detail_input'] is True

  # Stopped after step 5, inside round 2: resumed, it ends where the uninterrupted run did.
  cut = tmp_path / 'cut'
  shutil.copytree(workdir, cut)
  shutil.rmtree(checkpoint.step_dir(str(cut), 6))
  os.remove(cut / checkpoint.CHECKSUMS / '6.json')
  rows = (cut / 'metrics.jsonl').read_text().splitlines()
  (cut / 'metrics.jsonl').write_text(''.join(r + '\n' for r in rows if json.loads(r)['step'] <= 5))
  assert distill(cut) == 0, capsys.readouterr().err[-2000:]
  steps = [r['step'] for r in metrics_log.read_metrics(str(cut)) if 'train/loss' in r]
  assert steps == list(range(1, 7))
  for ema in (False, True):
    a, _, _ = checkpoint.restore_params(str(workdir), ema=ema)
    b, _, _ = checkpoint.restore_params(str(cut), ema=ema)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  resumed_report = json.loads((cut / distill_report.REPORT).read_text())
  assert [r['round'] for r in resumed_report['rounds']] == [1, 2]  # round 2 scored again, round 1 kept


def test_a_detail_branch_student_trains_its_branch_alone_and_is_its_teacher_at_detail_0(teacher, tmp_path):
  """model.detail_branch (the shipped recipe): one 2 -> 1 round; the trunk's parameters stay the teacher's,
  the branch moves, the student's 1-step output at detail 0 is one for every seed and the teacher's, and
  it draws from the noise at detail 1."""
  photos = _small_photo_folder(tmp_path / 'photos', 6)
  workdir = tmp_path / 'B'
  assert cli.main([
    'zoom-enhance', 'distill', '--config', str(ROOT / 'configs' / 'distill_tiny.py'),
    '--workdir', str(workdir), f'--config.distill.teacher_workdir={teacher}',
    f'--config.data.source=folder:{photos}', '--config.data.patch_size=32',
    '--config.distill.start_steps=2', '--config.distill.end_steps=1', '--config.distill.steps_per_round=4',
    '--config.distill.eval_holdout=2', '--config.distill.eval_scales=(4.0,)',
    '--config.train.lr=5e-3', '--config.train.warmup_steps=1',
    '--config.model.detail_branch=True', '--config.distill.loss=perceptual',
    '--config.distill.train_detail=True', '--config.distill.hr_lpips_weight=4',
    '--config.distill.fidelity_from_data=True', '--config.distill.fidelity_weight=4',
    '--config.distill.fidelity_blend=True',
  ]) == 0  # fmt: skip
  params, student_config, step = checkpoint.restore_params(str(workdir))
  teacher_params, teacher_config, _ = checkpoint.restore_params(teacher)
  assert step == 4 and student_config.model.detail_branch
  student_flat = traverse_util.flatten_dict(params)
  for key, value in traverse_util.flatten_dict(teacher_params).items():
    np.testing.assert_allclose(student_flat[key], value, rtol=1e-6, atol=1e-7, err_msg='/'.join(key))
  fresh = [v for k, v in student_flat.items() if k[0] == distill.BRANCH and k[1] in ('drawn', 'amplitude')]
  assert fresh and all(np.any(v) for v in fresh)  # the output maps left their zero start
  # At detail 0 the teacher's output (the branch is scaled by D), one for every seed; at detail 1 it draws.
  hr, lr = protocol.make_pair(np.asarray(Image.open(photos / 'p4.png').convert('RGB')), 4.0)
  run = (
    lambda cfg, p, d, seed=0: (
      sampler.Sampler(cfg)
      .upscale_image(  # noqa: E731
        p, lr, hr.shape[:2], num_steps=1, temperature=d, seed=seed
      )
      .astype(np.float64)
    )
  )
  fidelity = run(student_config, params, 0.0)
  np.testing.assert_array_equal(run(student_config, params, 0.0, seed=1), fidelity)
  assert metrics.psnr(fidelity, run(teacher_config, teacher_params, 0.0), data_range=255) > 50
  assert np.abs(run(student_config, params, 1.0) - run(student_config, params, 1.0, seed=1)).mean() > 0.1
  report = json.loads((workdir / distill_report.REPORT).read_text())
  assert report['loss']['detail_branch'] is True
  (r,) = report['rounds']
  assert r['noise_effect']['used']
