"""LiteRT engines: one bundle model on one accelerator (NPU, then GPU, then CPU), and what actually ran.

`open_engine` walks the accelerator chain through LiteRT's CompiledModel API
(`ai_edge_litert.compiled_model`): each accelerator is asked for alone, never
OR-ed with the CPU, because LiteRT 2.3 accepts NPU|CPU on a machine without
an NPU, runs everything on the CPU and still calls the model "fully
accelerated". An accelerator counts as available only once a warm-up tile has
run on it. On the CPU with more than one thread the engine is instead that
many single-threaded classic interpreters, a tile each at once (_TilePool),
which also resize to any tile shape where export made the model resizable.
`--delegate PATH` goes through the classic interpreter's
`load_delegate` instead (GPU or Edge TPU delegate libraries), and counts the
graph partitions the delegate took.

A bundle may hold models compiled ahead of time for an NPU (`export --npu`
lists them under "npu_models", with the SoC they were compiled for). Those
are tried first on the NPU; the plain models serve the GPU and CPU, and the
NPU through a vendor compiler plugin when there is no compiled model.
"""

import collections
import dataclasses
import logging
import os
import queue
import re
import sys
import time
from concurrent import futures

import numpy as np

from zoom_enhance import errors
from zoom_enhance.imaging import files
from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import machine_cache
from zoom_enhance.runtime import native_log

logger = logging.getLogger('zoom_enhance.runtime')

ACCELERATORS = ('auto', 'npu', 'gpu', 'cpu')
CHAIN = ('npu', 'gpu', 'cpu')
INPUT_NAMES = ('lr_up', 'noise', 'scale', 'detail')
TILE_POOL_ENV = 'ZOOM_ENHANCE_TILE_POOL'
_FULL_DETAIL = np.ones((1,), np.float32)

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


class _Unavailable(Exception):
  """One attempt failed; the message is a short reason for the report."""


def _input_slot(name: str) -> str:
  """Which of lr_up, noise, scale, detail a model input is (converters decorate the names)."""
  for n in INPUT_NAMES:
    if n in name:
      return n
  raise bundle.BundleError(f'model input {name!r} is none of {", ".join(INPUT_NAMES)}')


_SELECTED_ADAPTER = re.compile(r'Selected adapter: ([^\n]+)')


def gpu_adapter(native_log: str) -> str:
  """The adapter line of LiteRT's WebGPU log, e.g. 'llvmpipe (LLVM 15.0.6, 256 bits), arch=software,
  vendor=mesa, backend=Vulkan, adapterType=CPU / Software'; '' where it logged none."""
  found = _SELECTED_ADAPTER.findall(native_log)
  return found[-1].strip() if found else ''


def is_software_adapter(adapter: str) -> bool:
  """A GPU emulated on the CPU (Mesa's lavapipe/llvmpipe, SwiftShader): WebGPU's adapter type CPU."""
  return 'adapterType=CPU' in adapter or 'arch=software' in adapter


def _adapter_name(adapter: str) -> str:
  """'llvmpipe (LLVM 15.0.6, 256 bits)' of an adapter line, plus ', software' for a software one."""
  name = adapter.split(', arch=')[0].split(', vendor=')[0] or 'an unnamed adapter'
  return name + (', software' if is_software_adapter(adapter) else '')


# A 1-op model (export_tflite/gpu_check.make_probe_model) that compiles for the GPU in ~0.1 s.
GPU_PROBE = files.asset_path('gpu_probe.tflite')
_gpu_probed = None


