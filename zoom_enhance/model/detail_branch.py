"""The detail branch of a distilled student: what a fixed trunk's output gets added, drawn from the noise.

`DetailBranch` reads the trunk's last features, the noise and the detail D;
its head makes the full-resolution detail, either by sub-pixel up-sampling
(the first shipped branch) or at full resolution (`FullResDetailHead`).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from zoom_enhance.model.layers import ResBlock
from zoom_enhance.model.layers import SubpixelUp
from zoom_enhance.model.layers import hat_embedding
from zoom_enhance.model.layers import tent_upsample


class FullResDetailHead(nn.Module):
  """The detail at full resolution from branch features b (1/p), the noise z and the LR image.

    u = tent_upsample(W b, p)   (F features, interpolated: no per-position weights)
    r = conv3x3(silu(conv3x3([u, z, lr_up])))
  The convolutions see exact pixels (the noise, the image's edges), so drawn
  texture follows the photo at full resolution, and every weight is shared
  by all pixels alike. The last convolution starts at zero: a branch added
  to a trained trunk starts as that trunk.
  """

  features: int
  patch: int
  # Channels between the two full-resolution convolutions: 16 took the int8 tile 1.7x the subpixel
  # branch's time; 8 costs about 1.3k multiply-adds per output pixel in all.
  hidden: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, b, z, lr_up):
    # The 1x1 convolution at 1/p, then its copies shuffled into each p x p block: exported as CONV_2D,
    # CONCATENATION and DEPTH_TO_SPACE (export_tflite/resizable.py), all ops that resize with the tile.
    u = tent_upsample(nn.Conv(self.features, (1, 1), dtype=self.dtype, name='to_full')(b), self.patch)
    x = jnp.concatenate([u, z, lr_up.astype(self.dtype)], axis=-1)
    x = nn.silu(nn.Conv(self.hidden, (3, 3), dtype=self.dtype, name='mix')(x))
    return nn.Conv(3, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros, name='out')(x)


class DetailBranch(nn.Module):
  """What a fixed trunk's output gets added: r(h, z, D), a refinement at D = 0, drawn detail at D = 1.

  In the spirit of "Deblurring via Stochastic Refinement" (Whang et al. 2022):
  the trunk predicts, the branch refines with noise. h is the trunk's last
  feature map (B, H/p, W/p, C), which already carries the scale and the noise
  level; z the noise input (B, H, W, 3: the sampler's D * eps); D's hat
  embedding is the branch's FiLM conditioning.
  b = two ResBlocks of h + patchconv(z), then
    r = up(silu(b)) + up'(silu(b)) * conv3x3(z):
  a residual drawn at 1/p of the resolution, plus full-resolution noise,
  filtered, whose amplitude per pixel and channel depends on the content
  (head 'subpixel'); or, with head 'fullres', r = FullResDetailHead(silu(b),
  z, lr_up). The output maps start at zero, so a branch added to a trained
  trunk starts as that trunk.
  """

  features: int
  patch: int
  groups: int
  head: str = 'subpixel'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, z, detail, train: bool, lr_up=None):
    p = self.patch
    emb = hat_embedding(detail.astype(jnp.float32), 5, 0.0, 1.0, clip=False).astype(self.dtype)
    noise_in = nn.Conv(
      self.features,
      (p, p),
      strides=(p, p),
      padding='VALID',
      use_bias=False,
      dtype=self.dtype,
      name='noise_in',
    )
    b = h + noise_in(z)
    for _ in range(2):
      b = ResBlock(self.features, self.groups, 0.0, self.dtype)(b, emb, train)
    b = nn.silu(b)
    if self.head == 'fullres':
      return FullResDetailHead(8, p, dtype=self.dtype, name='head')(b, z, lr_up)
    drawn = SubpixelUp(3, p, dtype=self.dtype, kernel_init=nn.initializers.zeros, name='drawn')(b)
    amplitude = SubpixelUp(3, p, dtype=self.dtype, kernel_init=nn.initializers.zeros, name='amplitude')(b)
    noise = nn.Conv(3, (3, 3), use_bias=False, dtype=self.dtype, name='noise_out')(z)
    return drawn + amplitude * noise
