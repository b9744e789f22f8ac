"""JAX sampler -> TFLite: the whole few-step sampler as one fixed-shape graph, per quantization.

The exported function maps (lr_up, noise, scale[, detail]) -> enhanced tile:
  lr_up  float32 (1, T, T, 3) in [-1, 1]: the LR tile upsampled (bicubic) to T x T
  noise  float32 (1, T, T, 3): the sampler's starting point, N(0, 1) times the detail
  scale  float32 (1,): the upscale factor
  detail float32 (1,) in [0, 1], for networks that read it only (unet.Variant.reads_detail)
  output float32 (1, T, T, 3) in [-1, 1]
The DDIM loop is unrolled; the noise levels of its fixed steps are host
constants, so the graph holds no SIN/COS/EXP/LOG.
"""

import contextlib
import functools
import io

import numpy as np

from zoom_enhance.imaging import resample
from zoom_enhance.model import sampler
from zoom_enhance.runtime.bundle import INPUT_NAMES

# Quantization variants: how each is converted, and the PSNR (dB) its outputs
# must keep against the JAX sampler on real tiles. 45 dB is "visually
# identical" (an 8-bit image itself is exact to ~59 dB); 30 dB is "close".
QUANT_MODES = {
  'fp32': 'float32 weights and activations',
  'fp16': 'float16 weights, float32 activations',
  'int8': 'dynamic-range int8: int8 weights, activations quantized on the fly',
  'int8_full': 'full-integer int8 calibrated on real photo tiles, float fallback where needed',
}
PARITY_DB = {'fp32': 45.0, 'fp16': 40.0, 'int8': 30.0, 'int8_full': 25.0}


class TileFn:
  """f(lr_up, noise, scale, detail=None) -> output tile: Sampler.sample, unrolled, at a temperature.

  The sampler starts from z_1 = noise_temperature * noise (see Sampler.sample);
  a network that does not read the detail ignores `detail`. `inputs` names the
  model file's inputs, in order (the signature to_tflite converts with);
  `feed(tile)` calls it on a dict of real_tiles.
  """

  def __init__(self, sample, takes_detail: bool):
    self._sample = sample
    self.inputs = INPUT_NAMES if takes_detail else INPUT_NAMES[:3]

  def __call__(self, lr_up, noise, scale, detail=None):
    return self._sample(lr_up, noise, scale, detail=detail)

  def feed(self, tile: dict, fn=None):
    """(fn or self)(*the tile's model inputs)."""
    return (fn or self)(*[tile[k] for k in self.inputs])


def make_tile_fn(params, config, num_steps: int, noise_temperature: float = 1.0) -> TileFn:
  """The checkpoint's upscaler as the function export converts (TileFn)."""
  s = sampler.Sampler(config)
  sample = functools.partial(
    s.sample, params, num_steps=num_steps, unroll=True, temperature=noise_temperature
  )
  return TileFn(sample, s.takes_detail)


def real_tiles(photos, count: int, tile, scales, seed: int) -> list[dict]:
  """Model inputs cut from real photos: a crop, bicubic down by a scale and back up, noise, a detail.

  `tile` is a side or (height, width); `photos` are uint8 RGB arrays; crops
  smaller than the tile are upscaled first.
  The detail cycles through 1, 0, 0.5 and the noise is scaled by it, as the
  runtime feeds a model (tiling.enhance_tiled).
  """
  th, tw = (tile, tile) if isinstance(tile, int) else tuple(tile)
  rng = np.random.default_rng(seed)
  out = []
  for i in range(count):
    img = photos[i % len(photos)]
    if img.shape[0] < th or img.shape[1] < tw:
      f = max(th / img.shape[0], tw / img.shape[1])
      img = resample.bicubic_uint8(img, (round(img.shape[0] * f) + 1, round(img.shape[1] * f) + 1))
    y = int(rng.integers(img.shape[0] - th + 1))
    x = int(rng.integers(img.shape[1] - tw + 1))
    hr = img[y : y + th, x : x + tw]
    scale = float(scales[i % len(scales)])
    side = resample.lr_size_for(th, scale)
    lr = resample.bicubic_uint8(hr, (side, max(1, round(tw * side / th))))
    detail = (1.0, 0.0, 0.5)[i % 3]
    out.append(
      {
        'lr_up': resample.lr_up(lr, (th, tw))[None],
        'noise': detail * rng.standard_normal((1, th, tw, 3)).astype(np.float32),
        'scale': np.array([th / side], np.float32),
        'detail': np.array([detail], np.float32),
      }
    )
  return out


def to_tflite(tile_fn: TileFn, tile: int, mode: str, calibration: list[dict] | None = None) -> bytes:
  """Converts with jax2tf and the TFLite converter; builtin ops only."""
  import tensorflow as tf
  from jax.experimental import jax2tf

  if mode not in QUANT_MODES:
    raise ValueError(f'unknown quantization {mode!r}; choose from {", ".join(QUANT_MODES)}')
  shapes = {'lr_up': (1, tile, tile, 3), 'noise': (1, tile, tile, 3), 'scale': (1,), 'detail': (1,)}
  signature = [tf.TensorSpec(shapes[k], tf.float32, name=k) for k in tile_fn.inputs]
  converted = jax2tf.convert(tile_fn, with_gradient=False)
  concrete = tf.function(converted, autograph=False, input_signature=signature).get_concrete_function()
  converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if mode == 'fp16':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif mode == 'int8':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  elif mode == 'int8_full':
    if not calibration:
      raise ValueError('int8_full needs calibration tiles from real photos')
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([t[k] for k in tile_fn.inputs] for t in calibration)
  with contextlib.redirect_stderr(io.StringIO()):
    return converter.convert()


def gpu_incompatible_ops(model: bytes) -> list[str]:
  """Ops the TFLite GPU delegate would leave on the CPU (gpu_check.py says why not TF's analyzer)."""
  from export_tflite import gpu_check

  return gpu_check.incompatible_ops(model)
