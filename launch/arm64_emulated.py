"""The runtime on ARM64, emulated: each variant of the embedded bundle in an arm64 root, against x86-64.

  sudo python launch/arm64_emulated.py --out arm64-report

Needs root (chroot) and Debian's qemu-user-static and debootstrap
(`apt-get install qemu-user-static debootstrap`); no binfmt_misc: the static
emulator is copied into the root and runs its Python directly.

1. Setup, once (cached in ~/.cache/zoom-enhance/arm64-bookworm, or --root):
   debootstrap's first stage downloads and unpacks an arm64 bookworm
   (minbase, plus python3; about 40 MB of packages, half a minute). Its
   second stage, which configures the packages by running them emulated
   (about 12 minutes), is not needed to run Python and is skipped. Then pip
   installs the runtime's dependencies (pyproject's base list: numpy,
   Pillow, ai-edge-litert, ...) for aarch64 from the package index into the
   root (--target with --platform: pip inside the root would need the network
   and certificates there).
2. Run, offline: this checkout's `zoom_enhance` package is copied into the
   root, and `python -m zoom_enhance.cli enhance` runs there under qemu on a
   crop of the packaged photo that makes one tile, once per variant
   (--accelerator cpu --quant V), and the same command on this machine. The
   report gives each variant's runtime as the runtime itself reports it (the
   command's --report-json), the seconds, and the PSNR between the two
   results. With --layers, `python -m zoom_enhance.runtime.layer_dump` writes
   every op's output of that tile on both, compared op by op.

The emulated CPU is a phone's (--cpu, default cortex-a76: the big cores of
Pixel 6 and of many phones since 2019), and the root describes it as a
phone's kernel does: /proc/cpuinfo (its MIDR fields; the ISA comes from
qemu's HWCAP) and /sys/devices/system/cpu/{possible,present,online}, plain
files written at each run. Without them XNNPACK's CPU detection (cpuinfo)
fails, LiteRT quietly runs its built-in kernels instead, a path no phone
takes (their int8 rounding differs from XNNPACK's: int8_full came out
44.8 dB from x86-64), and CompiledModel cannot compile for the CPU at all.
With them, int8_full's output is identical to x86-64's. /proc and /sys are
not mounted: the host's x86-64 files would describe the wrong CPU (with
them, CompiledModel crashed).

qemu 7.2 (Debian bookworm's) computes some SVE instructions wrongly: with
`-cpu max`, XNNPACK's int8 kernels gave 16.6 dB (int8_full) and 32.0 dB
(int8) from x86-64, while qemu 10.0 (bookworm-backports) gave identical and
70.5 dB; so `--cpu max` is refused on a qemu older than 10. `--qemu` takes
another static qemu-aarch64, e.g. backports' for --cpu cortex-a710 (ARMv9,
SVE2 and i8mm, as in Pixel 7 and 8).

The seconds are those of an emulated CPU, many times a phone's: they show
that it runs, not how fast.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from zoom_enhance.runtime import cpu_variant  # noqa: E402

SUITE = 'bookworm'
MARKER = '.zoom-enhance-arm64-root'
QEMU = '/usr/bin/qemu-aarch64-static'
# pip's names for aarch64 wheels that bookworm's glibc 2.36 runs.
PLATFORMS = ['manylinux2014_aarch64'] + [f'manylinux_2_{v}_aarch64' for v in (17, 27, 28, 31, 34, 35, 36)]
SITE = '/opt/zoom-enhance/site'  # the dependencies, inside the root
SRC = '/opt/zoom-enhance/src'  # this checkout's package, copied at each run
OUT = '/opt/zoom-enhance/out'
# A crop of the packaged photo (x, y, w, h) that makes one 192-px tile at x4.
CROP = (150, 100, 48, 48)
MIN_PSNR_DB = 50.0
# Phone-class CPUs qemu-user emulates, and the MIDR fields their /proc/cpuinfo gives (implementer Arm).
CPU_PARTS = {
  'cortex-a55': 0xD05,
  'cortex-a76': 0xD0B,
  'neoverse-n1': 0xD0C,
  'cortex-a710': 0xD47,
  'neoverse-n2': 0xD49,
  'neoverse-v1': 0xD40,
  'max': 0x051,  # qemu's own ("implementer" 0)
}
DEFAULT_CPU = 'cortex-a76'
# The first qemu whose `-cpu max` (SVE) ran XNNPACK's int8 kernels right here (7.2 did not).
MAX_CPU_QEMU = 10


class Failure(Exception):
  """A one-line reason to stop."""


def default_root() -> str:
  """$ZOOM_ENHANCE_ARM64_ROOT, else arm64-bookworm in the user's cache directory."""
  return os.environ.get('ZOOM_ENHANCE_ARM64_ROOT') or os.path.join(cpu_variant.cache_dir(), f'arm64-{SUITE}')


