"""`zoom-enhance eval` and `bench` on the shared test bundle: results, degradations, pairs, peers, errors."""

import contextlib
import importlib.util
import io
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from zoom_enhance import cli as cli_lib
from zoom_enhance.evaluation import metrics
from zoom_enhance.evaluation import peers
from zoom_enhance.evaluation import protocol
from zoom_enhance.evaluation import runtime_bench
from zoom_enhance.runtime import bundle as bundle_lib
from zoom_enhance.runtime import cpu_variant

HAVE_PEERS = not peers.missing_packages()
ROW_KEYS = {'psnr_y', 'ssim_y', 'lpips', 'dists', 'lattice', 'sec_per_mp', 'cpu_sec_per_mp'}
needs_peers = pytest.mark.skipif(not HAVE_PEERS, reason="pip install 'zoom-enhance[peers]'")


def cli(command, *args):
  """The real command, in this process: (exit code, stdout, the error lines it printed on stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    rc = cli_lib.main(['zoom-enhance', command, *map(str, args)])
  return rc, out.getvalue(), [ln for ln in err.getvalue().splitlines() if ln.strip()]


@pytest.fixture(scope='module')
def hr_dir(tmp_path_factory):
  """Two small real photos (scikit-image samples, cropped), one of them not a multiple of 4."""
  from skimage import data

  folder = tmp_path_factory.mktemp('hr')
  Image.fromarray(data.astronaut()[0:96, 160:256]).save(folder / 'astronaut.png')
  Image.fromarray(data.coffee()[100:198, 200:322]).save(folder / 'coffee.png')
  return folder


def gradient_energy(img) -> float:
  y = metrics.rgb_to_y(img)
  return float(np.mean(np.diff(y, axis=0) ** 2) + np.mean(np.diff(y, axis=1) ** 2))


@pytest.fixture(scope='module')
def results(hr_dir, bundle_dir, tmp_path_factory):
  """One eval run through the command line: bicubic, Lanczos, the bundle and, if installed, compact."""
  out = tmp_path_factory.mktemp('eval') / 'results.json'
  methods = 'bicubic,lanczos,zoom-enhance' + (',realesrgan-compact' if HAVE_PEERS else '')
  logging.getLogger('zoom_enhance.eval').setLevel(logging.WARNING)
  rc, stdout, err = cli(
    'eval',
    '--hr-dir',
    hr_dir,
    '--scale',
    '4',
    '--bundle',
    bundle_dir,
    '--out',
    out,
    '--methods',
    methods,
    '--accelerator',
    'cpu',
    '--peer-threads',
    '1',
  )
  assert rc == 0 and err == [], err[-20:]
  with open(out) as f:
    return json.load(f), stdout, out


def test_eval_writes_every_method_per_image_and_on_average(results, bundle_dir):
  res, stdout, _ = results
  methods = ['bicubic', 'lanczos', 'zoom-enhance'] + (['realesrgan-compact'] if HAVE_PEERS else [])
  assert list(res['methods']) == methods
  assert set(res['per_image']) == {'astronaut.png', 'coffee.png'}
  for name, row in res['per_image'].items():
    for m in methods:
      assert set(row[m]) == ROW_KEYS, (name, m)
  for m, mean in res['methods'].items():
    assert 10 < mean['psnr_y'] < 60 and 0 < mean['ssim_y'] <= 1 and 0 <= mean['lpips'] < 1, m
    assert mean['psnr_y'] == pytest.approx(np.mean([r[m]['psnr_y'] for r in res['per_image'].values()]))
    lattices = [r[m]['lattice'] for r in res['per_image'].values()]
    assert (mean['lattice'], mean['lattice_median']) == pytest.approx(
      (np.mean(lattices), np.median(lattices))
    )
    assert m in stdout
  assert res['methods']['bicubic']['lattice'] == 0  # the lattice score's own baseline: nothing added
  assert 'lattice' in stdout.splitlines()[0] and 'DISTS' in stdout
  assert res['methods']['zoom-enhance']['sec_per_mp'] > 0
  s = res['settings']
  assert (s['scale'], s['degradation'], s['images']) == (4.0, 'bicubic', 2)
  assert (s['shave'], s['lattice_period'], s['lr_dir'], s['results']) == (4, 4, None, {})
  assert (s['threads'], s['peer_threads']) == (2, 1)
  b = s['bundle']
  assert b['path'] == os.path.abspath(bundle_dir) and b['steps'] == 2
  assert b['variant'] in cpu_variant.candidates(bundle_lib.load_manifest(bundle_dir))  # measured fastest
  assert b['accelerator'] == 'cpu'
  assert res['per_image']['coffee.png']['hr_size'] == [120, 96]  # modcrop of 122x98
  if HAVE_PEERS:
    peer = s['peers']['realesrgan-compact']
    assert peer['blobs'] == ['data', 'output'] and peer['runtime'].startswith('ncnn ')
    assert '1 threads' in peer['runtime'] and 'note' not in peer
    assert peer['label'] == peers.LABELS['realesrgan-compact']
    assert f'realesrgan-compact: {peer["label"]}' in res['notes'] and peer['label'] in stdout


def _bicubic_by_hand(img: np.ndarray, size_wh) -> np.ndarray:
  """Pillow's float32 bicubic per channel, rounded: written out here, not taken from the project."""
  chans = [
    np.asarray(Image.fromarray(img[:, :, c].astype(np.float32)).resize(size_wh, Image.Resampling.BICUBIC))
    for c in range(3)
  ]
  return np.clip(np.rint(np.dstack(chans)), 0, 255).astype(np.uint8)


