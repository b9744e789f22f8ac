"""The runtime on ARM64 under emulation (launch/arm64_emulated.py), against this machine's x86-64 output.

Building the arm64 root needs the network (Debian's mirror, the package
index), which tests do not have: CI builds it before the tests
(`launch/arm64_emulated.py --setup-only`) and sets
ZOOM_ENHANCE_ARM64_TESTS=require; elsewhere the test skips without a root.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import pipeline

ROOT = os.environ.get('ZOOM_ENHANCE_ARM64_ROOT', '')
SCRIPT = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'launch', 'arm64_emulated.py'
)


def _unavailable(reason: str):
  if os.environ.get('ZOOM_ENHANCE_ARM64_TESTS') == 'require':
    pytest.fail(f'{reason}, though ZOOM_ENHANCE_ARM64_TESTS=require')
  pytest.skip(f'{reason}; python launch/arm64_emulated.py --setup-only builds it (as root)')


def _run_script(out, *args):
  r = subprocess.run(
    [sys.executable, SCRIPT, '--root', ROOT, '--out', str(out), '--no-setup', *args],
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
  assert 'not phone speed' in r.stdout
  return json.loads((out / 'report.json').read_text())


def _available():
  if not ROOT or not os.path.exists(os.path.join(ROOT, '.zoom-enhance-arm64-root')):
    _unavailable(f'no arm64 root at {ROOT!r}')
  if os.geteuid() != 0:
    _unavailable('the emulated runs need root (chroot)')


def _script():
  spec = importlib.util.spec_from_file_location('arm64_emulated', SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_root_describes_the_emulated_cpu_as_a_phone_kernel_does(tmp_path):
  """XNNPACK's CPU detection reads these; without them it fails and LiteRT runs other kernels."""
  script = _script()
  script.describe_cpu(str(tmp_path), 'cortex-a76', 2)
  info = (tmp_path / 'proc' / 'cpuinfo').read_text()
  assert info.count('processor\t:') == 2 and 'CPU implementer\t: 0x41' in info and 'CPU part\t: 0xd0b' in info
  for name in ('possible', 'present', 'online'):
    assert (tmp_path / 'sys' / 'devices' / 'system' / 'cpu' / name).read_text() == '0-1\n'


def test_the_script_refuses_cpus_its_emulator_gets_wrong_or_lacks():
  script = _script()
  if not os.path.exists(script.QEMU):
    pytest.skip(f'no {script.QEMU}: apt-get install qemu-user-static')
  with pytest.raises(script.Failure, match='choose one of'):
    script.check_cpu(script.QEMU, 'pentium')
  line, major = script.qemu_version(script.QEMU)
  assert 'qemu-aarch64' in line and major > 0
  assert script.check_cpu(script.QEMU, 'cortex-a76') == line
  if major < script.MAX_CPU_QEMU:
    with pytest.raises(script.Failure, match='wrongly with SVE'):
      script.check_cpu(script.QEMU, 'max')


def test_the_script_reads_what_ran_from_the_commands_report_here(tmp_path):
  """The enhance command the script runs, here: what ran and its seconds come from --report-json; the PSNR
  is numpy's own."""
  script = _script()
  out, report = tmp_path / 'x86_64_int8.png', tmp_path / 'x86_64_int8.json'
  source = os.path.join(script.REPO, 'zoom_enhance', 'assets', 'chelsea.jpg')
  args = script._enhance_args(source, 'int8', str(out), 2, str(report))
  env = dict(os.environ, PYTHONPATH=script.REPO, ZOOM_ENHANCE_CPU_VARIANT='bundle')
  ran = script._timed([sys.executable] + args, env, 'here int8', str(report))
  assert (
    ran['variant'] == 'int8'
    and ran['runtime'] == 'LiteRT interpreter, XNNPACK, 2 tiles at once, 1 thread each'
  )
  assert 0 < ran['enhance_seconds'] < ran['command_seconds']
  a = np.asarray(Image.open(out).convert('RGB'))
  assert a.shape == (192, 192, 3) and script.psnr(a, a) is None
  b = a.copy()
  b[0, 0, 0] ^= 1  # one value off by one: MSE 1 / (192 * 192 * 3)
  assert script.psnr(a, b) == round(10 * np.log10(255**2 * 192 * 192 * 3), 2)


def test_the_layer_dump_keeps_every_ops_output_of_the_scripts_tile(tmp_path):
  """`python -m zoom_enhance.runtime.layer_dump` as the script runs it (here): every op's output of the one
  192-px tile; a crop that is not one tile of the model is one line."""
  script = _script()
  out = tmp_path / 'layers.npz'
  repo, env = script.REPO, dict(os.environ, PYTHONPATH=script.REPO)
  r = subprocess.run(
    [sys.executable] + script._layer_dump_args(repo, 'int8_full', str(out)),
    capture_output=True,
    text=True,
    env=env,
  )
  assert r.returncode == 0, r.stderr[-2000:]
  layers = np.load(out)
  assert len(layers.files) > 50 and layers.files == sorted(layers.files)
  assert layers[layers.files[-1]].shape == (1, 192, 192, 3)
  args = [
    a if a != '150,100,48,48' else '150,100,40,48' for a in script._layer_dump_args(repo, 'int8', 'x.npz')
  ]
  r = subprocess.run([sys.executable] + args, capture_output=True, text=True, cwd=tmp_path, env=env)
  err = [ln for ln in r.stderr.splitlines() if ln.strip()]
  assert r.returncode == 1 and len(err) == 1 and 'choose a crop whose result is one tile' in err[0], err
  assert not (tmp_path / 'x.npz').exists()


def test_every_variant_runs_on_arm64_as_on_x86_64(tmp_path):
  """On an emulated Cortex-A76 described as a phone describes it, XNNPACK runs there as here, and every
  variant's result is within 50 dB of x86-64's (int8_full's integer kernels agree to the bit)."""
  _available()
  out = tmp_path / 'report'
  report = _run_script(out)
  assert report['arm64']['machine'] == 'aarch64' and report['here']['machine'] == 'x86_64'
  assert report['arm64']['cpu'] == 'cortex-a76'
  models = bundle.load_manifest(pipeline.DEFAULT_BUNDLE).models
  assert set(report['variants']) == {'fp16', 'int8', 'int8_full'} <= set(models)
  for v, result in report['variants'].items():
    # The runtime's own report: on 2 threads two interpreters, a tile each, XNNPACK in both.
    runtime = result['arm64']['runtime']
    pool = 'LiteRT interpreter, XNNPACK, 2 tiles at once, 1 thread each'
    assert runtime == result['here']['runtime'] == pool, runtime
    assert (out / f'arm64_{v}.png').exists() and (out / f'x86_64_{v}.png').exists()
    assert result['identical'] or result['psnr_db'] >= 50, (v, result)
    assert result['verdict'] in ('identical', 'within')


def test_compiled_model_runs_on_arm64(tmp_path):
  """One thread: LiteRT's CompiledModel compiles for the emulated phone CPU (it could not where the root
  had no /proc/cpuinfo), and the full-integer model gives the same result as here."""
  _available()
  report = _run_script(tmp_path / 'report', '--threads', '1', '--variants', 'int8_full')
  result = report['variants']['int8_full']
  assert result['arm64']['runtime'] == result['here']['runtime'] == 'LiteRT CompiledModel, XNNPACK, 1 thread'
  assert result['identical'] or result['psnr_db'] >= 50, result
