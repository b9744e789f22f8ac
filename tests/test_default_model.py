"""The embedded default model: shipped intact and small, used without --bundle, better than bicubic."""

import os

import numpy as np
import pytest
from PIL import Image

from zoom_enhance.evaluation import metrics
from zoom_enhance.evaluation import protocol
from zoom_enhance.imaging import files
from zoom_enhance.imaging import resample
from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import pipeline

DEFAULT = pipeline.DEFAULT_BUNDLE
SAMPLE = files.asset_path('chelsea.jpg')


def test_the_default_bundle_is_embedded_intact_and_under_10_mb():
  manifest = bundle.load_manifest(DEFAULT)  # format version, files present, SHA-256 of each model
  size = sum(os.path.getsize(os.path.join(DEFAULT, f)) for f in os.listdir(DEFAULT))
  assert size < 10 * 2**20, size
  assert manifest['default_quant']['cpu'] in manifest['models']
  # A few-step sampler: the teacher's own 1-step DDIM beat its distilled student (README).
  assert manifest['steps'] <= 4
  assert manifest['inputs']['noise']['used'] is False  # 1 step of the gated model: deterministic
  assert manifest['scale_range'] == [1.0, 4.0]
  assert manifest['model']['variant'] == 'mobile'


def test_enhance_without_bundle_runs_the_embedded_model(tmp_path, capsys, caplog):
  """The README's main command: no --bundle, x4 of the packaged photo (in a fresh process: test_packaging)."""
  from zoom_enhance import cli

  out = tmp_path / 'enhanced.png'
  rc = cli.main(['zoom-enhance', 'enhance', SAMPLE, '--scale', '4', '-o', str(out), '-v'])
  err = capsys.readouterr().err
  assert rc == 0, err[-2000:]
  with Image.open(SAMPLE) as src, Image.open(out) as img:
    assert img.size == (4 * src.width, 4 * src.height)
    result = np.asarray(img.convert('RGB'))
    bicubic = np.asarray(src.convert('RGB').resize(img.size, Image.BICUBIC))
  # Not a resize: the model changed the picture, and more than by rounding, and sharpened it.
  diff = np.abs(result.astype(np.float32) - bicubic)
  assert diff.mean() > 0.3 and diff.max() > 20
  sharpness = lambda a: float(np.mean(np.abs(np.diff(a.astype(np.float32), axis=1))))  # noqa: E731
  assert sharpness(result) > sharpness(bicubic)
  manifest = bundle.load_manifest(DEFAULT, verify=False)
  assert any(f'model {manifest["default_quant"]["cpu"]}' in r.getMessage() for r in caplog.records)


@pytest.fixture(scope='module')
def default_enhancer():
  with pipeline.Enhancer(accelerator='cpu', threads=2) as e:
    yield e


@pytest.mark.parametrize('degradation', ['bicubic', 'realistic'])
def test_the_default_model_beats_bicubic_on_real_photos(default_enhancer, degradation):
  """x4 on three scikit-image photos (not in the training data): PSNR-Y above bicubic on each."""
  from skimage import data

  gains = []
  for name in ('astronaut', 'coffee', 'chelsea'):
    hr = getattr(data, name)()[:256, :256]
    hr, lr = protocol.make_pair(hr, 4.0, degradation, seed=protocol.image_seed(name))
    sr = np.asarray(default_enhancer.enhance(Image.fromarray(lr), scale=4.0).convert('RGB'))
    bic = resample.bicubic_uint8(lr, hr.shape[:2])
    gains.append(metrics.psnr_y(sr, hr, 4) - metrics.psnr_y(bic, hr, 4))
  assert min(gains) > 0.0, gains


def test_the_weights_behind_the_default_model_ship_intact_and_fit_their_model():
  """zoom_enhance/assets/weights/: the teacher's EMA parameters (what distillation and fine-tuning start from)
  read with their checksum and config, leaf for leaf the shapes of the model the config builds."""
  import jax
  import jax.numpy as jnp

  from zoom_enhance.model import unet
  from zoom_enhance.training import checkpoint

  root = files.asset_path('weights')
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
  assert size <= 15 * 2**20, size
  params, config, step = checkpoint.restore_params(os.path.join(root, 'default_teacher'))
  assert config.model.variant == 'mobile' and not config.model.direct_noise and step > 0
  x = jnp.zeros((1, 64, 64, 3))
  like = jax.eval_shape(unet.from_config(config).init, jax.random.PRNGKey(0), x, x, jnp.zeros(1), jnp.ones(1))
  want = {
    jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(like['params'])[0]
  }
  got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert got == want
