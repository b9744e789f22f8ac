"""Test setup: 4 simulated CPU devices and a compilation cache (set before JAX is imported), shared fixtures.

Every test compiles the same few tiny models, in this process and in the
processes it starts. A persistent compilation cache for the session (passed
to those processes through the environment) compiles each program once;
XLA's LLVM backend at -O0 compiles 3x faster with the same results, and its
older loop emitters (the new fusion emitters off) a fifth faster again (a
tiny distillation round: 33-37 s against 42-49). Every run a test compares
with another uses the same flags.
"""

import atexit
import os
import pathlib
import shutil
import signal
import tempfile
import threading
import time
import types

FAST_COMPILE = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix='zoom-enhance-test-jax-cache-')
  atexit.register(shutil.rmtree, _CACHE, True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
# The runtime's cache (the CPU variant measured fastest): one per session, never the user's. The
# emulated arm64 root (tests/test_arm64.py) stays where launch/arm64_emulated.py built it.
if 'ZOOM_ENHANCE_CACHE_DIR' not in os.environ:
  from zoom_enhance.runtime import cpu_variant

  os.environ.setdefault('ZOOM_ENHANCE_ARM64_ROOT', os.path.join(cpu_variant.cache_dir(), 'arm64-bookworm'))
  _RUNTIME_CACHE = tempfile.mkdtemp(prefix='zoom-enhance-test-cache-')
  atexit.register(shutil.rmtree, _RUNTIME_CACHE, True)
  os.environ['ZOOM_ENHANCE_CACHE_DIR'] = _RUNTIME_CACHE
# Four: enough for a (data 2, fsdp 2) mesh; more devices on a 2-core machine only cost compile time.
os.environ.setdefault('XLA_FLAGS', f'--xla_force_host_platform_device_count=4 {FAST_COMPILE}')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def jax_env(devices: int, **extra) -> dict:
  """The environment of a test's own JAX process: `devices` simulated CPU devices, this session's cache."""
  return dict(
    os.environ,
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} {FAST_COMPILE}',
    JAX_PLATFORMS='cpu',
    PYTHONUNBUFFERED='1',
    PYTHONPATH=str(ROOT),
    **extra,
  )


def random_params(model, *inputs, seed=0) -> dict:
  """Parameters of `model` for these inputs, every weight random and non-zero (numpy, so nothing compiles).

  Tests that only need a network whose output depends on every layer use
  these: flax's own initialisation is a large program of random-number ops
  that takes seconds to compile, and leaves the output layers at zero.
  """
  import jax

  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)['params']
  rng = np.random.default_rng(seed)

  def draw(leaf):
    fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
    scale = 1.0 / np.sqrt(fan_in) if len(leaf.shape) > 1 else 0.05
    return (rng.standard_normal(leaf.shape) * scale).astype(leaf.dtype)

  return jax.tree.map(draw, shapes)


def load_config(name='tiny'):
  from zoom_enhance.training import config

  return config.load_config_file(str(ROOT / 'configs' / f'{name}.py'))


@pytest.fixture(scope='session')
def photo_dir(tmp_path_factory):
  """A folder of real photos: scikit-image's sample pictures saved as JPEG and PNG."""
  from PIL import Image
  from skimage import data

  folder = tmp_path_factory.mktemp('photos')
  for name in ('astronaut', 'coffee', 'chelsea', 'rocket'):
    img = getattr(data, name)()
    ext = 'png' if name == 'rocket' else 'jpg'
    Image.fromarray(np.asarray(img, np.uint8)).save(folder / f'{name}.{ext}', quality=95)
  return folder


# Tile side of the shared test bundle: small, so a tile is quick on a CPU.
BUNDLE_TILE = 32


# The reference run's mesh: data 2 x fsdp 2 (ZeRO-3 style parameter sharding) over the 4 devices.
FSDP = ('--config.mesh.data=2', '--config.mesh.fsdp=2')


def train_args(workdir, photo_dir, num_steps, *extra) -> list:
  """`zoom-enhance train` of the tiny config on real photos, as the tests run it."""
  return [
    'train', '--config', str(ROOT / 'configs' / 'tiny.py'), '--workdir', str(workdir),
    f'--config.train.num_steps={num_steps}', f'--config.data.source=folder:{photo_dir}',
    '--config.train.log_every=1', '--config.train.num_samples=2', '--config.train.warmup_steps=5',
    '--config.train.checkpoint_every=20', '--config.diffusion.sample_steps=2', *extra,
  ]  # fmt: skip


# The reference run is preempted (SIGTERM) once this many steps are logged, then run again.
PREEMPT_AFTER = 25


def _preempt_after(metrics: pathlib.Path, rows: int, stop: threading.Event):
  """Sends this process a SIGTERM once `metrics` has `rows` lines, as a preemption notice would come."""
  while not stop.is_set():
    if metrics.exists() and len(metrics.read_text().splitlines()) >= rows:
      os.kill(os.getpid(), signal.SIGTERM)
      return
    time.sleep(0.02)


@pytest.fixture(scope='session')
def trained_run(photo_dir, tmp_path_factory):
  """The acceptance command, in this process: the tiny model 40 steps on the 4 devices (parameters sharded
  in 2), preempted by a SIGTERM after step 25, then the same command again, which resumes and finishes.
  Its workdir is test_train's reference, the distillation's teacher and the exported bundles' source.
  """
  import contextlib
  import io
  import logging

  from zoom_enhance import cli

  workdir = tmp_path_factory.mktemp('trained')
  argv = ['zoom-enhance', *train_args(workdir, photo_dir, 40, *FSDP)]
  logged, stderr = [], io.StringIO()
  handler = logging.Handler()
  handler.emit = lambda record: logged.append(record.getMessage())
  root = logging.getLogger()
  level = root.level
  root.addHandler(handler)
  root.setLevel(logging.INFO)
  # Training replaces this handler while it runs; a notice that came after it finished is ignored.
  previous = signal.signal(signal.SIGTERM, lambda *_: None)
  stop = threading.Event()
  watcher = threading.Thread(target=_preempt_after, args=(workdir / 'metrics.jsonl', PREEMPT_AFTER, stop))
  watcher.start()
  try:
    with contextlib.redirect_stderr(stderr):
      preempted = cli.main(argv)
    stop.set()
    watcher.join()
    resumed = cli.main(argv)
  finally:
    stop.set()
    signal.signal(signal.SIGTERM, previous)
    root.removeHandler(handler)
    root.setLevel(level)
  return types.SimpleNamespace(
    workdir=str(workdir), preempted=preempted, resumed=resumed, stderr=stderr.getvalue(), log=logged
  )


@pytest.fixture(scope='session')
def trained(trained_run):
  """The reference run's workdir, trained to step 40."""
  assert trained_run.resumed == 0
  return trained_run.workdir


@pytest.fixture(scope='session')
def bundle_dir(trained, photo_dir, tmp_path_factory):
  """`trained` exported once per session (fp32 and int8, 2 steps), shared by the runtime and eval tests."""
  from export_tflite import export

  out = str(tmp_path_factory.mktemp('bundles') / 'B')
  export.export(trained, out, quants=['fp32', 'int8'], tile=BUNDLE_TILE, steps=2, photos=str(photo_dir))
  return out
