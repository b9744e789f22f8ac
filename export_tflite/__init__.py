"""Turns a trained checkpoint into a LiteRT bundle (jax2tf -> TFLite): the 'export' extra."""

from zoom_enhance import extras

extras.require('export', 'export_tflite')
