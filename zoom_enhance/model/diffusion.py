"""Diffusion maths: cosine logSNR schedule, x/eps/v conversions, loss, DDIM.

Notation (Kingma et al. 2021; Salimans & Ho 2022): z = alpha x + sigma eps with
alpha^2 = sigmoid(logsnr), sigma^2 = sigmoid(-logsnr), so alpha^2 + sigma^2 = 1
(variance preserving) and logsnr = log(alpha^2 / sigma^2). Time t in [0, 1]
runs from data (t=0, high logSNR) to noise (t=1, low logSNR). Everything here
is a pure function of arrays; no Flax state.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def array_module(x):
  """numpy for concrete host values, jax.numpy otherwise.

  Noise levels of a fixed-step sampler are known ahead of time: computing
  them with numpy makes them constants of an exported graph instead of
  EXP/LOG/ATAN2 ops that a GPU delegate may not run.
  """
  return np if isinstance(x, (float, int, np.ndarray, np.floating)) else jnp


def logsnr_schedule_cosine(t, *, logsnr_min=-20.0, logsnr_max=20.0):
  """logsnr(t) = -2 log tan(a t + b).

  b = arctan(exp(-logsnr_max / 2)), a = arctan(exp(-logsnr_min / 2)) - b, so
  logsnr(0) = logsnr_max and logsnr(1) = logsnr_min (the cosine schedule of
  Nichol & Dhariwal, written in logSNR and clipped to a finite range).
  """
  xp = array_module(t)
  b = xp.arctan(xp.exp(-0.5 * logsnr_max))
  a = xp.arctan(xp.exp(-0.5 * logsnr_min)) - b
  return -2.0 * xp.log(xp.tan(a * t + b))


def low_discrepancy_times(rng, batch: int):
  """t_i = (u + i / B) mod 1 with one u ~ U(0, 1): stratified times per batch.

  Each t_i is still uniform, but the batch covers [0, 1) evenly, which cuts
  the variance of the loss estimate (Kingma et al. 2021, appendix).
  """
  u = jax.random.uniform(rng, ())
  return jnp.mod(u + jnp.arange(batch, dtype=jnp.float32) / batch, 1.0)


def skew_times(t, power: float):
  """t' = t^(1/p): density p t'^(p-1) on [0, 1].

  p = 1 keeps t uniform; p > 1 spends more of the training on high noise
  levels (t near 1), where a few-step sampler takes its largest steps and the
  first step's x-prediction decides most of the result.
  """
  return t if power == 1.0 else t ** (1.0 / power)


def with_max_times(t, rng, prob: float):
  """t_i <- 1 with probability `prob`, else unchanged.

  At t = 1 (logsnr_min) the input is pure noise and the x-loss is plain
  regression of the target on the LR image: the first step of every sampler,
  and the whole of a one-step one. A share of the batch there teaches it many
  times faster than the few examples a continuous draw puts near t = 1.
  """
  if prob <= 0.0:
    return t
  return jnp.where(jax.random.uniform(rng, t.shape) < prob, 1.0, t)


def alpha_sigma(logsnr):
  """alpha = sqrt(sigmoid(logsnr)), sigma = sqrt(sigmoid(-logsnr))."""
  if array_module(logsnr) is np:
    logsnr = np.asarray(logsnr, np.float32)
    return np.sqrt(1.0 / (1.0 + np.exp(-logsnr))), np.sqrt(1.0 / (1.0 + np.exp(logsnr)))
  return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def _bcast(logsnr, x):
  """Per-example logSNR of shape (B,) broadcast against images (B, H, W, C)."""
  xp = array_module(logsnr)
  return xp.reshape(logsnr, np.shape(logsnr) + (1,) * (np.ndim(x) - np.ndim(logsnr)))


def diffuse(*, x, eps, logsnr):
  """z = alpha x + sigma eps."""
  alpha, sigma = alpha_sigma(_bcast(logsnr, x))
  return alpha * x + sigma * eps


def v_from_x_eps(*, x, eps, logsnr):
  """v = alpha eps - sigma x."""
  alpha, sigma = alpha_sigma(_bcast(logsnr, x))
  return alpha * eps - sigma * x


def x_from_v(*, z, v, logsnr):
  """x = alpha z - sigma v."""
  alpha, sigma = alpha_sigma(_bcast(logsnr, z))
  return alpha * z - sigma * v


def eps_from_v(*, z, v, logsnr):
  """eps = sigma z + alpha v."""
  alpha, sigma = alpha_sigma(_bcast(logsnr, z))
  return sigma * z + alpha * v


def x_from_eps(*, z, eps, logsnr):
  """x = (z - sigma eps) / alpha."""
  alpha, sigma = alpha_sigma(_bcast(logsnr, z))
  return (z - sigma * eps) / alpha


def eps_from_x(*, z, x, logsnr):
  """eps = (z - alpha x) / sigma."""
  alpha, sigma = alpha_sigma(_bcast(logsnr, z))
  return (z - alpha * x) / sigma


def x_eps_from_v(output, *, z, logsnr):
  """The output is v: x = alpha z - sigma v, eps = sigma z + alpha v."""
  return x_from_v(z=z, v=output, logsnr=logsnr), eps_from_v(z=z, v=output, logsnr=logsnr)


def x_eps_from_eps(output, *, z, logsnr):
  """The output is eps: x = (z - sigma eps) / alpha."""
  return x_from_eps(z=z, eps=output, logsnr=logsnr), output


def x_eps_from_x(output, *, z, logsnr):
  """The output is x: eps = (z - alpha x) / sigma."""
  return output, eps_from_x(z=z, x=output, logsnr=logsnr)


# What the network predicts -> how its output becomes (x, eps).
PREDICTIONS = {'v': x_eps_from_v, 'eps': x_eps_from_eps, 'x': x_eps_from_x}


def snr_plus_one(logsnr):
  """w = SNR + 1: equal to plain MSE on v, since |v - v_hat|^2 = (1 + SNR) |x - x_hat|^2."""
  return jnp.exp(logsnr) + 1.0


def snr_trunc(logsnr):
  """w = max(SNR, 1): Salimans & Ho's truncated SNR."""
  return jnp.maximum(jnp.exp(logsnr), 1.0)


