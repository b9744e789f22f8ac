"""Test setup: 8 simulated CPU devices (set before JAX is imported) and shared fixtures."""

import importlib.util
import os
import pathlib

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name='tiny'):
  spec = importlib.util.spec_from_file_location(f'config_{name}', ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


@pytest.fixture(scope='session')
def photo_dir(tmp_path_factory):
  """A folder of real photos: scikit-image's sample pictures saved as JPEG and PNG."""
  from PIL import Image
  from skimage import data
  folder = tmp_path_factory.mktemp('photos')
  for name in ('astronaut', 'coffee', 'chelsea', 'rocket'):
    img = getattr(data, name)()
    ext = 'png' if name == 'rocket' else 'jpg'
    Image.fromarray(np.asarray(img, np.uint8)).save(folder / f'{name}.{ext}', quality=95)
  return folder
