"""The DDIM upscaler of a config, bound once: one `sample` for sample grids, `zoom-enhance sample`,
distillation's evaluations and export.

`Sampler(config).sample(params, lr_up, noise, scale, num_steps=N)` maps the
model's contract (the runtime's too: lr_up and noise of a tile, the scale)
to the enhanced image; export converts exactly this function, unrolled.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from zoom_enhance.imaging import resample
from zoom_enhance.model import diffusion
from zoom_enhance.model import unet


def make_denoise_fn(model, diff: diffusion.Diffusion, params, lr_up, scale, detail=None):
  """denoise(z, logsnr) -> (x_hat, eps_hat) of a network, with x_hat clipped to valid images.

  `detail` (B,) reaches networks that read it (unet.Variant.reads_detail; None: 1).
  """

  def denoise(z, logsnr):
    out = model.apply({'params': params}, z, lr_up, logsnr, scale, train=False, detail=detail)
    x_hat, _ = diff.x_eps(out, z=z, logsnr=logsnr)
    x_hat = diff.clip(x_hat, lr_up)
    # eps consistent with the clipped x keeps DDIM on the data manifold.
    eps_hat = diffusion.eps_from_x(z=z, x=x_hat, logsnr=logsnr)
    return x_hat, eps_hat

  return denoise


class Sampler:
  """The network and diffusion of a config; `sample` is the upscaler as a function of its parameters."""

  def __init__(self, config, dtype=jnp.float32):
    self.model = unet.from_config(config, dtype)
    self.diffusion = diffusion.Diffusion.from_config(config.diffusion)
    self.size_multiple = unet.size_multiple(self.model.variant)
    self._jitted = {}

  @property
  def takes_detail(self) -> bool:
    """Whether the network reads the detail D as an input (unet.Variant.reads_detail), not only the noise."""
    return self.model.variant.reads_detail

  def denoise_fn(self, params, lr_up, scale, detail=None):
    return make_denoise_fn(self.model, self.diffusion, params, lr_up, scale, detail)

  def sample(
    self,
    params,
    lr_up,
    noise,
    scale,
    *,
    num_steps: int,
    unroll: bool = False,
    temperature: float = 1.0,
    detail=None,
  ):
    """HR estimate in [-1, 1] from lr_up and noise (B, H, W, 3) and scale (B,).

    DDIM from z_1 = temperature * noise: 1 draws a sample, lower values move
    the output toward the mean-like estimate at the centre of the noise
    distribution (0 is deterministic), trading generated texture for
    fidelity. A network that reads the detail (unet.Variant.reads_detail) gets D as
    an input: `detail` (B,), by default the temperature (the runtime scales
    the noise by D itself and passes D). `unroll` writes the step loop out
    with its noise levels as constants (for export).
    """
    if detail is None:
      detail = jnp.full(scale.shape, temperature, jnp.float32)
    x = diffusion.ddim_sample(
      self.denoise_fn(params, lr_up, scale, detail),
      temperature * noise,
      num_steps=num_steps,
      logsnr_fn=self.diffusion.logsnr,
      unroll=unroll,
    )
    return jnp.clip(self.diffusion.decode(x, lr_up), -1.0, 1.0)

  def jitted(self, num_steps: int, temperature: float = 1.0):
    """sample(params, lr_up, noise, scale) jitted per step count and temperature (compiled once per shape)."""
    key = (num_steps, float(temperature))
    if key not in self._jitted:
      self._jitted[key] = jax.jit(
        functools.partial(self.sample, num_steps=num_steps, temperature=float(temperature))
      )
    return self._jitted[key]

  def upscale_image(
    self, params, lr_uint8, out_hw, *, num_steps: int, seed: int = 0, temperature: float = 1.0
  ) -> np.ndarray:
    """Enhances a whole uint8 image to `out_hw` (no tiling): lr_up, mirror-padded to the model's multiple.

    The noise is N(0, 1) from jax.random.PRNGKey(seed), over the padded size,
    times `temperature` (the runtime's detail).
    """
    h, w = out_hw
    scale = 0.5 * (h / lr_uint8.shape[0] + w / lr_uint8.shape[1])
    mult = self.size_multiple
    cond = np.pad(
      resample.lr_up(lr_uint8, (h, w)), ((0, -h % mult), (0, -w % mult), (0, 0)), mode='symmetric'
    )[None]
    noise = jax.random.normal(jax.random.PRNGKey(seed), cond.shape, jnp.float32)
    out = self.jitted(num_steps, temperature)(
      params, jnp.asarray(cond), noise, jnp.asarray([scale], jnp.float32)
    )
    return resample.from_signed(np.asarray(out)[0, :h, :w])
