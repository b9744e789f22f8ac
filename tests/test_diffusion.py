"""Diffusion maths identities and the DDIM sampler."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoom_enhance.model import diffusion

LOGSNR = jnp.array([-15.0, -4.0, 0.0, 3.0, 12.0])


def _pair(seed=0, shape=(5, 8, 8, 3)):
  kx, ke = jax.random.split(jax.random.PRNGKey(seed))
  return jax.random.normal(kx, shape), jax.random.normal(ke, shape)


def test_cosine_schedule_endpoints_and_monotone():
  t = jnp.linspace(0.0, 1.0, 101)
  logsnr = diffusion.logsnr_schedule_cosine(t, logsnr_min=-20.0, logsnr_max=20.0)
  assert float(logsnr[0]) == pytest.approx(20.0, abs=1e-3)
  assert float(logsnr[-1]) == pytest.approx(-20.0, abs=1e-2)
  assert bool(jnp.all(jnp.diff(logsnr) < 0))
  # The cosine schedule has alpha(t) ~ cos(pi t / 2) away from the clipped ends.
  alpha, _ = diffusion.alpha_sigma(diffusion.logsnr_schedule_cosine(jnp.array(0.5)))
  assert float(alpha) == pytest.approx(np.cos(np.pi / 4), abs=1e-3)


def test_variance_preserving():
  alpha, sigma = diffusion.alpha_sigma(LOGSNR)
  np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, atol=1e-6)
  np.testing.assert_allclose(jnp.log(alpha**2 / sigma**2), LOGSNR, atol=1e-3)


def test_x_eps_v_round_trips():
  x, eps = _pair()
  z = diffusion.diffuse(x=x, eps=eps, logsnr=LOGSNR)
  v = diffusion.v_from_x_eps(x=x, eps=eps, logsnr=LOGSNR)
  np.testing.assert_allclose(diffusion.x_from_v(z=z, v=v, logsnr=LOGSNR), x, atol=1e-5)
  np.testing.assert_allclose(diffusion.eps_from_v(z=z, v=v, logsnr=LOGSNR), eps, atol=1e-5)
  mid = LOGSNR[1:4]  # away from the ends where dividing by alpha or sigma is ill-conditioned
  zm = diffusion.diffuse(x=x[1:4], eps=eps[1:4], logsnr=mid)
  np.testing.assert_allclose(diffusion.x_from_eps(z=zm, eps=eps[1:4], logsnr=mid), x[1:4], atol=1e-4)
  np.testing.assert_allclose(diffusion.eps_from_x(z=zm, x=x[1:4], logsnr=mid), eps[1:4], atol=1e-4)
  for prediction, out in (('v', v), ('eps', eps), ('x', x)):
    xp, ep = diffusion.PREDICTIONS[prediction](out[1:4], z=zm if prediction != 'v' else z[1:4], logsnr=mid)
    np.testing.assert_allclose(xp, x[1:4], atol=1e-4)
    np.testing.assert_allclose(ep, eps[1:4], atol=1e-4)


def test_v_mse_equals_snr_plus_one_weighted_x_mse():
  x, eps = _pair(1)
  x_hat, _ = _pair(2)
  z = diffusion.diffuse(x=x, eps=eps, logsnr=LOGSNR)
  v = diffusion.v_from_x_eps(x=x, eps=eps, logsnr=LOGSNR)
  eps_hat = diffusion.eps_from_x(z=z, x=x_hat, logsnr=LOGSNR)
  v_hat = diffusion.v_from_x_eps(x=x_hat, eps=eps_hat, logsnr=LOGSNR)
  mid = slice(1, 4)
  v_mse = jnp.mean(jnp.mean((v - v_hat)[mid] ** 2, axis=(1, 2, 3)))
  x_loss = diffusion.weighted_x_loss(
    x_pred=x_hat[mid], x_target=x[mid], logsnr=LOGSNR[mid], weighting='snr_plus_one'
  )
  assert float(v_mse) == pytest.approx(float(x_loss), rel=1e-4)
  trunc = diffusion.LOSS_WEIGHTINGS['snr_trunc'](LOGSNR)
  np.testing.assert_allclose(trunc, np.maximum(np.exp(LOGSNR), 1.0), rtol=1e-6)


def test_residual_encoding_round_trip_and_clip():
  hr, lr_up = jnp.tanh(jnp.stack(_pair(3)))
  kw = dict(residual=True, residual_scale=2.0)
  x = diffusion.encode_target(hr, lr_up, **kw)
  np.testing.assert_allclose(diffusion.decode_target(x, lr_up, **kw), hr, atol=1e-6)
  wild = diffusion.clip_x(10.0 * x, lr_up, **kw)
  decoded = diffusion.decode_target(wild, lr_up, **kw)
  assert float(decoded.min()) >= -1.0 - 1e-6 and float(decoded.max()) <= 1.0 + 1e-6


@pytest.mark.parametrize('num_steps', [1, 2, 8])
def test_ddim_with_an_oracle_denoiser_recovers_the_data(num_steps):
  x, z_init = _pair(4)

  def oracle(z, logsnr):  # knows x, so its eps is exact for any z on the path
    return x, diffusion.eps_from_x(z=z, x=x, logsnr=logsnr)

  logsnr_fn = functools.partial(diffusion.logsnr_schedule_cosine, logsnr_min=-20.0, logsnr_max=20.0)
  out = diffusion.ddim_sample(oracle, z_init, num_steps=num_steps, logsnr_fn=logsnr_fn)
  np.testing.assert_allclose(out, x, atol=1e-5)


def test_ddim_is_deterministic_and_unroll_matches_loop():
  _, z_init = _pair(5, (2, 8, 8, 3))
  logsnr_fn = functools.partial(diffusion.logsnr_schedule_cosine, logsnr_min=-20.0, logsnr_max=20.0)

  def denoise(z, logsnr):  # a smooth, imperfect "model"
    x = jnp.tanh(0.5 * z + 0.1 * logsnr[:, None, None, None])
    return x, diffusion.eps_from_x(z=z, x=x, logsnr=logsnr)

  run = functools.partial(diffusion.ddim_sample, denoise, num_steps=6, logsnr_fn=logsnr_fn)
  a = jax.jit(lambda z: run(z))(z_init)
  b = jax.jit(lambda z: run(z))(z_init)
  c = run(z_init, unroll=True)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(a, c, atol=1e-5)
  d = run(z_init + 0.5)
  assert float(jnp.abs(a - d).max()) > 1e-3


def test_skewed_times_favour_high_noise_and_keep_the_range():
  u = np.linspace(0.0, 1.0, 10001, dtype=np.float32)
  assert diffusion.skew_times(u, 1.0) is u
  t = np.asarray(diffusion.skew_times(jnp.asarray(u), 2.0))
  assert t.min() == 0.0 and t.max() == 1.0 and np.all(np.diff(t) >= 0)
  assert abs(t.mean() - 2.0 / 3.0) < 1e-3  # E[U^(1/2)] = 2/3 (uniform: 1/2)
  assert abs(np.mean(t > 0.5) - 0.75) < 1e-3  # P(t > 1/2) = 1 - 1/4


def test_max_times_put_that_share_of_the_batch_at_t_1():
  t = jnp.linspace(0.0, 0.99, 20000)
  assert diffusion.with_max_times(t, jax.random.PRNGKey(0), 0.0) is t
  mixed = np.asarray(diffusion.with_max_times(t, jax.random.PRNGKey(0), 0.3))
  moved = mixed != np.asarray(t)
  assert np.all(mixed[moved] == 1.0) and abs(moved.mean() - 0.3) < 0.02


def test_the_config_binding_is_the_pure_functions_with_the_configs_settings():
  from zoom_enhance.training import config

  c = config.defaults().diffusion
  c.residual_scale, c.prediction, c.logsnr_min = 3.0, 'eps', -15.0
  d = diffusion.Diffusion.from_config(c)
  assert hash(d) == hash(diffusion.Diffusion.from_config(c))  # frozen: usable as a cache key
  hr, lr_up = _pair(6)
  kw = dict(residual=True, residual_scale=3.0)
  np.testing.assert_array_equal(d.encode(hr, lr_up), diffusion.encode_target(hr, lr_up, **kw))
  np.testing.assert_array_equal(d.decode(hr, lr_up), diffusion.decode_target(hr, lr_up, **kw))
  assert d.logsnr(1.0) == pytest.approx(-15.0) and d.logsnr(0.0) == pytest.approx(20.0)
  z = diffusion.diffuse(x=hr, eps=lr_up, logsnr=LOGSNR)
  x, eps = d.x_eps(lr_up[1:4], z=z[1:4], logsnr=LOGSNR[1:4])
  np.testing.assert_allclose(x, hr[1:4], atol=1e-4)  # an eps-prediction of the true eps gives back x
  np.testing.assert_array_equal(eps, lr_up[1:4])
