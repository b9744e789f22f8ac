"""Export to LiteRT: every quantization variant, parity with JAX, the manifest and damaged bundles."""

import json
import os
import shutil

import numpy as np
import pytest

from export_tflite import convert
from export_tflite import export
from export_tflite import npu
from zoom_enhance import cli
from zoom_enhance.evaluation import metrics
from zoom_enhance.imaging import files
from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import engine


@pytest.fixture(scope='module')
def exported(trained, photo_dir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('bundles') / 'B')
  manifest = export.export(
    trained, out, quants=list(convert.QUANT_MODES), tile=32, steps=2, photos=str(photo_dir)
  )
  return out, manifest


def test_every_variant_is_written_with_parity_above_its_threshold(exported):
  out, manifest = exported
  assert set(manifest['models']) == {'fp32', 'fp16', 'int8', 'int8_full'}
  sizes = {}
  for q, entry in manifest['models'].items():
    path = os.path.join(out, entry['file'])
    sizes[q] = os.path.getsize(path)
    assert entry['bytes'] == sizes[q] and entry['sha256'] == files.sha256(path)
    assert entry['parity_psnr_db'] >= convert.PARITY_DB[q]
    assert isinstance(entry['gpu_incompatible_ops'], list)
  assert manifest['models']['fp16']['gpu_incompatible_ops'] == []  # the whole fp16 graph runs on a GPU
  assert manifest['models']['fp32']['parity_psnr_db'] > manifest['models']['int8']['parity_psnr_db']
  assert sizes['int8'] < sizes['fp16'] < sizes['fp32']
  assert manifest['steps'] == 2
  assert manifest['tile'] == {'size': 32, 'overlap': 4, 'multiple': 8, 'resized_check': [40, 56]}
  # The tiny network has GroupNorm, whose statistics hold the tile's size: no variant is made resizable,
  # and the manifest says why (resizable.LOCAL_OPS), so the runtime keeps its square tile.
  for entry in manifest['models'].values():
    assert entry['resizable'] is False and 'image-sized tensor' in entry['not_resizable'], entry
  # Two sampler steps from an ungated model: the noise moves the output, so the runtime draws it.
  assert manifest['inputs']['noise']['used'] is True
  assert manifest['inputs']['noise']['effect_max_abs'] > export.NOISE_UNUSED_BELOW
  assert not [n for n in os.listdir(os.path.dirname(out)) if n.startswith('.bundle-')]


def test_exported_model_matches_jax_on_a_fresh_real_tile(exported, trained, photo_dir):
  import jax

  from zoom_enhance.imaging import photo
  from zoom_enhance.training import checkpoint

  out, manifest = exported
  params, config, _ = checkpoint.restore_params(trained)
  fn = jax.jit(convert.make_tile_fn(params, config, 2))
  photos = [photo.load_rgb(p) for p in files.list_images(str(photo_dir))]
  (tile,) = convert.real_tiles(photos, 1, 32, [3.0], seed=99)
  lite = engine.open_model(os.path.join(out, manifest['models']['fp32']['file']), threads=2)
  try:
    got = lite.run(tile['lr_up'], tile['noise'], tile['scale'])
  finally:
    lite.close()
  expected = np.asarray(fn(tile['lr_up'], tile['noise'], tile['scale']))
  assert got.shape == (1, 32, 32, 3)
  assert metrics.psnr(got, expected, data_range=2.0) > 60
  assert float(np.abs(expected - tile['lr_up']).max()) > 1e-3  # the model did something


