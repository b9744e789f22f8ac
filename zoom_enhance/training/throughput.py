"""`zoom-enhance bench-train`: training throughput, samples/s of the real train step per model variant."""

import time

import jax
import numpy as np

from zoom_enhance.model import unet
from zoom_enhance.training import distributed
from zoom_enhance.training import sharding
from zoom_enhance.training import train


def measure(config, *, steps: int, warmup: int = 2) -> dict:
  """Times `steps` jitted train steps on a synthetic sharded batch (compile excluded)."""
  compiled = train.compile_training(config, train.Task(config))
  state = compiled.init_fn(jax.random.PRNGKey(0))
  p = config.data.patch_size
  b = config.train.batch_size // jax.process_count()
  rng = np.random.default_rng(0)
  local = {
    'hr': rng.uniform(-1, 1, (b, p, p, 3)).astype(np.float32),
    'lr_up': rng.uniform(-1, 1, (b, p, p, 3)).astype(np.float32),
    'scale': rng.uniform(1, 4, (b,)).astype(np.float32),
  }
  batch = sharding.global_batch(local, compiled.mesh)
  t0 = time.perf_counter()
  step_fn = compiled.step_fn.lower(state, batch, jax.random.PRNGKey(0)).compile()
  distributed.barrier('bench_compiled')
  for i in range(warmup):
    state, metrics = step_fn(state, batch, jax.random.PRNGKey(i))
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for i in range(steps):
    state, metrics = step_fn(state, batch, jax.random.PRNGKey(i))
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - t0
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  return {
    'params': n_params,
    'steps_per_sec': steps / elapsed,
    'samples_per_sec': steps * config.train.batch_size / elapsed,
    'compile_s': compile_s,
  }


def main(
  variants, *, batch_size: int, patch_size: int, steps: int, base_config, dtypes=('float32', 'bfloat16')
):
  """Prints one line per (variant, dtype); in a multi-process run only process 0 prints."""
  say = print if jax.process_index() == 0 else lambda *a, **k: None
  device = jax.devices()[0]
  say(
    f'processes: {jax.process_count()}, devices: {jax.device_count()} x {device.platform} '
    f'({device.device_kind}), global batch {batch_size}, patch {patch_size}x{patch_size}, '
    f'{steps} timed steps'
  )
  for name in variants:
    config = base_config()
    config.model.variant = name
    config.train.batch_size = batch_size
    mult = unet.size_multiple(unet.get_variant(name))
    config.data.patch_size = -(-patch_size // mult) * mult
    for dtype in dtypes:
      config.train.compute_dtype = dtype
      r = measure(config, steps=steps)
      say(
        f'{name:6s} {dtype:9s} {r["params"]:>11,} params  {r["samples_per_sec"]:8.1f} samples/s  '
        f'{r["steps_per_sec"]:6.2f} steps/s  (compile+warm-up {r["compile_s"]:.1f} s)',
        flush=True,
      )
