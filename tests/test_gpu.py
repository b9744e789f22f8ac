"""The GPU path for real, on LiteRT's GPU accelerator (WebGPU over Vulkan).

CI installs a software Vulkan device (Mesa's lavapipe, from Debian's
bookworm-backports) and sets ZOOM_ENHANCE_GPU_TESTS=require, so that these
tests run there instead of skipping. The device emulates a GPU on the CPU:
`--accelerator gpu` runs on it, `auto` must pass it over.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from zoom_enhance.imaging import files
from zoom_enhance.runtime import gpu_probe

SAMPLE = files.asset_path('chelsea.jpg')


@pytest.fixture(scope='module')
def adapter():
  """The adapter LiteRT's GPU accelerator selects here (probed in a fresh process, see GPU_CHECK); skips
  (fails where required) without one."""
  probe = 'import json; from zoom_enhance.runtime import gpu_probe; print(json.dumps(gpu_probe.probe_gpu()))'
  r = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, timeout=120)
  found, failure = ('', r.stderr[-300:]) if r.returncode else json.loads(r.stdout.strip().splitlines()[-1])
  if failure:
    if os.environ.get('ZOOM_ENHANCE_GPU_TESTS') == 'require':
      pytest.fail(f'no GPU adapter, though ZOOM_ENHANCE_GPU_TESTS=require: {failure}')
    pytest.skip(f'no GPU adapter here ({failure}); .ci/run installs a software one')
  return found


# Run in a fresh process, as a command is: LiteRT's GPU accelerator has crashed (SIGSEGV in its first run)
# in a process that had already compiled many models for other accelerators, which a test session does.
GPU_CHECK = """
import json, sys
import numpy as np
from PIL import Image
from zoom_enhance.evaluation import metrics
from zoom_enhance.imaging import resample
from zoom_enhance.runtime import bundle, engine, pipeline, tiling

