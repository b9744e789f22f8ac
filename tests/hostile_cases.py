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
characters, before any work. Prints one line per case and the totals.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

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
}

API_RUNNER = """
import json, sys
import numpy as np
import zoom_enhance
from zoom_enhance import errors
from zoom_enhance.imaging.photo import save_photo
GOOD, OUT = sys.argv[1], sys.argv[2]
enhance = lambda image, **kw: zoom_enhance.enhance(image, **kw)
results = {}
for name, expr in json.loads(sys.argv[3]).items():
  try:
    eval(expr)
    results[name] = 'no error raised'
  except errors.ZoomEnhanceError as e:
    text = str(e)
    results[name] = 'ok' if ('\\n' not in text and len(text) < 300) else f'message of {len(text)} chars'
  except Exception as e:
    results[name] = f'bare {type(e).__name__}: {str(e)[:80]}'
print(json.dumps(results))
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


def run_cli(root, args, code=None):
  env = dict(os.environ, PYTHONPATH=root)
  command = [sys.executable, '-c', code] if code else [sys.executable, '-m', 'zoom_enhance.cli']
  command += ['enhance', *map(str, args)]
  r = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, timeout=300)
  return r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip() and '%|' not in ln]


def judge_bad(rc, err, out_dir, expect_rc=None):
  left = [f for f in os.listdir(out_dir)]
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
  return 'ok'


def judge_good(rc, err, out_file):
  if rc != 0:
    return f'exit {rc}: {" | ".join(err)[:160]}'
  if err:
    return f'{len(err)} lines on stderr: {" | ".join(err)[:160]}'
  if not os.path.exists(out_file):
    return 'no result written'
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

    def bad(name, *argv, out=None, code=None, expect_rc=None):
      shutil.rmtree(out_dir)
      os.makedirs(out_dir)
      rc, err = run_cli(root, [*argv, '-o', out or os.path.join(out_dir, 'r.png')], code)
      results[name] = judge_bad(rc, err, out_dir, expect_rc)

    def fine(name, *argv, ext='png'):
      shutil.rmtree(out_dir)
      os.makedirs(out_dir)
      out = os.path.join(out_dir, f'r.{ext}')
      rc, err = run_cli(root, [*argv, '-o', out])
      results[name] = judge_good(rc, err, out)

    for name in ('text.jpg', 'empty.png', 'truncated.jpg', 'bomb.png'):
      bad(f'input: {name}', p[name])
    bad('input: a missing file', os.path.join(d, 'missing.jpg'))
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
    bad('output: a folder under a file', good, out=os.path.join(p['a_file'], 'r.png'))
    bad('output: the input file itself', p['photo.tif'], out=p['photo.tif'])
    folder = os.path.join(d, 'photos')
    os.makedirs(folder, exist_ok=True)
    shutil.copy(good, folder)
    bad('output: the input folder', folder, out=folder)
    bad('output: above the input folder', folder, out=d)
    webp, jpeg = os.path.join(out_dir, 'r.webp'), os.path.join(out_dir, 'r.jpg')
    bad('output: WebP wider than 16383 px', p['wide.png'], '--scale', '4', out=webp)
    bad('output: JPEG wider than 65500 px', p['wider.png'], '--scale', '4', out=jpeg)
    for name, b in damaged_bundles(root, d).items():
      bad(name, good, '--bundle', b)
    bad('bundle: no such folder', good, '--bundle', os.path.join(d, 'nowhere'))
    bad('accelerator: --accelerator npu where there is none', good, '--accelerator', 'npu')
    bad('interrupt: Ctrl-C while the model loads', good, code=CTRL_C_WHILE_LOADING, expect_rc=130)
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
    env = dict(os.environ, PYTHONPATH=root)
    r = subprocess.run(
      [sys.executable, '-c', API_RUNNER, good, os.path.join(out_dir, 'api.png'), json.dumps(API_CASES)],
      capture_output=True,
      text=True,
      env=env,
      cwd=root,
      timeout=600,
    )
    try:
      results.update(json.loads(r.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
      results.update({name: f'the API run failed: {r.stderr[-200:]}' for name in API_CASES})
  kept = sum(v == 'ok' for v in results.values())
  for name, verdict in results.items():
    print(f'{"ok  " if verdict == "ok" else "FAIL"} {name}{"" if verdict == "ok" else ": " + verdict}')
  print(f'{kept} of {len(results)} cases kept their promise ({root})')


if __name__ == '__main__':
  main()
