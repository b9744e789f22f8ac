"""Hostile but realistic input against `zoom-enhance enhance` and the Python API: a count of promises kept.

  python tests/hostile_cases.py [--root CHECKOUT]

Not a pytest module (the tests cover each class with assertions); this runs
every case in a fresh process against the embedded default bundle of the
checkout at --root (default: this one), so that two versions can be compared
case by case. A bad input keeps its promise when the command exits non-zero
with exactly one line on stderr, no traceback and no file left in the output
folder; a good but unusual input when it exits 0 with nothing on stderr and
its result written. API cases expect the library's own exception
(zoom_enhance.errors.ZoomEnhanceError) with a one-line message under 300
characters, before any work (good API cases: no exception). Prints one
line per case and the totals.
"""

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
from hostile_samples import CTRL_C_WHILE_LOADING
from hostile_samples import exif_pointing_past_its_end
from hostile_samples import exif_with_text_orientation
from PIL import Image

API_CASES = {
  'api: a dict as the image': 'enhance({})',
  'api: an int as the image': 'enhance(3)',
  'api: None as the image': 'enhance(None)',
  'api: encoded bytes as the image': 'enhance(open(GOOD, "rb").read())',
  'api: a file object as the image': 'enhance(open(GOOD, "rb"))',
  'api: a 0x0 array': 'enhance(np.zeros((0, 0, 3), np.uint8))',
  'api: a crop of three numbers': 'enhance(GOOD, crop=(0, 0, 10))',
  'api: a crop of strings in a tuple': 'enhance(GOOD, crop=("a", 0, 10, 10))',
  'api: a size of one number': 'enhance(GOOD, size=(100,))',
  "api: seed='abc'": 'enhance(GOOD, seed="abc")',
  "api: threads='two'": 'enhance(GOOD, threads="two")',
  'api: threads=-1': 'enhance(GOOD, threads=-1)',
  'api: detail=2': 'enhance(GOOD, detail=2)',
  'api: strength=nan': 'enhance(GOOD, strength=float("nan"))',
  'api: scale=0': 'enhance(GOOD, scale=0)',
  'api: save_photo given a list': 'save_photo(OUT, [[1, 2]])',
  'api: save_photo into a missing folder': 'save_photo(os.path.join(FOLDER, "missing", "x.png"), RGB)',
  'api: Enhancer(threads=1000)': 'zoom_enhance.Enhancer(threads=1000)',
}
# Unusual but good: expected to work (and write their file).
API_GOOD_CASES = {
  'api: save_photo of a float (F) image as JPEG': 'save_photo(OUT + ".f.jpg", Image.new("F", (4, 4), 0.5))',
  'api: save_photo of a 16-bit (I;16) image as JPEG': 'save_photo(OUT + ".i.jpg", Image.new("I;16", (4, 4)))',
  'api: save_photo of a CMYK image as PNG': 'save_photo(OUT + ".cmyk.png", Image.new("CMYK", (4, 4)))',
}

API_RUNNER = """
import json, os, sys
import numpy as np
from PIL import Image
import zoom_enhance
from zoom_enhance import errors
from zoom_enhance.imaging.save import save_photo
GOOD, OUT = sys.argv[1], sys.argv[2]
FOLDER = os.path.dirname(OUT)
RGB = np.zeros((4, 4, 3), np.uint8)
enhance = lambda image, **kw: zoom_enhance.enhance(image, **kw)

def judge(expr, good):
  try:
    eval(expr)
    return 'ok' if good else 'no error raised'
  except errors.ZoomEnhanceError as e:
    text = str(e)
    if good:
      return f'raised {type(e).__name__}: {text[:80]}'
    return 'ok' if ('\\n' not in text and len(text) < 300) else f'message of {len(text)} chars'
  except Exception as e:
    return f'{"raised" if good else "bare"} {type(e).__name__}: {str(e)[:80]}'

# A line per case as it ends: a case that kills the process (or hangs) costs only the cases after it.
for arg, good in ((sys.argv[4], True), (sys.argv[3], False)):
  for name, expr in json.loads(arg).items():
    print(json.dumps({name: judge(expr, good)}), flush=True)
"""


