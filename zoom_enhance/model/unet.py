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


def get_variant(name: str) -> Variant:
  if name not in VARIANTS:
    raise ValueError(f'unknown model variant {name!r}; choose one of {sorted(VARIANTS)}')
  return VARIANTS[name]


def from_config(config, dtype=jnp.float32) -> 'UNet':
  """The network of `config.model.variant`, computing in `dtype` (parameters stay float32).

  With `model.direct_noise`, `model.detail_input` and `model.detail_branch` where the config sets them.
  """
  variant = dataclasses.replace(
    get_variant(config.model.variant),
    direct_noise=bool(config.model.direct_noise),
    detail_input=bool(config.model.get('detail_input', False)),
    detail_branch=bool(config.model.get('detail_branch', False)),
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
  filtered, whose amplitude per pixel and channel depends on the content. Both
  output maps start at zero, so a branch added to a trained trunk starts as
  that trunk.
  """

  features: int
  patch: int
  groups: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, z, detail, train: bool):
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
    drawn = SubpixelUp(3, p, dtype=self.dtype, kernel_init=nn.initializers.zeros, name='drawn')(b)
    amplitude = SubpixelUp(3, p, dtype=self.dtype, kernel_init=nn.initializers.zeros, name='amplitude')(b)
    noise = nn.Conv(3, (3, 3), use_bias=False, dtype=self.dtype, name='noise_out')(z)
    return drawn + amplitude * noise


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
      drawn = DetailBranch(v.channels[0], v.patch, v.norm_groups, self.dtype, name='detail_branch')(
        jax.lax.stop_gradient(trunk_features),
        z_direct.astype(self.dtype),
        detail,
        train,
      )
      # Scaled by D: at D = 0 the output is exactly the trunk's (the fidelity end is the teacher's).
      out = jax.lax.stop_gradient(out) + detail[:, None, None, None] * drawn
    return out.astype(jnp.float32)
