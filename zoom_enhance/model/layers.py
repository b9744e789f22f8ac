"""The U-Net's building blocks, written with the ops a phone's delegates run: rank-4 tensors throughout.

Embeddings of scalars by a hat basis, the rank-4 pixel shuffle and the
sub-pixel up-sampling made of it, GroupNorm without rank-5 reshapes,
residual blocks with FiLM conditioning, self-attention, and the tent filter
that interpolates without a grid signature.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def hat_embedding(x, num: int, lo: float, hi: float, clip: bool = True):
  """Hat-basis embedding of x in [lo, hi].

  With centres c_k evenly spaced over [lo, hi] and spacing w,
  f_k(x) = relu(1 - |clip(x) - c_k| / w): a partition of unity, exact at the
  centres and linear between them, made of ops every delegate supports.
  Without `clip` (a range of [0, 1], whose clip converts to RELU_0_TO_1, which
  the GPU delegate lacks) x must be in range already.
  """
  centres = np.linspace(lo, hi, num, dtype=np.float32)
  width = float(centres[1] - centres[0])
  x = (jnp.clip(x, lo, hi) if clip else x)[:, None]
  return nn.relu(1.0 - jnp.abs(x - centres[None, :]) / width)


def pixel_shuffle(x, r: int):
  """(B, H, W, r*r*C) -> (B, H*r, W*r, C) with rank-4 reshapes and transposes only.

  Channel k = (dx * r + dy) * C + c of input pixel (h, w) becomes output pixel
  (h*r + dy, w*r + dx), channel c. Folding the batch into the rows keeps every
  tensor at rank 4 (the TFLite GPU delegate's limit; the usual rank-6
  depth-to-space transpose is not supported there): reshape to
  (B*H, W*r, r, C), swap the middle axes, reshape to (B, H*r, W*r, C).
  """
  b, h, w, c = x.shape
  if c % (r * r):
    raise ValueError(f'{c} channels do not shuffle into {r}x{r} blocks')
  co = c // (r * r)
  x = x.reshape(b * h, w * r, r, co)
  x = jnp.transpose(x, (0, 2, 1, 3))
  return x.reshape(b, h * r, w * r, co)


class SubpixelUp(nn.Module):
  """x r up-sampling: a 1x1 convolution to r*r*features channels, then pixel_shuffle.

  The same family of functions as a transposed convolution with kernel =
  stride = r (every output pixel a linear map of one input pixel), built from
  ops that XNNPACK runs fast.
  """

  features: int
  factor: int
  dtype: Any = jnp.float32
  kernel_init: Any = nn.linear.default_kernel_init

  @nn.compact
  def __call__(self, x):
    r = self.factor
    h = nn.Conv(r * r * self.features, (1, 1), dtype=self.dtype, kernel_init=self.kernel_init)(x)
    return pixel_shuffle(h, r)


class GroupNorm(nn.Module):
  """GroupNorm over NHWC built from rank-4 ops only.

  mu_g = mean over (H, W, channels of group g); var_g likewise of (x - mu_g)^2;
  y = (x - mu_g) / sqrt(var_g + eps) * gamma + beta. The average over a group's
  channels is a matmul with a constant block matrix, so nothing is reshaped to
  rank 5.
  """

  groups: int
  eps: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if c % self.groups:
      raise ValueError(f'{c} channels are not divisible into {self.groups} groups')
    size = c // self.groups
    group_of = np.arange(c) // size
    avg = (group_of[:, None] == group_of[None, :]).astype(np.float32) / size
    avg = jnp.asarray(avg, jnp.float32)
    xf = x.astype(jnp.float32)
    # (B, C) @ (C, C): a plain fully-connected op once converted.
    mean = (jnp.mean(xf, axis=(1, 2)) @ avg)[:, None, None, :]
    centred = xf - mean
    var = (jnp.mean(centred * centred, axis=(1, 2)) @ avg)[:, None, None, :]
    y = centred * jax.lax.rsqrt(var + self.eps)
    gamma = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    beta = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    return (y * gamma + beta).astype(self.dtype)


class Norm(nn.Module):
  """GroupNorm, or the identity when the variant has no normalisation."""

  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.groups == 0:
      return x
    return GroupNorm(min(self.groups, x.shape[-1]), dtype=self.dtype)(x)


class ResBlock(nn.Module):
  """Norm-SiLU-conv, FiLM by the conditioning embedding, norm-SiLU-conv, plus skip."""

  features: int
  groups: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train: bool):
    h = nn.silu(Norm(self.groups, self.dtype)(x))
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype)(h)
    film = nn.Dense(2 * self.features, dtype=self.dtype)(nn.silu(emb))
    gain, shift = jnp.split(film[:, None, None, :], 2, axis=-1)
    h = Norm(self.groups, self.dtype)(h) * (1.0 + gain) + shift
    h = nn.silu(h)
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1), dtype=self.dtype)(x)
    return x + h


def tent_filter(x, r: int):
  """The separable tent k[i] = (r - |i - (r - 1)|) / r^2, i = 0..2r-2 (summing to 1), per channel.

  A depthwise convolution per axis, 'SAME' with zeros beyond the edges (the
  last r - 1 pixels of an image fade a little; tiles overlap far more).
  After a nearest-neighbour r x up-sampling it is linear interpolation: the
  same operation at every output pixel, so it paints nothing on the r-px grid.
  """
  c = x.shape[-1]
  taps = np.array([r - abs(i - (r - 1)) for i in range(2 * r - 1)], np.float32) / (r * r)
  kx = jnp.asarray(np.tile(taps.reshape(1, -1, 1, 1), (1, 1, 1, c)), x.dtype)
  ky = jnp.asarray(np.tile(taps.reshape(-1, 1, 1, 1), (1, 1, 1, c)), x.dtype)
  dims = ('NHWC', 'HWIO', 'NHWC')
  x = jax.lax.conv_general_dilated(x, kx, (1, 1), 'SAME', dimension_numbers=dims, feature_group_count=c)
  return jax.lax.conv_general_dilated(x, ky, (1, 1), 'SAME', dimension_numbers=dims, feature_group_count=c)


def tent_upsample(x, r: int):
  """Linear interpolation by an integer factor r: nearest neighbour (pixel_shuffle of r*r copies), then
  tent_filter."""
  return tent_filter(pixel_shuffle(jnp.concatenate([x] * (r * r), axis=-1), r), r)


class Attention(nn.Module):
  """Multi-head self-attention over all positions (lowest resolution only)."""

  num_heads: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    y = Norm(self.groups, self.dtype)(x).reshape(b, h * w, c)
    y = nn.MultiHeadDotProductAttention(
      num_heads=self.num_heads, dtype=self.dtype, out_kernel_init=nn.initializers.zeros
    )(y, y)
    return x + y.reshape(b, h, w, c)