def make_inputs(d: str) -> dict:
  """Writes the case files into d; returns their paths by name."""
  rng = np.random.default_rng(0)
  photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8))
  p = {}

  def put(name, save=None, data=None):
    p[name] = os.path.join(d, name)
    if data is not None:
      with open(p[name], 'wb') as f:
        f.write(data)
    else:
      save(p[name])

  put('good.jpg', lambda f: photo.save(f, quality=90))
  good = open(p['good.jpg'], 'rb').read()
  put('text.jpg', data=b'hello, not an image')
  put('empty.png', data=b'')
  put('truncated.jpg', data=good[: len(good) // 2])
  put('bomb.png', lambda f: Image.new('1', (20000, 20000)).save(f))
  put('wide.png', lambda f: Image.new('RGB', (4200, 4)).save(f))
  put('wider.png', lambda f: Image.new('RGB', (16400, 2)).save(f))
  put('text_orientation.jpg', lambda f: photo.save(f, exif=exif_with_text_orientation()))
  put('corrupt_exif.jpg', lambda f: photo.save(f, exif=exif_pointing_past_its_end()))
  put('sixteen_bit.png', lambda f: Image.fromarray(rng.integers(0, 65535, (40, 40), np.uint16)).save(f))
  put('palette.gif', lambda f: photo.convert('P').save(f))
  put('cmyk.jpg', lambda f: photo.convert('CMYK').save(f))
  put('alpha.png', lambda f: photo.convert('RGBA').save(f))
  put('gray_alpha.png', lambda f: photo.convert('LA').save(f))
  put('photo.tif', lambda f: photo.save(f))
  put('photo.webp', lambda f: photo.save(f))
  p['fifo.jpg'] = os.path.join(d, 'fifo.jpg')
  os.mkfifo(p['fifo.jpg'])
  p['fifo_folder'] = os.path.join(d, 'fifo_folder')
  os.makedirs(p['fifo_folder'])
  os.mkfifo(os.path.join(p['fifo_folder'], 'p.jpg'))
  # A folder holding one of its own name: with -o above it, nest/nest/a.png's result is nest/a.png.
  p['nest'] = os.path.join(d, 'nest')
  os.makedirs(os.path.join(p['nest'], 'nest'))
  photo.save(os.path.join(p['nest'], 'a.png'))
  photo.save(os.path.join(p['nest'], 'nest', 'a.png'))
  p['folder'] = os.path.join(d, 'photos')
  os.makedirs(p['folder'])
  photo.save(os.path.join(p['folder'], 'good.jpg'), quality=90)
  p['many'] = os.path.join(d, 'many')  # for a SIGTERM during a folder run
  os.makedirs(p['many'])
  for i in range(8):
    Image.fromarray(rng.integers(0, 255, (192, 256, 3), np.uint8)).save(os.path.join(p['many'], f'p{i}.png'))
  with open(os.path.join(d, 'a_file'), 'w') as f:
    f.write('x')
  p['a_file'] = os.path.join(d, 'a_file')
  return p


def damaged_bundles(root: str, d: str) -> dict:
  """Copies of the checkout's embedded bundle, each damaged in one way."""
  src = os.path.join(root, 'zoom_enhance', 'assets', 'default_bundle')
  with open(os.path.join(src, 'manifest.json')) as f:
    manifest = json.load(f)
  first = sorted(manifest['models'])[0]

  def drop(key):
    return lambda m: m['models'][first].pop(key)

  edits = {
    'manifest: not JSON': None,
    'manifest: a model without sha256': drop('sha256'),
    'manifest: a model without file': drop('file'),
    'manifest: no tile': lambda m: m.pop('tile'),
    'manifest: no steps': lambda m: m.pop('steps'),
    'manifest: tile size is text': lambda m: m['tile'].update(size='big'),
    'manifest: overlap not below the tile': lambda m: m['tile'].update(overlap=m['tile']['size']),
    'manifest: inverted scale_range': lambda m: m.update(scale_range=[4.0, 1.0]),
    'manifest: NaN in scale_range': lambda m: m.update(scale_range=[float('nan'), 4.0]),
    'manifest: a model entry is a string': lambda m: m['models'].update({first: 'oops'}),
    'model file: one byte flipped': 'flip',
  }
  out = {}
  for i, (name, edit) in enumerate(edits.items()):
    b = os.path.join(d, f'bundle{i}')
    shutil.copytree(src, b)
    path = os.path.join(b, 'manifest.json')
    if edit is None:
      with open(path, 'w') as f:
        f.write('{"models": ')
    elif edit == 'flip':
      model = os.path.join(b, manifest['models'][first]['file'])
      with open(model, 'r+b') as f:
        f.seek(4000)
        byte = f.read(1)
        f.seek(4000)
        f.write(bytes([byte[0] ^ 0xFF]))
    else:
      m = json.loads(json.dumps(manifest))
      edit(m)
      with open(path, 'w') as f:
        json.dump(m, f)
    out[name] = b
  return out


def _memory_limit(megabytes):
  def limit():
    resource.setrlimit(resource.RLIMIT_AS, (megabytes << 20, megabytes << 20))

  return limit


def run_cli(root, args, code=None, *, cwd=None, timeout=300, memory=None):
  """(exit status, stderr's lines) of the command; (None, [why]) when it ran past `timeout` seconds.
  `memory`: a limit on its address space, in MB."""
  env = dict(os.environ, PYTHONPATH=root)
  command = [sys.executable, '-c', code] if code else [sys.executable, '-m', 'zoom_enhance.cli']
  command += ['enhance', *map(str, args)]
  limit = _memory_limit(memory) if memory else None
  try:
    r = subprocess.run(
      command, capture_output=True, text=True, env=env, cwd=cwd or root, timeout=timeout, preexec_fn=limit
    )
  except subprocess.TimeoutExpired:
    return None, [f'still running after {timeout} s']
  return r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip() and '%|' not in ln]


def judge_bad(rc, err, out_dir, expect_rc=None, says=None):
  left = [f for f in os.listdir(out_dir)]
  if rc is None:
    return err[0]
  if rc == 0:
    return 'exit 0'
  if expect_rc is not None and rc != expect_rc:
    return f'exit {rc}, not {expect_rc}'
  if any('Traceback' in ln for ln in err):
    return 'a traceback'
  if len(err) != 1:
    return f'{len(err)} lines on stderr: {" | ".join(err)[:160]}'
  if left:
    return f'left {left}'
  if says and says not in err[0]:
    return f'says {err[0][:160]!r}, not {says!r}'
  return 'ok'


def judge_good(rc, err, out_file):
  if rc is None:
    return err[0]
  if rc != 0:
    return f'exit {rc}: {" | ".join(err)[:160]}'
  if err:
    return f'{len(err)} lines on stderr: {" | ".join(err)[:160]}'
  if not os.path.exists(out_file):
    return 'no result written'
  return 'ok'


def run_api(root, good, out) -> dict:
  """The API cases, in one process: {case: verdict}."""
  env = dict(os.environ, PYTHONPATH=root)
  command = [sys.executable, '-c', API_RUNNER, good, out, json.dumps(API_CASES), json.dumps(API_GOOD_CASES)]
  try:
    r = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=300)
    stdout, why = r.stdout, f'exit {r.returncode}: {r.stderr[-160:]}'
  except subprocess.TimeoutExpired as e:  # its output is bytes
    stdout, why = (e.stdout or b'').decode(), 'still running after 300 s'
  results = {}
  for line in stdout.splitlines():
    if line.startswith('{'):
      results.update(json.loads(line))
  for name in {**API_GOOD_CASES, **API_CASES}:
    results.setdefault(name, f'the API run ended first ({why})')
  return results


