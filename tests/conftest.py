"""Test setup: 8 simulated CPU devices (set before JAX is imported) and shared fixtures."""

import os
import pathlib

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_config(name='tiny'):
  from zoom_enhance import config_files
  return config_files.load_module(str(ROOT / 'configs' / f'{name}.py'), f'config_{name}').get_config()


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


# Tile side of the shared test bundle: small, so a tile is quick on a CPU.
BUNDLE_TILE = 32


@pytest.fixture(scope='session')
def trained(photo_dir, tmp_path_factory):
  """A tiny model trained a few steps on `photo_dir`: its workdir."""
  from zoom_enhance import train
  config = load_config('tiny')
  config.data.source = f'folder:{photo_dir}'
  config.train.num_steps = 6
  config.train.num_samples = 2
  config.diffusion.sample_steps = 2
  config.mesh.data = 8
  workdir = str(tmp_path_factory.mktemp('trained'))
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope='session')
def bundle_dir(trained, photo_dir, tmp_path_factory):
  """`trained` exported once per session (fp32 and int8, 2 steps), shared by the runtime and eval tests."""
  from export_tflite import export
  out = str(tmp_path_factory.mktemp('bundles') / 'B')
  export.export(trained, out, quants=['fp32', 'int8'], tile=BUNDLE_TILE, steps=2, photos=str(photo_dir))
  return out