def _run(cmd, **kw):
  r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
  if r.returncode != 0:
    last = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()][-1:] or [f'exit {r.returncode}']
    raise Failure(f'{os.path.basename(str(cmd[0]))} failed: {last[0][:300]}')
  return r


def _python_version(root: str) -> str:
  found = sorted(re.findall(r'^python(3\.\d+)$', '\n'.join(os.listdir(os.path.join(root, 'usr/bin'))), re.M))
  if not found:
    raise Failure(f'{root}: no python3 in the root')
  return found[-1]


def runtime_requirements() -> list[str]:
  """The runtime's pinned dependencies: pyproject's base list (no extras)."""
  with open(os.path.join(REPO, 'pyproject.toml'), 'rb') as f:
    return list(tomllib.load(f)['project']['dependencies'])


def configured_mirror(suite: str = SUITE) -> str:
  """The Debian archive this machine's own apt sources name for `suite` (apt-get indextargets)."""
  try:
    listed = subprocess.run(
      ['apt-get', 'indextargets', '--format', '$(RELEASE) $(REPO_URI)'], capture_output=True, text=True
    ).stdout
  except OSError as e:
    raise SystemExit(f'arm64: cannot read the apt sources ({e}); give --mirror') from None
  for line in listed.splitlines():
    release, _, uri = line.partition(' ')
    if release == suite and uri:
      return uri.rstrip('/')
  raise SystemExit(f'arm64: no configured apt source serves {suite}; give --mirror')


def setup(root: str, mirror: str | None = None, qemu: str = QEMU) -> str:
  """Builds the root once (see the module docstring); 'cached' where it is there already.

  `mirror`: the Debian archive to bootstrap from; by default the one this machine's apt sources name."""
  if os.path.exists(os.path.join(root, MARKER)):
    return 'cached'
  mirror = mirror or configured_mirror()
  partial = root + '.partial'
  shutil.rmtree(partial, ignore_errors=True)
  os.makedirs(os.path.dirname(os.path.abspath(root)), exist_ok=True)
  t0 = time.perf_counter()
  print(f'arm64: debootstrap first stage of {SUITE} into {partial} (downloads about 40 MB)', flush=True)
  _run(
    [
      'debootstrap',
      '--foreign',
      '--arch=arm64',
      '--variant=minbase',
      '--include=python3',
      SUITE,
      partial,
      mirror,
    ]
  )
  # The first stage unpacks only the base set; --include's packages wait in the archive for the second.
  debs = sorted(os.listdir(os.path.join(partial, 'var/cache/apt/archives')))
  for deb in [d for d in debs if d.endswith('.deb')]:
    _run(['dpkg-deb', '-x', os.path.join(partial, 'var/cache/apt/archives', deb), partial])
  shutil.copy2(qemu, os.path.join(partial, 'usr/bin/qemu-aarch64-static'))
  version = _python_version(partial)
  print(
    f'arm64: pip install of the runtime for aarch64, Python {version}: {" ".join(runtime_requirements())}'
  )
  cmd = [sys.executable, '-m', 'pip', 'install', '-q', '--target', partial + SITE, '--only-binary=:all:']
  cmd += ['--python-version', version, '--implementation', 'cp', '--platform', 'any']
  for p in PLATFORMS:
    cmd += ['--platform', p]
  _run(cmd + runtime_requirements())
  with open(os.path.join(partial, MARKER), 'w') as f:
    json.dump({'suite': SUITE, 'python': version, 'requirements': runtime_requirements()}, f)
  shutil.rmtree(root, ignore_errors=True)
  os.rename(partial, root)
  return f'built in {time.perf_counter() - t0:.0f} s'