def probe_gpu() -> tuple[str, str]:
  """(adapter, failure) of LiteRT's GPU accelerator on this machine, found once per process.

  Compiles GPU_PROBE for the GPU: `adapter` is the line WebGPU logs for the
  adapter it selected (gpu_adapter), `failure` one line on why none runs
  ('' when it compiled). No CompiledModel API: ('', the reason). In a
  process that has imported TensorFlow (export, tests) the GPU accelerator
  is not tried: compiling for it there crashes the process (SIGSEGV, LiteRT
  2.3 beside TF 2.21).
  """
  global _gpu_probed
  if 'tensorflow' in sys.modules:
    return '', 'not tried beside TensorFlow in one process (LiteRT crashes compiling for the GPU there)'
  if _gpu_probed is None:
    cm = _compiled_model_module()
    if cm is None:
      return '', "needs ai-edge-litert's CompiledModel API, which is not installed"
    key = _gpu_probe_key()
    entry = machine_cache.read(GPU_PROBE_CACHE)['entries'].get(key) if key else None
    if entry is not None:
      _gpu_probed = (str(entry.get('adapter', '')), str(entry.get('failure', '')))
      return _gpu_probed
    failure = ''
    with native_log.capture() as log:
      env = model = None
      try:
        env = cm.Environment.create()
        options = cm.Options(hardware_accelerators=cm.HardwareAccelerator.GPU)
        model = cm.CompiledModel.from_file(GPU_PROBE, environment=env, options=options)
      except (RuntimeError, ValueError) as e:
        failure = str(e) or type(e).__name__
      finally:
        for thing in (model, env):
          if thing is not None:
            thing.close()
    _gpu_probed = (
      gpu_adapter(log.text),
      native_log.short_reason(failure, log.text, 'gpu') if failure else '',
    )
    if key:
      machine_cache.put(GPU_PROBE_CACHE, key, {'adapter': _gpu_probed[0], 'failure': _gpu_probed[1]})
  return _gpu_probed


GPU_PROBE_CACHE = 'gpu_probe.json'
# Where the Vulkan loader finds its drivers (Linux), and the variables that override it.
_VULKAN_ICD_DIRS = ('/usr/share/vulkan/icd.d', '/usr/local/share/vulkan/icd.d', '/etc/vulkan/icd.d')
_VULKAN_ENV = ('VK_ICD_FILENAMES', 'VK_DRIVER_FILES', 'VK_ADD_DRIVER_FILES', 'XDG_DATA_DIRS')


def _gpu_probe_key() -> str:
  """The cache key of the GPU probe's answer on Linux: LiteRT's version, the Vulkan drivers installed
  (their manifests' paths, sizes and times), the variables that pick them, and the GPU device nodes;
  '' elsewhere (no cache: probed each run). Installing, removing or updating a driver, or a GPU
  appearing, probes again; the probe took 0.08 s of a 0.4 s start-up here."""
  if not sys.platform.startswith('linux'):
    return ''
  found = []
  for d in _VULKAN_ICD_DIRS + (os.path.expanduser('~/.local/share/vulkan/icd.d'),):
    try:
      names = sorted(os.listdir(d))
    except OSError:
      continue
    for n in names:
      try:
        st = os.stat(os.path.join(d, n))
      except OSError:
        continue
      found.append([os.path.join(d, n), st.st_size, st.st_mtime_ns])
  devices = []
  for d in ('/dev/dri', '/dev'):
    try:
      devices += sorted(
        n for n in os.listdir(d) if d == '/dev/dri' or n.startswith(('nvidia', 'kgsl', 'mali'))
      )
    except OSError:
      continue
  return machine_cache.key_of(
    {
      'litert': machine_cache.litert_version(),
      'icd': found,
      'env': {k: os.environ.get(k, '') for k in _VULKAN_ENV},
      'devices': devices,
    }
  )


def _check_gpu(auto: bool):
  """Raises _Unavailable before the bundle's model is compiled for the GPU: no adapter, or (with `auto`) a
  software one, which emulates the GPU on the CPU far slower than the CPU path runs the model."""
  adapter, failure = probe_gpu()
  if failure:
    raise _Unavailable(failure)
  if auto and is_software_adapter(adapter):
    raise _Unavailable(
      f'passed over the software adapter {_adapter_name(adapter)}: a GPU emulated on the CPU, slower '
      'than the CPU path (--accelerator gpu runs on it)'
    )


def _compiled_model_module():
  try:
    from ai_edge_litert import compiled_model
  except ImportError:
    return None
  return compiled_model


def _interpreter_module():
  """The classic interpreter: ai-edge-litert's, else tflite_runtime's."""
  try:
    from ai_edge_litert import interpreter
  except ImportError:
    try:
      from tflite_runtime import interpreter
    except ImportError:
      raise AcceleratorError('no LiteRT runtime installed: pip install ai-edge-litert') from None
  return interpreter


