"""Natural detail: the grid-free detail head, the spectral-normalised discriminator, adversarial training."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT
from conftest import random_params
from flax import traverse_util
from PIL import Image

from zoom_enhance import cli
from zoom_enhance import errors
from zoom_enhance.model import layers
from zoom_enhance.model import unet
from zoom_enhance.training import adversarial
from zoom_enhance.training import checkpoint
from zoom_enhance.training import config as config_lib
from zoom_enhance.training import distill
from zoom_enhance.training import distill_loss
from zoom_enhance.training import metrics_log


def _photo_crop(size=64, seed=0) -> np.ndarray:
  """A real photo crop in [-1, 1] (scikit-image's astronaut), (1, size, size, 3)."""
  from skimage import data

  img = data.astronaut()[100 + seed * 7 : 100 + seed * 7 + size, 180 : 180 + size]
  return (img.astype(np.float32) / 127.5 - 1.0)[None]


def test_tent_upsample_interpolates_linearly_and_keeps_constants():
  ramp = jnp.broadcast_to(jnp.arange(8.0)[None, None, :, None], (1, 8, 8, 1))
  up = np.asarray(layers.tent_upsample(ramp, 4))[0, 16, :, 0]
  # Away from the edges, equal steps of 1/4 between the LR samples (linear interpolation).
  np.testing.assert_allclose(np.diff(up[4:28]), 0.25, atol=1e-6)
  np.testing.assert_allclose(np.asarray(layers.tent_upsample(jnp.ones((1, 4, 4, 2)), 4))[0, 3:13, 3:13], 1.0)


def _branch_output(head: str, seed: int) -> np.ndarray:
  """The detail a randomly initialised branch of `head` draws from white noise on a real photo."""
  variant = dataclasses.replace(unet.VARIANTS['mobile'], detail_branch=True, detail_head=head)
  model = unet.UNet(variant)
  lr_up = jnp.asarray(_photo_crop(64))
  z = jax.random.normal(jax.random.PRNGKey(seed), lr_up.shape)
  args = (z, lr_up, jnp.full((1,), -20.0), jnp.full((1,), 4.0))
  params = random_params(model, *args, seed=seed)
  trunk = model.apply({'params': params}, *args, detail=jnp.zeros((1,)))
  return np.asarray(model.apply({'params': params}, *args, detail=jnp.ones((1,))) - trunk)


def test_the_fullres_head_draws_no_lattice_where_the_subpixel_head_does():
  """Energy of the branch's detail on the 4-px grid's frequencies, over white noise's share: the subpixel
  head's per-position weights put a lattice there; the full-resolution head has no such weights."""
  noise = [jax.random.normal(jax.random.PRNGKey(s), (1, 64, 64, 3)) for s in range(4)]
  white = np.mean([float(distill_loss.grid_share(n, 4)[0]) for n in noise])
  ratio = {
    head: np.mean(
      [float(distill_loss.grid_share(jnp.asarray(_branch_output(head, s)), 4)[0]) for s in range(2)]
    )
    / white
    for head in unet.DETAIL_HEADS
  }
  assert ratio['subpixel'] > 10, ratio
  assert ratio['fullres'] < 3, ratio


def test_grid_share_is_that_of_a_pattern_on_the_grid():
  photo = jnp.asarray(_photo_crop(64))
  lattice = jnp.tile(jnp.asarray(np.random.default_rng(0).standard_normal((1, 4, 4, 1)), jnp.float32),
                     (1, 16, 16, 3))  # fmt: skip
  assert float(distill_loss.grid_share(lattice, 4)[0]) > 0.99
  assert float(distill_loss.grid_share(photo, 4)[0]) < 0.05
  penalty = distill_loss.lattice_penalty(photo + 0.1 * lattice, photo, jnp.zeros_like(photo), 4)
  assert float(penalty[0]) > 1.0
  assert float(distill_loss.lattice_penalty(photo, photo, jnp.zeros_like(photo), 4)[0]) == 0.0


def test_spectral_norm_matches_the_largest_singular_value():
  w = np.random.default_rng(1).standard_normal((3, 3, 16, 32)).astype(np.float32)
  exact = np.linalg.svd(w.reshape(-1, 32), compute_uv=False)[0]
  assert abs(float(adversarial.spectral_norm(jnp.asarray(w))) / exact - 1.0) < 0.02
  # Every layer of the discriminator is then 1-Lipschitz: the normalised kernel's norm is 1.
  net = adversarial.SNConv(32, 3)
  params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 16)))['params']
  k = params['kernel'] / adversarial.spectral_norm(params['kernel'])
  assert abs(np.linalg.svd(np.asarray(k).reshape(-1, 32), compute_uv=False)[0] - 1.0) < 0.02