def describe_cpu(root: str, cpu: str, cores: int):
  """Writes the root's /proc/cpuinfo and /sys/devices/system/cpu/{possible,present,online} for `cores`
  cores of `cpu`, as plain files (nothing is mounted there; qemu 10 answers /proc/cpuinfo itself,
  7.2 reads this one)."""
  for d in ('proc', 'sys'):
    if os.path.ismount(os.path.join(root, d)):
      raise Failure(f'{root}/{d} is a mount point: unmount it (the host describes another CPU)')
  part = CPU_PARTS[cpu]
  block = (
    'processor\t: {i}\nCPU implementer\t: {impl:#x}\nCPU architecture: 8\nCPU variant\t: 0x0\n'
    'CPU part\t: {part:#05x}\nCPU revision\t: 0\n'
  )
  impl = 0 if cpu == 'max' else 0x41
  os.makedirs(os.path.join(root, 'proc'), exist_ok=True)
  with open(os.path.join(root, 'proc', 'cpuinfo'), 'w') as f:
    f.write('\n'.join(block.format(i=i, impl=impl, part=part) for i in range(cores)))
  cpus = os.path.join(root, 'sys', 'devices', 'system', 'cpu')
  os.makedirs(cpus, exist_ok=True)
  for name in ('possible', 'present', 'online'):
    with open(os.path.join(cpus, name), 'w') as f:
      f.write(f'0-{cores - 1}\n' if cores > 1 else '0\n')


def qemu_version(qemu: str) -> tuple[str, int]:
  """(first line of --version, major version) of a qemu-user binary."""
  line = _run([qemu, '--version']).stdout.splitlines()[0]
  found = re.search(r'version (\d+)\.', line)
  return line, int(found[1]) if found else 0


def check_cpu(qemu: str, cpu: str) -> str:
  """The emulator's version line, once `cpu` is known to run right on it; else Failure."""
  if cpu not in CPU_PARTS:
    raise Failure(f'--cpu {cpu}: choose one of {", ".join(CPU_PARTS)}')
  line, major = qemu_version(qemu)
  # `-cpu help` lists them and exits with status 1.
  offered = subprocess.run([qemu, '-cpu', 'help'], capture_output=True, text=True).stdout.split()
  if cpu not in offered:
    raise Failure(f'--cpu {cpu}: {line} does not emulate it (a newer qemu does: --qemu)')
  if cpu == 'max' and major < MAX_CPU_QEMU:
    raise Failure(
      f"--cpu max: {line} computes XNNPACK's int8 kernels wrongly with SVE (16.6 dB from x86-64 on 7.2); "
      f'use --cpu {DEFAULT_CPU}, or --qemu with qemu {MAX_CPU_QEMU} or later'
    )
  return line


def _enhance_args(source: str, variant: str, out: str, threads: int, report: str) -> list[str]:
  crop = ','.join(map(str, CROP))
  cmd = ['-m', 'zoom_enhance.cli', 'enhance', source, '--crop', crop, '--scale', '4', '--accelerator', 'cpu']
  return cmd + ['--quant', variant, '--threads', str(threads), '-o', out, '--report-json', report]


def _timed(cmd, env, where: str, report: str) -> dict:
  """Runs one enhance command; what its --report-json (the file `report`) says ran, and the seconds."""
  t0 = time.perf_counter()
  r = subprocess.run(cmd, capture_output=True, text=True, env=env)
  wall = time.perf_counter() - t0
  if r.returncode != 0:
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1:] or [f'exit status {r.returncode}']
    raise Failure(f'{where}: enhance failed: {last[0][:300]}')
  try:
    with open(report) as f:
      ran = json.load(f)
    (photo,) = ran['photos']
    engine = ran['engine']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise Failure(f'{where}: enhance wrote no usable --report-json {report}: {e}') from None
  return {
    'runtime': engine['runtime'],
    'variant': engine['variant'],
    'enhance_seconds': photo['seconds'],
    'command_seconds': round(wall, 2),
  }


