"""Every mesh and sharding decision of the project lives here (process start-up is in distributed.py).

The mesh has two axes: DATA splits the batch only; FSDP splits the batch and
also each parameter (and its optimizer/EMA copies) along its largest divisible
dimension, ZeRO-3 style. Sizes come from `config.mesh`.
"""

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from zoom_enhance import errors

DATA = 'data'
FSDP = 'fsdp'
BATCH_AXES = (DATA, FSDP)


def make_mesh(mesh_config) -> Mesh:
  """A (data, fsdp) mesh over all devices; one size may be -1 (the rest)."""
  n = jax.device_count()
  data, fsdp = int(mesh_config.data), int(mesh_config.fsdp)
  if data == -1:
    data = n // fsdp if fsdp > 0 and n % fsdp == 0 else 0
  if fsdp == -1:
    fsdp = n // data if data > 0 and n % data == 0 else 0
  if data * fsdp != n:
    raise errors.ConfigError(
      f'config.mesh data={mesh_config.data} x fsdp={mesh_config.fsdp} does not cover the {n} devices'
    )
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
    lambda leaf: NamedSharding(mesh, _leaf_spec(tuple(leaf.shape), fsdp_size)), abstract_tree
  )


def check_batch_size(global_batch_size: int, mesh: Mesh):
  n = mesh.devices.size
  if global_batch_size % n or global_batch_size % jax.process_count():
    raise errors.ConfigError(
      f'config.train.batch_size={global_batch_size} must be divisible by the '
      f'{n} devices and {jax.process_count()} processes'
    )


def global_batch(local_batch: dict, mesh: Mesh) -> dict:
  """Assembles each process's share of the batch into global jax.Arrays."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