def test_the_manifest_figures_are_what_the_runtime_engine_measures(exported, trained, photo_dir):
  """Parity and tile latency come from the engine `zoom-enhance enhance` runs (on 2 threads: two
  single-threaded copies of the model, a tile each)."""
  import jax

  from zoom_enhance.training import checkpoint

  out, manifest = exported
  pool = 'LiteRT interpreter, XNNPACK, 2 tiles at once, 1 thread each'
  assert manifest['parity']['engine'].startswith(pool)
  params, config, _ = checkpoint.restore_params(trained)
  fn = jax.jit(convert.make_tile_fn(params, config, 2))
  # The export's own parity tiles (same seed), through the runtime's engine: the figure is reproduced.
  scales = [config.data.max_scale, 0.5 * (config.data.min_scale + config.data.max_scale)]
  checks = convert.real_tiles(export._photos(str(photo_dir)), manifest['parity']['tiles'], 32, scales, seed=2)
  expected = [np.asarray(fn(t['lr_up'], t['noise'], t['scale'])) for t in checks]
  for q in ('fp32', 'int8'):
    parity, seconds, detail = export.measure(
      os.path.join(out, manifest['models'][q]['file']), checks, expected
    )
    assert parity == pytest.approx(manifest['models'][q]['parity_psnr_db'], abs=1e-3), q
    assert detail == manifest['parity']['engine'].split(' (')[0]
    assert 0 < manifest['models'][q]['tile_latency_ms_export_cpu'] < 1000 and seconds > 0
  # The engine measured is the one the runtime loads for the bundle: the same output for the same tile.
  from zoom_enhance.runtime import pipeline

  tile = checks[0]
  measured = engine.open_model(os.path.join(out, manifest['models']['fp32']['file']), threads=2)
  try:
    with pipeline.Enhancer(out, accelerator='cpu', quant='fp32', threads=2) as enhancer:
      assert enhancer.engine.runtime == measured.runtime
      np.testing.assert_array_equal(
        enhancer.engine.run(tile['lr_up'], tile['noise'], tile['scale']),
        measured.run(tile['lr_up'], tile['noise'], tile['scale']),
      )
  finally:
    measured.close()


def test_manifest_round_trip_and_damaged_bundles(exported, tmp_path):
  out, manifest = exported
  assert bundle.load_manifest(out).to_json()['models'] == manifest['models']

  def damaged(edit):
    copy = tmp_path / f'copy{len(os.listdir(tmp_path))}'
    shutil.copytree(out, copy)
    edit(copy)
    return str(copy)

  def truncate(d):
    path = d / 'zoom_enhance_int8.tflite'
    path.write_bytes(path.read_bytes()[:1000])

  def rewrite_manifest(change):
    def edit(d):
      m = json.loads((d / 'manifest.json').read_text())
      change(m)
      (d / 'manifest.json').write_text(json.dumps(m))

    return edit

  cases = [
    (truncate, 'checksum mismatch'),
    (lambda d: (d / 'zoom_enhance_fp16.tflite').unlink(), 'missing'),
    (rewrite_manifest(lambda m: m['models']['fp32'].update(sha256='0' * 64)), 'checksum mismatch'),
    (rewrite_manifest(lambda m: m.update(format_version=99)), 'format version 99'),
    (lambda d: (d / 'manifest.json').write_text('{not json'), 'unreadable manifest'),
    (lambda d: (d / 'manifest.json').unlink(), 'not a bundle'),
    # Valid JSON, wrong fields: each named, before any model is opened.
    (rewrite_manifest(lambda m: m['models']['fp32'].pop('sha256')), '"models.fp32.sha256" is missing'),
    (rewrite_manifest(lambda m: m['models'].update(fp32='model.tflite')), '"models.fp32" is not an object'),
    (rewrite_manifest(lambda m: m['models']['fp32'].update(file='../x.tflite')), 'a file name inside the'),
    (rewrite_manifest(lambda m: m.pop('tile')), '"tile" is missing'),
    (rewrite_manifest(lambda m: m['tile'].update(size='32')), '"tile.size" must be a positive whole number'),
    (rewrite_manifest(lambda m: m['tile'].update(overlap=m['tile']['size'])), '"tile.overlap" must be'),
    (rewrite_manifest(lambda m: m['tile'].update(multiple=0)), '"tile.multiple" must be a positive'),
    (rewrite_manifest(lambda m: m['models']['fp32'].update(resizable='yes')), '"models.fp32.resizable" must'),
    (rewrite_manifest(lambda m: m.update(steps=0)), '"steps" must be a whole number >= 1'),
    (rewrite_manifest(lambda m: m.update(scale_range=[4.0, 1.0])), '"scale_range" must be'),
    (rewrite_manifest(lambda m: m.update(scale_range=[1.0, float('nan')])), '"scale_range" must be'),
    (rewrite_manifest(lambda m: m.update(detail={'default': 2})), '"detail.default" must be a number'),
    (rewrite_manifest(lambda m: m['inputs']['noise'].update(used='no')), '"inputs.noise.used" must be'),
  ]
  for edit, message in cases:
    with pytest.raises(bundle.BundleError, match=message):
      bundle.load_manifest(damaged(edit))