# Weight of the x-space squared error at a noise level, by name.
LOSS_WEIGHTINGS = {'snr_plus_one': snr_plus_one, 'snr_trunc': snr_trunc}


def weighted_x_errors(*, x_pred, x_target, logsnr, weighting):
  """Per example b: w(logsnr_b) * mean_pixels (x_pred - x_target)^2, w one of LOSS_WEIGHTINGS."""
  per_example = jnp.mean(jnp.square(x_pred - x_target), axis=tuple(range(1, x_pred.ndim)))
  return LOSS_WEIGHTINGS[weighting](logsnr) * per_example


def weighted_x_loss(*, x_pred, x_target, logsnr, weighting):
  """mean_b of weighted_x_errors."""
  return jnp.mean(weighted_x_errors(x_pred=x_pred, x_target=x_target, logsnr=logsnr, weighting=weighting))


def ddim_step(*, x_pred, eps_pred, logsnr_s):
  """Deterministic DDIM update to the next, less noisy level s.

  z_s = alpha_s x_hat + sigma_s eps_hat, where (x_hat, eps_hat) are the model's
  predictions at the current level t (Song et al. 2021, eta = 0).
  """
  alpha_s, sigma_s = alpha_sigma(_bcast(logsnr_s, x_pred))
  return alpha_s * x_pred + sigma_s * eps_pred


def distill_x_target(*, z_t, z_s, logsnr_t, logsnr_s):
  """The x whose one DDIM step from z_t lands on z_s (Salimans & Ho 2022, eq. 8).

  A DDIM step from t to s with prediction x is
    z_s = alpha_s x + sigma_s (z_t - alpha_t x) / sigma_t,
  so x = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t).
  With z_s made by two teacher DDIM steps, this is the student's target.
  """
  alpha_t, sigma_t = alpha_sigma(_bcast(logsnr_t, z_t))
  alpha_s, sigma_s = alpha_sigma(_bcast(logsnr_s, z_t))
  ratio = sigma_s / sigma_t
  return (z_s - ratio * z_t) / (alpha_s - ratio * alpha_t)


def encode_target(hr, lr_up, *, residual, residual_scale):
  """What is diffused: x = (hr - lr_up) * residual_scale, or hr itself."""
  return (hr - lr_up) * residual_scale if residual else hr


