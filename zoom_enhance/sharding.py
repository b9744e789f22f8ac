"""Every mesh, sharding and multi-host decision of the project lives here.

The mesh has two axes: DATA splits the batch only; FSDP splits the batch and
also each parameter (and its optimizer/EMA copies) along its largest divisible
dimension, ZeRO-3 style. Sizes come from `config.mesh`.
"""

import itertools
import logging
import os
import socket
import sys
import threading

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from zoom_enhance import errors

DATA = 'data'
FSDP = 'fsdp'
BATCH_AXES = (DATA, FSDP)


class DistributedError(errors.ZoomEnhanceError):
  """The multi-process runtime could not start."""


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None, *,
                           init_timeout: int = 300, heartbeat_timeout: int = 100,
                           shutdown_timeout: int = 300, on_timeout=None):
  """Joins the multi-controller runtime when launched on several processes.

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
    raise DistributedError(f'--process_id={process_id} is not in [0, {num_processes}) '
                           f'(--num_processes={num_processes})')
  if jax.config.jax_platforms in (None, '', 'cpu') and (num_processes or 0) > 1:
    # CPU collectives across processes need gloo.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  watchdog = threading.Timer(init_timeout, lambda: (on_timeout or _exit_with)(
      _join_failure(coordinator_address, num_processes, process_id, init_timeout)))
  watchdog.daemon = True
  watchdog.start()
  try:
    # JAX's own deadline comes later, so the watchdog's clear message comes first.
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               initialization_timeout=2 * init_timeout + 30,
                               heartbeat_timeout_seconds=heartbeat_timeout,
                               shutdown_timeout_seconds=shutdown_timeout)
  except (RuntimeError, ValueError) as e:  # e.g. the coordinator's port is taken
    raise DistributedError(f'cannot join the distributed runtime at {coordinator_address}: '
                           f'{str(e).strip().splitlines()[0]}') from e
  finally:
    watchdog.cancel()
  logging.info('process %d of %d joined the distributed runtime',
               jax.process_index(), jax.process_count())
  return True


def _join_failure(address, num_processes, process_id, timeout) -> str:
  """Why the processes did not all join: nobody at the address, or someone missing."""
  who = f'process {process_id} of {num_processes}' if num_processes else 'this process'
  head = f'{who} could not join the distributed runtime at {address} within {timeout} s: '
  if address and process_id != 0 and not _answers(address):
    return head + (f'nothing answers at {address} (is process 0 running there, '
                   'and is --coordinator_address right?)')
  return head + (f'not all {num_processes or "expected"} processes joined (were they all '
                 'started, with the same --num_processes and distinct --process_id?)')


def _answers(address: str) -> bool:
  host, _, port = address.rpartition(':')
  try:
    with socket.create_connection((host.strip('[]'), int(port)), timeout=2):
      return True
  except (OSError, ValueError):
    return False


def _exit_with(message: str):
  print(f'error: {message}', file=sys.stderr, flush=True)
  os._exit(1)  # from the watchdog thread: the main thread is blocked inside JAX


def make_mesh(mesh_config) -> Mesh:
  """A (data, fsdp) mesh over all devices; one size may be -1 (the rest)."""
  n = jax.device_count()
  data, fsdp = int(mesh_config.data), int(mesh_config.fsdp)
  if data == -1 and fsdp == -1:
    raise errors.ConfigError('config.mesh: only one of data and fsdp may be -1')
  if data == -1:
    data = n // fsdp if fsdp > 0 and n % fsdp == 0 else 0
  if fsdp == -1:
    fsdp = n // data if data > 0 and n % data == 0 else 0
  if data * fsdp != n:
    raise errors.ConfigError(f'config.mesh data={mesh_config.data} x fsdp={mesh_config.fsdp} '
                     f'does not cover the {n} devices')
  devices = np.asarray(jax.devices()).reshape(data, fsdp)
  return Mesh(devices, (DATA, FSDP))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _leaf_spec(shape, fsdp_size: int) -> P:
  """Shards a leaf's largest dimension divisible by the FSDP size, if any."""
  if fsdp_size == 1 or not shape:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0 and shape[dim] >= fsdp_size:
      spec = [None] * len(shape)
      spec[dim] = FSDP
      return P(*spec)
  return P()


def tree_shardings(mesh: Mesh, abstract_tree):
  """Shardings for a pytree of arrays (e.g. jax.eval_shape of the state)."""
  fsdp_size = mesh.shape[FSDP]
  return jax.tree.map(
      lambda leaf: NamedSharding(mesh, _leaf_spec(tuple(leaf.shape), fsdp_size)),
      abstract_tree)


def check_batch_size(global_batch_size: int, mesh: Mesh):
  n = mesh.devices.size
  if global_batch_size % n or global_batch_size % jax.process_count():
    raise errors.ConfigError(f'config.train.batch_size={global_batch_size} must be divisible by the '
                     f'{n} devices and {jax.process_count()} processes')


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's share of the batch into global jax.Arrays."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


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
  """Waits until every process gets here (a collective)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


# Gloo gives the first collective over a set of devices only 30 s to gather
# every process, so processes that reach it far apart (one compiling, another
# reading the compilation cache) would fail. This barrier of the coordination
# service waits much longer, and a process that dies meanwhile is still found
# by its missing heartbeat.
_WAIT_TIMEOUT_S = 3600
_waits = itertools.count()


def wait_for_all(name: str):
  """Waits until every process gets here, through the coordination service (no collective)."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed
  # Ids must be unique; every process calls this in the same order.
  distributed.global_state.client.wait_at_barrier(f'{name}:{next(_waits)}', _WAIT_TIMEOUT_S * 1000)
