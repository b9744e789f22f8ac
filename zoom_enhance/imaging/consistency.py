"""Back-projection: the enlargement, shrunk as the training data was, gives back the input photo.

The fidelity end of the fidelity-detail control (`--detail 0`) is the
model's estimate of the photo given its input. Shrunk again, a small model's
estimate does not quite reproduce that input. Iterative back-projection
(Irani & Peleg 1991) corrects it in the band the input holds:

  x_{k+1} = x_k + w * U(y - D(x_k)),

where D is the antialiased bicubic shrink to the input's size (how training
made its bicubic LR inputs from photos), U the bicubic enlargement (that of
`lr_up`), y the input and w in [0, 1] the weight. U is linear, so
x_k = x_0 + U(c_k) with c_{k+1} = c_k + w * (y - D(x_0 + U(c_k))): only the
input-sized correction c is held in floats, one channel at a time, and the
enlargement is read and written a strip of rows at a time (a 100 MP result
costs no 100 MP of floats). numpy and Pillow only.
"""

import numpy as np

from zoom_enhance.imaging import resample

# Output rows per strip.
STRIP = 256


def back_project(out: np.ndarray, lr: np.ndarray, *, weight: float, iterations: int) -> np.ndarray:
  """`out` (H, W, 3) uint8, the enlargement of `lr` (h, w, 3) uint8, back-projected in place and returned.

  weight 0 or no iterations leave `out` as it is.
  """
  if weight <= 0.0 or iterations < 1:
    return out
  big, small = out.shape[:2], lr.shape[:2]
  if small[0] > big[0] or small[1] > big[1]:
    raise ValueError(f'back_project: the input {small} is larger than its enlargement {big}')
  lr_rows = max(1, STRIP * small[0] // big[0])
  for ch in range(out.shape[2]):
    y = lr[:, :, ch : ch + 1].astype(np.float32)
    c = np.zeros_like(y)
    for k in range(iterations):

      def rows_of(a, b, k=k, c=c):
        x = out[a:b, :, ch : ch + 1].astype(np.float32)
        if k:  # c is zero before the first correction
          x += resample.upsampled_rows(c, big, a, b)
        return x

      shrunk = np.empty_like(y)
      for r0 in range(0, small[0], lr_rows):
        r1 = min(small[0], r0 + lr_rows)
        shrunk[r0:r1] = resample.resized_rows(rows_of, big, small, r0, r1)
      # c += w * (y - shrunk), without a second input-sized buffer.
      np.subtract(y, shrunk, out=shrunk)
      shrunk *= np.float32(weight)
      c += shrunk
    for y0 in range(0, big[0], STRIP):
      y1 = min(big[0], y0 + STRIP)
      x = out[y0:y1, :, ch : ch + 1].astype(np.float32) + resample.upsampled_rows(c, big, y0, y1)
      out[y0:y1, :, ch : ch + 1] = resample.to_uint8(x)
  return out