def decode_target(x, lr_up, *, residual, residual_scale):
  """Inverse of encode_target: hr = lr_up + x / residual_scale, or x."""
  return lr_up + x / residual_scale if residual else x


def clip_x(x, lr_up, *, residual, residual_scale):
  """Clips a predicted x so that the image it decodes to lies in [-1, 1]."""
  hr = jnp.clip(decode_target(x, lr_up, residual=residual, residual_scale=residual_scale), -1.0, 1.0)
  return encode_target(hr, lr_up, residual=residual, residual_scale=residual_scale)


DenoiseFn = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def ddim_sample(denoise: DenoiseFn, z_init, *, num_steps: int, logsnr_fn, unroll: bool = False):
  """Runs `num_steps` DDIM steps from pure noise z_init at t=1 down to t=0.

  denoise(z, logsnr) -> (x_hat, eps_hat), logsnr of shape (B,). Step i goes
  from t = i / N to s = (i - 1) / N; the last one returns x_hat(t = 1 / N).
  Deterministic: the only randomness is z_init. `unroll` writes the loop out
  (for export); otherwise it is a lax.fori_loop.
  """
  batch = z_init.shape[0]

  def levels(i):
    """logSNR at t = i / N as a (B,) array: host constants when unrolled."""
    if unroll:
      return np.full((batch,), logsnr_fn(float(i) / num_steps), np.float32)
    return jnp.full((batch,), logsnr_fn(i / num_steps), jnp.float32)

  def body(j, z):
    i = num_steps - j
    x_hat, eps_hat = denoise(z, levels(i))
    return ddim_step(x_pred=x_hat, eps_pred=eps_hat, logsnr_s=levels(i - 1))

  # The last step's output is x_hat itself: at s = 0, alpha_s ~ 1, sigma_s ~ 0.
  if unroll:
    z = z_init
    for j in range(num_steps - 1):
      z = body(j, z)
  else:
    z = jax.lax.fori_loop(0, num_steps - 1, body, z_init)
  x_hat, _ = denoise(z, levels(1))
  return x_hat


@dataclasses.dataclass(frozen=True)
class Diffusion:
  """`config.diffusion` bound once: the schedule, what is diffused, and how the network is read and scored.

  Frozen (hashable), so it can key caches of jitted functions.
  """

  logsnr_min: float
  logsnr_max: float
  prediction: str  # a key of PREDICTIONS
  loss_weighting: str  # a key of LOSS_WEIGHTINGS
  residual: bool
  residual_scale: float
  time_power: float
  max_time_prob: float

  @classmethod
  def from_config(cls, dcfg) -> 'Diffusion':
    return cls(**{f.name: dcfg[f.name] for f in dataclasses.fields(cls)})

  def logsnr(self, t):
    """logsnr_schedule_cosine(t) over [logsnr_min, logsnr_max]."""
    return logsnr_schedule_cosine(t, logsnr_min=self.logsnr_min, logsnr_max=self.logsnr_max)

  def encode(self, hr, lr_up):
    """encode_target with this config's residual settings."""
    return encode_target(hr, lr_up, residual=self.residual, residual_scale=self.residual_scale)

  def decode(self, x, lr_up):
    """decode_target with this config's residual settings."""
    return decode_target(x, lr_up, residual=self.residual, residual_scale=self.residual_scale)

  def clip(self, x, lr_up):
    """clip_x with this config's residual settings."""
    return clip_x(x, lr_up, residual=self.residual, residual_scale=self.residual_scale)

  def x_eps(self, output, *, z, logsnr):
    """The network's output read as this config's prediction: (x, eps)."""
    return PREDICTIONS[self.prediction](output, z=z, logsnr=logsnr)

  def training_times(self, rng_t, rng_max, batch: int):
    """t of a training batch: low-discrepancy, skewed by time_power, max_time_prob of them at 1."""
    t = skew_times(low_discrepancy_times(rng_t, batch), self.time_power)
    return with_max_times(t, rng_max, self.max_time_prob)

  def loss(self, *, x_pred, x_target, logsnr):
    """weighted_x_loss with this config's weighting."""
    return weighted_x_loss(x_pred=x_pred, x_target=x_target, logsnr=logsnr, weighting=self.loss_weighting)
