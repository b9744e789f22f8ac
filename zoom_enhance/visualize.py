"""Images people look at: sample grids (LR | sample | HR) written as PNG."""

import os

import numpy as np
from PIL import Image
from PIL import ImageDraw

from zoom_enhance import images

_LABELS = ('LR (bicubic)', 'sample', 'HR')


def sample_grid(columns: list[np.ndarray], gap: int = 4) -> np.ndarray:
  """Stacks uint8 batches (B, H, W, 3) side by side, one example per row, with a header."""
  b, h, w, _ = columns[0].shape
  header = 14
  ncol = len(columns)
  grid = np.full((header + b * (h + gap), ncol * (w + gap), 3), 255, np.uint8)
  for c, col in enumerate(columns):
    for r in range(b):
      y, x = header + r * (h + gap), c * (w + gap)
      grid[y:y + h, x:x + w] = col[r]
  canvas = Image.fromarray(grid)
  draw = ImageDraw.Draw(canvas)
  for c, label in enumerate(_LABELS[:ncol]):
    draw.text((c * (w + gap) + 2, 1), label, fill=(0, 0, 0))
  return np.asarray(canvas)


def write_sample_grid(workdir: str, step: int, lr_up, sample, hr) -> str:
  """Writes WORKDIR/samples/step_NNNNNN.png; arguments are uint8 batches."""
  out_dir = os.path.join(workdir, 'samples')
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f'step_{int(step):06d}.png')
  images.save_png(path, sample_grid([lr_up, sample, hr]))
  return path
