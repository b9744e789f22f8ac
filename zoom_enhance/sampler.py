"""Sampling with JAX: the DDIM upscaler as a function of (params, lr_up, scale, rng).

The same function draws the sample grids during training, enhances a photo
from a checkpoint (`zoom-enhance sample`), and is what export turns into a
TFLite graph.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from zoom_enhance import degrade
from zoom_enhance import diffusion
from zoom_enhance import unet


def build_model(config, dtype=jnp.float32) -> unet.UNet:
  return unet.UNet(unet.get_variant(config.model.variant), dtype=dtype)


def make_denoise_fn(model, params, dcfg, lr_up, scale):
  """denoise(z, logsnr) -> (x_hat, eps_hat) with x_hat clipped to valid images."""

  def denoise(z, logsnr):
    out = model.apply({'params': params}, z, lr_up, logsnr, scale, train=False)
    x_hat, _ = diffusion.x_eps_from_output(out, z=z, logsnr=logsnr, prediction=dcfg.prediction)
    x_hat = diffusion.clip_x(x_hat, lr_up, residual=dcfg.residual, residual_scale=dcfg.residual_scale)
    # eps consistent with the clipped x keeps DDIM on the data manifold.
    eps_hat = diffusion.eps_from_x(z=z, x=x_hat, logsnr=logsnr)
    return x_hat, eps_hat

  return denoise


def sample(params, lr_up, scale, rng, *, model, dcfg, num_steps: int, unroll: bool = False):
  """HR estimate in [-1, 1] from lr_up (B, H, W, 3) in [-1, 1] and scale (B,)."""
  logsnr_fn = functools.partial(diffusion.logsnr_schedule_cosine,
                                logsnr_min=dcfg.logsnr_min, logsnr_max=dcfg.logsnr_max)
  z = jax.random.normal(rng, lr_up.shape, jnp.float32)
  denoise = make_denoise_fn(model, params, dcfg, lr_up, scale)
  x = diffusion.ddim_sample(denoise, z, num_steps=num_steps, logsnr_fn=logsnr_fn, unroll=unroll)
  hr = diffusion.decode_target(x, lr_up, residual=dcfg.residual, residual_scale=dcfg.residual_scale)
  return jnp.clip(hr, -1.0, 1.0)


def make_sample_fn(config, num_steps: int):
  """A jitted sample(params, lr_up, scale, rng) for this config (cached: compiled once per shape)."""
  return _sample_fn(config.model.variant, config.diffusion.to_json(sort_keys=True), num_steps)


@functools.lru_cache(maxsize=32)
def _sample_fn(variant: str, dcfg_json: str, num_steps: int):
  import ml_collections
  dcfg = ml_collections.ConfigDict(json.loads(dcfg_json))
  model = unet.UNet(unet.get_variant(variant))
  return jax.jit(functools.partial(sample, model=model, dcfg=dcfg, num_steps=num_steps))


def to_uint8(x):
  """[-1, 1] floats to uint8 pixels."""
  return np.clip(np.round((np.asarray(x) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def psnr(a, b):
  """PSNR in dB between images in [-1, 1] (peak-to-peak 2), averaged over a batch."""
  mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2,
                axis=tuple(range(1, np.ndim(a))))
  return float(np.mean(10.0 * np.log10(4.0 / np.maximum(mse, 1e-12))))


def upscale_image(params, config, lr_uint8, out_hw, *, num_steps: int, seed: int = 0):
  """Enhances a whole uint8 image to `out_hw` with the JAX model (no tiling).

  The LR image is upsampled bicubic to the output size, reflect-padded to the
  model's size multiple, sampled, cropped and clamped.
  """
  h, w = out_hw
  scale = 0.5 * (h / lr_uint8.shape[0] + w / lr_uint8.shape[1])
  lr_up = degrade.bicubic_resize(lr_uint8, (h, w)) / 127.5 - 1.0
  mult = unet.size_multiple(unet.get_variant(config.model.variant))
  ph, pw = -h % mult, -w % mult
  lr_up = np.pad(np.clip(lr_up, -1, 1), ((0, ph), (0, pw), (0, 0)), mode='symmetric')
  fn = make_sample_fn(config, num_steps)
  out = fn(params, jnp.asarray(lr_up[None], jnp.float32), jnp.asarray([scale], jnp.float32),
           jax.random.PRNGKey(seed))
  return to_uint8(np.asarray(out)[0, :h, :w])
