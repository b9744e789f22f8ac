"""Every mesh, sharding and multi-host decision of the project lives here.

The mesh has two axes: DATA splits the batch only; FSDP splits the batch and
also each parameter (and its optimizer/EMA copies) along its largest divisible
dimension, ZeRO-3 style. Sizes come from `config.mesh`.
"""

import logging
import os

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from zoom_enhance import errors

DATA = 'data'
FSDP = 'fsdp'
BATCH_AXES = (DATA, FSDP)


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
  """Joins the multi-controller runtime when launched on several processes.

  Explicit arguments win; otherwise JAX auto-detects SLURM, Cloud TPU pods and
  the JAX_COORDINATOR_ADDRESS environment (ZOOM_ENHANCE_DISTRIBUTED=1 forces
  auto-detection). Single-process runs skip this.
  Must run before anything touches the devices.
  """
  explicit = coordinator_address is not None
  slurm = int(os.environ.get('SLURM_NTASKS', '1')) > 1
  tpu_pod = ',' in os.environ.get('TPU_WORKER_HOSTNAMES', '')
  env = bool(os.environ.get('JAX_COORDINATOR_ADDRESS'))
  forced = os.environ.get('ZOOM_ENHANCE_DISTRIBUTED') == '1'  # set by launch/tpu_pod.sh
  if not (explicit or slurm or tpu_pod or env or forced):
    return False
  if jax.config.jax_platforms in (None, '', 'cpu') and (num_processes or 0) > 1:
    # CPU collectives across processes need gloo.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  logging.info('process %d of %d joined the distributed runtime',
               jax.process_index(), jax.process_count())
  return True


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
