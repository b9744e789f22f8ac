"""Progressive distillation: the target maths, a real round with its report, resume mid-round."""

import functools
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config
from PIL import Image

from zoom_enhance import checkpoint
from zoom_enhance import diffusion
from zoom_enhance import distill
from zoom_enhance import metrics_log
from zoom_enhance import train


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
  one_step = diffusion.ddim_step(x_pred=target, eps_pred=diffusion.eps_from_x(z=z_t, x=target, logsnr=lt),
                                 logsnr_s=ls)
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


def test_round_plan():
  assert distill.round_plan(64, 4) == [32, 16, 8, 4]
  assert distill.round_plan(8, 1) == [4, 2, 1]
  for bad in ((48, 4), (8, 3), (4, 4)):
    with pytest.raises(ValueError):
      distill.round_plan(*bad)


@pytest.fixture(scope='module')
def teacher(trained):
  """The session's tiny model trained a few steps (conftest.trained): the teacher to distill."""
  return trained


@pytest.fixture(scope='module')
def eval_dir(tmp_path_factory):
  """Two small held-out photos (crops of scikit-image samples not used for training)."""
  from skimage import data
  folder = tmp_path_factory.mktemp('heldout')
  Image.fromarray(data.immunohistochemistry()[:80, :96]).save(folder / 'ihc.png')
  Image.fromarray(data.astronaut()[100:164, 150:230]).save(folder / 'astro.png')
  return folder


def _distill_config(teacher, photo_dir, **distill_fields):
  config = load_config('distill_tiny')
  config.data.source = f'folder:{photo_dir}'
  config.distill.teacher_workdir = teacher
  config.train.log_every = 1
  config.train.num_samples = 2
  config.mesh.data, config.mesh.fsdp = 4, 2
  for key, value in distill_fields.items():
    config.distill[key] = value
  return config


def test_one_real_round_with_report_and_restorable_checkpoint(teacher, photo_dir, eval_dir, tmp_path):
  config = _distill_config(teacher, photo_dir, start_steps=4, end_steps=2, steps_per_round=3,
                           eval_source=f'folder:{eval_dir}')
  workdir = str(tmp_path)
  assert distill.distill(config, workdir) == 3
  with open(os.path.join(workdir, distill.REPORT)) as f:
    report = json.load(f)
  (round1,) = report['rounds']
  assert round1['round'] == 1 and round1['student_steps'] == 2 and report['images'] == 2
  assert set(round1['methods']) == {'student@2', 'teacher_ddim@2', 'teacher@4', 'bicubic'}
  for method, by_scale in round1['methods'].items():
    assert set(by_scale) == {'x4', 'x2.5'}
    for m in by_scale.values():
      assert 5 < m['psnr_y'] < 60 and 0 <= m['lpips'] < 1.5 and -1 <= m['ssim_y'] <= 1
      if method not in ('teacher@4',):
        assert 'psnr_y_vs_ref' in m and 'lpips_vs_ref' in m
  # Teacher DDIM at 2 steps from the same noise is a different sampler from 4 steps.
  assert round1['methods']['teacher_ddim@2']['x4']['psnr_y_vs_ref'] < 60
  params, _, step = checkpoint.restore_params(workdir)
  assert step == 3
  teacher_params, _, _ = checkpoint.restore_params(teacher)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(params),
                                                          jax.tree.leaves(teacher_params)))
  assert moved > 0  # the student trained away from its teacher


class _StopAt(distill.DistillTask):
  """Sends this process a real SIGTERM after a given step (a preemption mid-round)."""
  stop_at = None

  def end_step(self, step, state, workdir):
    super().end_step(step, state, workdir)
    if step == self.stop_at:
      os.kill(os.getpid(), signal.SIGTERM)


def test_resume_mid_round_matches_an_uninterrupted_run(teacher, photo_dir, tmp_path):
  fields = dict(start_steps=8, end_steps=2, steps_per_round=4)
  whole = str(tmp_path / 'whole')
  assert distill.distill(_distill_config(teacher, photo_dir, **fields), whole) == 8

  cut = str(tmp_path / 'cut')
  config = distill.prepare_config(_distill_config(teacher, photo_dir, **fields))
  task = _StopAt(config)
  task.stop_at = 6  # round 2, step 2 of 4
  with pytest.raises(train.Preempted):
    train.run(config, cut, task)
  assert checkpoint.Checkpointer(cut, keep=3).latest_step() == 6
  assert distill.distill(_distill_config(teacher, photo_dir, **fields), cut) == 8
  steps = [r['step'] for r in metrics_log.read_metrics(cut) if 'train/loss' in r]
  assert steps == list(range(1, 9))
  for ema in (False, True):
    a, _, _ = checkpoint.restore_params(whole, ema=ema)
    b, _, _ = checkpoint.restore_params(cut, ema=ema)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
