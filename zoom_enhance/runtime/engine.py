"""LiteRT engines: one bundle model on one accelerator (NPU, then GPU, then CPU), and what actually ran.

`open_engine` walks the accelerator chain through LiteRT's CompiledModel API
(`ai_edge_litert.compiled_model`): each accelerator is asked for alone, never
OR-ed with the CPU, because LiteRT 2.3 accepts NPU|CPU on a machine without
an NPU, runs everything on the CPU and still calls the model "fully
accelerated". An accelerator counts as available only once a warm-up tile has
run on it. On the CPU with more than one thread the engine is instead that
many single-threaded classic interpreters, a tile each at once (backends.TilePool),
which also resize to any tile shape where export made the model resizable.
`--delegate PATH` goes through the classic interpreter's
`load_delegate` instead (GPU or Edge TPU delegate libraries), and counts the
graph partitions the delegate took.

A bundle may hold models compiled ahead of time for an NPU (`export --npu`
lists them under "npu_models", with the SoC they were compiled for). Those
are tried first on the NPU; the plain models serve the GPU and CPU, and the
NPU through a vendor compiler plugin when there is no compiled model.

What runs a model is in backends.py; whether the GPU can run here, in gpu_probe.py.
"""

import dataclasses
import logging
import os
import time

import numpy as np

from zoom_enhance import errors
from zoom_enhance.runtime import backends
from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import gpu_probe
from zoom_enhance.runtime import native_log

logger = logging.getLogger('zoom_enhance.runtime')

ACCELERATORS = ('auto', 'npu', 'gpu', 'cpu')
CHAIN = ('npu', 'gpu', 'cpu')

# Variants to use when none is asked for, best first, per accelerator: NPUs
# run integer models, mobile GPUs half floats. On the CPU the bundle's own
# choice (export --cpu-quant) goes first, and the runtime replaces this order
# with the variant measured fastest on the machine (cpu_variant.choose).
PREFERRED_QUANTS = {
  'npu': ('int8_full', 'int8', 'fp16', 'fp32'),
  'gpu': ('fp16', 'fp32', 'int8', 'int8_full'),
  'cpu': ('fp32', 'fp16', 'int8', 'int8_full'),
}


class AcceleratorError(errors.ZoomEnhanceError):
  """The accelerator or delegate asked for cannot run the model here."""


def _interpreter_module():
  """backends.interpreter_module; AcceleratorError where no LiteRT runtime is installed."""
  try:
    return backends.interpreter_module()
  except backends.NoRuntime as e:
    raise AcceleratorError(str(e)) from None


def _load(path: str, accelerator: str, threads: int):
  """backends.load; AcceleratorError where no LiteRT runtime is installed."""
  try:
    return backends.load(path, accelerator, threads)
  except backends.NoRuntime as e:
    raise AcceleratorError(str(e)) from None


@dataclasses.dataclass(kw_only=True)
class Engine:
  """A loaded model: run(lr_up, noise, scale, detail) -> output tile, and what runs it."""

  backend: backends.Backend | None  # None once closed
  accelerator: str  # 'npu', 'gpu', 'cpu' or 'delegate'
  runtime: str  # e.g. 'LiteRT CompiledModel, XNNPACK, 2 threads'
  variant: str  # the manifest's model key
  file: str
  tile: int
  fallbacks: list = dataclasses.field(default_factory=list)  # 'npu: reason' per accelerator passed over
  load_seconds: float = 0.0
  choice: str = ''  # how the CPU variant was chosen (cpu_variant.Choice.describe), '' where it was not
  # Takes tiles of any (h, w), multiples of the manifest's tile multiple: a model export made
  # resizable, on the classic interpreter (the CPU's tile pool; CompiledModel does not resize).
  resizable: bool = False

  @property
  def parallel(self) -> int:
    """Tiles that may run at once, from as many threads (tiling.enhance_tiled's `parallel`)."""
    return self.backend.parallel

  @property
  def executor(self):
    """The threads to run `parallel` tiles on, None where tiles run one after another."""
    return self.backend.executor

  def prepare(self, tile_hw):
    """Readies a resizable engine for tiles of (h, w) before they run on its threads."""
    if self.resizable:  # only ever a backends.TilePool (open_engine)
      self.backend.prepare((1, int(tile_hw[0]), int(tile_hw[1]), 3))

  def run(self, lr_up, noise, scale, detail=backends.FULL_DETAIL) -> np.ndarray:
    """One tile; `detail` (1,) reaches models that read it (unet.Variant.reads_detail), others ignore it.

    Thread-safe where `parallel` > 1.
    """
    return self.backend.run({'lr_up': lr_up, 'noise': noise, 'scale': scale, 'detail': detail})

  def close(self):
    if self.backend is not None:
      with native_log.capture():
        self.backend.close()
        self.backend = None

  def describe(self) -> str:
    text = f'{self.accelerator} ({self.runtime}), model {self.variant}'
    if self.fallbacks:
      text += '; passed over: ' + '; '.join(self.fallbacks)
    return text