class _CompiledBackend:
  """A model compiled for one accelerator through LiteRT's CompiledModel API."""

  def __init__(self, cm, path: str, accelerator: str, threads: int):
    flag = {
      'npu': cm.HardwareAccelerator.NPU,
      'gpu': cm.HardwareAccelerator.GPU,
      'cpu': cm.HardwareAccelerator.CPU,
    }[accelerator]
    failure = None
    with native_log.capture() as log:
      env = None
      try:
        env = cm.Environment.create()
        options = cm.Options(hardware_accelerators=flag, cpu_options=cm.CpuOptions(num_threads=threads))
        model = cm.CompiledModel.from_file(path, environment=env, options=options)
      except (RuntimeError, ValueError) as e:
        # Kept as text: the traceback would keep the environment alive, and
        # its destructor logs to stderr whenever it finally runs.
        failure = str(e) or type(e).__name__
        env = None
    if failure is not None:
      raise _Unavailable(native_log.short_reason(failure, log.text, accelerator))
    self._env, self._model = env, model
    # The GPU adapter LiteRT's WebGPU accelerator chose, as it logs it ('' elsewhere).
    self.adapter = (gpu_adapter(log.text) or probe_gpu()[0]) if accelerator == 'gpu' else ''
    self.fully_accelerated = bool(model.is_fully_accelerated())
    signatures = model.get_signature_list()
    key = next(iter(signatures))
    self._names = [_input_slot(n) for n in signatures[key]['inputs']]
    details = model.get_output_tensor_details(key)
    self.output_shape = tuple(next(iter(details.values()))['shape'])
    self.input_shapes = {
      _input_slot(k): tuple(v['shape']) for k, v in model.get_input_tensor_details(key).items()
    }
    self._inputs = model.create_input_buffers(0)
    self._outputs = model.create_output_buffers(0)
    self._size = int(np.prod(self.output_shape))

  def close(self):
    """Frees buffers, model and environment now (inside _native_log: they log as they go)."""
    for buf in (self._inputs or []) + (self._outputs or []):
      # Buffers hold the environment on the C++ side until destroyed.
      buf.destroy()
    if self._model is not None:
      self._model.close()
    self._inputs = self._outputs = self._model = self._env = None

  def run(self, arrays: dict) -> np.ndarray:
    for buf, name in zip(self._inputs, self._names):
      buf.write(np.ascontiguousarray(arrays[name], np.float32))
    self._model.run_by_index(0, self._inputs, self._outputs)
    return self._outputs[0].read(self._size, np.float32).reshape(self.output_shape)


class _InterpreterBackend:
  """The classic interpreter: with an external delegate, or where CompiledModel is missing."""

  def __init__(self, interp_mod, path: str, threads: int, delegate=None, shape=None):
    """`shape` (1, h, w, 3): the image inputs' size from the start, for a resizable model (one
    allocation instead of the export tile's and then this one's)."""
    with native_log.capture() as log:
      failure = None
      try:
        self._it = interp_mod.Interpreter(
          model_path=path, num_threads=threads, experimental_delegates=[delegate] if delegate else None
        )
        # Counted before allocate_tensors, which adds the default XNNPACK
        # delegate's own partition (and only for a delegate: reading every op's
        # details took 20 ms a model).
        self.delegated = (
          sum(op['op_name'] == 'DELEGATE' for op in self._it._get_ops_details()) if delegate else 0
        )
        nodes = self._it._interpreter.NumNodes()
        if shape is not None:
          for d in self._it.get_input_details():
            if len(d['shape']) == 4:
              self._it.resize_tensor_input(d['index'], shape, strict=False)
        self._it.allocate_tensors()
        # Whether XNNPACK took the graph: its partition is a node of its own. Where it cannot
        # start (cpuinfo finds no CPU: an arm64 root without /proc and /sys), LiteRT quietly runs
        # its built-in kernels, which compute int8 differently, and the report says so.
        self.xnnpack = not delegate and self._it._interpreter.NumNodes() > nodes
      except (ValueError, RuntimeError) as e:
        failure = str(e) or type(e).__name__
        self._it = None
    if failure is not None:
      raise _Unavailable(native_log.short_reason(failure, log.text))
    self._slots = [(d['index'], _input_slot(d['name'])) for d in self._it.get_input_details()]
    self.input_shapes = {
      name: tuple(d['shape']) for d, (_, name) in zip(self._it.get_input_details(), self._slots)
    }
    out = self._it.get_output_details()[0]
    self._out_index, self.output_shape = out['index'], tuple(out['shape'])

  def close(self):
    self._it = None

  def resize(self, shape: tuple):
    """Takes image inputs of `shape` (1, h, w, 3) from now on: a model export made resizable."""
    for index, name in self._slots:
      if len(self.input_shapes[name]) == 4:
        self._it.resize_tensor_input(index, shape, strict=False)
    self._it.allocate_tensors()
    self.input_shapes = {
      name: tuple(d['shape']) for d, (_, name) in zip(self._it.get_input_details(), self._slots)
    }
    self.output_shape = tuple(self._it.get_output_details()[0]['shape'])

  def run(self, arrays: dict) -> np.ndarray:
    for index, name in self._slots:
      self._it.set_tensor(index, np.ascontiguousarray(arrays[name], np.float32))
    self._it.invoke()
    return self._it.get_tensor(self._out_index).copy()


