"""What runs a bundle's model: LiteRT's CompiledModel, the classic interpreter, or copies of it side by side.

Each backend takes a tile's inputs by name (bundle.INPUT_NAMES) and returns
the output tile; the engine (engine.py) picks one per accelerator, checks its
shapes against the manifest and warms it up. A backend that cannot load or
run raises Unavailable with a short reason for the engine's report.
"""

import collections
import os
import queue
from concurrent import futures
from typing import Protocol

import numpy as np

from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import gpu_probe
from zoom_enhance.runtime import native_log

TILE_POOL_ENV = 'ZOOM_ENHANCE_TILE_POOL'
FULL_DETAIL = np.ones((1,), np.float32)


class Unavailable(Exception):
  """One attempt failed; the message is a short reason for the report."""


class NoRuntime(Exception):
  """No LiteRT runtime is installed (engine.AcceleratorError says so)."""


class Backend(Protocol):
  """A loaded model, as the engine runs it."""

  input_shapes: dict  # input name (bundle.INPUT_NAMES) -> shape
  output_shape: tuple
  parallel: int  # tiles that may run at once, from as many threads
  executor: futures.Executor | None  # the threads to run them on, None where tiles run one after another

  def run(self, arrays: dict) -> np.ndarray:
    """One tile: inputs by name -> output. Thread-safe where `parallel` > 1."""

  def prepare(self, shape: tuple) -> None:
    """Readies the backend for image inputs of `shape` (1, h, w, 3); a no-op where it takes one shape."""

  def close(self) -> None:
    """Frees the model now (inside native_log.capture: LiteRT logs as it goes)."""


def input_slot(name: str) -> str:
  """Which of lr_up, noise, scale, detail a model input is (converters decorate the names)."""
  for n in bundle.INPUT_NAMES:
    if n in name:
      return n
  raise bundle.BundleError(f'model input {name!r} is none of {", ".join(bundle.INPUT_NAMES)}')


class CompiledBackend:
  """A model compiled for one accelerator through LiteRT's CompiledModel API."""

  parallel = 1
  executor = None

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
      raise Unavailable(native_log.short_reason(failure, log.text, accelerator))
    self._env, self._model = env, model
    # The GPU adapter LiteRT's WebGPU accelerator chose, as it logs it ('' elsewhere).
    self.adapter = (
      (gpu_probe.gpu_adapter(log.text) or gpu_probe.probe_gpu()[0]) if accelerator == 'gpu' else ''
    )
    self.fully_accelerated = bool(model.is_fully_accelerated())
    signatures = model.get_signature_list()
    key = next(iter(signatures))
    self._names = [input_slot(n) for n in signatures[key]['inputs']]
    details = model.get_output_tensor_details(key)
    self.output_shape = tuple(next(iter(details.values()))['shape'])
    self.input_shapes = {
      input_slot(k): tuple(v['shape']) for k, v in model.get_input_tensor_details(key).items()
    }
    self._inputs = model.create_input_buffers(0)
    self._outputs = model.create_output_buffers(0)
    self._size = int(np.prod(self.output_shape))

  def close(self):
    """Frees buffers, model and environment now (inside native_log.capture: they log as they go)."""
    for buf in (self._inputs or []) + (self._outputs or []):
      # Buffers hold the environment on the C++ side until destroyed.
      buf.destroy()
    if self._model is not None:
      self._model.close()
    self._inputs = self._outputs = self._model = self._env = None

  def prepare(self, shape: tuple):
    """CompiledModel takes the shape it was compiled for only."""

  def run(self, arrays: dict) -> np.ndarray:
    for buf, name in zip(self._inputs, self._names):
      buf.write(np.ascontiguousarray(arrays[name], np.float32))
    self._model.run_by_index(0, self._inputs, self._outputs)
    return self._outputs[0].read(self._size, np.float32).reshape(self.output_shape)


class InterpreterBackend:
  """The classic interpreter: with an external delegate, or where CompiledModel is missing."""

  parallel = 1
  executor = None

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
      raise Unavailable(native_log.short_reason(failure, log.text))
    self._slots = [(d['index'], input_slot(d['name'])) for d in self._it.get_input_details()]
    self.input_shapes = {
      name: tuple(d['shape']) for d, (_, name) in zip(self._it.get_input_details(), self._slots)
    }
    out = self._it.get_output_details()[0]
    self._out_index, self.output_shape = out['index'], tuple(out['shape'])

  def close(self):
    self._it = None

  def prepare(self, shape: tuple):
    """One interpreter keeps its shape for the engine; TilePool resizes its copies (resize)."""

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


class TilePool:
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
    """`make(shape=None)`: a new InterpreterBackend (for image inputs of `shape` where given)."""
    self._make = make
    self._slots = []
    self.executor = None
    try:
      for _ in range(count):
        first = make()
        self._slots.append(collections.OrderedDict([(first.input_shapes['lr_up'], first)]))
    except Unavailable:
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
    # Whether XNNPACK took the graph (InterpreterBackend.xnnpack): the copies are the same.
    self.xnnpack = first.xnnpack

  def close(self):
    if self.executor is not None:
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


