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


def test_the_default_bundle_is_the_distilled_student_embedded_intact_and_under_6_mb():
  manifest = bundle.load_manifest(DEFAULT)  # format version, files present, SHA-256 of each model
  size = sum(os.path.getsize(os.path.join(DEFAULT, f)) for f in os.listdir(DEFAULT))
  assert size <= 6_000_000, size
  assert {'fp16', 'int8'} <= set(manifest.models)
  assert manifest.default_quant['cpu'] in manifest.models
  # The 1-step student of progressive distillation, whose output depends on its noise (export measured it).
  assert manifest.training.distilled is True and manifest.steps <= 2
  assert manifest.inputs.noise.used is True
  # The detail is an input of the one graph (model.detail_input): the network runs once at any detail.
  assert manifest.detail.input is True and manifest.inputs.detail.shape == (1,)
  assert 0.0 <= manifest.detail.default <= 1.0
  # Full-integer int8 for NPUs, calibrated on real photo tiles: 30 dB from JAX at least, every op integer
  # between the float inputs' QUANTIZE and the output's DEQUANTIZE.
  assert manifest.models['int8_full'].parity_psnr_db >= 30.0
  from ai_edge_litert.interpreter import Interpreter

  full = Interpreter(model_path=os.path.join(DEFAULT, manifest.models['int8_full'].file))
  dtypes = {t['index']: t['dtype'] for t in full.get_tensor_details()}
  float_ops = {
    op['op_name'] for op in full._get_ops_details() if any(dtypes[i] == np.float32 for i in op['outputs'])
  }
  assert float_ops == {'DEQUANTIZE'}, float_ops
  assert manifest.scale_range == (1.0, 4.0)
  assert manifest.model.variant == 'mobile'