def test_export_cli_bad_quant_is_one_line(trained, tmp_path, capsys):
  rc = cli.main(
    ['zoom-enhance', 'export', '--workdir', trained, '--out', str(tmp_path / 'B'), '--quant', 'fp32,int4']
  )
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 1 and 'Traceback' not in '\n'.join(err) and 'int4' in err[-1]
  assert not (tmp_path / 'B').exists()


def test_npu_targets_without_their_sdk_are_skipped_by_name(trained, photo_dir, tmp_path):
  out = str(tmp_path / 'B')
  manifest = export.export(
    trained, out, quants=['fp32'], tile=32, steps=2, photos=str(photo_dir), parity_tiles=1, npu=True
  )
  assert set(manifest['npu_skipped']) | {e['vendor'] for e in manifest['npu_models'].values()} == set(
    npu.NPU_TARGETS
  )
  for name, target in npu.NPU_TARGETS.items():
    reason = npu.missing_sdk(target)
    if reason:  # CI installs no vendor SDK: each is named, and the export goes on
      assert manifest['npu_skipped'][name] == reason and target.sdk_package in reason
  assert bundle.load_manifest(out).to_json()['npu_models'] == manifest['npu_models']
  assert os.path.isfile(os.path.join(out, manifest['models']['fp32']['file']))


def test_gpu_check_flags_what_the_delegate_cannot_run():
  import tensorflow as tf

  from export_tflite import gpu_check

  def lite(fn):
    spec = [tf.TensorSpec((1, 8, 8, 3), tf.float32)]
    concrete = tf.function(fn, input_signature=spec, autograph=False).get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete]).convert()

  pixel_shuffle = lambda x: tf.reshape(
    tf.transpose(tf.reshape(x, (1, 4, 2, 4, 2, 3)), (0, 1, 3, 2, 4, 5)), (1, 8, 8, 3)
  )
  assert 'TRANSPOSE (rank-6 tensor)' in gpu_check.incompatible_ops(lite(pixel_shuffle))
  uniq = lambda x: x + tf.cast(tf.size(tf.unique(tf.reshape(tf.cast(x, tf.int32), [-1]))[0]), tf.float32)
  assert 'UNIQUE' in gpu_check.incompatible_ops(lite(uniq))
  conv = lambda x: tf.nn.relu(tf.nn.conv2d(x, tf.ones((3, 3, 3, 4)), 1, 'SAME')) - 1.0
  assert gpu_check.incompatible_ops(lite(conv)) == []


