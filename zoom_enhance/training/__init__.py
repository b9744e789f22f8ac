"""Training, distillation, checkpoints and multi-process runs (JAX/Flax: the 'train' extra)."""

from zoom_enhance import extras

extras.require('train', 'zoom_enhance.training')
