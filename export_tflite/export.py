"""`zoom-enhance export`: checkpoint -> quantized TFLite models -> checked bundle.

For each requested quantization the unrolled sampler is converted, loaded by
the runtime's own engine (runtime.engine.open_model: LiteRT's CompiledModel
on the CPU, as `zoom-enhance enhance` runs it), run on real photo tiles next
to the JAX function, and kept only if its PSNR against JAX clears
convert.PARITY_DB; the single-tile latency in the manifest is measured on the
same engine. The sampler's step count and whether it was distilled come from
the checkpoint. The bundle is built in a temporary directory and renamed into
place, so a failed export never leaves a half-written bundle.
"""

import logging
import os
import shutil
import tempfile
import time

import jax
import numpy as np

from export_tflite import convert
from export_tflite import npu as npu_lib
from export_tflite import resizable
from zoom_enhance import errors
from zoom_enhance.evaluation import metrics
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo
from zoom_enhance.model import unet
from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import engine as engine_lib
from zoom_enhance.training import checkpoint

ASSET_PHOTO = files.asset_path('chelsea.jpg')
# CPU threads of the parity and latency runs.
THREADS = 2


class ExportError(errors.ZoomEnhanceError):
  """A variant failed conversion or parity."""


def _photos(spec: str, limit: int = 16) -> list[np.ndarray]:
  """Real photos for calibration and parity: a folder if given, else the packaged photo."""
  paths = []
  if spec:
    folder = spec[len('folder:') :] if spec.startswith('folder:') else spec
    if os.path.isdir(folder):
      paths = files.list_images(folder)[:limit]
  photos = []
  for path in paths or [ASSET_PHOTO]:
    try:
      photos.append(photo.load_rgb(path))
    except photo.ImageError as e:
      logging.warning('calibration: skipping %s', e)
  return photos or [photo.load_rgb(ASSET_PHOTO)]


def sampler_of(position: dict, config) -> tuple[int, bool]:
  """(steps, distilled) of a checkpoint: a distillation's student steps at that step, else the config's."""
  if position['task'] == 'distill':
    return int(position['student_steps']), True
  return int(config.diffusion.sample_steps), False


def measure(path: str, checks, expected, repeats: int = 5) -> tuple[float, float, str]:
  """(parity dB, median seconds per tile, engine detail) of a model file on the runtime's CPU engine.

  Parity is the worst PSNR (peak-to-peak 2) over the check tiles against the
  JAX outputs `expected`. Seconds per tile are as the runtime spends them:
  where the engine runs several tiles at once (engine.Engine.parallel), that
  many run together and the time is shared among them.
  """
  from concurrent import futures

  engine = engine_lib.open_model(path, accelerator='cpu', threads=THREADS)
  try:
    run = lambda t: engine.run(t['lr_up'], t['noise'], t['scale'], t['detail'])  # noqa: E731
    parity = min(metrics.psnr(run(t), e, data_range=2.0) for t, e in zip(checks, expected))
    times, n = [], engine.parallel
    with futures.ThreadPoolExecutor(n) as pool:
      for _ in range(repeats):
        t0 = time.perf_counter()
        list(pool.map(run, [checks[0]] * n))
        times.append((time.perf_counter() - t0) / n)
    return parity, float(np.median(times)) if times else 0.0, engine.runtime
  finally:
    engine.close()


# An output that moves less than this (a tenth of an 8-bit level in [-1, 1])
# between two noise draws ignores its noise: a 1-step sampler of a model with
# the gated input (unet.gate_noisy_input) starts where alpha_1 ~ 5e-5.
NOISE_UNUSED_BELOW = 0.2 / 255
# Back-projection rounds the runtime runs at detail D < 1, weighted 1 - D
# (imaging.consistency), for a model whose noise is used and which trained on
# bicubic inputs at least part of the time. Measured on dev-val, x4, the
# fidelity end of the fine-tuned default teacher: 1 round +0.025 dB PSNR-Y
# and -0.005 LPIPS, 2 rounds +0.030 and -0.007, 5 no further.
BACK_PROJECTION_ITERATIONS = 2


def _noise_effect(tile_fn, jax_fn, checks, expected) -> float:
  """Largest |output(noise') - output(noise)| over the check tiles at detail 1, for an independent noise'."""
  rng = np.random.default_rng(3)
  effect = 0.0
  for t, e in zip(checks, expected):
    if t['detail'][0] != 1.0:
      continue
    other = dict(t, noise=rng.standard_normal(t['noise'].shape).astype(np.float32))
    effect = max(effect, float(np.abs(np.asarray(tile_fn.feed(other, jax_fn)) - e).max()))
  return effect