class _TilePool:
  """Copies of one model on the CPU, one thread each, run from as many threads: that many tiles at once.

  The classic interpreter, whose invoke releases the GIL; CompiledModel's run
  (LiteRT 2.3) holds it, so two of them on two threads take turns. Each copy
  is a whole interpreter (its own arena); run() takes a free one. A model
  that resizes (export_tflite/resizable.py) keeps up to SHAPES_KEPT
  interpreters per copy, one per tile shape, so that photos of two
  orientations do not resize at every switch (here a resize took 7 ms, a
  new interpreter 13, a 320x256 tile 22).
  """

  SHAPES_KEPT = 2

  def __init__(self, make, count: int):
    self._make = make
    self._slots = []
    try:
      for _ in range(count):
        first = make()
        self._slots.append(collections.OrderedDict([(first.input_shapes['lr_up'], first)]))
    except _Unavailable:
      self.close()
      raise
    self.parallel = count
    # The threads tiles run on (tiling.enhance_tiled), kept for the engine's life: starting them
    # for each photo cost 2 ms a tile.
    self.executor = futures.ThreadPoolExecutor(count, thread_name_prefix='zoom-enhance-tile')
    self._free = queue.SimpleQueue()
    for slot in self._slots:
      self._free.put(slot)
    first = next(iter(self._slots[0].values()))
    self.input_shapes, self.output_shape = first.input_shapes, first.output_shape

  def close(self):
    if getattr(self, 'executor', None) is not None:
      self.executor.shutdown()
    for slot in self._slots:
      for b in slot.values():
        b.close()
      slot.clear()

  def _for_shape(self, slot, shape: tuple, make: bool):
    backend = slot.get(shape)
    if backend is None:
      if make and len(slot) < self.SHAPES_KEPT:
        backend = self._make(shape)
      else:
        backend = slot.popitem(last=False)[1]
        backend.resize(shape)
      slot[shape] = backend
    slot.move_to_end(shape)
    return backend

  def prepare(self, shape: tuple):
    """Readies every copy for image inputs of `shape` (1, h, w, 3), between photos (no tile running).

    Loading and resizing log through LiteRT's native code, which native_log.capture
    captures by redirecting the process's stdout and stderr: once, here, on
    the calling thread, around the copies loading side by side on the tile
    threads (a new shape's interpreter took 20 ms); never a redirection per
    tile thread, where two at once would lose the terminal.
    """
    shape = tuple(shape)
    missing = [slot for slot in self._slots if shape not in slot]
    for slot in self._slots:
      if shape in slot:
        slot.move_to_end(shape)
    if missing:
      with native_log.capture():
        list(self.executor.map(lambda slot: self._for_shape(slot, shape, make=True), missing))

  def run(self, arrays: dict) -> np.ndarray:
    slot = self._free.get()
    try:
      # A shape not prepared (export's checks) takes over the least recent interpreter.
      return self._for_shape(slot, tuple(np.shape(arrays['lr_up'])), make=False).run(arrays)
    finally:
      self._free.put(slot)


@dataclasses.dataclass
class Engine:
  """A loaded model: run(lr_up, noise, scale, detail) -> output tile, and what runs it."""

  backend: object
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
    return getattr(self.backend, 'parallel', 1)

  @property
  def executor(self):
    """The threads to run `parallel` tiles on, None where tiles run one after another."""
    return getattr(self.backend, 'executor', None)

  def prepare(self, tile_hw):
    """Readies a resizable engine for tiles of (h, w) before they run on its threads."""
    if self.resizable:  # only ever a _TilePool (open_engine)
      self.backend.prepare((1, int(tile_hw[0]), int(tile_hw[1]), 3))

  def run(self, lr_up, noise, scale, detail=_FULL_DETAIL) -> np.ndarray:
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


