"""Where `enhance`'s time goes, by stage, on results of 0.5, 1, 2.4 and 3 MP (docs/evaluation.md's table).

  python launch/profile_enhance.py PHOTO [--detail 1]

The photo is cropped (or enlarged, where smaller) to inputs whose x4 results
have those sizes, as `bench --folder --result-mp` makes them. Each stage is
timed by wrapping the library function that does it (decoding, lr_up, the
noise, the model, blending, back-projection, PNG encoding, the file write);
the second of two runs is reported. Stages on the tile threads are CPU
seconds summed over the threads, not wall time.
"""

import argparse
import collections
import os
import tempfile
import threading
import time

from PIL import Image

from zoom_enhance.evaluation import folder_bench
from zoom_enhance.imaging import consistency
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo as photo_lib
from zoom_enhance.imaging import resample
from zoom_enhance.imaging import save
from zoom_enhance.runtime import engine as engine_lib
from zoom_enhance.runtime import pipeline
from zoom_enhance.runtime import tiling

SECONDS = collections.defaultdict(float)
CALLS = collections.Counter()
_LOCK = threading.Lock()
STAGES = (
  (photo_lib, 'open_photo', 'decode'),
  (resample.LrUpStrips, 'window', 'lr_up'),
  (tiling.NoiseField, 'region', 'noise'),
  (engine_lib.Engine, 'run', 'model'),
  (tiling, '_finish', 'blending'),
  (tiling, '_shift', 'blending'),
  (consistency, 'back_project', 'back-projection'),
  (save, 'encode', 'PNG encoding'),
  (files, 'write_atomic', 'file write'),
)


def _timed(owner, name: str, stage: str) -> None:
  fn = getattr(owner, name)

  def wrapper(*args, **kwargs):
    t0 = time.perf_counter()
    try:
      return fn(*args, **kwargs)
    finally:
      with _LOCK:
        SECONDS[stage] += time.perf_counter() - t0
        CALLS[stage] += 1

  setattr(owner, name, wrapper)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('photo')
  p.add_argument('--detail', type=float, default=1.0)
  args = p.parse_args()
  for owner, name, stage in STAGES:
    _timed(owner, name, stage)
  rgb = photo_lib.load_rgb(args.photo)
  h, w = rgb.shape[:2]
  enhancer = pipeline.Enhancer(threads=2)
  print(f'engine: {enhancer.engine.variant}, {enhancer.engine.runtime}')
  tmp = tempfile.mkdtemp(prefix='zoom-enhance-profile-')
  for mp in (0.5, 1.0, 2.4, 3.0):
    cw, ch = folder_bench.input_size((w, h), mp, 4.0)
    image = Image.fromarray(rgb)
    if cw <= w and ch <= h:
      lr = image.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    else:
      lr = image.resize((cw, ch), Image.LANCZOS)
    source = os.path.join(tmp, f'{mp:g}MP.png')
    lr.save(source)
    for _ in range(2):
      SECONDS.clear()
      CALLS.clear()
      t0 = time.perf_counter()
      out = enhancer.enhance(source, scale=4, detail=args.detail, seed=0)
      enhance_s = time.perf_counter() - t0
      save.save_photo(os.path.join(tmp, 'out.png'), out)
      total = time.perf_counter() - t0
    r = out.info['zoom_enhance']
    pixels = out.size[0] * out.size[1]
    print(
      f'\n{out.size[0]}x{out.size[1]} ({pixels / 1e6:.2f} MP): enhance {enhance_s:.3f} s, with the PNG '
      f'{total:.3f} s ({total / pixels * 1e6:.3f} s/MP); {r.tiles} tiles of {r.tile_size[0]}x{r.tile_size[1]}'
    )
    for stage, seconds in sorted(SECONDS.items(), key=lambda kv: -kv[1]):
      print(f'  {stage:16s} {seconds:7.3f} s  ({CALLS[stage]} calls)')


if __name__ == '__main__':
  main()
