"""Whether LiteRT's GPU accelerator can run here: found once per machine, before a model is compiled for it.

A 1-op model (GPU_PROBE) compiled for the GPU tells, in a tenth of a second,
which adapter WebGPU selects, or why there is none; the answer is kept in
the user's cache (machine_cache) under a key of the drivers installed. A
software adapter (a GPU emulated on the CPU) is passed over by
`--accelerator auto`: compiling the bundle's model on one took 17 s, and it
runs far slower than the CPU path.
"""

import os
import re
import sys

from zoom_enhance.imaging import files
from zoom_enhance.runtime import machine_cache
from zoom_enhance.runtime import native_log

_SELECTED_ADAPTER = re.compile(r'Selected adapter: ([^\n]+)')


def gpu_adapter(log_text: str) -> str:
  """The adapter line of LiteRT's WebGPU log, e.g. 'llvmpipe (LLVM 15.0.6, 256 bits), arch=software,
  vendor=mesa, backend=Vulkan, adapterType=CPU / Software'; '' where it logged none."""
  found = _SELECTED_ADAPTER.findall(log_text)
  return found[-1].strip() if found else ''


def is_software_adapter(adapter: str) -> bool:
  """A GPU emulated on the CPU (Mesa's lavapipe/llvmpipe, SwiftShader): WebGPU's adapter type CPU."""
  return 'adapterType=CPU' in adapter or 'arch=software' in adapter


def adapter_name(adapter: str) -> str:
  """'llvmpipe (LLVM 15.0.6, 256 bits)' of an adapter line, plus ', software' for a software one."""
  name = adapter.split(', arch=')[0].split(', vendor=')[0] or 'an unnamed adapter'
  return name + (', software' if is_software_adapter(adapter) else '')


# A 1-op model (export_tflite/gpu_check.make_probe_model) that compiles for the GPU in ~0.1 s.
GPU_PROBE = files.asset_path('gpu_probe.tflite')
GPU_PROBE_CACHE = 'gpu_probe.json'
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
    try:
      from ai_edge_litert import compiled_model as cm
    except ImportError:
      return '', "needs ai-edge-litert's CompiledModel API, which is not installed"
    key = cache_key()
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


# Where the Vulkan loader finds its drivers (Linux), and the variables that override it.
_VULKAN_ICD_DIRS = ('/usr/share/vulkan/icd.d', '/usr/local/share/vulkan/icd.d', '/etc/vulkan/icd.d')
_VULKAN_ENV = ('VK_ICD_FILENAMES', 'VK_DRIVER_FILES', 'VK_ADD_DRIVER_FILES', 'XDG_DATA_DIRS')


def cache_key() -> str:
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


def check_gpu(auto: bool) -> str:
  """Why the bundle's model should not be compiled for the GPU here, '' where it may: no adapter, or (with
  `auto`) a software one, which emulates the GPU on the CPU far slower than the CPU path runs the model."""
  adapter, failure = probe_gpu()
  if failure:
    return failure
  if auto and is_software_adapter(adapter):
    return (
      f'passed over the software adapter {adapter_name(adapter)}: a GPU emulated on the CPU, slower '
      'than the CPU path (--accelerator gpu runs on it)'
    )
  return ''
