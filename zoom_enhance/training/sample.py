"""`zoom-enhance sample`: one photo enhanced whole by a checkpoint's JAX sampler (no tiling, no LiteRT)."""

import logging

from zoom_enhance import errors
from zoom_enhance.imaging import photo
from zoom_enhance.imaging import save
from zoom_enhance.model import sampler as sampler_lib
from zoom_enhance.runtime import geometry
from zoom_enhance.training import checkpoint

# Largest output of this path: the whole image goes through the network at once.
MAX_OUTPUT_PIXELS = 4_000_000


def sample_photo(
  workdir: str,
  source: str,
  output: str,
  *,
  scale: float | None = 4.0,
  size=None,
  steps: int | None = None,
  seed: int = 0,
  max_pixels: int = MAX_OUTPUT_PIXELS,
) -> None:
  """Enhances `source` to `scale` times its size (or to `size`, 'WxH' or (w, h)) and writes `output`.

  `steps` defaults to the checkpoint's own sampler steps (a distilled
  student's, else the config's sample_steps).
  """
  lr = photo.load_rgb(source)
  if isinstance(size, str):
    size = geometry.parse_size(size)
  w, h = geometry.output_size((lr.shape[1], lr.shape[0]), scale=None if size else scale, size=size)
  if h * w > max_pixels:
    raise errors.ConfigError(f'output {w}x{h} is over --max-pixels={max_pixels}')
  save.format_for(output)  # an unknown extension fails before the model loads
  params, config, step = checkpoint.restore_params(workdir)
  if steps is None:
    position = checkpoint.read_position(workdir, step)
    steps = position['student_steps'] if position['task'] == 'distill' else config.diffusion.sample_steps
  logging.info(
    'checkpoint step %d, %d DDIM steps, %dx%d -> %dx%d', step, steps, lr.shape[1], lr.shape[0], w, h
  )
  out = sampler_lib.Sampler(config).upscale_image(params, lr, (h, w), num_steps=steps, seed=seed)
  save.save_photo(output, out)
  logging.info('wrote %s', output)