def uses_tile_pool(threads: int) -> bool:
  """Whether the CPU runs `threads` single-threaded copies of the model (TilePool) rather than one.

  Measured through the runtime on dev-val at x4 (2-core EPYC, 2 threads,
  dynamic-range int8, six alternating rounds): 0.320 s per output MP against
  0.351 for one CompiledModel on 2 threads, the same pixels; one model's two
  threads wait for each other at every op, and the tiles' own work (noise,
  blending) runs beside the other tile.
  """
  return threads > 1 and os.environ.get(TILE_POOL_ENV, '1') != '0'


def compiled_model_module():
  """LiteRT's CompiledModel API, None where it is not installed."""
  try:
    from ai_edge_litert import compiled_model
  except ImportError:
    return None
  return compiled_model


def interpreter_module():
  """The classic interpreter: ai-edge-litert's, else tflite_runtime's; NoRuntime where there is none."""
  try:
    from ai_edge_litert import interpreter
  except ImportError:
    try:
      from tflite_runtime import interpreter
    except ImportError:
      raise NoRuntime('no LiteRT runtime installed: pip install ai-edge-litert') from None
  return interpreter


def _threads(n: int) -> str:
  return f'{n} thread' + ('s' if n != 1 else '')


def load(path: str, accelerator: str, threads: int) -> tuple[Backend, str]:
  """(backend, runtime description) of one model file on one accelerator.

  On the CPU with more than one thread: as many single-threaded copies of
  the model, one tile each at once (TilePool; TILE_POOL_ENV=0 turns it
  off). Otherwise CompiledModel, else the classic interpreter; on the CPU
  also where CompiledModel is installed but cannot compile the model (as on
  some arm64 builds of LiteRT), and the description says so.
  """
  if accelerator == 'cpu' and uses_tile_pool(threads):
    try:
      interp_mod = interpreter_module()
    except NoRuntime:
      interp_mod = None
    if interp_mod is not None:
      # Warmed up by the caller, as every backend is: one tile, on the pool's first copy.
      pool = TilePool(lambda shape=None: InterpreterBackend(interp_mod, path, 1, shape=shape), threads)
      return pool, f'LiteRT interpreter, {_kernels(pool.xnnpack)}, {threads} tiles at once, 1 thread each'
  cm = compiled_model_module()
  why_not_compiled = ''
  if cm is not None:
    try:
      backend = CompiledBackend(cm, path, accelerator, threads)
    except Unavailable as e:
      if accelerator != 'cpu':
        raise
      why_not_compiled = f' (CompiledModel could not compile for the CPU: {e})'
    else:
      runtime = 'LiteRT CompiledModel'
      if accelerator == 'cpu':
        runtime += f', XNNPACK, {_threads(threads)}'
      if accelerator == 'gpu':
        runtime += f', WebGPU on {gpu_probe.adapter_name(backend.adapter)}'
        if not backend.fully_accelerated:
          runtime += ', some ops on the CPU'
      return backend, runtime
  if accelerator == 'cpu':
    backend = InterpreterBackend(interpreter_module(), path, threads)
    runtime = f'LiteRT interpreter, {_kernels(backend.xnnpack)}, {_threads(threads)}{why_not_compiled}'
    return backend, runtime
  raise Unavailable("needs ai-edge-litert's CompiledModel API, which is not installed")


def _kernels(xnnpack: bool) -> str:
  """The CPU kernels an interpreter runs, as its report names them."""
  return 'XNNPACK' if xnnpack else 'built-in kernels (XNNPACK did not start)'


def check_shapes(backend: Backend, tile: int, file: str):
  """Raises BundleError where the model's shapes are not those of the manifest's `tile`."""
  want = {'lr_up': (1, tile, tile, 3), 'noise': (1, tile, tile, 3), 'scale': (1,)}
  if 'detail' in backend.input_shapes:  # models that read the detail (unet.Variant.reads_detail)
    want['detail'] = (1,)
  if backend.input_shapes != want or backend.output_shape != (1, tile, tile, 3):
    raise bundle.BundleError(
      f'{file}: model shapes {backend.input_shapes} -> {backend.output_shape} '
      f"do not match the manifest's {tile}x{tile} tile"
    )


def warm_up(backend: Backend, tile: int):
  """One tile through the model: an accelerator that compiles but cannot run is found here.

  On failure the backend is closed and Unavailable raised.
  """
  z = np.zeros((1, tile, tile, 3), np.float32)
  with native_log.capture() as log:
    try:
      out = backend.run({'lr_up': z, 'noise': z, 'scale': np.ones((1,), np.float32), 'detail': FULL_DETAIL})
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
    raise Unavailable(native_log.short_reason(failure, log.text))