def export(
  workdir: str,
  out: str,
  *,
  quants,
  tile: int,
  steps: int | None = None,
  overlap: int | None = None,
  photos: str = '',
  parity_tiles: int = 4,
  npu: bool = False,
  step: int | None = None,
  cpu_quant: str = 'fp32',
  noise_temperature: float = 1.0,
  detail: float = 1.0,
) -> dict:
  """Writes the bundle `out` for the checkpoint in `workdir`; returns its manifest.

  With `npu`, the bundle also gets NPU-compiled models (npu.py) for each
  vendor whose SDK is installed, and the reasons the others were skipped.
  """
  if not quants:
    raise errors.ConfigError(f'--quant: give at least one of {", ".join(convert.QUANT_MODES)}')
  for q in quants:
    if q not in convert.QUANT_MODES:
      raise errors.ConfigError(f'--quant {q}: choose from {", ".join(convert.QUANT_MODES)}')
  if cpu_quant not in quants:
    raise errors.ConfigError(
      f'--cpu-quant {cpu_quant}: not among the exported variants ({", ".join(quants)})'
    )
  params, config, ckpt_step = checkpoint.restore_params(workdir, step)
  mult = unet.size_multiple(unet.get_variant(config.model.variant))
  if tile < mult or tile % mult:
    raise errors.ConfigError(f'--tile {tile} must be a positive multiple of {mult} for this model')
  own_steps, distilled = sampler_of(checkpoint.read_position(workdir, ckpt_step), config)
  steps = steps or own_steps
  overlap = tile // 8 if overlap is None else overlap
  if not 0.0 <= noise_temperature <= 1.0:
    raise errors.ConfigError(f'--noise-temperature {noise_temperature}: must be in [0, 1]')
  if not 0.0 <= detail <= 1.0:
    raise errors.ConfigError(f'--detail {detail}: must be in [0, 1]')
  tile_fn = convert.make_tile_fn(params, config, steps, noise_temperature)
  jax_fn = jax.jit(tile_fn)
  real = _photos(photos or config.data.eval_source or config.data.source)
  scales = [config.data.max_scale, 0.5 * (config.data.min_scale + config.data.max_scale)]
  calibration = convert.real_tiles(real, 32, tile, scales, seed=1)
  checks = convert.real_tiles(real, parity_tiles, tile, scales, seed=2)
  expected = [np.asarray(tile_fn.feed(t, jax_fn)) for t in checks]
  resized_hw = (tile + mult, 2 * tile - mult)  # another size, not square
  resized_checks = convert.real_tiles(real, 2, resized_hw, scales, seed=4)
  resized_expected = [np.asarray(tile_fn.feed(t, jax_fn)) for t in resized_checks]
  noise_effect = _noise_effect(tile_fn, jax_fn, checks, expected)

  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.bundle-', dir=parent)
  os.chmod(staging, 0o755)  # mkdtemp makes it private; a bundle is meant to be shared
  models = {}
  try:
    for q in quants:
      t0 = time.perf_counter()
      model = convert.to_tflite(tile_fn, tile, q, calibration=calibration)
      try:
        model, _ = resizable.make_resizable(model)
        not_resizable = ''
      except resizable.NotResizable as e:
        not_resizable = str(e)
      seconds = time.perf_counter() - t0
      file = f'zoom_enhance_{q}.tflite'
      path = os.path.join(staging, file)
      files.write_atomic(path, model)
      parity, latency, engine_detail = measure(path, checks, expected)
      resized = None
      if not not_resizable:
        # The same model at another, non-square tile size, through the same engine.
        resized, _, _ = measure(path, resized_checks, resized_expected, repeats=0)
        if not resized >= convert.PARITY_DB[q]:
          not_resizable = f'{resized:.2f} dB from JAX at {resized_hw[0]}x{resized_hw[1]}'
      gpu_ops = convert.gpu_incompatible_ops(model)
      size_note = (
        f'not resizable: {not_resizable}'
        if not_resizable
        else f'{resized:.2f} dB at {resized_hw[0]}x{resized_hw[1]}'
      )
      print(
        f'{q}: parity vs JAX {parity:.2f} dB (threshold {convert.PARITY_DB[q]:.0f} dB; {size_note}), '
        f'{len(model) / 1024:.0f} KB, {1000 * latency:.1f} ms per {tile}x{tile} tile '
        f'({steps} steps, {engine_detail}), GPU fallback ops: {", ".join(gpu_ops) or "none"} '
        f'(converted in {seconds:.0f} s)',
        flush=True,
      )
      if not parity >= convert.PARITY_DB[q]:
        raise ExportError(
          f'{q}: LiteRT output is {parity:.2f} dB from JAX, below the '
          f'{convert.PARITY_DB[q]:.0f} dB threshold; not exported'
        )
      models[q] = {
        'file': file,
        'quantization': q,
        'description': convert.QUANT_MODES[q],
        'sha256': files.sha256(path),
        'bytes': len(model),
        'parity_psnr_db': round(parity, 3),
        'parity_threshold_db': convert.PARITY_DB[q],
        'gpu_incompatible_ops': gpu_ops,
        'tile_latency_ms_export_cpu': round(1000 * latency, 2),
        # Takes any tile size (resizable.py), checked at tile.resized_check; the runtime's CPU
        # interpreters then run tiles of the photo's own proportions (tiling.plan_tile).
        'resizable': not not_resizable,
      }
      if not_resizable:
        models[q]['not_resizable'] = not_resizable
      else:
        models[q]['resized_parity_psnr_db'] = round(resized, 3)
    npu_models, npu_skipped = {}, {}
    if npu:
      src = npu_lib.source_quant(models)
      npu_models, npu_skipped = npu_lib.compile_for_npus(
        os.path.join(staging, models[src]['file']), staging, src
      )
    manifest = {
      'model': {
        'variant': config.model.variant,
        'checkpoint_step': int(ckpt_step),
        # As given: an absolute path would only name the exporting machine.
        'workdir': os.path.normpath(workdir),
      },
      'scale_range': [float(config.data.min_scale), float(config.data.max_scale)],
      'tile': {'size': tile, 'overlap': overlap, 'multiple': mult, 'resized_check': list(resized_hw)},
      'steps': steps,
      'noise_temperature': noise_temperature,
      # The runtime multiplies the noise it draws by the detail (enhance --detail): 0 feeds
      # zeros; a model with the `detail` input is also given the value.
      'detail': {
        'default': detail,
        'meaning': 'scale of the starting noise, and the model input "detail" where it has one: '
        '0 the fidelity output (the same for every seed), 1 all the detail the model draws',
        'input': 'detail' in tile_fn.inputs,
        'back_projection_iterations': (
          BACK_PROJECTION_ITERATIONS
          if noise_effect >= NOISE_UNUSED_BELOW and config.data.realistic_prob < 1
          else 0
        ),
      },
      'inputs': {
        'lr_up': {
          'shape': [1, tile, tile, 3],
          'dtype': 'float32',
          'range': [-1.0, 1.0],
          'layout': 'NHWC RGB',
          'resampler': 'bicubic (Pillow), LR to output size',
        },
        'noise': {
          'shape': [1, tile, tile, 3],
          'dtype': 'float32',
          'distribution': 'N(0, 1)',
          # Largest change of an output pixel (range [-1, 1]) between two
          # noise draws, measured in JAX; below NOISE_UNUSED_BELOW the
          # runtime feeds zeros instead of drawing noise.
          'effect_max_abs': float(f'{noise_effect:.3g}'),
          'used': bool(noise_effect >= NOISE_UNUSED_BELOW),
        },
        'scale': {'shape': [1], 'dtype': 'float32', 'meaning': 'output side / input side'},
        **(
          {'detail': {'shape': [1], 'dtype': 'float32', 'range': [0.0, 1.0], 'meaning': 'enhance --detail'}}
          if 'detail' in tile_fn.inputs
          else {}
        ),
      },
      'output': {'shape': [1, tile, tile, 3], 'dtype': 'float32', 'range': [-1.0, 1.0], 'layout': 'NHWC RGB'},
      'models': models,
      # What the runtime runs on the CPU when no --quant is asked for.
      'default_quant': {'cpu': cpu_quant},
      'npu_models': npu_models,
      'npu_skipped': npu_skipped,
      'parity': {
        'tiles': parity_tiles,
        'source': "real photo tiles, JAX vs the runtime's engine",
        'engine': f'{engine_detail} (runtime.engine.open_model)',
      },
      'training': {
        'data': config.data.source,
        'prediction': config.diffusion.prediction,
        'residual': bool(config.diffusion.residual),
        'distilled': distilled,
      },
    }
    bundle.write_manifest(staging, manifest)
    bundle.load_manifest(staging)  # what a runtime will check, checked before publishing
    _publish(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return manifest


def _publish(staging: str, out: str):
  """Renames the finished bundle into place, replacing an older one only once complete."""
  try:
    files.publish_dir(
      staging, out, is_ours=lambda d: os.path.isfile(os.path.join(d, bundle.MANIFEST)), what='bundle'
    )
  except FileExistsError as e:
    raise ExportError(str(e)) from None