def _all_models(manifest: bundle.Manifest) -> dict:
  """The bundle's models (bundle.ModelEntry) and those `export --npu` compiled ahead of time for an NPU
  (bundle.NpuModel), which take a plain model's name."""
  return {**manifest.models, **manifest.npu_models}


def _candidates(manifest: bundle.Manifest, accelerator: str, quant: str | None) -> list[str]:
  """Model keys to try on an accelerator, best first."""
  models = _all_models(manifest)
  plain = {k: v for k, v in models.items() if k not in manifest.npu_models}
  if quant is not None:
    order = [quant] if quant in plain else []
  else:
    preferred = PREFERRED_QUANTS[accelerator]
    # The bundle's own choice (export --cpu-quant) goes first.
    first = manifest.default_quant.get(accelerator)
    if first in plain:
      preferred = (first,) + tuple(q for q in preferred if q != first)
    order = [q for q in preferred if q in plain] + sorted(k for k in plain if k not in preferred)
  out = []
  if accelerator == 'npu':
    out += [
      k for k, v in models.items() if k in manifest.npu_models and quant in (None, k, v.source_quantization)
    ]
  # One plain model per accelerator: when the accelerator is missing every
  # model fails alike, and loading costs time.
  return out + order[:1]


def open_model(path: str, *, accelerator: str = 'cpu', threads: int | None = None) -> 'Engine':
  """One .tflite file on one accelerator, loaded and warmed up exactly as `open_engine` loads a bundle's.

  What export measures parity and latency with, so that the manifest's
  figures are those of the engine the runtime runs.
  """
  if accelerator not in CHAIN:
    raise AcceleratorError(f'accelerator {accelerator!r}: choose one of {", ".join(CHAIN)}')
  threads = threads or default_threads()
  t0 = time.perf_counter()
  try:
    backend, runtime = _load(path, accelerator, threads)
    tile = int(backend.input_shapes['lr_up'][1])
    backends.warm_up(backend, tile)
  except backends.Unavailable as e:
    raise AcceleratorError(f'{path}: cannot run on the {accelerator} ({e})') from None
  return Engine(
    backend=backend,
    accelerator=accelerator,
    runtime=runtime,
    variant=os.path.basename(path),
    file=path,
    tile=tile,
    load_seconds=time.perf_counter() - t0,
  )


def default_threads() -> int:
  """CPU threads for XNNPACK: the cores there are, at most 4 (more rarely helps a small model)."""
  return max(1, min(4, os.cpu_count() or 1))