@pytest.mark.parametrize(
  'tile_ms, runs',
  [
    ({'fp16': 23.0, 'int8': 6.2}, 'int8'),  # the fastest
    ({'fp16': 16.4, 'int8': 16.1}, 'fp16'),  # within the tie margin of the fastest, and closer to JAX
  ],
)
def test_enhance_without_bundle_runs_the_embedded_model(tmp_path, capsys, caplog, monkeypatch, tile_ms, runs):
  """The README's main command: no --bundle, x4 of the packaged photo (in a fresh process: test_packaging).

  Which variant a machine measures faster is the machine's; the timings are injected, so the test checks
  that the runtime runs the variant they choose, whatever this machine's CPU would measure."""
  from zoom_enhance import cli
  from zoom_enhance.runtime import cpu_variant

  monkeypatch.setenv('ZOOM_ENHANCE_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.delenv('ZOOM_ENHANCE_CPU_VARIANT', raising=False)
  monkeypatch.setattr(cpu_variant, 'measure', lambda bundle_dir, manifest, keys, threads: dict(tile_ms))

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
  assert any(f'model {runs}' in r.getMessage() for r in caplog.records)


@pytest.fixture(scope='module')
def default_enhancer():
  with pipeline.Enhancer(accelerator='cpu', threads=2) as e:
    yield e


@pytest.mark.parametrize('degradation', ['bicubic', 'realistic'])
def test_the_default_model_beats_bicubic_on_real_photos(default_enhancer, degradation):
  """x4 on three scikit-image photos (not in the training data): the default detail's LPIPS is below
  bicubic's on each, the fidelity output's (detail 0) PSNR-Y above bicubic's on each; and the control goes
  the way it says: detail 0 has the higher PSNR-Y, the default detail the lower LPIPS, on average."""
  from skimage import data

  lpips = metrics.Lpips()
  gains, lpips_ratios, psnr_trade, lpips_trade = [], [], [], []
  for name in ('astronaut', 'coffee', 'chelsea'):
    hr = getattr(data, name)()[:256, :256]
    hr, lr = protocol.make_pair(hr, 4.0, degradation, seed=protocol.image_seed(name))
    fidelity = np.asarray(default_enhancer.enhance(Image.fromarray(lr), scale=4.0, detail=0).convert('RGB'))
    detailed = np.asarray(default_enhancer.enhance(Image.fromarray(lr), scale=4.0).convert('RGB'))
    bic = resample.bicubic_uint8(lr, hr.shape[:2])
    gains.append(metrics.psnr_y(fidelity, hr, 4) - metrics.psnr_y(bic, hr, 4))
    lpips_ratios.append(lpips(detailed, hr, 4) / lpips(bic, hr, 4))
    psnr_trade.append(metrics.psnr_y(fidelity, hr, 4) - metrics.psnr_y(detailed, hr, 4))
    lpips_trade.append(lpips(fidelity, hr, 4) - lpips(detailed, hr, 4))
  assert min(gains) > 0.0, gains
  assert max(lpips_ratios) < 1.0, lpips_ratios
  assert np.mean(psnr_trade) > 0.0 and np.mean(lpips_trade) > 0.0, (psnr_trade, lpips_trade)


def test_the_default_detail_draws_from_the_noise_and_detail_0_does_not(default_enhancer):
  """Two seeds give two drawings at the default detail, and the same picture at detail 0."""
  with Image.open(SAMPLE) as im:
    photo = im.convert('RGB').crop((100, 60, 196, 156))
  run = lambda **kw: np.asarray(default_enhancer.enhance(photo, scale=4.0, **kw), np.float32)  # noqa: E731
  assert np.abs(run(seed=1) - run(seed=2)).mean() > 0.3
  np.testing.assert_array_equal(run(seed=1, detail=0), run(seed=2, detail=0))


def test_the_cpu_runs_the_shipped_model_at_tiles_of_the_photo_s_own_shape(default_enhancer):
  """Every shipped model takes any tile size (export_tflite/resizable.py; export checked it against JAX at
  another size). On 2 threads the runtime cuts a 480x320 result into four 176x256 tiles (tiling.plan_tile)
  instead of six of 192, and a tile of that shape through the runtime's engine is the JAX sampler's output of
  the same inputs (the student's shipped weights), as close as at the export tile."""
  import jax

  from export_tflite import convert
  from zoom_enhance.training import checkpoint

  manifest = default_enhancer.manifest
  assert all(m.resizable and m.resized_parity_psnr_db >= 30 for m in manifest.models.values())
  engine = default_enhancer.engine
  assert engine.resizable and engine.parallel == 2
  with Image.open(SAMPLE) as im:
    photo = im.convert('RGB').crop((100, 60, 220, 140))
  report = default_enhancer.enhance(photo, scale=4.0).info['zoom_enhance']
  assert report.output_size == (480, 320) and report.tiles == 4 and report.tile_size == (256, 176)
  params, config, _ = checkpoint.restore_params(files.asset_path('weights', 'default_student'))
  fn = jax.jit(convert.make_tile_fn(params, config, manifest.steps))
  (tile,) = convert.real_tiles([np.asarray(Image.open(SAMPLE).convert('RGB'))], 1, (224, 320), [4.0], seed=5)
  got = engine.run(tile['lr_up'], tile['noise'], tile['scale'], tile['detail'])
  want = np.asarray(fn(tile['lr_up'], tile['noise'], tile['scale'], tile['detail']))
  assert got.shape == want.shape == (1, 224, 320, 3)
  parity = metrics.psnr(got, want, data_range=2.0)
  assert parity >= manifest.models[engine.variant].parity_psnr_db - 3, parity


@pytest.mark.parametrize('name', ['default_teacher', 'default_student'])
def test_the_weights_behind_the_default_model_ship_intact_and_fit_their_model(name):
  """zoom_enhance/assets/weights/: the EMA parameters of the teacher (what distillation and fine-tuning start
  from) and of the shipped student read with their checksum and config, leaf for leaf the shapes of the model
  the config builds; the student's reads the noise and the detail (model.detail_branch: the teacher as its
  fixed trunk, leaf for leaf, to float32 rounding)."""
  import jax
  import jax.numpy as jnp

  from zoom_enhance.model import unet
  from zoom_enhance.training import checkpoint

  root = files.asset_path('weights')
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
  assert size <= 15 * 2**20, size
  params, config, step = checkpoint.restore_params(os.path.join(root, name))
  student = name == 'default_student'
  assert config.model.variant == 'mobile'
  assert unet.from_config(config).variant.reads_detail == student
  if student:
    assert config.model.detail_branch
    teacher, _, _ = checkpoint.restore_params(os.path.join(root, 'default_teacher'))
    for (key, a), b in zip(
      jax.tree_util.tree_flatten_with_path(teacher)[0],
      jax.tree.leaves({k: v for k, v in params.items() if k != 'detail_branch'}),
    ):
      # The trunk gets no gradient; only the EMA's rounding (d e + (1 - d) p) moves it, by an ulp or two.
      np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, err_msg=jax.tree_util.keystr(key))
  assert step > 0
  x = jnp.zeros((1, 64, 64, 3))
  like = jax.eval_shape(unet.from_config(config).init, jax.random.PRNGKey(0), x, x, jnp.zeros(1), jnp.ones(1))
  want = {
    jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(like['params'])[0]
  }
  got = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert got == want