def test_step_cpu_quant_and_noise_temperature_reach_the_bundle(trained, photo_dir, tmp_path, monkeypatch):
  """--step picks the checkpoint, --noise-temperature 0 is baked in, --cpu-quant is the CPU default, --detail
  the runtime's default detail."""
  from zoom_enhance.runtime import pipeline
  from zoom_enhance.training import checkpoint

  step = max(int(s) for s in os.listdir(checkpoint.checkpoint_dir(trained)) if s.isdigit())
  out = str(tmp_path / 'B')
  manifest = export.export(
    trained,
    out,
    quants=['fp32', 'int8'],
    tile=32,
    steps=1,
    photos=str(photo_dir),
    parity_tiles=1,
    step=step,
    cpu_quant='int8',
    noise_temperature=0.0,
    detail=0.6,
  )
  assert manifest['model']['checkpoint_step'] == step
  assert manifest['detail']['default'] == 0.6
  assert manifest['noise_temperature'] == 0.0 and manifest['default_quant'] == {'cpu': 'int8'}
  # Measured, not assumed: at temperature 0 no noise reaches the output, and the runtime skips it.
  assert manifest['inputs']['noise'] == {**manifest['inputs']['noise'], 'used': False, 'effect_max_abs': 0.0}
  rng = np.random.default_rng(0)
  lr_up = rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
  lite = engine.open_model(os.path.join(out, manifest['models']['fp32']['file']))
  outputs = [
    lite.run(lr_up, rng.standard_normal((1, 32, 32, 3)).astype(np.float32), np.array([3.0], np.float32))
    for _ in range(2)
  ]
  lite.close()
  np.testing.assert_array_equal(outputs[0], outputs[1])  # the noise is multiplied by 0 in the graph
  monkeypatch.setenv('ZOOM_ENHANCE_CPU_VARIANT', 'bundle')  # the bundle's choice, not this machine's fastest
  with pipeline.Enhancer(out, accelerator='cpu', threads=1) as enhancer:
    assert enhancer.engine.variant == 'int8' and not enhancer.noise_used and enhancer.default_detail == 0.6


@pytest.mark.parametrize(
  'args, message',
  [
    (('--step', '999999'), 'no checkpoint at step 999999'),
    (('--cpu-quant', 'fp16'), '--cpu-quant fp16'),
    (('--noise-temperature', '2'), '--noise-temperature 2'),
    (('--detail', '-1'), '--detail -1.0: must be in [0, 1]'),
  ],
)
def test_export_cli_bad_step_quant_or_temperature_is_one_line(trained, tmp_path, capsys, args, message):
  rc = cli.main(
    [
      'zoom-enhance',
      'export',
      '--workdir',
      trained,
      '--out',
      str(tmp_path / 'B'),
      '--quant',
      'fp32,int8',
      *args,
    ]
  )
  lines = capsys.readouterr().err.strip().splitlines()
  assert rc == 1 and 'Traceback' not in '\n'.join(lines) and message in lines[-1], lines[-3:]
  assert not (tmp_path / 'B').exists()


def test_mobile_model_exports_without_transposed_convs_and_matches_jax(photo_dir, tmp_path):
  """The shipped variant's sub-pixel up-sampling: rank-4 ops LiteRT and its GPU delegate run, same output."""
  import jax
  from ai_edge_litert.interpreter import Interpreter
  from conftest import load_config
  from conftest import random_params

  from zoom_enhance.model import unet

  config = load_config('default_model')
  model = unet.UNet(unet.get_variant(config.model.variant))
  z = np.zeros((1, 32, 32, 3), np.float32)
  params = random_params(model, z, z, np.zeros((1,), np.float32), np.full((1,), 4.0, np.float32), seed=1)
  tile_fn = convert.make_tile_fn(params, config, 1)
  lite_model = convert.to_tflite(tile_fn, 32, 'fp16')
  interp = Interpreter(model_content=lite_model)
  ops = {op['op_name'] for op in interp._get_ops_details()}
  assert 'TRANSPOSE_CONV' not in ops and 'TRANSPOSE' in ops
  assert convert.gpu_incompatible_ops(lite_model) == []
  tile = convert.real_tiles(export._photos(str(photo_dir)), 1, 32, [4.0], seed=0)[0]
  want = np.asarray(jax.jit(tile_fn)(tile['lr_up'], tile['noise'], tile['scale']))
  path = tmp_path / 'mobile.tflite'
  path.write_bytes(lite_model)
  lite = engine.open_model(str(path), threads=2)
  got = lite.run(tile['lr_up'], tile['noise'], tile['scale'])
  lite.close()
  assert metrics.psnr(got, want, data_range=2.0) > convert.PARITY_DB['fp16']