def sigterm_case(root, folder, out_dir) -> str:
  """SIGTERM once the first result of a folder run is written: exit 143, one line, no .tmp file left."""
  env = dict(os.environ, PYTHONPATH=root)
  command = [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', folder, '-o', out_dir, '--scale', '4']
  p = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=root)
  try:
    deadline = time.monotonic() + 300
    while not any(n.endswith('.png') for n in os.listdir(out_dir)):
      if p.poll() is not None or time.monotonic() > deadline:
        return f'no result before it ended (exit {p.poll()})'
      time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    err = [ln for ln in p.communicate(timeout=120)[1].splitlines() if ln.strip() and '%|' not in ln]
  finally:
    p.kill()
  temps = [n for n in os.listdir(out_dir) if n.endswith('.tmp')]
  if temps:
    return f'left {temps}'
  if p.returncode != 143:
    return f'exit {p.returncode}, not 143'
  if len(err) != 1 or 'Traceback' in err[0]:
    return f'{len(err)} lines on stderr: {" | ".join(err)[:160]}'
  return 'ok'


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  parser.add_argument('--root', default=here, help='checkout whose zoom_enhance and embedded bundle to run')
  args = parser.parse_args()
  root = os.path.abspath(args.root)
  results = {}
  with tempfile.TemporaryDirectory() as d:
    p = make_inputs(d)
    good = p['good.jpg']
    out_dir = os.path.join(d, 'out')
    os.makedirs(out_dir)

    def bad(name, *argv, out=None, code=None, expect_rc=None, says=None, **run):
      shutil.rmtree(out_dir)
      os.makedirs(out_dir)
      rc, err = run_cli(root, [*argv, '-o', out or os.path.join(out_dir, 'r.png')], code, **run)
      results[name] = judge_bad(rc, err, out_dir, expect_rc, says)

    def fine(name, *argv, ext='png', stem='r', out=None, result=None):
      shutil.rmtree(out_dir)
      os.makedirs(out_dir)
      out = out or os.path.join(out_dir, f'{stem}.{ext}')
      rc, err = run_cli(root, [*argv, '-o', out])
      results[name] = judge_good(rc, err, result or out)

    for name in ('text.jpg', 'empty.png', 'truncated.jpg', 'bomb.png'):
      bad(f'input: {name}', p[name])
    bad('input: a missing file', os.path.join(d, 'missing.jpg'))
    bad('input: a FIFO', p['fifo.jpg'], timeout=30)
    bad(
      'input: a folder whose only photo is a FIFO',
      p['fifo_folder'],
      out=os.path.join(d, 'fifo_out'),
      timeout=30,
    )
    limited = dict(memory=1200)  # MB of address space; the command needs about 600
    bad(
      'input: bomb.png, --max-pixels raised, 1200 MB', p['bomb.png'], '--max-pixels', '500000000', **limited
    )
    bomb_crop = ('--max-pixels', '500000000', '--crop', '0,0,64,64')
    bad('input: bomb.png cropped, --max-pixels raised, 1200 MB', p['bomb.png'], *bomb_crop, **limited)
    bad('input: a folder with no images', out_dir, out=os.path.join(d, 'elsewhere'))
    for flag, value in [
      ('--crop', '10,10,0,20'),
      ('--crop', '60,40,100,100'),
      ('--crop', 'a,b'),
      ('--scale', '0'),
      ('--scale', '-1'),
      ('--scale', 'nan'),
      ('--scale', '1000'),
      ('--size', '0x0'),
      ('--size', 'abc'),
      ('--size', '100000x100000'),
      ('--detail', '1.5'),
      ('--detail', 'nan'),
      ('--strength', '2'),
      ('--threads', '0'),
      ('--threads', '-1'),
      ('--threads', 'two'),
      ('--threads', '1000'),
      ('--max-pixels', '-5'),
      ('--max-pixels', '1000'),
      ('--seed', '-1'),
      ('--quality', '0'),
      ('--quality', '101'),
      ('--tile', '100'),
      ('--steps', '3'),
      ('--quant', 'int4'),
      ('--delegate', os.path.join(d, 'missing.so')),
    ]:
      bad(f'option: {flag} {value}', good, flag, value)
    bad('option: --ext gif into a folder', good, '--ext', 'gif', out=os.path.join(d, 'outdir'))
    bad('output: an unknown extension', good, out=os.path.join(out_dir, 'r.xyz'))
    bad('output: /dev/null', good, out='/dev/null')
    bad('output: a folder under a file', good, out=os.path.join(p['a_file'], 'r.png'), says='Not a directory')
    bad('output: the input file itself', p['photo.tif'], out=p['photo.tif'])
    bad('output: - (standard output)', good, out='-', cwd=out_dir)
    folder = p['folder']
    bad('output: the input folder', folder, out=folder)
    fine('output: the folder above the input folder', folder, out=d, result=os.path.join(d, 'good.png'))
    if os.path.exists(os.path.join(d, 'good.png')):
      os.remove(os.path.join(d, 'good.png'))
    bad('output: above an input folder, a result onto one of its photos', p['nest'], out=d)
    fine('output: a name of 254 bytes', good, '--scale', '2', stem='é' * 125)
    webp, jpeg = os.path.join(out_dir, 'r.webp'), os.path.join(out_dir, 'r.jpg')
    bad('output: WebP wider than 16383 px', p['wide.png'], '--scale', '4', out=webp)
    bad('output: JPEG wider than 65500 px', p['wider.png'], '--scale', '4', out=jpeg)
    for name, b in damaged_bundles(root, d).items():
      bad(name, good, '--bundle', b)
    bad('bundle: no such folder', good, '--bundle', os.path.join(d, 'nowhere'))
    bad('accelerator: --accelerator npu where there is none', good, '--accelerator', 'npu')
    bad('interrupt: Ctrl-C while the model loads', good, code=CTRL_C_WHILE_LOADING, expect_rc=130)
    shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    results['interrupt: SIGTERM during a folder run'] = sigterm_case(root, p['many'], out_dir)
    for name in (
      'text_orientation.jpg',
      'corrupt_exif.jpg',
      'sixteen_bit.png',
      'palette.gif',
      'cmyk.jpg',
      'alpha.png',
      'gray_alpha.png',
      'photo.tif',
      'photo.webp',
    ):
      fine(f'good: {name}', p[name], '--scale', '2')
    fine('good: a JPEG result', good, '--scale', '2', ext='jpg')
    results.update(run_api(root, good, os.path.join(out_dir, 'api.png')))
  kept = sum(v == 'ok' for v in results.values())
  for name, verdict in results.items():
    print(f'{"ok  " if verdict == "ok" else "FAIL"} {name}{"" if verdict == "ok" else ": " + verdict}')
  print(f'{kept} of {len(results)} cases kept their promise ({root})')


if __name__ == '__main__':
  main()
