"""The on-device runtime: a bundle in, enhanced photos out; numpy, Pillow and LiteRT only (no JAX, no TF)."""

from zoom_enhance.imaging.save import save_photo
from zoom_enhance.runtime.pipeline import Enhancer
from zoom_enhance.runtime.pipeline import Report
from zoom_enhance.runtime.pipeline import enhance

__all__ = ['Enhancer', 'Report', 'enhance', 'save_photo']
