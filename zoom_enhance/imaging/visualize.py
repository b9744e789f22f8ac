"""Images people look at: sample grids (LR | sample | HR) and method comparisons, written as PNG."""

import os

import numpy as np
from PIL import Image
from PIL import ImageDraw

from zoom_enhance.imaging import save

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
      grid[y : y + h, x : x + w] = col[r]
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
  save.save_photo(path, sample_grid([lr_up, sample, hr]))
  return path


def comparison_strip(panels: list[tuple[str, np.ndarray]], gap: int = 4) -> np.ndarray:
  """Same-size uint8 (H, W, 3) images side by side, each under its label."""
  h, w, _ = panels[0][1].shape
  header = 14
  strip = np.full((header + h, len(panels) * (w + gap) - gap, 3), 255, np.uint8)
  for i, (_, img) in enumerate(panels):
    strip[header:, i * (w + gap) : i * (w + gap) + w] = img
  canvas = Image.fromarray(strip)
  draw = ImageDraw.Draw(canvas)
  for i, (label, _) in enumerate(panels):
    draw.text((i * (w + gap) + 2, 1), label, fill=(0, 0, 0))
  return np.asarray(canvas)


def detailed_window(img: np.ndarray, side: int) -> tuple[int, int]:
  """(y, x) of the side x side window with the most gradient energy, on a half-window grid.

  Where a method's difference shows: edges and texture, not sky.
  """
  y = img.astype(np.float32).mean(axis=2)
  energy = np.zeros_like(y)
  energy[1:, :] += np.diff(y, axis=0) ** 2
  energy[:, 1:] += np.diff(y, axis=1) ** 2
  step = max(1, side // 2)
  best, where = -1.0, (0, 0)
  for y0 in range(0, img.shape[0] - side + 1, step):
    for x0 in range(0, img.shape[1] - side + 1, step):
      e = float(energy[y0 : y0 + side, x0 : x0 + side].sum())
      if e > best:
        best, where = e, (y0, x0)
  return where
