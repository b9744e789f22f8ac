"""Turns a trained checkpoint into a LiteRT bundle (jax2tf -> TFLite); may import TensorFlow."""