def test_a_model_that_reads_the_detail_gets_it_as_a_graph_input_at_every_value(photo_dir, tmp_path):
  """model.detail_input: the detail is an input of the one graph (the network runs once at any D); LiteRT
  matches JAX at D = 0, 0.5, 1; the runtime's tiling feeds it, so D changes the output."""
  import dataclasses

  import jax
  from conftest import load_config
  from conftest import random_params

  from zoom_enhance.model import unet
  from zoom_enhance.runtime import tiling

  config = load_config('default_model')
  config.model.direct_noise = config.model.detail_input = True
  model = unet.UNet(dataclasses.replace(unet.get_variant('mobile'), direct_noise=True, detail_input=True))
  z = np.zeros((1, 32, 32, 3), np.float32)
  params = random_params(model, z, z, np.zeros((1,), np.float32), np.full((1,), 4.0, np.float32), seed=1)
  tile_fn = convert.make_tile_fn(params, config, 1)
  assert tile_fn.inputs == ('lr_up', 'noise', 'scale', 'detail')
  lite_model = convert.to_tflite(tile_fn, 32, 'fp16')
  assert convert.gpu_incompatible_ops(lite_model) == []
  path = tmp_path / 'detail.tflite'
  path.write_bytes(lite_model)
  lite = engine.open_model(str(path), threads=2)
  try:
    assert lite.backend.input_shapes['detail'] == (1,)
    tiles = convert.real_tiles(export._photos(str(photo_dir)), 3, 32, [4.0], seed=0)
    assert [float(t['detail'][0]) for t in tiles] == [1.0, 0.0, 0.5]
    outs = []
    for t in tiles:
      want = np.asarray(tile_fn.feed(t, jax.jit(tile_fn)))
      got = lite.run(t['lr_up'], t['noise'], t['scale'], t['detail'])
      assert metrics.psnr(got, want, data_range=2.0) > convert.PARITY_DB['fp16'], t['detail']
      # The same tile at detail 1 and 0 (zero noise): the detail input alone moves the output.
      outs.append([lite.run(t['lr_up'], np.zeros_like(t['noise']), t['scale'], np.array([d], np.float32))
                   for d in (0.0, 1.0)])  # fmt: skip
    assert all(float(np.abs(a - b).max()) > 1e-3 for a, b in outs)
    lr = np.asarray(export._photos(str(photo_dir))[0][:12, :12])
    run = lambda d, seed: tiling.enhance_tiled(  # noqa: E731
      lite.run, lr, (48, 48), tile=32, overlap=8, scale=4.0, seed=seed, detail=d
    )
    assert not np.array_equal(run(0.0, 1), run(1.0, 1))
    np.testing.assert_array_equal(run(0.0, 1), run(0.0, 2))  # detail 0: no noise, the same for every seed
  finally:
    lite.close()


def _run_resized(content: bytes, tile: dict):
  """(output, op names) of a .tflite model run by the interpreter at the tile's own size."""
  from ai_edge_litert.interpreter import Interpreter

  it = Interpreter(model_content=content)
  slots = {d['name']: d for d in it.get_input_details()}
  for d in slots.values():
    if len(d['shape']) == 4:
      it.resize_tensor_input(d['index'], tile['lr_up'].shape, strict=False)
  it.allocate_tensors()
  for name, d in slots.items():
    it.set_tensor(d['index'], tile[next(k for k in tile if k in name)])
  it.invoke()
  return it.get_tensor(it.get_output_details()[0]['index']), {op['op_name'] for op in it._get_ops_details()}


