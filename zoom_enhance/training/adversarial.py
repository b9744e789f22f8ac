"""Adversarial training beside distillation: a spectral-normalised patch discriminator and its losses.

The recipe of the SR literature (SRGAN, ESRGAN, Real-ESRGAN): the generator
(here the student's detail) is scored by pixel and perceptual losses and by
a discriminator that tells its output from real photos, patch by patch.
`Critic` bundles the discriminator, its optimizer and its loss weight; the
train step (train.train_step) asks it for the generator's adversarial loss
inside the student's loss, then updates the discriminator on the same batch.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

# Power iterations of the spectral norm, from a fixed start each call (stateless: nothing to carry
# between steps; 20 iterations put sigma within 1% of the exact value on these small kernels).
POWER_ITERATIONS = 20


def spectral_norm(w):
  """sigma(W), the largest singular value of W reshaped to (fan_in, fan_out), by power iteration.

  v_0 = 1 / sqrt(n); u = W v / |W v|, v = W^T u / |W^T u|, repeated; sigma = u^T W v
  (Miyato et al. 2018), with u and v held constant for the gradient.
  """
  m = w.reshape(-1, w.shape[-1])
  v = jnp.full((m.shape[1],), 1.0 / jnp.sqrt(m.shape[1]), m.dtype)
  for _ in range(POWER_ITERATIONS):
    u = m @ v
    u = u / (jnp.linalg.norm(u) + 1e-12)
    v = m.T @ u
    v = v / (jnp.linalg.norm(v) + 1e-12)
  u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
  return u @ m @ v


class SNConv(nn.Module):
  """A convolution whose kernel is divided by its spectral norm: the layer is 1-Lipschitz."""

  features: int
  kernel: int
  stride: int = 1

  @nn.compact
  def __call__(self, x):
    k = (self.kernel, self.kernel, x.shape[-1], self.features)
    w = self.param('kernel', nn.initializers.lecun_normal(), k)
    b = self.param('bias', nn.initializers.zeros, (self.features,))
    w = w / spectral_norm(w)
    y = jax.lax.conv_general_dilated(
      x, w, (self.stride, self.stride), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
    return y + b


class PatchDiscriminator(nn.Module):
  """Real-or-generated logits per patch (PatchGAN, Isola et al. 2017) of an image in [-1, 1].

  Two stride-2 convolutions and two more: each logit sees a window of about
  22 px, the scale of texture rather than of objects, so it judges the drawn
  detail and not the content (which the LR image fixes).
  """

  channels: tuple[int, ...] = (32, 64, 128)

  @nn.compact
  def __call__(self, x):
    h = x
    for i, ch in enumerate(self.channels):
      h = nn.leaky_relu(SNConv(ch, 4 if i < 2 else 3, 2 if i < 2 else 1)(h), 0.2)
    return SNConv(1, 3)(h)


def discriminator_loss(real_logits, fake_logits, weight):
  """Hinge loss, per example weighted: w (relu(1 - D(real)) + relu(1 + D(fake))), mean over patches."""
  per = jnp.mean(nn.relu(1.0 - real_logits), axis=(1, 2, 3)) + jnp.mean(
    nn.relu(1.0 + fake_logits), axis=(1, 2, 3)
  )
  return jnp.sum(weight * per) / jnp.maximum(jnp.sum(weight), 1e-6)


def generator_loss(fake_logits):
  """Per example: -mean D(fake), the hinge generator loss (lower where the critic believes it)."""
  return -jnp.mean(fake_logits, axis=(1, 2, 3))


@dataclasses.dataclass(frozen=True)
class Critic:
  """The discriminator of adversarial distillation: its network, optimizer and loss weight."""

  net: PatchDiscriminator
  tx: Any
  weight: float

  @classmethod
  def from_config(cls, d) -> 'Critic | None':
    """From config.distill (None where distill.adversarial_weight is 0)."""
    if not d.adversarial_weight:
      return None
    tx = optax.adam(d.critic_lr, b1=0.5, b2=0.999)
    return cls(PatchDiscriminator(tuple(d.critic_channels)), tx, float(d.adversarial_weight))

  def init(self, rng, patch_size: int):
    """(params, optimizer state) of a fresh discriminator."""
    params = self.net.init(rng, jnp.zeros((1, patch_size, patch_size, 3), jnp.float32))['params']
    return params, self.tx.init(params)

  def generator_loss(self, params, fake):
    """Per example: the weight x the generator's hinge loss on `fake` (the critic is not updated here)."""
    return self.weight * generator_loss(self.net.apply({'params': params}, fake))

  def update(self, params, opt_state, real, fake, weight):
    """One Adam step of the discriminator on real photos and (fixed) generated images.

    Returns (params, opt_state, metrics): its loss and mean logits on each side.
    """
    fake = jax.lax.stop_gradient(fake)

    def loss_fn(p):
      real_logits = self.net.apply({'params': p}, real)
      fake_logits = self.net.apply({'params': p}, fake)
      loss = discriminator_loss(real_logits, fake_logits, weight)
      return loss, (jnp.mean(real_logits), jnp.mean(fake_logits))

    (loss, (real_mean, fake_mean)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = self.tx.update(grads, opt_state, params)
    metrics = {'train/critic_loss': loss, 'train/critic_real': real_mean, 'train/critic_fake': fake_mean}
    return optax.apply_updates(params, updates), opt_state, metrics
