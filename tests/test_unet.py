"""The U-Net: shapes, rank-4 GroupNorm, conditioning embeddings."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_params

from zoom_enhance.model import layers
from zoom_enhance.model import unet


def test_rank4_group_norm_matches_flax_group_norm():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 16)) * 3.0 + 1.0
  ours = layers.GroupNorm(groups=4)
  ref = nn.GroupNorm(num_groups=4, epsilon=1e-5)
  p = ours.init(jax.random.PRNGKey(1), x)
  np.testing.assert_allclose(ours.apply(p, x), ref.apply(p, x), atol=1e-4)


def test_group_norm_graph_has_no_rank5_tensor():
  x = jnp.ones((1, 4, 4, 16))
  m = layers.GroupNorm(groups=4)
  p = m.init(jax.random.PRNGKey(0), x)
  jaxpr = jax.make_jaxpr(lambda x: m.apply(p, x))(x)
  ranks = {v.aval.ndim for eqn in jaxpr.eqns for v in eqn.outvars}
  assert max(ranks) <= 4


def test_scale_embedding_is_a_partition_of_unity():
  s = jnp.array([1.0, 1.6, 2.0, 3.3, 4.0, 7.0])
  f = unet.scale_embedding(s, 8, 4.0)
  np.testing.assert_allclose(f.sum(-1), 1.0, atol=1e-6)
  assert not np.allclose(f[1], f[2])
  np.testing.assert_allclose(f[-1], f[-2])  # clipped to max_scale


@pytest.mark.parametrize('name', ['tiny', 'small'])
def test_forward_shapes_and_conditioning(name):
  variant = unet.VARIANTS[name]
  model = unet.UNet(variant)
  side = 2 * unet.size_multiple(variant)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, side, side, 3))
  params = random_params(model, z, z, jnp.zeros(2), jnp.ones(2), seed=1)
  apply = jax.jit(lambda logsnr, scale: model.apply({'params': params}, z, z, logsnr, scale))
  out = apply(jnp.array([0.0, 0.0]), jnp.array([2.0, 2.0]))
  assert out.shape == z.shape and out.dtype == jnp.float32
  other_scale = apply(jnp.array([0.0, 0.0]), jnp.array([3.0, 3.0]))
  other_noise = apply(jnp.array([5.0, 5.0]), jnp.array([2.0, 2.0]))
  assert float(jnp.abs(out - other_scale).max()) > 1e-4
  assert float(jnp.abs(out - other_noise).max()) > 1e-4
  with pytest.raises(ValueError, match='multiples'):
    model.apply({'params': params}, z[:, : side - 1], z[:, : side - 1], jnp.zeros(2), jnp.ones(2))


def test_gated_input_ignores_pure_noise_and_passes_clean_input():
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
  learned = jnp.zeros((2, 3))
  for xp in (np, jnp):  # host constants (export) and traced values (training) alike
    logsnr = xp.array([-20.0, 20.0], np.float32)
    out = np.asarray(unet.gate_noisy_input(z, logsnr, learned))
    assert np.abs(out[0]).max() < 1e-3 * np.abs(np.asarray(z[0])).max()  # t = 1: alpha ~ 5e-5
    np.testing.assert_allclose(out[1], z[1], rtol=1e-6)  # t = 0: alpha ~ 1


def test_mobile_model_at_t1_barely_depends_on_the_noise():
  """With the gate, two noise draws at logsnr_min give (nearly) the same prediction."""
  model = unet.UNet(unet.get_variant('mobile'))
  lr_up = jax.random.uniform(jax.random.PRNGKey(1), (1, 32, 32, 3), minval=-1, maxval=1)
  z1, z2 = (jax.random.normal(jax.random.PRNGKey(k), (1, 32, 32, 3)) for k in (2, 3))
  logsnr, scale = jnp.array([-20.0]), jnp.array([4.0])
  params = {'params': random_params(model, z1, lr_up, logsnr, scale, seed=4)}
  apply = jax.jit(lambda z, logsnr: model.apply(params, z, lr_up, logsnr, scale))
  out1, out2 = (apply(z, logsnr) for z in (z1, z2))
  assert float(jnp.abs(out1 - out2).max()) < 1e-3 * float(jnp.abs(out1).max())
  out3 = apply(z2, jnp.array([0.0]))
  assert float(jnp.abs(out3 - out1).max()) > 1e-2  # at logsnr 0 the noise does reach the network


def test_direct_noise_student_starts_as_its_gated_teacher_and_can_see_its_noise_at_t1():
  """model.direct_noise adds only zero-initialised kernels: with them at zero the student is the gated teacher
  (distill.student_params), noise-blind at t = 1; once they are trained, two noise draws differ there."""
  import dataclasses

  from zoom_enhance.training import distill

  teacher = unet.UNet(unet.get_variant('mobile'))
  student = unet.UNet(dataclasses.replace(unet.get_variant('mobile'), direct_noise=True))
  lr_up = jax.random.uniform(jax.random.PRNGKey(1), (1, 32, 32, 3), minval=-1, maxval=1)
  z1, z2 = (jax.random.normal(jax.random.PRNGKey(k), (1, 32, 32, 3)) for k in (2, 3))
  logsnr, scale = jnp.array([-20.0]), jnp.array([4.0])
  teacher_params = random_params(teacher, z1, lr_up, logsnr, scale, seed=4)
  like = jax.eval_shape(student.init, jax.random.PRNGKey(0), z1, lr_up, logsnr, scale)['params']
  params = distill.student_params(teacher_params, like)
  assert set(params) - set(teacher_params) == {'noise_in', 'noise_out'}
  assert not any(np.any(leaf) for name in ('noise_in', 'noise_out') for leaf in jax.tree.leaves(params[name]))
  run_t = jax.jit(lambda z: teacher.apply({'params': teacher_params}, z, lr_up, logsnr, scale))
  run_s = jax.jit(lambda p, z: student.apply({'params': p}, z, lr_up, logsnr, scale))
  np.testing.assert_allclose(run_s(params, z1), run_t(z1), rtol=1e-5, atol=1e-6)  # XLA may fuse differently
  trained = random_params(student, z1, lr_up, logsnr, scale, seed=5)
  trained = dict(params, noise_in=trained['noise_in'], noise_out=trained['noise_out'])
  out1, out2 = run_s(trained, z1), run_s(trained, z2)
  assert float(jnp.abs(out1 - out2).max()) > 0.1 * float(jnp.abs(out1).max())
  # A teacher with parameters the student lacks, or of another shape, is refused by name.
  with pytest.raises(ValueError, match='Conv_0/kernel is shaped'):
    bad = jax.tree.map(lambda a: a, teacher_params)
    bad['Conv_0'] = dict(bad['Conv_0'], kernel=np.zeros((1, 1, 1, 1), np.float32))
    distill.student_params(bad, like)


def test_detail_input_starts_as_the_teacher_and_then_switches_the_network_by_the_detail():
  """model.detail_input adds a zero-initialised embedding of D: with it at zero the student computes its
  teacher's function for every D (distill.student_params); trained, D = 0 and D = 1 are two outputs of one
  network."""
  import dataclasses

  from zoom_enhance.training import distill

  mobile = unet.get_variant('mobile')
  teacher = unet.UNet(dataclasses.replace(mobile, direct_noise=True))
  student = unet.UNet(dataclasses.replace(mobile, direct_noise=True, detail_input=True))
  lr_up = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3), minval=-1, maxval=1)
  z = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 3))
  logsnr, scale = jnp.full((2,), -20.0), jnp.full((2,), 4.0)
  teacher_params = random_params(teacher, z, lr_up, logsnr, scale, seed=4)
  like = jax.eval_shape(student.init, jax.random.PRNGKey(0), z, lr_up, logsnr, scale)['params']
  params = distill.student_params(teacher_params, like)
  assert set(params) - set(teacher_params) == {'detail_in'}
  run_s = jax.jit(lambda p, d: student.apply({'params': p}, z, lr_up, logsnr, scale, detail=d))
  want = teacher.apply({'params': teacher_params}, z, lr_up, logsnr, scale)
  for d in (0.0, 0.5, 1.0):
    np.testing.assert_allclose(run_s(params, jnp.full((2,), d)), want, rtol=1e-5, atol=1e-6)
  trained = dict(params, detail_in=random_params(student, z, lr_up, logsnr, scale, seed=5)['detail_in'])
  out0, out1 = run_s(trained, jnp.zeros((2,))), run_s(trained, jnp.ones((2,)))
  assert float(jnp.abs(out0 - out1).max()) > 0.01 * float(jnp.abs(out1).max())
  # Per example: the detail of one example does not reach the other.
  mixed = run_s(trained, jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(mixed[0], out0[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(mixed[1], out1[1], rtol=1e-5, atol=1e-6)
  # Without a detail the network runs at D = 1, the sampler's full detail.
  np.testing.assert_allclose(
    student.apply({'params': trained}, z, lr_up, logsnr, scale), out1, rtol=1e-5, atol=1e-6
  )


def test_detail_branch_keeps_the_teacher_as_its_trunk_and_draws_from_the_noise():
  """model.detail_branch: the teacher's parameters are the trunk; a fresh branch (output maps at zero)
  leaves the teacher's function at every D; trained, its output at D = 0 is still exactly the trunk's (its
  drawn detail is scaled by D) and it draws from the noise at D = 1; the trunk gets no gradient."""
  import dataclasses

  from zoom_enhance.training import distill

  mobile = unet.get_variant('mobile')
  teacher = unet.UNet(mobile)
  student = unet.UNet(dataclasses.replace(mobile, detail_branch=True))
  assert student.variant.reads_detail and not teacher.variant.reads_detail
  lr_up = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3), minval=-1, maxval=1)
  z1, z2 = (jax.random.normal(jax.random.PRNGKey(k), (2, 32, 32, 3)) for k in (2, 3))
  logsnr, scale = jnp.full((2,), -20.0), jnp.full((2,), 4.0)
  teacher_params = random_params(teacher, z1, lr_up, logsnr, scale, seed=4)
  fresh = student.init(jax.random.PRNGKey(0), z1, lr_up, logsnr, scale)['params']
  like = jax.eval_shape(lambda: fresh)
  params = dict(distill.student_params(teacher_params, like), detail_branch=fresh['detail_branch'])
  assert set(params) - set(teacher_params) == {distill.BRANCH}
  run_s = jax.jit(lambda p, z, d: student.apply({'params': p}, z, lr_up, logsnr, scale, detail=d))
  want = teacher.apply({'params': teacher_params}, z1, lr_up, logsnr, scale)
  for d in (0.0, 0.5, 1.0):
    np.testing.assert_allclose(run_s(params, z1, jnp.full((2,), d)), want, rtol=1e-5, atol=1e-6)
  branch = random_params(student, z1, lr_up, logsnr, scale, seed=5)['detail_branch']
  trained = dict(params, detail_branch=branch)
  zero, one = jnp.zeros((2,)), jnp.ones((2,))
  fidelity = run_s(trained, jnp.zeros_like(z1), zero)
  detailed1, detailed2 = run_s(trained, z1, one), run_s(trained, z2, one)
  size = float(jnp.abs(want).max())
  # At D = 0 the branch adds nothing, whatever the noise: the output is the trunk's, the teacher's.
  np.testing.assert_allclose(run_s(trained, z1, zero), want, rtol=1e-5, atol=1e-6)
  want0 = teacher.apply({'params': teacher_params}, jnp.zeros_like(z1), lr_up, logsnr, scale)
  np.testing.assert_allclose(fidelity, want0, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(detailed1 - fidelity).max()) > 0.01 * size
  assert float(jnp.abs(run_s(trained, z1, jnp.full((2,), 0.5)) - want).max()) > 0.01 * size
  assert float(jnp.abs(detailed1 - detailed2).max()) > 0.01 * size
  # Only the branch learns: the gradient of any loss reaches none of the trunk's parameters.
  grads = jax.grad(lambda p: jnp.sum(run_s(p, z1, one) ** 2))(trained)
  assert all(not np.any(g) for k in teacher_params for g in jax.tree.leaves(grads[k]))
  assert any(np.any(g) for g in jax.tree.leaves(grads['detail_branch']))


def _depth_to_space_rank6(x, r):
  """Reference pixel shuffle (rank-6 transpose) in the channel order of unet.pixel_shuffle."""
  b, h, w, c = x.shape
  co = c // (r * r)
  x = x.reshape(b, h, w, r, r, co)  # (..., dx, dy, c)
  x = x.transpose(0, 1, 4, 2, 3, 5)  # (b, h, dy, w, dx, c)
  return x.reshape(b, h * r, w * r, co)


@pytest.mark.parametrize('r', [2, 4])
def test_pixel_shuffle_is_depth_to_space_with_rank4_ops_only(r):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, r * r * 3))
  np.testing.assert_array_equal(layers.pixel_shuffle(x, r), _depth_to_space_rank6(x, r))
  jaxpr = jax.make_jaxpr(lambda x: layers.pixel_shuffle(x, r))(x)
  assert max(v.aval.ndim for eqn in jaxpr.eqns for v in eqn.outvars) <= 4


@pytest.mark.parametrize('r', [2, 4])
def test_subpixel_up_computes_what_a_transposed_conv_with_kernel_equal_to_stride_does(r):
  """Same function family: the transposed conv's kernel, rearranged, gives SubpixelUp the same output."""
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 4, 6, 5))
  tconv = nn.ConvTranspose(3, (r, r), strides=(r, r))
  tp = tconv.init(jax.random.PRNGKey(1), x)['params']
  # (ky, kx, in, out), flipped: flax's transposed conv applies the kernel reversed.
  kernel = np.asarray(tp['kernel'])[::-1, ::-1]
  # SubpixelUp's channel k = (dx * r + dy) * out + c.
  w = kernel.transpose(2, 1, 0, 3).reshape(1, 1, x.shape[-1], r * r * 3)
  sub = layers.SubpixelUp(3, r)
  sp = {'Conv_0': {'kernel': jnp.asarray(w), 'bias': jnp.tile(tp['bias'], r * r)}}
  np.testing.assert_allclose(sub.apply({'params': sp}, x), tconv.apply({'params': tp}, x), atol=1e-5)


def test_mobile_model_has_no_transposed_convolution():
  model = unet.UNet(unet.get_variant('mobile'))
  z = jnp.zeros((1, 16, 16, 3))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), z, z, jnp.zeros((1,)), jnp.full((1,), 4.0))[
    'params'
  ]
  names = jax.tree_util.tree_map_with_path(lambda p, _: jax.tree_util.keystr(p), params)
  assert not any('ConvTranspose' in n for n in jax.tree.leaves(names))
  assert any('SubpixelUp' in n for n in jax.tree.leaves(names))