def psnr(a: np.ndarray, b: np.ndarray) -> float | None:
  """PSNR of two uint8 images in dB (peak 255, the mean squared error over every channel); None where they
  are identical."""
  mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
  return None if mse == 0 else round(float(10 * np.log10(255.0**2 / mse)), 2)


def run(
  root: str,
  out: str,
  variants: list[str],
  threads: int,
  layers=(),
  cpu: str = DEFAULT_CPU,
  qemu: str = QEMU,
) -> dict:
  """Each variant in the root, on an emulated `cpu`, and here; writes the results and report.json into `out`.

  For the variants in `layers`, also every op's output on both, compared (compare_layers).
  """
  if not os.path.exists(os.path.join(root, MARKER)):
    raise Failure(f'{root}: no arm64 root there; run without --no-setup to build it')
  emulator = check_cpu(qemu, cpu)
  shutil.copy2(qemu, os.path.join(root, 'usr/bin/qemu-aarch64-static'))
  describe_cpu(root, cpu, os.cpu_count() or 1)
  src = root + SRC
  shutil.rmtree(src, ignore_errors=True)
  shutil.copytree(os.path.join(REPO, 'zoom_enhance'), os.path.join(src, 'zoom_enhance'))
  shutil.rmtree(root + OUT, ignore_errors=True)
  os.makedirs(root + OUT)
  os.makedirs(out, exist_ok=True)
  python = f'/usr/bin/python{_python_version(root)}'
  emulated = [shutil.which('chroot'), root, '/usr/bin/qemu-aarch64-static', python]
  env = {
    'PATH': '/usr/bin:/bin',
    'HOME': '/root',
    'LANG': 'C.UTF-8',
    'PYTHONPATH': f'{SRC}:{SITE}',
    'ZOOM_ENHANCE_CACHE_DIR': '/tmp/zoom-enhance-cache',
    'QEMU_CPU': cpu,
  }
  machine = _run(emulated + ['-c', 'import platform; print(platform.machine())'], env=env).stdout.strip()
  source_in_root = f'{SRC}/zoom_enhance/assets/chelsea.jpg'
  source_here = os.path.join(REPO, 'zoom_enhance', 'assets', 'chelsea.jpg')
  results = {}
  # The float model's result here: how far each quantized result lies from it, there and here.
  reference = 'fp16' if 'fp16' in variants else None
  for v in sorted(variants, key=lambda v: v != reference):
    print(f'arm64: {v} emulated ...', flush=True)
    arm_args = _enhance_args(source_in_root, v, f'{OUT}/arm64_{v}.png', threads, f'{OUT}/arm64_{v}.json')
    arm = _timed(emulated + arm_args, env, f'arm64 {v}', root + f'{OUT}/arm64_{v}.json')
    here_out, here_json = os.path.join(out, f'x86_64_{v}.png'), os.path.join(out, f'x86_64_{v}.json')
    here = _timed(
      [sys.executable] + _enhance_args(source_here, v, here_out, threads, here_json),
      None,
      f'here {v}',
      here_json,
    )
    arm_out = os.path.join(out, f'arm64_{v}.png')
    shutil.copy2(root + f'{OUT}/arm64_{v}.png', arm_out)
    shutil.copy2(root + f'{OUT}/arm64_{v}.json', os.path.join(out, f'arm64_{v}.json'))
    a, b = (np.asarray(Image.open(p).convert('RGB')) for p in (arm_out, here_out))
    results[v] = {'psnr_db': psnr(a, b), 'identical': bool(np.array_equal(a, b)), 'arm64': arm, 'here': here}
    if reference:
      ref = np.asarray(Image.open(os.path.join(out, f'x86_64_{reference}.png')).convert('RGB'))
      results[v]['vs_reference'] = {'arm64_psnr_db': psnr(a, ref), 'here_psnr_db': psnr(b, ref)}
    results[v]['verdict'] = verdict(results[v])
    if v in layers:
      print(f'arm64: {v} layer by layer ...', flush=True)
      results[v]['layers'] = _layers(emulated, env, root, out, v)
  report = {
    'command': f'zoom-enhance enhance chelsea.jpg --crop {",".join(map(str, CROP))} --scale 4 '
    f'--accelerator cpu --quant V --threads {threads}',
    'output_size': list(a.shape[1::-1]),
    'arm64': {
      'machine': machine,
      'root': root,
      'cpu': cpu,
      'emulator': emulator,
      'seconds_are': 'emulated (qemu-user on this machine), not phone speed',
    },
    'here': {'machine': platform.machine(), 'python': platform.python_version()},
    'min_psnr_db': MIN_PSNR_DB,
    'reference': f'x86_64_{reference}.png, the float model here' if reference else None,
    'variants': results,
  }
  with open(os.path.join(out, 'report.json'), 'w') as f:
    json.dump(report, f, indent=1)
  return report


