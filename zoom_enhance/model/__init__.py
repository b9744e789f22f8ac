"""The upscaler: the U-Net, the diffusion maths and the sampler (JAX/Flax: the 'train' extra)."""

from zoom_enhance import extras

extras.require('train', 'zoom_enhance.model')
