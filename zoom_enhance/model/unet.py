"""SR3-style conditional U-Net: noisy target + upsampled LR in, prediction out.

The network sees the noisy diffusion variable z concatenated with the LR image
upsampled (bicubic) to the output size, plus two conditioning scalars per
example: the noise level (continuous logSNR) and the upscale factor (LIIF's
"cell size"), so a single model serves any factor in [1, max_scale].

Shaped for phones as well as for training:
  * a strided "patch" convolution in and an up-sampling one out keep most of
    the work at a fraction of the output resolution;
  * normalisation is a GroupNorm written with rank-4 tensors only (per-channel
    spatial means, then a constant group-averaging matmul), since rank-5
    reshapes are not supported by the TFLite GPU delegate;
  * up-sampling is a transposed convolution, or (variants with `subpixel`) a
    1x1 convolution and a pixel shuffle made of rank-4 ops only, never the
    usual rank-6 depth-to-space;
  * the scale embedding is a piecewise-linear "hat" basis (SUB/ABS/RELU), not
    sinusoids, because the scale stays an input of the exported graph while the
    noise level becomes a constant there.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoom_enhance.model import diffusion
from zoom_enhance.model.detail_branch import DetailBranch
from zoom_enhance.model.layers import Attention
from zoom_enhance.model.layers import Norm
from zoom_enhance.model.layers import ResBlock
from zoom_enhance.model.layers import SubpixelUp
from zoom_enhance.model.layers import hat_embedding


@dataclasses.dataclass(frozen=True)
class Variant:
  """Architecture hyper-parameters of one model size."""

  # Side of the strided input convolution (and of the transposed output one).
  patch: int
  # Channels at each U-Net level; the level count is len(channels).
  channels: tuple[int, ...]
  # Residual blocks per level on the way down (the way up has one more).
  num_res_blocks: int
  # Self-attention at the lowest resolution.
  attention: bool
  # Attention heads (when attention is on).
  num_heads: int
  # Normalisation groups (channels must be divisible); 0 disables normalisation.
  norm_groups: int
  # Width of the conditioning (noise level + scale) embedding.
  emb_dim: int
  # Dropout rate inside residual blocks while training.
  dropout: float
  # Largest upscale factor the scale embedding covers.
  max_scale: float = 4.0
  # Gate the noisy input by the noise level before it meets the LR image
  # (see gate_noisy_input); False keeps the plain SR3 concatenation.
  gate_input: bool = False
  # Up-sample with a 1x1 convolution and a pixel shuffle (SubpixelUp) instead
  # of a transposed convolution: the same function (kernel = stride), but
  # LiteRT's TRANSPOSE_CONV took 2.5 of the 5.9 ms of a 192-px mobile tile.
  subpixel: bool = False
  # Also feed the noisy input ungated, through zero-initialised convolutions
  # (see UNet): a distilled few-step student needs its noise at t = 1, where
  # the gate scales it away. Set by config.model.direct_noise.
  direct_noise: bool = False
  # Condition on the detail D in [0, 1] (the user's fidelity-detail control),
  # through a zero-initialised embedding added to the noise level's (see
  # UNet): one network, switched by FiLM between its fidelity output (D = 0)
  # and its drawn detail (D = 1). Set by config.model.detail_input.
  detail_input: bool = False
  # A detail branch beside a fixed trunk (DetailBranch): the trunk is the
  # teacher, left as it was trained; the branch reads the trunk's last
  # features, the noise and D, and adds D times the detail it draws, so at
  # D = 0 the output is exactly the trunk's. Set by config.model.detail_branch.
  detail_branch: bool = False
  # How the detail branch makes its full-resolution output (DETAIL_HEADS):
  # 'subpixel' (the first shipped branch: two pixel shuffles of 1/patch
  # features, one of them an amplitude for filtered noise; every patch x
  # patch block gets the same per-position weights, which paints a lattice
  # on the patch grid), or 'fullres' (features interpolated to full
  # resolution by a fixed tent filter, then convolutions at full resolution
  # over them, the noise and the LR image: no weight depends on a pixel's
  # position in its patch). Set by config.model.detail_head.
  detail_head: str = 'subpixel'

  @property
  def reads_detail(self) -> bool:
    """Whether the network takes the detail D as an input."""
    return self.detail_input or self.detail_branch


VARIANTS = {
  # Tests and 2-core CPUs: works at 1/2 resolution, ~0.3M parameters.
  'tiny': Variant(
    patch=2,
    channels=(16, 32, 48),
    num_res_blocks=1,
    attention=False,
    num_heads=1,
    norm_groups=8,
    emb_dim=64,
    dropout=0.0,
  ),
  # A larger CPU/phone model, ~1.5M parameters.
  'small': Variant(
    patch=2,
    channels=(32, 64, 96),
    num_res_blocks=2,
    attention=False,
    num_heads=1,
    norm_groups=8,
    emb_dim=128,
    dropout=0.0,
  ),
  # The shipped default model: all work at 1/4 and 1/8 of the output
  # resolution (the LR resolution at x4), no normalisation (XNNPACK runs it
  # as one partition and it quantizes cleanly), sub-pixel up-sampling,
  # ~1.3M parameters (most of them at 1/8, where they cost a quarter).
  'mobile': Variant(
    patch=4,
    channels=(48, 96),
    num_res_blocks=1,
    attention=False,
    num_heads=1,
    norm_groups=0,
    emb_dim=64,
    dropout=0.0,
    gate_input=True,
    subpixel=True,
  ),
  # GPU/TPU training, ~25M parameters, SR3-like.
  'base': Variant(
    patch=1,
    channels=(64, 128, 256, 256),
    num_res_blocks=2,
    attention=True,
    num_heads=4,
    norm_groups=32,
    emb_dim=256,
    dropout=0.1,
  ),
}


DETAIL_HEADS = ('subpixel', 'fullres')


def get_variant(name: str) -> Variant:
  if name not in VARIANTS:
    raise ValueError(f'unknown model variant {name!r}; choose one of {sorted(VARIANTS)}')
  return VARIANTS[name]


def from_config(config, dtype=jnp.float32) -> 'UNet':
  """The network of `config.model.variant`, computing in `dtype` (parameters stay float32).

  With `model.direct_noise`, `model.detail_input`, `model.detail_branch` and `model.detail_head`.
  """
  variant = dataclasses.replace(
    get_variant(config.model.variant),
    direct_noise=bool(config.model.direct_noise),
    detail_input=bool(config.model.detail_input),
    detail_branch=bool(config.model.detail_branch),
    detail_head=str(config.model.detail_head),
  )
  return UNet(variant, dtype=dtype)


def size_multiple(variant: Variant) -> int:
  """Image sides must be multiples of this (patch, then one halving per level)."""
  return variant.patch * 2 ** (len(variant.channels) - 1)


def noise_level_embedding(logsnr, dim: int):
  """Sinusoidal embedding of the noise level.

  t(logsnr) = arctan(exp(-logsnr / 2)) / (pi / 2) maps logSNR to (0, 1) (the
  time of the cosine schedule without its range clipping); then
  emb = [sin(1000 t w_k), cos(1000 t w_k)], w_k = 10000^(-k / (dim/2 - 1)).
  """
  # numpy for host constants (a fixed-step export), so no SIN/COS reach the graph.
  xp = diffusion.array_module(logsnr)
  t = xp.arctan(xp.exp(-0.5 * xp.clip(logsnr, -20.0, 20.0))) / (0.5 * np.pi)
  half = dim // 2
  freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float32) / max(half - 1, 1))
  args = 1000.0 * t[:, None] * freqs[None, :]
  return xp.concatenate([xp.sin(args), xp.cos(args)], axis=-1).astype(np.float32)


def scale_embedding(scale, num: int, max_scale: float):
  """The upscale factor s in [1, max_scale], hat-embedded (hat_embedding)."""
  return hat_embedding(scale, num, 1.0, max_scale)


def gate_noisy_input(z, logsnr, learned):
  """z_in = alpha(logsnr) * (1 + learned) * z, per example and channel.

  At t = 1 the noisy input carries no information (alpha ~ 0) and the model
  is a regression of the target on the LR image; without the gate, the first
  convolution mixes pure noise into every feature, and one set of weights
  must both use z (low noise) and ignore it (high noise). A network trained
  that way stayed below bicubic at t = 1; the same network trained on t = 1
  alone was 0.9 dB above it within 800 steps. `learned` (zero at
  initialisation) lets the model reweigh z at the levels in between.
  """
  # alpha_sigma computes host constants (a fixed-step export) with numpy: no LOGISTIC/SQRT in the graph.
  alpha, _ = diffusion.alpha_sigma(logsnr)
  return z * alpha[:, None, None, None] * (1.0 + learned[:, None, None, :])


class UNet(nn.Module):
  """The upscaler's denoiser: (z, lr_up, logsnr, scale[, detail]) -> prediction.

  `detail` (B,) in [0, 1] is read by variants with detail_input or
  detail_branch only (None: 1). With detail_branch the trunk is fixed: its
  output and the features the branch reads carry no gradient.
  """

  variant: Variant
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, lr_up, logsnr, scale, train: bool = False, detail=None):
    v = self.variant
    mult = size_multiple(v)
    if z.shape[1] % mult or z.shape[2] % mult:
      raise ValueError(f'image sides {z.shape[1:3]} must be multiples of {mult}')
    emb = jnp.concatenate(
      [noise_level_embedding(logsnr, v.emb_dim), scale_embedding(scale, 8, v.max_scale)], axis=-1
    ).astype(self.dtype)
    emb = nn.Dense(v.emb_dim, dtype=self.dtype)(emb)
    if v.detail_input:
      if detail is None:
        detail = jnp.ones_like(scale)
      # Zero at initialisation: a student made from a teacher without it starts as that teacher.
      emb = emb + nn.Dense(v.emb_dim, dtype=self.dtype, kernel_init=nn.initializers.zeros, name='detail_in')(
        hat_embedding(jnp.asarray(detail, jnp.float32), 5, 0.0, 1.0, clip=False).astype(self.dtype)
      )
    emb = nn.Dense(v.emb_dim, dtype=self.dtype)(nn.silu(emb))

    z_direct = z
    if v.gate_input:
      learned = nn.Dense(z.shape[-1], dtype=self.dtype, kernel_init=nn.initializers.zeros, name='input_gate')(
        emb
      )
      z = gate_noisy_input(z, logsnr, learned)
    x_in = jnp.concatenate([z, lr_up], axis=-1).astype(self.dtype)
    h = nn.Conv(
      v.channels[0], (v.patch, v.patch), strides=(v.patch, v.patch), padding='VALID', dtype=self.dtype
    )(x_in)
    if v.direct_noise:
      # Zero at initialisation: a student made from a gated teacher starts as that teacher.
      h = h + nn.Conv(
        v.channels[0],
        (v.patch, v.patch),
        strides=(v.patch, v.patch),
        padding='VALID',
        use_bias=False,
        kernel_init=nn.initializers.zeros,
        dtype=self.dtype,
        name='noise_in',
      )(z_direct.astype(self.dtype))
    block = lambda f: ResBlock(f, v.norm_groups, v.dropout, self.dtype)  # noqa: E731

    def up(features, factor, **kw):
      if v.subpixel:
        return SubpixelUp(features, factor, dtype=self.dtype, **kw)
      return nn.ConvTranspose(features, (factor, factor), strides=(factor, factor), dtype=self.dtype, **kw)

    skips = [h]
    for level, ch in enumerate(v.channels):
      for _ in range(v.num_res_blocks):
        h = block(ch)(h, emb, train)
        skips.append(h)
      if level < len(v.channels) - 1:
        h = nn.Conv(ch, (3, 3), strides=(2, 2), dtype=self.dtype)(h)
        skips.append(h)

    h = block(v.channels[-1])(h, emb, train)
    if v.attention:
      h = Attention(v.num_heads, v.norm_groups, self.dtype)(h)
    h = block(v.channels[-1])(h, emb, train)

    for level in reversed(range(len(v.channels))):
      ch = v.channels[level]
      for _ in range(v.num_res_blocks + 1):
        h = block(ch)(jnp.concatenate([h, skips.pop()], axis=-1), emb, train)
      if level > 0:
        h = up(ch, 2)(h)
    assert not skips

    trunk_features = h
    h = nn.silu(Norm(v.norm_groups, self.dtype)(h))
    out = up(3, v.patch, kernel_init=nn.initializers.zeros)(h)
    # A full-resolution path so the output can depend on exact input pixels.
    out = out + nn.Conv(3, (3, 3), dtype=self.dtype, kernel_init=nn.initializers.zeros)(x_in)
    if v.direct_noise:
      # Per-pixel noise for per-pixel texture (the trunk works at 1 / patch of the resolution).
      out = out + nn.Conv(
        3, (3, 3), use_bias=False, kernel_init=nn.initializers.zeros, dtype=self.dtype, name='noise_out'
      )(z_direct.astype(self.dtype))
    if v.detail_branch:
      if detail is None:
        detail = jnp.ones_like(scale)
      detail = jnp.asarray(detail, jnp.float32).astype(self.dtype)
      branch = DetailBranch(
        v.channels[0], v.patch, v.norm_groups, v.detail_head, self.dtype, name='detail_branch'
      )
      drawn = branch(
        jax.lax.stop_gradient(trunk_features), z_direct.astype(self.dtype), detail, train, lr_up=lr_up
      )
      # Scaled by D: at D = 0 the output is exactly the trunk's (the fidelity end is the teacher's).
      out = jax.lax.stop_gradient(out) + detail[:, None, None, None] * drawn
    return out.astype(jnp.float32)