def compare_layers(arm: str, here: str) -> dict:
  """Per op, how the arm64 output tensor differs from x86-64's: the share of values, and the most (in
  quantization steps for integer tensors)."""
  a, b = np.load(arm), np.load(here)
  ops = []
  for key in sorted(set(a.files) & set(b.files)):
    x, y = a[key].astype(np.float64), b[key].astype(np.float64)
    d = np.abs(x - y)
    ops.append(
      {
        'op': key,
        'dtype': str(a[key].dtype),
        'shape': list(a[key].shape),
        'share_differing': round(float(np.mean(d > 0)), 4),
        'max_difference': float(d.max()),
      }
    )
  differing = [o for o in ops if o['share_differing'] > 0]
  return {
    'ops': len(ops),
    'ops_differing': len(differing),
    'first_differing': differing[0] if differing else None,
    'widest': sorted(differing, key=lambda o: -o['max_difference'])[:5],
    'output': ops[-1] if ops else None,
    'how': 'classic interpreter, built-in kernels (not XNNPACK: all tensors kept), the same tile',
  }


def _layer_dump_args(src: str, v: str, out: str) -> list[str]:
  """`python -m zoom_enhance.runtime.layer_dump` of variant `v` on the tile of CROP (checkout `src`)."""
  model = f'{src}/zoom_enhance/assets/default_bundle/zoom_enhance_{v}.tflite'
  photo = f'{src}/zoom_enhance/assets/chelsea.jpg'
  return ['-m', 'zoom_enhance.runtime.layer_dump', model, photo, out, '--crop', ','.join(map(str, CROP))]


def _layers(emulated, env, root: str, out: str, v: str) -> dict:
  _run(emulated + _layer_dump_args(SRC, v, f'{OUT}/layers_{v}.npz'), env=env)
  here = os.path.join(out, f'layers_{v}_x86_64.npz')
  _run([sys.executable] + _layer_dump_args(REPO, v, here), env=dict(os.environ, PYTHONPATH=REPO))
  return compare_layers(root + f'{OUT}/layers_{v}.npz', here)


def verdict(r: dict) -> str:
  """'identical', 'within' MIN_PSNR_DB of x86-64, or 'differs'."""
  if r['identical']:
    return 'identical'
  return 'within' if r['psnr_db'] >= MIN_PSNR_DB else 'differs'


