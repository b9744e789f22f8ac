"""`zoom-enhance export`: checkpoint -> quantized TFLite models -> checked bundle.

For each requested quantization the unrolled sampler is converted, run
through the LiteRT interpreter on real photo tiles next to the JAX function,
and kept only if its PSNR against JAX clears convert.PARITY_DB. The bundle is
built in a temporary directory and renamed into place, so a failed export
never leaves a half-written bundle.
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
from zoom_enhance import bundle
from zoom_enhance import checkpoint
from zoom_enhance import errors
from zoom_enhance import images
from zoom_enhance import unet

ASSET_PHOTO = os.path.join(os.path.dirname(images.__file__), 'assets', 'chelsea.jpg')


class ExportError(errors.ZoomEnhanceError):
  """A variant failed conversion or parity."""


def _photos(spec: str, limit: int = 16) -> list[np.ndarray]:
  """Real photos for calibration and parity: a folder if given, else the packaged photo."""
  paths = []
  if spec:
    folder = spec[len('folder:'):] if spec.startswith('folder:') else spec
    if os.path.isdir(folder):
      paths = images.list_images(folder)[:limit]
  photos = []
  for path in paths or [ASSET_PHOTO]:
    try:
      photos.append(images.load_rgb(path))
    except images.ImageError as e:
      logging.warning('calibration: skipping %s', e)
  return photos or [images.load_rgb(ASSET_PHOTO)]


def default_steps(step: int, config) -> int:
  """The student's step count at checkpoint `step` of a distillation, else the config's."""
  if 'distill' in config:
    from zoom_enhance import distill
    plan = distill.round_plan(config.distill.start_steps, config.distill.end_steps)
    return plan[min((step - 1) // config.distill.steps_per_round, len(plan) - 1)]
  return int(config.diffusion.sample_steps)


# An output that moves less than this (a tenth of an 8-bit level in [-1, 1])
# between two noise draws ignores its noise: a 1-step sampler of a model with
# the gated input (unet.gate_noisy_input) starts where alpha_1 ~ 5e-5.
NOISE_UNUSED_BELOW = 0.2 / 255


def _noise_effect(jax_fn, checks, expected) -> float:
  """Largest |output(noise') - output(noise)| over the check tiles, for an independent noise'."""
  rng = np.random.default_rng(3)
  effect = 0.0
  for t, e in zip(checks, expected):
    other = rng.standard_normal(t['noise'].shape).astype(np.float32)
    effect = max(effect, float(np.abs(np.asarray(jax_fn(t['lr_up'], other, t['scale'])) - e).max()))
  return effect


def export(workdir: str, out: str, *, quants, tile: int, steps: int | None = None,
           overlap: int | None = None, photos: str = '', parity_tiles: int = 4,
           npu: bool = False, step: int | None = None, cpu_quant: str = 'fp32',
           noise_temperature: float = 1.0) -> dict:
  """Writes the bundle `out` for the checkpoint in `workdir`; returns its manifest.

  With `npu`, the bundle also gets NPU-compiled models (npu.py) for each
  vendor whose SDK is installed, and the reasons the others were skipped.
  """
  for q in quants:
    if q not in convert.QUANT_MODES:
      raise errors.ConfigError(f'--quant {q}: choose from {", ".join(convert.QUANT_MODES)}')
  if cpu_quant not in quants:
    raise errors.ConfigError(f'--cpu-quant {cpu_quant}: not among the exported variants '
                             f'({", ".join(quants)})')
  params, config, ckpt_step = checkpoint.restore_params(workdir, step)
  mult = unet.size_multiple(unet.get_variant(config.model.variant))
  if tile < mult or tile % mult:
    raise errors.ConfigError(f'--tile {tile} must be a positive multiple of {mult} for this model')
  steps = steps or default_steps(ckpt_step, config)
  overlap = tile // 8 if overlap is None else overlap
  if not 0.0 <= noise_temperature <= 1.0:
    raise errors.ConfigError(f'--noise-temperature {noise_temperature}: must be in [0, 1]')
  tile_fn = convert.make_tile_fn(params, config, steps, noise_temperature)
  jax_fn = jax.jit(tile_fn)
  real = _photos(photos or config.data.get('eval_source', '') or config.data.source)
  scales = [config.data.max_scale, 0.5 * (config.data.min_scale + config.data.max_scale)]
  calibration = convert.real_tiles(real, 32, tile, scales, seed=1)
  checks = convert.real_tiles(real, parity_tiles, tile, scales, seed=2)
  expected = [np.asarray(jax_fn(t['lr_up'], t['noise'], t['scale'])) for t in checks]
  noise_effect = _noise_effect(jax_fn, checks, expected)

  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.bundle-', dir=parent)
  os.chmod(staging, 0o755)  # mkdtemp makes it private; a bundle is meant to be shared
  models = {}
  try:
    for q in quants:
      t0 = time.perf_counter()
      model = convert.to_tflite(tile_fn, tile, q, calibration=calibration)
      seconds = time.perf_counter() - t0
      lite = convert.LiteModel(model, num_threads=2)
      parity = min(convert.psnr(lite(t), e) for t, e in zip(checks, expected))
      latency = lite.latency(checks[0])
      gpu_ops = convert.gpu_incompatible_ops(model)
      print(f'{q}: parity vs JAX {parity:.2f} dB (threshold {convert.PARITY_DB[q]:.0f} dB), '
            f'{len(model) / 1024:.0f} KB, {1000 * latency:.1f} ms per {tile}x{tile} tile '
            f'({steps} steps, 2 CPU threads), GPU fallback ops: {", ".join(gpu_ops) or "none"} '
            f'(converted in {seconds:.0f} s)', flush=True)
      if not parity >= convert.PARITY_DB[q]:
        raise ExportError(f'{q}: LiteRT output is {parity:.2f} dB from JAX, below the '
                          f'{convert.PARITY_DB[q]:.0f} dB threshold; not exported')
      file = f'zoom_enhance_{q}.tflite'
      with open(os.path.join(staging, file), 'wb') as f:
        f.write(model)
      models[q] = {'file': file, 'quantization': q, 'description': convert.QUANT_MODES[q],
                   'sha256': bundle.sha256(os.path.join(staging, file)), 'bytes': len(model),
                   'parity_psnr_db': round(parity, 3), 'parity_threshold_db': convert.PARITY_DB[q],
                   'gpu_incompatible_ops': gpu_ops,
                   'tile_latency_ms_export_cpu': round(1000 * latency, 2)}
    npu_models, npu_skipped = {}, {}
    if npu:
      src = npu_lib.source_quant(models)
      npu_models, npu_skipped = npu_lib.compile_for_npus(
          os.path.join(staging, models[src]['file']), staging, src)
    manifest = {
        'model': {'variant': config.model.variant, 'checkpoint_step': int(ckpt_step),
                  # As given: an absolute path would only name the exporting machine.
                  'workdir': os.path.normpath(workdir)},
        'scale_range': [float(config.data.min_scale), float(config.data.max_scale)],
        'tile': {'size': tile, 'overlap': overlap, 'multiple': mult},
        'steps': steps,
        'noise_temperature': noise_temperature,
        'inputs': {
            'lr_up': {'shape': [1, tile, tile, 3], 'dtype': 'float32', 'range': [-1.0, 1.0],
                      'layout': 'NHWC RGB', 'resampler': 'bicubic (Pillow), LR to output size'},
            'noise': {'shape': [1, tile, tile, 3], 'dtype': 'float32', 'distribution': 'N(0, 1)',
                      # Largest change of an output pixel (range [-1, 1]) between two
                      # noise draws, measured in JAX; below NOISE_UNUSED_BELOW the
                      # runtime feeds zeros instead of drawing noise.
                      'effect_max_abs': float(f'{noise_effect:.3g}'),
                      'used': bool(noise_effect >= NOISE_UNUSED_BELOW)},
            'scale': {'shape': [1], 'dtype': 'float32', 'meaning': 'output side / input side'}},
        'output': {'shape': [1, tile, tile, 3], 'dtype': 'float32', 'range': [-1.0, 1.0],
                   'layout': 'NHWC RGB'},
        'models': models,
        # What the runtime runs on the CPU when no --quant is asked for.
        'default_quant': {'cpu': cpu_quant},
        'npu_models': npu_models,
        'npu_skipped': npu_skipped,
        'parity': {'tiles': parity_tiles, 'source': 'real photo tiles, JAX vs LiteRT interpreter'},
        'training': {'data': config.data.source, 'prediction': config.diffusion.prediction,
                     'residual': bool(config.diffusion.residual),
                     'distilled': 'distill' in config},
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
  old = None
  if os.path.exists(out):
    if not os.path.isfile(os.path.join(out, bundle.MANIFEST)) and os.listdir(out):
      raise ExportError(f'{out}: exists and is not a bundle; choose another --out')
    old = f'{out}.old-{os.getpid()}'
    os.replace(out, old)
  os.replace(staging, out)
  if old:
    shutil.rmtree(old, ignore_errors=True)
