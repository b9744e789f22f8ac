"""`zoom-enhance export`: checkpoint -> quantized TFLite models -> checked bundle.

For each requested quantization the unrolled sampler is converted, loaded by
the runtime's own engine (runtime.engine.open_model on THREADS CPU threads,
as `zoom-enhance enhance` runs it there: that many single-threaded classic
interpreters side by side, backends.TilePool), run on real photo tiles next
to the JAX function, and kept only if its PSNR against JAX clears
convert.PARITY_DB; the single-tile latency in the manifest is measured on the
same engine (the manifest's parity.engine names it). The sampler's step
count and whether it was distilled come from the checkpoint. The manifest is
a runtime.bundle.Manifest, written as JSON. The bundle is built in a
temporary directory and renamed into place, so a failed export never leaves
a half-written bundle.
"""

import dataclasses
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
  """Writes the bundle `out` for the checkpoint in `workdir`; returns its manifest, as manifest.json holds it
  (less the format fields).

  With `npu`, the bundle also gets NPU-compiled models (npu.py) for each
  vendor whose SDK is installed, and the reasons the others were skipped.
  """
  _check_quants(quants, cpu_quant)
  source = _restore(workdir, step, tile, steps)
  overlap = tile // 8 if overlap is None else overlap
  if not 0.0 <= noise_temperature <= 1.0:
    raise errors.ConfigError(f'--noise-temperature {noise_temperature}: must be in [0, 1]')
  if not 0.0 <= detail <= 1.0:
    raise errors.ConfigError(f'--detail {detail}: must be in [0, 1]')
  tile_fn = convert.make_tile_fn(source.params, source.config, source.steps, noise_temperature)
  tiles = _reference_tiles(tile_fn, source, photos, tile, parity_tiles)

  parent = os.path.dirname(os.path.abspath(out))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix='.bundle-', dir=parent)
  os.chmod(staging, 0o755)  # mkdtemp makes it private; a bundle is meant to be shared
  try:
    models = {}
    for q in quants:
      models[q], engine_detail = _export_variant(q, tile_fn, tile, source.steps, tiles, staging)
    npu_models, npu_skipped = _compile_for_npus(models, staging) if npu else ({}, {})
    manifest = bundle.Manifest(
      model=bundle.Source(
        variant=source.config.model.variant,
        checkpoint_step=int(source.step),
        # As given: an absolute path would only name the exporting machine.
        workdir=os.path.normpath(workdir),
      ),
      scale_range=(float(source.config.data.min_scale), float(source.config.data.max_scale)),
      tile=bundle.Tile(size=tile, overlap=overlap, multiple=source.multiple, resized_check=tiles.resized_hw),
      steps=source.steps,
      noise_temperature=noise_temperature,
      detail=_detail(detail, tile_fn, tiles.noise_effect, source.config),
      inputs=_inputs(tile, tile_fn, tiles.noise_effect),
      output=bundle.Tensor(shape=(1, tile, tile, 3), dtype='float32', range=(-1.0, 1.0), layout='NHWC RGB'),
      models=models,
      # What the runtime runs on the CPU when no --quant is asked for.
      default_quant={'cpu': cpu_quant},
      npu_models=npu_models,
      npu_skipped=npu_skipped,
      parity=bundle.Parity(
        tiles=parity_tiles,
        source="real photo tiles, JAX vs the runtime's engine",
        engine=f'{engine_detail} (runtime.engine.open_model)',
      ),
      training=bundle.Training(
        data=source.config.data.source,
        prediction=source.config.diffusion.prediction,
        residual=bool(source.config.diffusion.residual),
        distilled=source.distilled,
      ),
    )
    bundle.write_manifest(staging, manifest)
    bundle.load_manifest(staging)  # what a runtime will check, checked before publishing
    _publish(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return manifest.to_json()


def _check_quants(quants, cpu_quant: str):
  if not quants:
    raise errors.ConfigError(f'--quant: give at least one of {", ".join(convert.QUANT_MODES)}')
  for q in quants:
    if q not in convert.QUANT_MODES:
      raise errors.ConfigError(f'--quant {q}: choose from {", ".join(convert.QUANT_MODES)}')
  if cpu_quant not in quants:
    raise errors.ConfigError(
      f'--cpu-quant {cpu_quant}: not among the exported variants ({", ".join(quants)})'
    )


@dataclasses.dataclass(frozen=True)
class _Source:
  """The checkpoint exported, and the sampler its models unroll."""

  params: object
  config: object
  step: int
  multiple: int  # the model's tile sides are multiples of this (unet.size_multiple)
  steps: int
  distilled: bool


def _restore(workdir: str, step: int | None, tile: int, steps: int | None) -> _Source:
  """The checkpoint at `step` (the latest: None), checked against `tile`; `steps` or the checkpoint's own."""
  params, config, ckpt_step = checkpoint.restore_params(workdir, step)
  mult = unet.size_multiple(unet.get_variant(config.model.variant))
  if tile < mult or tile % mult:
    raise errors.ConfigError(f'--tile {tile} must be a positive multiple of {mult} for this model')
  own_steps, distilled = sampler_of(checkpoint.read_position(workdir, ckpt_step), config)
  return _Source(params, config, ckpt_step, mult, steps or own_steps, distilled)


@dataclasses.dataclass(frozen=True)
class _Tiles:
  """Real photo tiles, and the JAX outputs the converted models are checked against."""

  calibration: list  # full-integer quantization's
  checks: list  # parity's, at the export tile
  expected: list
  resized_hw: tuple  # another, non-square tile size a resizable model is checked at
  resized_checks: list
  resized_expected: list
  noise_effect: float  # _noise_effect


def _reference_tiles(tile_fn, source: _Source, photos: str, tile: int, parity_tiles: int) -> _Tiles:
  config = source.config
  jax_fn = jax.jit(tile_fn)
  real = _photos(photos or config.data.eval_source or config.data.source)
  scales = [config.data.max_scale, 0.5 * (config.data.min_scale + config.data.max_scale)]
  calibration = convert.real_tiles(real, 32, tile, scales, seed=1)
  checks = convert.real_tiles(real, parity_tiles, tile, scales, seed=2)
  expected = [np.asarray(tile_fn.feed(t, jax_fn)) for t in checks]
  resized_hw = (tile + source.multiple, 2 * tile - source.multiple)
  resized_checks = convert.real_tiles(real, 2, resized_hw, scales, seed=4)
  resized_expected = [np.asarray(tile_fn.feed(t, jax_fn)) for t in resized_checks]
  noise_effect = _noise_effect(tile_fn, jax_fn, checks, expected)
  return _Tiles(calibration, checks, expected, resized_hw, resized_checks, resized_expected, noise_effect)


def _export_variant(q: str, tile_fn, tile: int, steps: int, tiles: _Tiles, staging: str):
  """(manifest entry, engine description) of quantization `q`: converted, made resizable where it can be,
  written to `staging` and measured on the runtime's engine; ExportError below the parity threshold."""
  t0 = time.perf_counter()
  model = convert.to_tflite(tile_fn, tile, q, calibration=tiles.calibration)
  try:
    model, _ = resizable.make_resizable(model)
    not_resizable = ''
  except resizable.NotResizable as e:
    not_resizable = str(e)
  seconds = time.perf_counter() - t0
  file = f'zoom_enhance_{q}.tflite'
  path = os.path.join(staging, file)
  files.write_atomic(path, model)
  parity, latency, engine_detail = measure(path, tiles.checks, tiles.expected)
  resized = None
  hw = tiles.resized_hw
  if not not_resizable:
    # The same model at another, non-square tile size, through the same engine.
    resized, _, _ = measure(path, tiles.resized_checks, tiles.resized_expected, repeats=0)
    if not resized >= convert.PARITY_DB[q]:
      not_resizable = f'{resized:.2f} dB from JAX at {hw[0]}x{hw[1]}'
  gpu_ops = convert.gpu_incompatible_ops(model)
  size_note = f'not resizable: {not_resizable}' if not_resizable else f'{resized:.2f} dB at {hw[0]}x{hw[1]}'
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
  entry = bundle.ModelEntry(
    file=file,
    quantization=q,
    description=convert.QUANT_MODES[q],
    sha256=files.sha256(path),
    bytes=len(model),
    parity_psnr_db=round(parity, 3),
    parity_threshold_db=convert.PARITY_DB[q],
    gpu_incompatible_ops=tuple(gpu_ops),
    tile_latency_ms_export_cpu=round(1000 * latency, 2),
    # Takes any tile size (resizable.py), checked at tile.resized_check.
    resizable=not not_resizable,
    not_resizable=not_resizable or None,
    resized_parity_psnr_db=None if not_resizable else round(resized, 3),
  )
  return entry, engine_detail


def _compile_for_npus(models: dict, staging: str) -> tuple[dict, dict]:
  """(npu_models, npu_skipped) of the manifest: npu.compile_for_npus on the variant NPUs run best."""
  src = npu_lib.source_quant(models)
  compiled, skipped = npu_lib.compile_for_npus(os.path.join(staging, models[src].file), staging, src)
  return {k: bundle.NpuModel(**v) for k, v in compiled.items()}, skipped


def _detail(default: float, tile_fn, noise_effect: float, config) -> bundle.Detail:
  """The manifest's detail control. The runtime multiplies the noise it draws by the detail (enhance
  --detail): 0 feeds zeros; a model with the `detail` input is also given the value."""
  return bundle.Detail(
    default=default,
    meaning='scale of the starting noise, and the model input "detail" where it has one: '
    '0 the fidelity output (the same for every seed), 1 all the detail the model draws',
    input='detail' in tile_fn.inputs,
    back_projection_iterations=(
      BACK_PROJECTION_ITERATIONS
      if noise_effect >= NOISE_UNUSED_BELOW and config.data.realistic_prob < 1
      else 0
    ),
  )


def _inputs(tile: int, tile_fn, noise_effect: float) -> bundle.Inputs:
  """The manifest's description of the models' inputs."""
  image = dict(shape=(1, tile, tile, 3), dtype='float32')
  return bundle.Inputs(
    lr_up=bundle.Tensor(
      **image, range=(-1.0, 1.0), layout='NHWC RGB', resampler='bicubic (Pillow), LR to output size'
    ),
    noise=bundle.Noise(
      **image,
      distribution='N(0, 1)',
      # Largest change of an output pixel (range [-1, 1]) between two noise draws, measured in JAX; below
      # NOISE_UNUSED_BELOW the runtime feeds zeros instead of drawing noise.
      effect_max_abs=float(f'{noise_effect:.3g}'),
      used=bool(noise_effect >= NOISE_UNUSED_BELOW),
    ),
    scale=bundle.Tensor(shape=(1,), dtype='float32', meaning='output side / input side'),
    detail=(
      bundle.Tensor(shape=(1,), dtype='float32', range=(0.0, 1.0), meaning='enhance --detail')
      if 'detail' in tile_fn.inputs
      else None
    ),
  )


def _publish(staging: str, out: str):
  """Renames the finished bundle into place, replacing an older one only once complete."""
  try:
    files.publish_dir(
      staging, out, is_ours=lambda d: os.path.isfile(os.path.join(d, bundle.MANIFEST)), what='bundle'
    )
  except FileExistsError as e:
    raise ExportError(str(e)) from None