def format_report(report: dict) -> str:
  lines = [
    f'{report["command"]} ({report["output_size"][0]}x{report["output_size"][1]}), '
    f'{report["arm64"]["machine"]} ({report["arm64"]["cpu"]}) under {report["arm64"]["emulator"]} '
    f'against {report["here"]["machine"]}:',
    f'{"variant":10s} {"PSNR dB":>9s} {"to float":>13s} {"verdict":>11s} {"arm64 s":>8s} {"here s":>7s}'
    '  arm64 runtime',
  ]
  for v, r in report['variants'].items():
    db = 'identical' if r['identical'] else f'{r["psnr_db"]:.2f}'
    ref = r.get('vs_reference') or {}
    to_float = '/'.join(
      'inf' if ref.get(k) is None else f'{ref[k]:.1f}' for k in ('arm64_psnr_db', 'here_psnr_db')
    )
    lines.append(
      f'{v:10s} {db:>9s} {to_float:>13s} {r["verdict"]:>11s} {r["arm64"]["enhance_seconds"]:8.2f} '
      f'{r["here"]["enhance_seconds"]:7.2f}  {r["arm64"]["runtime"]}'
    )
  lines.append(
    "PSNR: arm64 result against x86-64's; to float: each against the float model here (arm64/x86-64); "
    f'verdict: identical, or within {MIN_PSNR_DB:g} dB'
  )
  lines.append('seconds: the enhancement as the runtime reports it; arm64 ' + report['arm64']['seconds_are'])
  for v, r in report['variants'].items():
    if 'layers' in r:
      lay = r['layers']
      lines.append(f'{v} layer by layer ({lay["how"]}): {lay["ops_differing"]} of {lay["ops"]} ops differ')
      for what, o in [('first', lay['first_differing']), ('output', lay['output'])] + [
        ('widest', o) for o in lay['widest']
      ]:
        if o:
          lines.append(
            f'  {what:7s} {o["op"]:24s} {o["dtype"]:8s} {o["share_differing"]:7.2%} of values differ, '
            f'by at most {o["max_difference"]:g}'
          )
  return '\n'.join(lines)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument(
    '--root',
    default=None,
    help='the arm64 root (default: $ZOOM_ENHANCE_ARM64_ROOT, else ~/.cache/zoom-enhance/arm64-bookworm)',
  )
  p.add_argument('--out', default='arm64-report', help='folder for the results and report.json')
  p.add_argument('--variants', default='fp16,int8,int8_full', help='bundle variants to run, comma-separated')
  p.add_argument('--threads', type=int, default=2)
  p.add_argument(
    '--layers',
    default='',
    help='variants to compare op by op too, through the built-in kernels (all tensors kept: no XNNPACK)',
  )
  p.add_argument(
    '--cpu', default=DEFAULT_CPU, help=f'the CPU qemu emulates: {", ".join(CPU_PARTS)} (default %(default)s)'
  )
  p.add_argument('--qemu', default=QEMU, help=f'a static qemu-aarch64 to emulate with (default {QEMU})')
  p.add_argument('--mirror', help='Debian archive for debootstrap (default: the one the apt sources name)')
  mode = p.add_mutually_exclusive_group()
  mode.add_argument('--setup-only', action='store_true', help='build the root (needs the network) and stop')
  mode.add_argument('--no-setup', action='store_true', help='run offline on a root built before')
  args = p.parse_args(argv)
  root = os.path.abspath(args.root or default_root())
  try:
    if os.geteuid() != 0:
      raise Failure('needs root, for chroot (and debootstrap): run it with sudo')
    missing = [t for t in ('chroot', 'debootstrap', 'dpkg-deb') if not shutil.which(t)]
    if args.qemu == QEMU and not os.path.exists(QEMU):
      missing.append(QEMU)
    if missing:
      raise Failure(f'missing {", ".join(missing)}: apt-get install qemu-user-static debootstrap')
    if not os.path.isfile(args.qemu):
      raise Failure(f'--qemu {args.qemu}: no such file (a static qemu-aarch64)')
    if not args.no_setup:
      print(f'arm64 root {root}: {setup(root, args.mirror, args.qemu)}', flush=True)
    if args.setup_only:
      return 0
    variants = [v for v in args.variants.split(',') if v]
    layers = [v for v in args.layers.split(',') if v]
    report = run(root, os.path.abspath(args.out), variants, args.threads, layers, args.cpu, args.qemu)
  except Failure as e:
    print(f'arm64_emulated: error: {e}', file=sys.stderr)
    return 1
  print(format_report(report))
  print(f'wrote {os.path.join(os.path.abspath(args.out), "report.json")}')
  bad = [v for v, r in report['variants'].items() if r['verdict'] == 'differs']
  if bad:
    print(f'arm64_emulated: error: the arm64 result differs from x86-64: {", ".join(bad)}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