def _all_models(manifest: dict) -> dict:
  """The bundle's models, with those `export --npu` compiled ahead of time marked for the NPU."""
  npu = {
    k: dict(v, accelerator='npu', npu_target=v.get('soc', k), quantization=v.get('source_quantization'))
    for k, v in manifest.get('npu_models', {}).items()
  }
  return {**manifest['models'], **npu}


def _candidates(manifest: dict, accelerator: str, quant: str | None) -> list[str]:
  """Model keys to try on an accelerator, best first."""
  models = _all_models(manifest)
  plain = {k: v for k, v in models.items() if v.get('accelerator', 'any') != 'npu'}
  if quant is not None:
    order = [quant] if quant in plain else []
  else:
    preferred = PREFERRED_QUANTS[accelerator]
    # The bundle's own choice (export --cpu-quant) goes first.
    first = manifest.get('default_quant', {}).get(accelerator)
    if first in plain:
      preferred = (first,) + tuple(q for q in preferred if q != first)
    order = [q for q in preferred if q in plain] + sorted(k for k in plain if k not in preferred)
  out = []
  if accelerator == 'npu':
    out += [
      k
      for k, v in models.items()
      if v.get('accelerator') == 'npu' and quant in (None, k, v.get('quantization'))
    ]
  # One plain model per accelerator: when the accelerator is missing every
  # model fails alike, and loading costs time.
  return out + order[:1]


def _check_shapes(backend, manifest: dict, file: str):
  tile = manifest['tile']['size']
  want = {'lr_up': (1, tile, tile, 3), 'noise': (1, tile, tile, 3), 'scale': (1,)}
  if 'detail' in backend.input_shapes:  # models that read the detail (unet.Variant.reads_detail)
    want['detail'] = (1,)
  if backend.input_shapes != want or backend.output_shape != (1, tile, tile, 3):
    raise bundle.BundleError(
      f'{file}: model shapes {backend.input_shapes} -> {backend.output_shape} '
      f"do not match the manifest's {tile}x{tile} tile"
    )


def _warm_up(backend, tile: int):
  """One tile through the model: an accelerator that compiles but cannot run is found here."""
  z = np.zeros((1, tile, tile, 3), np.float32)
  with native_log.capture() as log:
    try:
      out = backend.run({'lr_up': z, 'noise': z, 'scale': np.ones((1,), np.float32), 'detail': _FULL_DETAIL})
      failure = None if np.all(np.isfinite(out)) else 'non-finite output on a blank tile'
    except (RuntimeError, ValueError) as e:
      failure = str(e) or type(e).__name__
  # WebGPU reports a pipeline it could not build only in its log, and the run "succeeds" with a wrong
  # output (the full-integer model on Mesa's lavapipe): that is a failure too.
  invalid = next((line.strip() for line in log.text.splitlines() if 'Validation error' in line), None)
  if failure is None and invalid is not None:
    detail = invalid.split('Validation error', 1)[1].strip(' :')
    failure = f"the GPU could not build the model's pipelines: {detail}"
  if failure is not None:
    backend.close()
    raise _Unavailable(native_log.short_reason(failure, log.text))


def _threads(n: int) -> str:
  return f'{n} thread' + ('s' if n != 1 else '')


def uses_tile_pool(threads: int) -> bool:
  """Whether the CPU runs `threads` single-threaded copies of the model (_TilePool) rather than one.

  Measured through the runtime on dev-val at x4 (2-core EPYC, 2 threads,
  dynamic-range int8, six alternating rounds): 0.320 s per output MP against
  0.351 for one CompiledModel on 2 threads, the same pixels; one model's two
  threads wait for each other at every op, and the tiles' own work (noise,
  blending) runs beside the other tile.
  """
  return threads > 1 and os.environ.get(TILE_POOL_ENV, '1') != '0'


