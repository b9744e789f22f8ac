"""Runs one `zoom-enhance` command as N processes on this machine, each with K simulated CPU devices.

  python -m zoom_enhance.training.launcher --num_processes 2 --devices_per_process 2 -- \
      train --config configs/tiny.py --workdir W [--config.x.y=...]

Every process gets --coordinator_address 127.0.0.1:PORT --num_processes N
--process_id I, gloo CPU collectives and K host devices, so together they form
one global mesh of N*K devices: the same code path as several hosts. Output
lines are prefixed with the rank. When a process fails the others are given
`--grace` seconds to stop on their own (errors such as a NaN loss reach every
process at the same step) and are then killed; a process killed by a signal
cannot be waited for, so the others are killed at once. SIGTERM or SIGINT is
passed on as SIGTERM (each process checkpoints and exits 143); a second one
kills. The exit status is 0 if all succeed, 143 if the run was preempted, and
otherwise the first failure's.
"""

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from zoom_enhance.errors import EXIT_PREEMPTED

_DEVICE_FLAG = '--xla_force_host_platform_device_count'


def free_port() -> int:
  """A TCP port on 127.0.0.1 nobody listens on right now."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def child_env(devices: int, base=None) -> dict:
  """The environment of one process: K CPU devices, gloo collectives, unbuffered output."""
  env = dict(os.environ if base is None else base)
  flags = [f for f in env.get('XLA_FLAGS', '').split() if not f.startswith(_DEVICE_FLAG)]
  env['XLA_FLAGS'] = ' '.join(flags + [f'{_DEVICE_FLAG}={devices}'])
  env['JAX_PLATFORMS'] = 'cpu'
  env['JAX_CPU_COLLECTIVES_IMPLEMENTATION'] = 'gloo'
  env['PYTHONUNBUFFERED'] = '1'
  return env


def _die_with_parent():
  """Runs in the child before exec: if the launcher is killed, so is the child (Linux)."""
  try:
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except OSError:
    pass


def _pump(stream, out, prefix: str, lock: threading.Lock):
  for line in iter(stream.readline, b''):
    with lock:
      out.buffer.write(prefix.encode() + line)
      out.buffer.flush()
  stream.close()


def _describe(code: int) -> str:
  if code < 0:
    try:
      return f'killed by {signal.Signals(-code).name}'
    except ValueError:
      return f'killed by signal {-code}'
  return f'exited with status {code}'


def exit_status(codes, first=None) -> int:
  """The launcher's status: 0, 143 (preempted) or that of the first failure (`first`, if known)."""
  failures = [c for c in [first, *codes] if c not in (None, 0, EXIT_PREEMPTED)]
  if failures:
    c = failures[0]
    return 128 - c if c < 0 else c
  return EXIT_PREEMPTED if EXIT_PREEMPTED in codes else 0