def test_the_pixel_shuffles_of_a_mobile_model_become_depth_to_space_and_it_takes_any_size():
  """resizable.make_resizable on the shipped student converted afresh (fp32, 32-px tile): the same output
  to the bit at 32, four RESHAPE-TRANSPOSE-RESHAPE shuffles gone, and at 40x56 and 24x64 the JAX
  sampler's output of the same inputs."""
  import jax

  from export_tflite import resizable
  from zoom_enhance.imaging import photo
  from zoom_enhance.training import checkpoint

  # A shuffle already in DEPTH_TO_SPACE's order needs no permutation; a transpose of the image is none.
  perm = lambda *a: resizable.shuffle_permutation([1, 2, 2, 8], *a, [1, 4, 4, 2], 2)  # noqa: E731
  assert list(perm([1, 2, 2, 2, 2, 2], [0, 1, 3, 2, 4, 5])) == list(range(8))
  assert perm([1, 2, 2, 2, 2, 2], [0, 2, 1, 3, 4, 5]) is None
  # The network's own rank-4 shuffle (unet.pixel_shuffle) puts the column offset first: two blocks swap.
  assert list(perm([2, 4, 2, 2], [0, 2, 1, 3])) == [0, 1, 4, 5, 2, 3, 6, 7]
  params, config, _ = checkpoint.restore_params(files.asset_path('weights', 'default_student'))
  tile_fn = convert.make_tile_fn(params, config, 1)
  model = convert.to_tflite(tile_fn, 32, 'fp32')
  rewritten, count = resizable.make_resizable(model)
  # The trunk's two shuffles, and the detail branch's: its 'fullres' head's nearest-neighbour up-sampling
  # (the first shipped branch's 'subpixel' head had two).
  assert count == {'fullres': 3, 'subpixel': 4}[config.model.detail_head]

  photos = [photo.load_rgb(files.asset_path('chelsea.jpg'))]
  (at_tile,) = convert.real_tiles(photos, 1, 32, [4.0], seed=1)
  before, ops_before = _run_resized(model, at_tile)
  after, ops_after = _run_resized(rewritten, at_tile)
  np.testing.assert_array_equal(before, after)
  assert 'TRANSPOSE' in ops_before and 'TRANSPOSE' not in ops_after and 'DEPTH_TO_SPACE' in ops_after
  jax_fn = jax.jit(tile_fn)
  for hw in ((40, 56), (24, 64)):
    (tile,) = convert.real_tiles(photos, 1, hw, [3.0], seed=2)
    got, _ = _run_resized(rewritten, tile)
    assert got.shape == (1, *hw, 3)
    assert metrics.psnr(got, np.asarray(tile_fn.feed(tile, jax_fn)), data_range=2.0) > 60


def test_a_fullres_detail_branch_exports_resizable_and_runs_on_the_gpu_delegate():
  """model.detail_head='fullres': the branch's nearest-neighbour up-sampling (r^2 copies, then a shuffle)
  becomes DEPTH_TO_SPACE without any permutation, the tent filter two DEPTHWISE_CONV_2D; the rewritten
  model gives the same output to the bit at its tile, the JAX sampler's at other sizes, and every op is
  one the GPU delegate runs."""
  import dataclasses

  import jax
  from conftest import load_config
  from conftest import random_params

  from export_tflite import resizable
  from zoom_enhance.imaging import photo
  from zoom_enhance.model import unet

  config = load_config('default_model')
  config.model.detail_branch, config.model.detail_head = True, 'fullres'
  model = unet.UNet(
    dataclasses.replace(unet.get_variant('mobile'), detail_branch=True, detail_head='fullres')
  )
  z = np.zeros((1, 32, 32, 3), np.float32)
  params = random_params(model, z, z, np.zeros((1,), np.float32), np.full((1,), 4.0, np.float32), seed=3)
  tile_fn = convert.make_tile_fn(params, config, 1)
  lite_model = convert.to_tflite(tile_fn, 32, 'fp32')
  assert convert.gpu_incompatible_ops(lite_model) == []
  rewritten, count = resizable.make_resizable(lite_model)
  assert count == 3  # the trunk's two shuffles and the branch's nearest-neighbour up-sampling

  photos = [photo.load_rgb(files.asset_path('chelsea.jpg'))]
  (at_tile,) = convert.real_tiles(photos, 1, 32, [4.0], seed=1)
  before, _ = _run_resized(lite_model, at_tile)
  after, ops = _run_resized(rewritten, at_tile)
  np.testing.assert_array_equal(before, after)
  assert 'TRANSPOSE' not in ops and {'DEPTH_TO_SPACE', 'DEPTHWISE_CONV_2D'} <= ops
  jax_fn = jax.jit(tile_fn)
  (tile,) = convert.real_tiles(photos, 1, (40, 56), [3.0], seed=2)
  got, _ = _run_resized(rewritten, tile)
  assert metrics.psnr(got, np.asarray(tile_fn.feed(tile, jax_fn)), data_range=2.0) > 60