def _load(path: str, accelerator: str, threads: int):
  """(backend, runtime description) of one model file on one accelerator.

  On the CPU with more than one thread: as many single-threaded copies of
  the model, one tile each at once (_TilePool; TILE_POOL_ENV=0 turns it
  off). Otherwise CompiledModel, else the classic interpreter; on the CPU
  also where CompiledModel is installed but cannot compile the model (as on
  some arm64 builds of LiteRT), and the description says so.
  """
  if accelerator == 'cpu' and uses_tile_pool(threads):
    try:
      interp_mod = _interpreter_module()
    except AcceleratorError:
      interp_mod = None
    if interp_mod is not None:
      warmed = []

      def make(shape=None):
        backend = _InterpreterBackend(interp_mod, path, 1, shape=shape)
        if not warmed:  # the first copy proves the model runs here; the others are the same
          _warm_up(backend, int(backend.input_shapes['lr_up'][1]))
          warmed.append(backend.xnnpack)
        return backend

      pool = _TilePool(make, threads)
      return pool, f'LiteRT interpreter, {_kernels(warmed[0])}, {threads} tiles at once, 1 thread each'
  cm = _compiled_model_module()
  why_not_compiled = ''
  if cm is not None:
    try:
      backend = _CompiledBackend(cm, path, accelerator, threads)
    except _Unavailable as e:
      if accelerator != 'cpu':
        raise
      why_not_compiled = f' (CompiledModel could not compile for the CPU: {e})'
    else:
      runtime = 'LiteRT CompiledModel'
      if accelerator == 'cpu':
        runtime += f', XNNPACK, {_threads(threads)}'
      if accelerator == 'gpu':
        runtime += f', WebGPU on {_adapter_name(backend.adapter)}'
        if not backend.fully_accelerated:
          runtime += ', some ops on the CPU'
      return backend, runtime
  if accelerator == 'cpu':
    backend = _InterpreterBackend(_interpreter_module(), path, threads)
    runtime = f'LiteRT interpreter, {_kernels(backend.xnnpack)}, {_threads(threads)}{why_not_compiled}'
    return backend, runtime
  raise _Unavailable("needs ai-edge-litert's CompiledModel API, which is not installed")


def _kernels(xnnpack: bool) -> str:
  """The CPU kernels an interpreter runs, as its report names them."""
  return 'XNNPACK' if xnnpack else 'built-in kernels (XNNPACK did not start)'


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
    _warm_up(backend, tile)
  except _Unavailable as e:
    raise AcceleratorError(f'{path}: cannot run on the {accelerator} ({e})') from None
  return Engine(
    backend, accelerator, runtime, os.path.basename(path), path, tile, [], time.perf_counter() - t0
  )


def default_threads() -> int:
  """CPU threads for XNNPACK: the cores there are, at most 4 (more rarely helps a small model)."""
  return max(1, min(4, os.cpu_count() or 1))


def open_engine(
  manifest: dict,
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
  if quant is not None and quant not in manifest['models']:
    raise AcceleratorError(
      f'{bundle_dir}: no {quant!r} model in this bundle (it has {", ".join(sorted(manifest["models"]))})'
    )
  threads = threads or default_threads()
  tile = int(manifest['tile']['size'])
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
      if acc == 'gpu' and entry.get('gpu_incompatible_ops'):
        fallbacks.append(
          f'gpu: model {key} has ops the GPU delegate cannot run ({", ".join(entry["gpu_incompatible_ops"])})'
        )
        continue
      path = os.path.join(bundle_dir, entry['file'])
      t0 = time.perf_counter()
      try:
        if acc == 'gpu':
          _check_gpu(auto=accelerator == 'auto')
        backend, runtime = _load(path, acc, threads)
        _check_shapes(backend, manifest, path)
        _warm_up(backend, tile)
      except _Unavailable as e:
        fallbacks.append(f'{acc}: {e}')
        continue
      if entry.get('npu_target'):
        runtime += f', compiled for {entry["npu_target"]}'
      seconds = time.perf_counter() - t0
      engine = Engine(
        backend,
        acc,
        runtime,
        key,
        path,
        tile,
        fallbacks,
        seconds,
        choice=choice.describe() if choice else '',
        resizable=bool(entry.get('resizable')) and isinstance(backend, _TilePool),
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
  path = os.path.join(bundle_dir, manifest['models'][key]['file'])
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
    backend = _InterpreterBackend(interp_mod, path, threads, delegate=loaded)
    _check_shapes(backend, manifest, path)
    _warm_up(backend, tile)
  except _Unavailable as e:
    raise AcceleratorError(f'--delegate {delegate}: cannot run model {key} ({e})') from None
  if backend.delegated == 0:
    raise AcceleratorError(
      f"--delegate {delegate}: the delegate took none of model {key}'s ops, "
      'so all of it would run on the CPU; try another --quant, or drop --delegate'
    )
  runtime = f'{os.path.basename(delegate)}, {backend.delegated} partition(s), the rest on the CPU'
  engine = Engine(backend, 'delegate', runtime, key, path, tile, [], time.perf_counter() - t0)
  logger.info('accelerator: %s', engine.describe())
  return engine
