"""Multi-process runs: joining the JAX distributed runtime, barriers, agreement between processes, preemption.

Single-process runs skip all of it: every function here is then trivial.
Barriers go through the coordination service (Orbax's public barrier API)
rather than a collective, because gloo gives the first collective over a set
of devices only 30 s to gather every process. Preemption (SIGTERM to any
process) is agreed through JAX's preemption sync manager where the
distributed runtime runs one, so every process saves the same step.
"""

import itertools
import logging
import os
import signal
import socket
import sys
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp

from zoom_enhance import errors

# How long a barrier waits: processes reach them far apart (one compiling,
# another reading the compilation cache); a process that dies meanwhile is
# still found by its missing heartbeat.
BARRIER_TIMEOUT_S = 3600
# Barrier keys must be unique: each gets the count of barriers passed before it.
_barriers = itertools.count()


class DistributedError(errors.ZoomEnhanceError):
  """The multi-process runtime could not start."""


def initialize(
  coordinator_address=None,
  num_processes=None,
  process_id=None,
  *,
  init_timeout: int = 300,
  heartbeat_timeout: int = 100,
  shutdown_timeout: int = 300,
  on_timeout=None,
) -> bool:
  """Joins the multi-controller runtime when launched on several processes; True if it did.

  Explicit arguments win; otherwise JAX auto-detects SLURM, Cloud TPU pods and
  the JAX_COORDINATOR_ADDRESS environment (ZOOM_ENHANCE_DISTRIBUTED=1 forces
  auto-detection). Single-process runs skip this.
  Must run before anything touches the devices.

  If the processes have not all joined after `init_timeout` seconds,
  `on_timeout(message)` is called from a watchdog thread (default: print the
  message and exit with status 1): JAX itself would abort with a stack trace.
  A process that sends no heartbeat for `heartbeat_timeout` seconds is taken
  for dead and the others stop; `shutdown_timeout` bounds the wait for the
  others at exit.
  """
  explicit = coordinator_address is not None
  slurm = int(os.environ.get('SLURM_NTASKS', '1')) > 1
  tpu_pod = ',' in os.environ.get('TPU_WORKER_HOSTNAMES', '')
  env = bool(os.environ.get('JAX_COORDINATOR_ADDRESS'))
  forced = os.environ.get('ZOOM_ENHANCE_DISTRIBUTED') == '1'  # set by launch/tpu_pod.sh
  if not (explicit or slurm or tpu_pod or env or forced):
    return False
  if explicit and (num_processes is None or process_id is None):
    raise DistributedError('--coordinator_address needs --num_processes and --process_id')
  if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
    raise DistributedError(
      f'--process_id={process_id} is not in [0, {num_processes}) (--num_processes={num_processes})'
    )
  if jax.config.jax_platforms in (None, '', 'cpu') and (num_processes or 0) > 1:
    # CPU collectives across processes need gloo.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  watchdog = threading.Timer(
    init_timeout,
    lambda: (on_timeout or _exit_with)(
      _join_failure(coordinator_address, num_processes, process_id, init_timeout)
    ),
  )
  watchdog.daemon = True
  watchdog.start()
  try:
    # JAX's own deadline comes later, so the watchdog's clear message comes first.
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      initialization_timeout=2 * init_timeout + 30,
      heartbeat_timeout_seconds=heartbeat_timeout,
      shutdown_timeout_seconds=shutdown_timeout,
    )
  except (RuntimeError, ValueError) as e:  # e.g. the coordinator's port is taken
    raise DistributedError(
      f'cannot join the distributed runtime at {coordinator_address}: {errors.first_line(e)}'
    ) from e
  finally:
    watchdog.cancel()
  logging.info('process %d of %d joined the distributed runtime', jax.process_index(), jax.process_count())
  return True


def start(
  prog: str,
  *,
  coordinator_address=None,
  num_processes=None,
  process_id=None,
  init_timeout: int = 300,
  heartbeat_timeout: int = 100,
  shutdown_timeout: int = 300,
) -> bool:
  """`initialize` for a command: start-up failures in one line under `prog`; only process 0 logs INFO."""

  def on_timeout(message):
    print(f'{prog}: error: {message}', file=sys.stderr, flush=True)
    os._exit(errors.EXIT_FAILED)  # from the watchdog thread: the main thread is stuck inside JAX

  joined = initialize(
    coordinator_address,
    num_processes,
    process_id,
    init_timeout=init_timeout,
    heartbeat_timeout=heartbeat_timeout,
    shutdown_timeout=shutdown_timeout,
    on_timeout=on_timeout,
  )
  if joined and not is_main_process():
    logging.getLogger().setLevel(logging.WARNING)
  return joined


def _join_failure(address, num_processes, process_id, timeout) -> str:
  """Why the processes did not all join: nobody at the address, or someone missing."""
  who = f'process {process_id} of {num_processes}' if num_processes else 'this process'
  head = f'{who} could not join the distributed runtime at {address} within {timeout} s: '
  if address and process_id != 0 and not _answers(address):
    return head + (
      f'nothing answers at {address} (is process 0 running there, and is --coordinator_address right?)'
    )
  return head + (
    f'not all {num_processes or "expected"} processes joined (were they all '
    'started, with the same --num_processes and distinct --process_id?)'
  )


def _answers(address: str) -> bool:
  host, _, port = address.rpartition(':')
  try:
    with socket.create_connection((host.strip('[]'), int(port)), timeout=2):
      return True
  except (OSError, ValueError):
    return False


def _exit_with(message: str):
  print(f'error: {message}', file=sys.stderr, flush=True)
  os._exit(errors.EXIT_FAILED)  # from the watchdog thread: the main thread is blocked inside JAX


def exit_after_collective_failure(prog: str, err: Exception):
  """A multi-process step failed, nearly always because another process died: one line, exit now."""
  print(
    f'{prog}: error: process {jax.process_index()}: a step across {jax.process_count()} '
    f'processes failed (did another process die?): {errors.first_line(err)}',
    file=sys.stderr,
    flush=True,
  )
  sys.stdout.flush()
  # Not sys.exit: JAX's exit handler would wait at a shutdown barrier for the dead process.
  os._exit(errors.EXIT_FAILED)


def is_main_process() -> bool:
  return jax.process_index() == 0


def any_process(flag: bool) -> bool:
  """True if `flag` is true on any process (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils

  return bool(np.any(multihost_utils.process_allgather(np.array([bool(flag)]))))


def all_processes(flag: bool) -> bool:
  """True if `flag` is true on every process (a collective)."""
  return not any_process(not flag)


def barrier(name: str):
  """Waits until every process gets here, through the coordination service (no collective).

  Every process must pass the same names in the same order.
  """
  if jax.process_count() > 1:
    key = f'zoom_enhance:{name}:{next(_barriers)}'
    ocp.multihost.get_barrier_sync_fn()(key=key, timeout_ms=BARRIER_TIMEOUT_S * 1000)


class Preemption:
  """SIGTERM (a preemption notice, which may reach only some processes) as a request to save and stop.

  `reached(step)` is True on every process at the same step once any of them
  got the notice. Multi-process runs use JAX's preemption sync manager, which
  the distributed runtime notifies on SIGTERM; a single process catches the
  signal itself.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    if jax.process_count() == 1:
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def reached(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils

    return bool(multihost_utils.reached_preemption_sync_point(step))

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