def test_the_critic_learns_to_tell_photos_from_blurred_ones():
  """A few Adam steps on real crops against blurred copies: the hinge loss falls and the logits part."""
  c = config_lib.defaults().distill
  c.adversarial_weight, c.critic_lr = 1.0, 2e-3
  critic = adversarial.Critic.from_config(c)
  real = jnp.concatenate([jnp.asarray(_photo_crop(32, s)) for s in range(4)])
  fake = jax.image.resize(jax.image.resize(real, (4, 8, 8, 3), 'linear'), real.shape, 'linear')
  params, opt = critic.init(jax.random.PRNGKey(0), 32)
  update = jax.jit(critic.update)
  weight = jnp.ones((4,))
  _, _, first = update(params, opt, real, fake, weight)
  for _ in range(40):
    params, opt, m = update(params, opt, real, fake, weight)
  assert float(m['train/critic_loss']) < float(first['train/critic_loss']) - 0.3
  assert float(m['train/critic_real']) > float(m['train/critic_fake'])
  # The generator's loss is lower for what the critic takes for real.
  assert float(critic.generator_loss(params, real).mean()) < float(critic.generator_loss(params, fake).mean())
  assert adversarial.Critic.from_config(config_lib.defaults().distill) is None  # weight 0: no critic


def test_adversarial_terms_need_the_perceptual_loss():
  c = config_lib.defaults()
  c.distill.teacher_workdir, c.distill.start_steps, c.distill.end_steps = 'w', 2, 1
  c.distill.adversarial_weight = 0.1
  with pytest.raises(errors.ConfigError, match="distill.loss='perceptual'"):
    config_lib.validate(c, distill=True)
  c.model.detail_head = 'bilinear'
  with pytest.raises(errors.ConfigError, match='model.detail_head'):
    config_lib.validate(c, distill=True)


def _photo_folder(path, n):
  from skimage import data

  path.mkdir()
  for i, img in enumerate([data.astronaut(), data.chelsea(), data.coffee(), data.rocket()][:n]):
    Image.fromarray(img).save(path / f'p{i}.png')
  return path


def test_adversarial_distillation_of_a_fullres_branch(trained, tmp_path):
  """A 2 -> 1 round with the full-resolution head, the discriminator and the lattice penalty: the branch's
  head leaves its zero start, the trunk stays the teacher's, the adversarial terms are in metrics.jsonl
  and loss.png, and a resumed run restores the critic with the rest."""
  photos = _photo_folder(tmp_path / 'photos', 4)
  workdir = tmp_path / 'G'
  args = [
    'zoom-enhance', 'distill', '--config', str(ROOT / 'configs' / 'distill_tiny.py'),
    '--workdir', str(workdir), f'--config.distill.teacher_workdir={trained}',
    f'--config.data.source=folder:{photos}', '--config.data.patch_size=32',
    '--config.distill.start_steps=2', '--config.distill.end_steps=1',
    '--config.distill.eval_holdout=0', '--config.train.log_every=1',
    '--config.train.lr=5e-3', '--config.train.warmup_steps=1',
    '--config.model.detail_branch=True', '--config.model.detail_head=fullres',
    '--config.distill.loss=perceptual', '--config.distill.train_detail=True',
    '--config.distill.hr_lpips_weight=4', '--config.distill.fidelity_from_data=True',
    '--config.distill.fidelity_blend=True', '--config.distill.adversarial_weight=0.5',
    '--config.distill.lattice_weight=1.0', '--config.train.checkpoint_every=3',
  ]  # fmt: skip
  assert cli.main([*args, '--config.distill.steps_per_round=3']) == 0
  assert cli.main([*args, '--config.distill.steps_per_round=5']) == 0  # resumes at step 3
  params, student_config, step = checkpoint.restore_params(str(workdir))
  teacher_params, _, _ = checkpoint.restore_params(trained)
  assert step == 5 and student_config.model.detail_head == 'fullres'
  flat = traverse_util.flatten_dict(params)
  for key, value in traverse_util.flatten_dict(teacher_params).items():
    np.testing.assert_allclose(flat[key], value, rtol=1e-6, atol=1e-7, err_msg='/'.join(key))
  head_out = [v for k, v in flat.items() if k[:3] == (distill.BRANCH, 'head', 'out')]
  assert head_out and all(np.any(v) for v in head_out)
  rows = metrics_log.read_metrics(str(workdir))
  assert [r['step'] for r in rows if 'train/critic_loss' in r] == [1, 2, 3, 4, 5]
  for key in ('train/adversarial_loss', 'train/critic_loss', 'train/critic_real', 'train/lattice_penalty'):
    assert all(np.isfinite(r[key]) for r in rows if key in r), key
  assert (workdir / 'loss.png').exists()
  saved = json.loads((workdir / 'config.json').read_text()) if (workdir / 'config.json').exists() else None
  assert saved is None or saved['distill']['adversarial_weight'] == 0.5