def launch(
  command,
  *,
  num_processes: int,
  devices_per_process: int,
  grace: float = 30.0,
  port: int = 0,
  env=None,
  log=None,
) -> int:
  """Runs `command + [distributed flags]` as `num_processes` processes; returns the exit status.

  `command` is a full argv (e.g. [python, -m, zoom_enhance.cli, train, ...]).
  """
  log = log or (lambda msg: print(f'[launcher] {msg}', file=sys.stderr, flush=True))
  address = f'127.0.0.1:{port or free_port()}'
  lock = threading.Lock()
  procs = []
  for rank in range(num_processes):
    argv = [
      *command,
      '--coordinator_address',
      address,
      '--num_processes',
      str(num_processes),
      '--process_id',
      str(rank),
    ]
    # Own session: a terminal's Ctrl-C reaches only the launcher, which passes it on once.
    procs.append(
      subprocess.Popen(
        argv,
        env=child_env(devices_per_process, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_die_with_parent,
      )
    )
    log(f'rank {rank}: pid {procs[-1].pid}')
  log(f'{num_processes} processes x {devices_per_process} devices, coordinator {address}')
  pumps = []
  for rank, p in enumerate(procs):
    for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr)):
      t = threading.Thread(target=_pump, args=(stream, out, f'[rank {rank}] ', lock), daemon=True)
      t.start()
      pumps.append(t)

  signals = []
  previous = {
    s: signal.signal(s, lambda signum, frame: signals.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)
  }
  deadline = None  # when the survivors of a failure get killed
  first = None  # the first exit status seen
  forwarded = 0
  try:
    while any(p.poll() is None for p in procs):
      if len(signals) > forwarded:
        forwarded = len(signals)
        how = signal.SIGTERM if forwarded == 1 else signal.SIGKILL
        log(f'got {signal.Signals(signals[-1]).name}: sending {how.name} to every process')
        _signal_all(procs, how)
      codes = [p.poll() for p in procs]
      done = [(rank, c) for rank, c in enumerate(codes) if c is not None]
      if done and deadline is None:
        rank, first = done[0]
        if first == EXIT_PREEMPTED:
          log(f'rank {rank} was preempted; waiting up to {grace:g} s for the others')
        elif first != 0:
          log(
            f'rank {rank} {_describe(first)}; stopping the others'
            + (' now' if first < 0 else f' (in at most {grace:g} s)')
          )
        # A process killed by a signal leaves the others stuck in a collective.
        deadline = time.monotonic() + (0 if first < 0 else grace)
      if deadline is not None and time.monotonic() >= deadline:
        stuck = [rank for rank, p in enumerate(procs) if p.poll() is None]
        if stuck:
          log(f'killing rank(s) {", ".join(map(str, stuck))}')
        _signal_all(procs, signal.SIGKILL)
        deadline = float('inf')
      time.sleep(0.05)
  finally:
    _signal_all(procs, signal.SIGKILL)  # only those still running (e.g. on an exception here)
    for p in procs:
      p.wait()
    for t in pumps:
      t.join(timeout=5)
    for s, handler in previous.items():
      signal.signal(s, handler)
  codes = [p.returncode for p in procs]
  status = exit_status(codes, first)
  if status:
    log(f'exit status {status} ({", ".join(f"rank {r}: {_describe(c)}" for r, c in enumerate(codes))})')
  return status


def _signal_all(procs, how):
  for p in procs:
    if p.poll() is None:
      try:
        p.send_signal(how)
      except ProcessLookupError:
        pass


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if '--' in argv:
    split = argv.index('--')
    ours, command = argv[:split], argv[split + 1 :]
  else:
    ours, command = argv, []
  p = argparse.ArgumentParser(
    prog='python -m zoom_enhance.training.launcher',
    usage='%(prog)s [-n N] [-k K] [--grace S] [--port P] -- COMMAND [FLAGS ...]',
    description='Run one zoom-enhance command (train, distill, bench-train) as N local processes '
    'with K simulated CPU devices each, on the JAX distributed runtime.',
  )
  p.add_argument('-n', '--num_processes', type=int, default=2, help='processes to start')
  p.add_argument(
    '-k', '--devices_per_process', type=int, default=1, help='simulated CPU devices in each process'
  )
  p.add_argument(
    '--grace',
    type=float,
    default=30.0,
    help='seconds the others get to stop after a process fails, before being killed',
  )
  p.add_argument('--port', type=int, default=0, help='coordinator port (default: a free one)')
  args = p.parse_args(ours)
  if not command:
    p.error('give the zoom-enhance command after --, e.g. -- train --config configs/tiny.py --workdir W')
  if args.num_processes < 1 or args.devices_per_process < 1:
    p.error('--num_processes and --devices_per_process must be positive')
  return launch(
    [sys.executable, '-m', 'zoom_enhance.cli', *command],
    num_processes=args.num_processes,
    devices_per_process=args.devices_per_process,
    grace=args.grace,
    port=args.port,
  )


if __name__ == '__main__':
  sys.exit(main())