def open_engine(
  manifest: bundle.Manifest,
  bundle_dir: str,
  *,
  accelerator: str = 'auto',
  quant: str | None = None,
  delegate: str | None = None,
  threads: int | None = None,
  choose_cpu=None,
) -> Engine:
  """Loads the bundle's model on the first accelerator of the chain that runs it.

  `accelerator` is 'auto' (NPU, then GPU, then CPU) or one of them, which is
  then an AcceleratorError if it cannot run here, never a silent fallback.
  `choose_cpu(threads)`, where given and no `quant` is, picks the CPU's
  variant (a cpu_variant.Choice, or None for the bundle's default); it is
  called only once the chain reaches the CPU.
  """
  if accelerator not in ACCELERATORS:
    raise AcceleratorError(f'--accelerator {accelerator}: choose one of {", ".join(ACCELERATORS)}')
  if quant is not None and quant not in manifest.models:
    raise AcceleratorError(
      f'{bundle_dir}: no {quant!r} model in this bundle (it has {", ".join(sorted(manifest.models))})'
    )
  threads = threads or default_threads()
  tile = manifest.tile.size
  if delegate:
    return _open_delegate(manifest, bundle_dir, accelerator, quant, delegate, threads, tile)
  chain = CHAIN if accelerator == 'auto' else (accelerator,)
  fallbacks = []
  for acc in chain:
    keys, choice = _candidates(manifest, acc, quant), None
    if acc == 'cpu' and quant is None and choose_cpu is not None:
      choice = choose_cpu(threads)
      keys = [choice.variant] if choice else keys
    for key in keys:
      entry = _all_models(manifest)[key]
      if acc == 'gpu' and entry.gpu_incompatible_ops:  # the GPU's candidates are plain models
        fallbacks.append(
          f'gpu: model {key} has ops the GPU delegate cannot run ({", ".join(entry.gpu_incompatible_ops)})'
        )
        continue
      path = os.path.join(bundle_dir, entry.file)
      t0 = time.perf_counter()
      try:
        if acc == 'gpu' and (reason := gpu_probe.check_gpu(auto=accelerator == 'auto')):
          raise backends.Unavailable(reason)
        backend, runtime = _load(path, acc, threads)
        backends.check_shapes(backend, tile, path)
        backends.warm_up(backend, tile)
      except backends.Unavailable as e:
        fallbacks.append(f'{acc}: {e}')
        continue
      if isinstance(entry, bundle.NpuModel):
        target = key if entry.soc is None else entry.soc  # the SoC, else the model's name
        runtime += f', compiled for {target}' if target else ''
      seconds = time.perf_counter() - t0
      engine = Engine(
        backend=backend,
        accelerator=acc,
        runtime=runtime,
        variant=key,
        file=path,
        tile=tile,
        fallbacks=fallbacks,
        load_seconds=seconds,
        choice=choice.describe() if choice else '',
        # A tile pool runs the CPU's candidates, plain models (bundle.ModelEntry).
        resizable=isinstance(backend, backends.TilePool) and entry.resizable,
      )
      logger.info('accelerator: %s', engine.describe())
      if choice:
        logger.info('cpu variant: %s', engine.choice)
      return engine
  if accelerator == 'auto':
    raise AcceleratorError('no accelerator could run the model: ' + '; '.join(fallbacks))
  reason = fallbacks[-1].split(': ', 1)[1] if fallbacks else 'no model for it in the bundle'
  raise AcceleratorError(
    f'--accelerator {accelerator}: not available here ({reason}); use --accelerator auto or cpu'
  )


def _open_delegate(manifest, bundle_dir, accelerator, quant, delegate, threads, tile) -> Engine:
  if accelerator not in ('auto', 'cpu'):
    raise AcceleratorError(f'--delegate and --accelerator {accelerator} both pick the hardware; give one')
  if not os.path.isfile(delegate):
    raise AcceleratorError(f'--delegate {delegate}: no such file')
  keys = _candidates(manifest, 'cpu', quant)
  if not keys:
    raise AcceleratorError(
      f'--delegate: model {quant} of {bundle_dir} is compiled for an NPU; pick another --quant'
    )
  key = keys[0]
  path = os.path.join(bundle_dir, manifest.models[key].file)
  t0 = time.perf_counter()
  interp_mod = _interpreter_module()
  with native_log.capture() as log:
    try:
      loaded = interp_mod.load_delegate(delegate)
      failure = None
    except (OSError, ValueError, AttributeError, RuntimeError) as e:
      # OSError: not a shared library; AttributeError: no tflite_plugin_create_delegate;
      # ValueError: the delegate refused to start (e.g. no device).
      loaded, failure = None, str(e) or type(e).__name__
  if failure is not None:
    reason = native_log.short_reason(failure, log.text)
    raise AcceleratorError(f'--delegate {delegate}: cannot load it as a TFLite delegate ({reason})')
  try:
    backend = backends.InterpreterBackend(interp_mod, path, threads, delegate=loaded)
    backends.check_shapes(backend, tile, path)
    backends.warm_up(backend, tile)
  except backends.Unavailable as e:
    raise AcceleratorError(f'--delegate {delegate}: cannot run model {key} ({e})') from None
  if backend.delegated == 0:
    raise AcceleratorError(
      f"--delegate {delegate}: the delegate took none of model {key}'s ops, "
      'so all of it would run on the CPU; try another --quant, or drop --delegate'
    )
  runtime = f'{os.path.basename(delegate)}, {backend.delegated} partition(s), the rest on the CPU'
  engine = Engine(
    backend=backend,
    accelerator='delegate',
    runtime=runtime,
    variant=key,
    file=path,
    tile=tile,
    load_seconds=time.perf_counter() - t0,
  )
  logger.info('accelerator: %s', engine.describe())
  return engine