def test_eval_bicubic_matches_an_independent_computation(results, hr_dir):
  """The protocol (modcrop, antialiased bicubic down and up, BT.601 luma, 4 px shaved) computed by hand."""
  from skimage.metrics import structural_similarity

  res, _, _ = results
  for name in ('astronaut.png', 'coffee.png'):
    hr = np.asarray(Image.open(hr_dir / name).convert('RGB'))
    h, w = hr.shape[0] // 4 * 4, hr.shape[1] // 4 * 4
    hr = hr[:h, :w]
    sr = _bicubic_by_hand(_bicubic_by_hand(hr, (w // 4, h // 4)), (w, h))
    luma = lambda a: (16.0 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255.0)[
      4:-4, 4:-4
    ]
    y_sr, y_hr = luma(sr.astype(np.float64)), luma(hr.astype(np.float64))
    psnr = 10 * np.log10(255.0**2 / np.mean((y_sr - y_hr) ** 2))
    ssim = structural_similarity(
      y_sr, y_hr, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    row = res['per_image'][name]['bicubic']
    assert res['per_image'][name]['hr_size'] == [w, h]
    assert row['psnr_y'] == pytest.approx(psnr, abs=1e-9) and row['ssim_y'] == pytest.approx(ssim, abs=1e-9)
    assert 20 < psnr < 35  # a real photo's bicubic x4, not a degenerate comparison


def test_eval_writes_before_after_crops(results):
  res, _, out = results
  assert len(res['crops']) == 2
  for path in res['crops']:
    assert os.path.dirname(path) == os.path.splitext(out)[0] + '_crops' and path.endswith('_x4_bicubic.png')
    with Image.open(path) as im:
      panels = 2 + len(res['methods'])  # LR (nearest), each method, HR
      assert im.format == 'PNG' and im.width == panels * 96 + (panels - 1) * 4 and im.height == 96 + 14


def test_eval_scores_each_detail_and_a_baseline_bundle_in_one_run_and_draws_the_curve(
  hr_dir, bundle_dir, tmp_path
):
  """--detail 0,1 --baseline-bundle: one method per detail value, the other bundle at its default (1 here, the
  same bundle and seed, so the same scores as detail 1), and r_fidelity_detail.png beside r.json."""
  out = tmp_path / 'r.json'
  rc, stdout, err = cli(
    'eval', '--hr-dir', hr_dir, '--scale', '4', '--bundle', bundle_dir, '--methods', 'bicubic,zoom-enhance',
    '--detail', '0,1', '--baseline-bundle', bundle_dir, '--out', out, '--crops', '0', '--accelerator', 'cpu',
  )  # fmt: skip
  assert rc == 0, err[-10:]
  res = json.loads(out.read_text())
  baseline = f'zoom-enhance[{os.path.basename(bundle_dir)}]'
  assert list(res['methods']) == ['bicubic', 'zoom-enhance detail=0', 'zoom-enhance detail=1', baseline]
  m = res['methods']
  assert m['zoom-enhance detail=1']['psnr_y'] == m[baseline]['psnr_y']
  assert (
    m['zoom-enhance detail=0']['psnr_y'] != m['zoom-enhance detail=1']['psnr_y']
  )  # this bundle uses noise
  assert res['settings']['details'] == [0.0, 1.0] and res['settings']['bundle']['detail'] == 0.0
  assert res['settings']['baselines'][baseline]['default_detail'] == 1.0
  curve = tmp_path / 'r_fidelity_detail.png'
  with Image.open(curve) as im:
    assert im.format == 'PNG' and im.width > 400 and im.height > 300
    assert len(np.unique(np.asarray(im.convert('L')))) > 10  # drawn, not blank
  assert str(curve) in stdout


@pytest.mark.parametrize('degradation', ['realistic', 'second_order'])
def test_realistic_degradations_are_reproducible_and_per_photo(degradation):
  from skimage import data

  hr = data.chelsea()[:120, :160]
  seed = protocol.image_seed('chelsea.png')
  hr1, lr1 = protocol.make_pair(hr, 4, degradation, seed)
  hr2, lr2 = protocol.make_pair(hr.copy(), 4, degradation, protocol.image_seed('chelsea.png'))
  assert np.array_equal(lr1, lr2) and np.array_equal(hr1, hr2) and lr1.shape == (30, 40, 3)
  _, plain = protocol.make_pair(hr, 4)
  _, other = protocol.make_pair(hr, 4, degradation, protocol.image_seed('other.png'))
  assert np.abs(lr1.astype(int) - plain).mean() > 1 and not np.array_equal(lr1, other)


def test_eval_realistic_runs_and_records_its_settings(hr_dir, tmp_path):
  out = tmp_path / 'r.json'
  rc, _, err = cli(
    'eval',
    '--hr-dir',
    hr_dir,
    '--scale',
    '2.5',
    '--degradation',
    'realistic',
    '--methods',
    'bicubic,lanczos',
    '--out',
    out,
    '--crops',
    '0',
    '--max-images',
    '1',
  )
  assert rc == 0, err[-10:]
  res = json.loads(out.read_text())
  assert res['settings']['realistic']['jpeg_quality_min'] == protocol.REALISTIC.jpeg_quality_min
  assert list(res['per_image']) == ['astronaut.png'] and res['crops'] == []
  hr = np.asarray(Image.open(hr_dir / 'astronaut.png').convert('RGB'))
  hr, lr = protocol.make_pair(hr, 2.5, 'realistic', protocol.image_seed('astronaut.png'))
  sr = protocol.bicubic(lr, hr.shape[:2])
  assert res['per_image']['astronaut.png']['bicubic']['psnr_y'] == pytest.approx(metrics.psnr_y(sr, hr, 3))


def _photo_and_bicubic(rows, cols):
  """A real photo (cropped) and the bicubic enlargement of its x4 LR, as eval makes them."""
  from skimage import data

  hr, lr = protocol.make_pair(data.astronaut()[rows, cols], 4)
  return hr, protocol.bicubic(lr, hr.shape[:2])


def _lattice_pattern(shape, period: int, amplitude: float = 3.0) -> np.ndarray:
  """A pattern of `period` pixels, as a model painting on its patch grid: brighter rows and columns."""
  yy, xx = np.mgrid[: shape[0], : shape[1]]
  return amplitude * np.where((yy % period == 0) | (xx % period == 0), 1.0, -0.4)[..., None]


def _plus(img, added) -> np.ndarray:
  return np.clip(np.rint(img + added), 0, 255).astype(np.uint8)


@pytest.mark.parametrize('crop', [(slice(0, 96), slice(160, 256)), (slice(0, 192), slice(100, 356))])
def test_the_lattice_score_is_1_for_the_photo_large_for_a_4px_pattern_and_about_1_for_noise(crop):
  hr, bic = _photo_and_bicubic(*crop)
  assert metrics.lattice(hr, hr, bic) == pytest.approx(1.0, abs=1e-12)  # R = P
  assert metrics.lattice(_plus(hr, _lattice_pattern(hr.shape, 4)), hr, bic) > 10
  noise = np.random.default_rng(0).normal(0.0, 3.0, hr.shape)
  assert 0.6 < metrics.lattice(_plus(hr, noise), hr, bic) < 1.4
  assert metrics.lattice(bic, hr, bic) == 0.0  # bicubic itself adds nothing
  # The period is a parameter: a 3-pixel pattern lands on the 3-pixel grid, not on the 4-pixel one.
  three = _plus(hr, _lattice_pattern(hr.shape, 3))
  assert metrics.lattice(three, hr, bic, period=3) > 10 and metrics.lattice(three, hr, bic, period=4) < 2


def test_the_grid_share_does_not_depend_on_image_size():
  """The same content over 2 x 2 as many pixels (tiled) has the same grid share, so the same lattice score;
  and the share crops to a multiple of the period, so a ragged edge does not count."""
  hr, bic = _photo_and_bicubic(slice(0, 96), slice(160, 256))
  y = metrics.rgb_to_y(hr) - metrics.rgb_to_y(bic)
  pattern = y + _lattice_pattern(y.shape, 4)[..., 0]
  noise = np.random.default_rng(1).normal(size=y.shape)
  for x in (y, pattern, noise):
    assert metrics.grid_share(np.tile(x, (2, 2))) == pytest.approx(metrics.grid_share(x), rel=1e-9)
    assert metrics.grid_share(np.pad(x, ((0, 3), (0, 2)))) == metrics.grid_share(x)
  assert metrics.grid_share(noise) == pytest.approx(15 / (96 * 96 - 1), rel=0.5)  # white: 15 bins of 9215
  assert metrics.grid_share(np.full((8, 8), 7.0)) == 0.0


@pytest.fixture(scope='module')
def lr_dir(hr_dir, tmp_path_factory):
  """Real LR images of hr_dir's photos, made here (Pillow's bicubic, a quarter of each side), tagged _x4."""
  folder = tmp_path_factory.mktemp('lr')
  for name in ('astronaut', 'coffee'):
    with Image.open(hr_dir / f'{name}.png') as hr:
      hr.resize((hr.width // 4, hr.height // 4), Image.Resampling.BICUBIC).save(folder / f'{name}_x4.png')
  return folder


def test_eval_scores_real_pairs_and_a_folder_of_results(hr_dir, lr_dir, tmp_path):
  """--lr-dir: the given LR, the HR cropped to 4x its size; --results-dir: files scored as a method, untimed
  (here Lanczos's outputs, named with a tag, so their scores are Lanczos's)."""
  made = tmp_path / 'made'
  made.mkdir()
  for name in ('astronaut', 'coffee'):
    lr = np.asarray(Image.open(lr_dir / f'{name}_x4.png'))
    Image.fromarray(protocol.lanczos(lr, (lr.shape[0] * 4, lr.shape[1] * 4))).save(made / f'{name}_out.png')
  out = tmp_path / 'r.json'
  rc, stdout, err = cli(
    'eval', '--hr-dir', hr_dir, '--lr-dir', lr_dir, '--results-dir', made, '--results-name', 'mine',
    '--methods', 'bicubic,lanczos', '--shave', '0', '--out', out, '--crops', '1',
  )  # fmt: skip
  assert rc == 0, err[-10:]
  res = json.loads(out.read_text())
  s = res['settings']
  assert (s['degradation'], s['lr_dir'], s['shave']) == ('paired', str(lr_dir), 0)
  assert s['pairing']['lr_dir'] == str(lr_dir) and s['pairing']['hr_dir'] == str(hr_dir)
  assert s['results'] == {'mine': {'results_dir': str(made), 'files': 2}}
  assert list(res['methods']) == ['bicubic', 'lanczos', 'mine']
  coffee = res['per_image']['coffee.png']
  assert (coffee['hr_size'], coffee['lr_size']) == ([120, 96], [30, 24])  # 122x98 cropped to 4 x 30x24
  hr = np.asarray(Image.open(hr_dir / 'coffee.png').convert('RGB'))[:96, :120]
  lr = np.asarray(Image.open(lr_dir / 'coffee_x4.png'))
  assert coffee['bicubic']['psnr_y'] == pytest.approx(metrics.psnr_y(protocol.bicubic(lr, (96, 120)), hr, 0))
  for name, row in res['per_image'].items():
    mine, lanczos = row['mine'], row['lanczos']
    assert mine.pop('sec_per_mp') is mine.pop('cpu_sec_per_mp') is None and lanczos['sec_per_mp'] > 0
    assert mine == {k: lanczos[k] for k in mine}, name
  assert res['methods']['mine']['sec_per_mp'] is None and 'mine' in stdout and 'real LR/HR pairs' in stdout
  assert res['crops'][0].endswith('_x4_paired.png')


def _write(folder, name, img):
  folder.mkdir(exist_ok=True)
  Image.fromarray(np.asarray(img)).save(folder / name)


@pytest.mark.parametrize(
  'case, message',
  [
    ('missing LR', 'coffee.png: no image of the same name in --lr-dir'),
    ('LR without its photo', 'cat.png: no photo of the same name in --hr-dir'),
    ('LR of another scale', 'astronaut.png: the HR is 96x96, not x4 the LR 32x32 (128x128)'),
    (
      'result of another size',
      'astronaut_x1.png in --results-dir: 50x50, but the photo astronaut.png is 96x96',
    ),
    ('missing result', 'coffee.png: no image of the same name in --results-dir'),
  ],
)
def test_eval_refuses_pairs_that_do_not_match_in_one_line(case, message, hr_dir, lr_dir, tmp_path):
  lr, made = tmp_path / 'lr', tmp_path / 'made'
  for f in lr_dir.iterdir():
    _write(lr, f.name, Image.open(f))
  args = ['--lr-dir', lr]
  if case == 'missing LR':
    (lr / 'coffee_x4.png').unlink()
  elif case == 'LR without its photo':
    _write(lr, 'cat.png', np.zeros((8, 8, 3), np.uint8))
  elif case == 'LR of another scale':
    _write(lr, 'astronaut_x4.png', np.zeros((32, 32, 3), np.uint8))
  else:
    _write(
      made, 'astronaut_x1.png', np.zeros((50, 50, 3) if case.startswith('result') else (96, 96, 3), 'u1')
    )
    if case.startswith('result'):
      _write(made, 'coffee_x1.png', np.zeros((96, 120, 3), np.uint8))
    args += ['--results-dir', made]
  out = tmp_path / 'out' / 'r.json'
  rc, _, err = cli('eval', '--hr-dir', hr_dir, *args, '--methods', 'bicubic', '--out', out)
  assert rc == 1 and len(err) == 1 and message in err[0], err
  assert not out.exists()


def test_ncnn_blob_names_are_read_from_the_param_file(tmp_path):
  param = tmp_path / 'm.param'
  param.write_text(
    '7767517\n4 4\nInput in0 0 1 x\nSplit s 1 2 x a b\nConvolution c 1 1 a y 0=3\n'
    'BinaryOp add 2 1 y b out 0=0\n'
  )
  assert peers.blob_names(str(param)) == ('x', 'out')
  if HAVE_PEERS:
    for method in peers.MODELS:
      assert peers.blob_names(peers.model_files(method)[0]) == ('data', 'output')


def test_the_peers_are_labelled_for_what_they_are():
  """realesrgan-compact is the wheel's only compact x4 model, animevideov3, trained for anime video: kept as
  the speed peer (x4plus, for photos, is the quality peer), and labelled so in results.json and the table's
  notes."""
  from zoom_enhance.evaluation import bundle_eval

  assert set(peers.LABELS) == set(peers.MODELS) == set(bundle_eval.PEER_METHODS)
  assert peers.MODELS['realesrgan-compact'] == 'realesr-animevideov3-x4'
  assert peers.LABELS['realesrgan-compact'] == 'Real-ESRGAN compact (animevideov3, an anime-video model)'
  assert 'for photos' in peers.LABELS['realesrgan-x4plus']
  if HAVE_PEERS:
    method = bundle_eval._peer_method('realesrgan-compact', threads=1, scale=4.0)
    method.close()
    assert method.info['label'] == peers.LABELS['realesrgan-compact']


@needs_peers
def test_compact_real_esrgan_upscales_4x_sharper_than_bicubic():
  from skimage import data

  hr, lr = protocol.make_pair(data.astronaut()[0:96, 160:256], 4)
  net = peers.RealEsrgan('realesrgan-compact', threads=1)
  try:
    sr = net(lr, hr.shape[:2])
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    bicubic = protocol.bicubic(lr, hr.shape[:2])
    # Sharper: more gradient energy than bicubic, and closer to the photo perceptually.
    assert gradient_energy(sr) > 1.5 * gradient_energy(bicubic)
    scorer = metrics.Scorer()
    assert scorer(sr, hr, 4)['lpips'] < scorer(bicubic, hr, 4)['lpips']
    # Tiles with enough context (the model sees 18 LR pixels around) are seamless.
    tiled = peers.RealEsrgan('realesrgan-compact', threads=1, tile=10, pad=20)
    whole = peers.RealEsrgan('realesrgan-compact', threads=1, tile=100, pad=20)
    odd = lr[:23, :17]
    assert np.array_equal(tiled.upscale(odd), whole.upscale(odd)) and tiled.upscale(odd).shape == (92, 68, 3)
    # Other factors: the x4 result resized.
    assert net(lr, (50, 60)).shape == (50, 60, 3)
  finally:
    net.close()


def test_bench_reports_the_cpu_and_unavailable_accelerators(bundle_dir, tmp_path):
  out = tmp_path / 'bench.json'
  rc, stdout, err = cli(
    'bench', '--bundle', bundle_dir, '--input-mp', '0.01', '--quant', 'fp32', '--out', out
  )
  assert rc == 0, err[-10:]
  res = json.loads(out.read_text())
  w, h = runtime_bench.input_size(0.01)
  assert res['settings']['input']['size'] == [w, h] == [116, 87] and res['settings']['threads'] == 2
  rows = {(r['accelerator_asked'], r['scale']): r for r in res['rows']}
  assert set(rows) == {(a, s) for a in ('npu', 'gpu', 'cpu') for s in (2.0, 4.0)}
  for scale in (2.0, 4.0):
    cpu = rows['cpu', scale]
    assert cpu['available'] and cpu['accelerator'] == 'cpu' and cpu['sec_per_mp'] > 0
    assert cpu['output_size'] == [round(w * scale), round(h * scale)]
    assert cpu['peak_rss_mb'] >= cpu['rss_before_mb'] > 20
  for acc in ('npu', 'gpu'):
    for scale in (2.0, 4.0):
      r = rows[acc, scale]
      assert r['available'] == (r.get('accelerator') == acc) and (r['available'] or r['reason'])
  assert 'fp32' in stdout and 'x4' in stdout
  # Start-up to the first tile, from fresh `zoom-enhance enhance` processes (a figure, not a timed test).
  startup = res['startup']
  assert len(startup['runs']) == 3 and startup['seconds'] == float(np.median(startup['runs'])) > 0
  assert 'start-up to the first tile:' in stdout
  # The variant the runtime runs on this CPU, measured afresh among the bundle's candidates.
  keys = cpu_variant.candidates(bundle_lib.load_manifest(bundle_dir))
  choice = res['cpu_variant']
  assert choice['variant'] in keys and 'CPU variant the runtime runs here: ' + choice['variant'] in stdout
  if len(keys) > 1:
    assert choice['how'] == 'measured' and set(choice['tile_ms']) == set(keys)


@pytest.mark.parametrize(
  'args, message',
  [
    (('--hr-dir', '{tmp}/missing', '--scale', '4'), 'missing: no such folder of evaluation photos'),
    (('--hr-dir', '{tmp}/empty', '--scale', '4'), 'empty: no images to evaluate on'),
    (('--hr-dir', '{hr}', '--scale', '0'), '--scale 0: must be between 1 and 16'),
    (('--hr-dir', '{hr}', '--scale', 'four'), "--scale 'four': not a number"),
    (('--hr-dir', '{hr}', '--bundle', '{tmp}/nowhere'), 'nowhere: no such bundle directory'),
    (('--hr-dir', '{hr}', '--methods', 'bicubic,esrgan'), "--methods 'bicubic,esrgan': choose from"),
    (('--hr-dir', '{hr}', '--detail', '0,1.5'), '--detail 0,1.5: values must be in [0, 1]'),
    (('--hr-dir', '{hr}', '--detail', 'lots'), "--detail: 'lots': expected numbers separated by commas"),
    (('--hr-dir', '{hr}', '--lr-dir', '{hr}', '--degradation', 'realistic'), 'does not apply with --lr-dir'),
    (('--hr-dir', '{hr}', '--results-name', 'x'), '--results-name: names the results of --results-dir'),
    (('--hr-dir', '{hr}', '--results-dir', '{tmp}/bicubic'), "--results-name 'bicubic': taken by a method"),
    (('--hr-dir', '{hr}', '--methods', 'none'), '--methods none: nothing to score without --results-dir'),
    (('--hr-dir', '{hr}', '--shave', '-1'), '--shave -1: must be 0 or more'),
    (('--hr-dir', '{hr}', '--lattice-period', '1'), '--lattice-period 1: must be at least 2'),
  ],
)
def test_eval_bad_input_is_one_line_and_writes_nothing(args, message, hr_dir, tmp_path):
  (tmp_path / 'empty').mkdir()
  out = tmp_path / 'out' / 'results.json'
  args = [a.format(tmp=tmp_path, hr=hr_dir) for a in args]
  rc, _, err = cli('eval', *args, '--out', out)
  assert rc in (1, 2) and len(err) == 1, err
  assert err[0].startswith('zoom-enhance eval: error: ') and message in err[0], err
  assert not out.exists() and not (tmp_path / 'out' / 'results_crops').exists()


def test_without_a_bundle_eval_and_bench_ask_for_one(hr_dir, tmp_path, monkeypatch, capsys):
  """An install without the embedded bundle (a source tree that has not trained one yet)."""
  from zoom_enhance.runtime import pipeline

  monkeypatch.setattr(pipeline, 'DEFAULT_BUNDLE', str(tmp_path / 'no-default-bundle'))
  for command, args in (('eval', ('--hr-dir', hr_dir, '--out', tmp_path / 'r.json')), ('bench', ())):
    rc = cli_lib.main(['zoom-enhance', command, *map(str, args)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and 'pass --bundle DIR' in err[0], (command, err)
  assert not (tmp_path / 'r.json').exists()


def test_a_missing_peer_is_named_and_the_other_methods_go_on(hr_dir, tmp_path, monkeypatch):
  """With ncnn hidden from the import system, eval names the package to install and still scores."""
  from zoom_enhance.evaluation import bundle_eval

  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, 'find_spec', lambda n, *a: None if n == 'ncnn' else real(n, *a))
  res = bundle_eval.run_eval(
    str(hr_dir), str(tmp_path / 'r.json'), methods='bicubic,realesrgan-compact', max_images=1, num_crops=0
  )
  assert list(res['methods']) == ['bicubic']
  assert 'ncnn==' in res['skipped']['realesrgan-compact']
  assert "pip install 'zoom-enhance[peers]'" in res['skipped']['realesrgan-compact']


def test_bench_folder_times_both_commands_whole_and_writes_the_same_pixels(bundle_dir, tmp_path):
  from skimage import data

  folder = tmp_path / 'lr'
  folder.mkdir()
  cat = data.chelsea()
  Image.fromarray(cat[:30, :40]).save(folder / 'a.png')
  Image.fromarray(cat[50:77, 60:93]).save(folder / 'b.jpg', quality=95)
  out = tmp_path / 'folder.json'
  rc, stdout, err = cli(
    'bench', '--folder', folder, '--scales', '2', '--bundle', bundle_dir, '--out', out, '--rounds', '2'
  )
  assert rc == 0, err[-5:]
  res = json.loads(out.read_text())
  ours, theirs = res['rows']['zoom-enhance'], res['rows']['realesrgan-compact']
  # Both wrote one PNG per photo, of the same sizes: (80 x 60) + (66 x 54) pixels.
  assert ours['photos'] == theirs['photos'] == 2
  assert ours['output_pixels'] == theirs['output_pixels'] == 80 * 60 + 66 * 54
  for r in (ours, theirs):
    # Two rounds, alternating: the median of two is their mean.
    assert len(r['seconds_each_round']) == 2 and r['seconds'] == pytest.approx(
      sum(r['seconds_each_round']) / 2, abs=2e-3
    )
    assert r['seconds'] > 0 and r['sec_per_mp'] == pytest.approx(
      r['seconds'] / r['output_pixels'] * 1e6, rel=0.01
    )
  assert res['ratio'] == pytest.approx(ours['sec_per_mp'] / theirs['sec_per_mp'], rel=0.01)
  assert res['settings']['png_level'] == 1 and 'takes' in stdout and 'realesrgan-compact' in stdout
  assert res['peer']['label'] == peers.LABELS['realesrgan-compact'] and 'an anime-video model' in stdout
  rc, _, err = cli('bench', '--folder', tmp_path / 'nowhere')
  assert rc != 0 and len(err) == 1 and 'nowhere: no such folder' in err[0]


def test_bench_folder_times_size_classes_made_from_its_photos(bundle_dir, tmp_path):
  """--result-mp: each photo cropped (or enlarged, where smaller) to give results of each size, each class
  timed on its own, both sides writing those sizes."""
  from skimage import data

  folder = tmp_path / 'lr'
  folder.mkdir()
  cat = data.chelsea()  # 451 x 300
  Image.fromarray(cat).save(folder / 'cat.png')
  Image.fromarray(cat[:30, :40]).save(folder / 'small.png')
  out = tmp_path / 'classes.json'
  rc, stdout, err = cli(
    'bench', '--folder', folder, '--scales', '2', '--bundle', bundle_dir, '--out', out, '--rounds', '1',
    '--result-mp', '0.02,0.1',
  )  # fmt: skip
  assert rc == 0, err[-5:]
  res = json.loads(out.read_text())
  assert [c['result_mp'] for c in res['classes']] == [0.02, 0.1]
  for c in res['classes']:
    ours, theirs = c['rows']['zoom-enhance'], c['rows']['realesrgan-compact']
    assert ours['photos'] == theirs['photos'] == 2 and ours['output_pixels'] == theirs['output_pixels']
    # Each result is the class's size, to the rounding of its input's sides.
    assert ours['output_pixels'] / 2 == pytest.approx(c['result_mp'] * 1e6, rel=0.05)
    assert c['ratio'] == pytest.approx(ours['sec_per_mp'] / theirs['sec_per_mp'], rel=0.01)
    # The 40x30 photo is enlarged for both classes, the 451x300 one for neither.
    assert c['inputs_enlarged'] == 1
  total = sum(c['rows']['zoom-enhance']['output_pixels'] for c in res['classes'])
  assert res['rows']['zoom-enhance']['output_pixels'] == total
  assert 'results of 0.1 MP' in stdout
  rc, _, err = cli('bench', '--result-mp', '1')
  assert rc != 0 and len(err) == 1 and 'only with --folder' in err[0]