sample = sys.argv[1]
manifest = bundle.load_manifest(pipeline.DEFAULT_BUNDLE)
t = manifest.tile.size
lr = np.asarray(Image.open(sample).convert('RGB'))[100 : 100 + t // 4, 150 : 150 + t // 4]
tile = {
  'lr_up': resample.lr_up(lr, (t, t))[None],
  'noise': tiling.NoiseField(0).region(0, 0, t, t)[None],
  'scale': np.array([4.0], np.float32),
  'detail': np.array([1.0], np.float32),
}
cpu = engine.open_engine(manifest, pipeline.DEFAULT_BUNDLE, accelerator='cpu', quant='fp16', threads=2)
want = cpu.run(**tile)
cpu.close()
with pipeline.Enhancer(accelerator='gpu', quant='fp16', threads=2) as enhancer:
  gpu = enhancer.engine
  got = gpu.run(**tile)
  out = enhancer.enhance(sample, crop=(150, 100, 24, 24), scale=4)
  report = out.info['zoom_enhance']
  print(json.dumps({
    'accelerator': gpu.accelerator, 'variant': gpu.variant, 'runtime': gpu.runtime,
    'fully_accelerated': gpu.backend.fully_accelerated,
    'psnr_vs_cpu': metrics.psnr(got, want, data_range=2.0),
    'report': [report.accelerator, report.runtime, list(out.size)],
  }))
"""


def test_gpu_runs_the_fp16_model_fully_accelerated_and_matches_the_cpu(adapter):
  """`--accelerator gpu` (the API's accelerator='gpu'): the whole fp16 graph on the GPU accelerator, the
  adapter named in the report, the output on a real tile within 60 dB of the CPU's."""
  r = subprocess.run([sys.executable, '-c', GPU_CHECK, SAMPLE], capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  got = json.loads(r.stdout.strip().splitlines()[-1])
  assert got['accelerator'] == 'gpu' and got['variant'] == 'fp16'
  assert got['fully_accelerated'], got['runtime']
  name = adapter.split(', arch=')[0]
  assert got['runtime'].startswith(f'LiteRT CompiledModel, WebGPU on {name}'), got['runtime']
  assert 'some ops on the CPU' not in got['runtime']
  assert got['psnr_vs_cpu'] >= 60.0, got
  # What a user sees: the report of a real enhance names the adapter.
  assert got['report'][0] == 'gpu' and name in got['report'][1] and got['report'][2] == [96, 96]


def test_auto_passes_over_a_software_adapter_and_says_why(adapter, tmp_path):
  """The default chain never runs real work on a GPU emulated on the CPU; it decides from a 1-op probe,
  before compiling the bundle's model for the GPU, and the report says why the GPU was passed over."""
  if not gpu_probe.is_software_adapter(adapter):
    pytest.skip(f'the adapter here is a hardware one: {adapter}')
  auto = (
    'import json; from zoom_enhance.runtime import pipeline\n'
    'with pipeline.Enhancer(threads=2) as e:\n'
    '  print(json.dumps([e.engine.accelerator, e.engine.fallbacks, e.engine.load_seconds]))'
  )
  r = subprocess.run([sys.executable, '-c', auto], capture_output=True, text=True, timeout=120)
  assert r.returncode == 0, r.stderr[-3000:]
  accelerator, fallbacks, load_seconds = json.loads(r.stdout.strip().splitlines()[-1])
  assert accelerator == 'cpu'
  (why,) = [f for f in fallbacks if f.startswith('gpu: ')]
  assert why.startswith('gpu: passed over the software adapter ') and 'software' in why
  assert load_seconds < 10  # the bundle's model was not compiled for the GPU (~17 s cold)
  # The command, in a fresh process: the reason in its -v log; LiteRT's own lines (the OpenCL probe's
  # on stdout) in neither stream.
  out = tmp_path / 'auto.png'
  command = [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', SAMPLE, '--crop', '150,100,24,24', '-v']
  r = subprocess.run([*command, '-o', str(out)], capture_output=True, text=True, timeout=120)
  assert r.returncode == 0 and out.exists(), r.stderr
  assert 'on cpu (' in r.stderr and 'gpu: passed over the software adapter' in r.stderr, r.stderr
  assert 'OpenCL' not in r.stderr + r.stdout and 'INFO: [' not in r.stderr, r.stderr


def test_a_model_the_gpu_cannot_build_is_an_error_not_a_wrong_picture(adapter, tmp_path):
  """`--accelerator gpu --quant int8_full`: on Mesa's lavapipe WebGPU cannot build the full-integer
  model's pipelines and says so only in its log, while the run returns an output. The runtime either runs
  it right (within 40 dB of the CPU's int8_full result) or stops with one line and writes nothing."""
  command = [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', SAMPLE, '--crop', '150,100,24,24']
  command += ['--quant', 'int8_full', '--threads', '2']
  cpu, gpu = tmp_path / 'cpu.png', tmp_path / 'gpu.png'
  r = subprocess.run([*command, '--accelerator', 'cpu', '-o', str(cpu)], capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  r = subprocess.run([*command, '--accelerator', 'gpu', '-o', str(gpu)], capture_output=True, text=True)
  if r.returncode == 0:
    from PIL import Image

    a, b = (np.asarray(Image.open(p), np.float64) for p in (cpu, gpu))
    assert 10 * np.log10(255.0**2 / max(np.mean((a - b) ** 2), 1e-12)) >= 40
  else:
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith('zoom-enhance enhance: error:')]
    assert len(errors) == 1 and '--accelerator gpu: not available here' in errors[0], r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and not gpu.exists()


def test_the_gpu_probe_is_kept_until_the_drivers_change(adapter, tmp_path):
  """probe_gpu's answer goes to the user's cache (gpu_probe.cache_key: LiteRT, the Vulkan drivers' files
  and variables, the GPU device nodes): the next process reads it instead of compiling the probe model (here
  a missing file, which would fail), and another driver setting probes again."""
  probe = (
    'import json, sys; from zoom_enhance.runtime import gpu_probe\n'
    'if sys.argv[1] == "no-probe-model": gpu_probe.GPU_PROBE = "/nonexistent/probe.tflite"\n'
    'print(json.dumps(gpu_probe.probe_gpu()))'
  )
  env = dict(os.environ, ZOOM_ENHANCE_CACHE_DIR=str(tmp_path))
  run = lambda arg, **extra: subprocess.run(  # noqa: E731
    [sys.executable, '-c', probe, arg], capture_output=True, text=True, timeout=120, env=dict(env, **extra)
  )
  first = run('probe')
  assert first.returncode == 0, first.stderr[-2000:]
  assert json.loads(first.stdout.strip().splitlines()[-1]) == [adapter, '']
  cached = json.loads((tmp_path / gpu_probe.GPU_PROBE_CACHE).read_text())['entries']
  assert [e['adapter'] for e in cached.values()] == [adapter]
  again = run('no-probe-model')
  assert json.loads(again.stdout.strip().splitlines()[-1]) == [adapter, '']
  moved = run('no-probe-model', VK_ADD_DRIVER_FILES=str(tmp_path / 'another_icd.json'))
  found, failure = json.loads(moved.stdout.strip().splitlines()[-1])
  assert failure and not found  # probed again, with the probe model gone
