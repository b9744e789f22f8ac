"""The CPU variant the runtime runs: the shipped bundle's candidates timed through the real engine, cached."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import cpu_variant
from zoom_enhance.runtime import pipeline

DEFAULT = pipeline.DEFAULT_BUNDLE
MANIFEST = bundle.load_manifest(DEFAULT)


@pytest.fixture
def cache(tmp_path, monkeypatch):
  monkeypatch.setenv('ZOOM_ENHANCE_CACHE_DIR', str(tmp_path / 'cache'))
  monkeypatch.delenv('ZOOM_ENHANCE_CPU_VARIANT', raising=False)
  return tmp_path / 'cache' / cpu_variant.CACHE_FILE


def test_candidates_are_the_bundle_default_and_the_variants_close_to_jax():
  keys = cpu_variant.candidates(MANIFEST)
  assert MANIFEST.default_quant['cpu'] in keys
  parity = [MANIFEST.models[k].parity_psnr_db for k in keys]
  assert parity == sorted(parity, reverse=True)
  assert {'fp16', 'int8'} <= set(keys)
  for parity, kept in ((44.9, False), (45.1, True)):
    full = dataclasses.replace(MANIFEST.models['int8_full'], parity_psnr_db=parity)
    models = {**MANIFEST.models, 'int8_full': full}
    assert ('int8_full' in cpu_variant.candidates(dataclasses.replace(MANIFEST, models=models))) == kept


def test_pick_takes_the_fastest_unless_a_closer_variant_is_within_the_margin():
  order = ['fp16', 'int8', 'int8_full']
  assert cpu_variant.pick({'fp16': 13.8, 'int8': 4.9, 'int8_full': 5.2}, order) == 'int8'
  assert cpu_variant.pick({'fp16': 18.0, 'int8': 22.0}, order) == 'fp16'
  assert cpu_variant.pick({'fp16': 5.1, 'int8': 4.9}, order) == 'fp16'  # 4% slower: the closer one stays
  assert cpu_variant.pick({'int8': 5.0, 'int8_full': 4.0}, order) == 'int8_full'


def test_the_log_says_what_was_chosen_and_why():
  """A kept slower candidate is not called the fastest: the tie rule is named, with the fastest."""
  timed = {'fp16': 16.4, 'int8': 16.1}
  kept = cpu_variant.Choice(cpu_variant.pick(timed, ['fp16', 'int8']), timed, 'measured')
  assert kept.variant == 'fp16'
  assert kept.describe() == (
    'fp16: within 2% of the fastest (int8) and closer to JAX (measured; ms per tile: int8 16.1, fp16 16.4)'
  )
  timed = {'fp16': 23.0, 'int8': 6.2}
  fastest = cpu_variant.Choice(cpu_variant.pick(timed, ['fp16', 'int8']), timed, 'measured')
  assert fastest.describe() == 'int8, the fastest on this CPU (measured; ms per tile: int8 6.2, fp16 23.0)'


@pytest.mark.parametrize(
  'tile_ms, chosen', [({'fp16': 16.4, 'int8': 16.1}, 'fp16'), ({'fp16': 9.0, 'int8': 4.0}, 'int8')]
)
def test_the_runtime_runs_the_variant_the_timings_choose(cache, monkeypatch, tile_ms, chosen):
  """Timings injected in place of this machine's: the engine runs their choice and says why."""
  monkeypatch.setattr(cpu_variant, 'measure', lambda bundle_dir, manifest, keys, threads: dict(tile_ms))
  with pipeline.Enhancer(accelerator='cpu', threads=2) as e:
    assert e.engine.variant == chosen
    assert e.engine.choice == cpu_variant.Choice(chosen, tile_ms, 'measured').describe()


def test_measured_once_through_the_engine_then_read_from_the_cache(cache):
  first = cpu_variant.choose(DEFAULT, MANIFEST, threads=2)
  assert first.how == 'measured'
  assert set(first.tile_ms) == set(cpu_variant.candidates(MANIFEST))
  assert all(ms > 0 for ms in first.tile_ms.values())
  assert first.variant == cpu_variant.pick(first.tile_ms, cpu_variant.candidates(MANIFEST))
  assert first.tile_ms[first.variant] <= min(first.tile_ms.values()) * (1 + cpu_variant.TIE_MARGIN)
  data = json.loads(cache.read_text())
  (entry,) = data['entries'].values()
  assert entry['variant'] == first.variant and entry['threads'] == 2
  assert entry['cpu'] == cpu_variant.cpu_identity()
  assert not [p for p in os.listdir(cache.parent) if p != cpu_variant.CACHE_FILE]  # no temporary file left

  again = cpu_variant.choose(DEFAULT, MANIFEST, threads=2)
  assert again.how.startswith('cached in') and (again.variant, again.tile_ms) == (
    first.variant,
    first.tile_ms,
  )
  # Another thread count is another measurement, kept beside the first.
  assert cpu_variant.choose(DEFAULT, MANIFEST, threads=1).how == 'measured'
  assert len(json.loads(cache.read_text())['entries']) == 2
  assert cpu_variant.choose(DEFAULT, MANIFEST, threads=2, refresh=True).how == 'measured'


def test_a_broken_or_unwritable_cache_only_costs_a_measurement(cache):
  cache.parent.mkdir(parents=True)
  cache.write_text('{"entries": {"x": ')  # cut short, as by a crash of an older writer
  assert cpu_variant.choose(DEFAULT, MANIFEST, threads=2).how == 'measured'
  assert json.loads(cache.read_text())['format'] == 1
  cache.unlink()
  cache.mkdir()  # a directory where the file should go: the rename fails
  choice = cpu_variant.choose(DEFAULT, MANIFEST, threads=2)
  assert choice.how == 'measured' and choice.variant in cpu_variant.candidates(MANIFEST)


def test_the_runtime_runs_the_measured_variant_unless_told_otherwise(cache, monkeypatch):
  with pipeline.Enhancer(accelerator='cpu', threads=2) as e:
    (measured,) = json.loads(cache.read_text())['entries'].values()
    assert e.engine.variant == measured['variant']
    said = cpu_variant.Choice(measured['variant'], measured['tile_ms'], 'measured').describe()
    assert e.engine.choice == said
  with pipeline.Enhancer(accelerator='cpu', threads=2, quant='fp16') as e:
    assert e.engine.variant == 'fp16' and e.engine.choice == ''
  monkeypatch.setenv('ZOOM_ENHANCE_CPU_VARIANT', 'bundle')
  with pipeline.Enhancer(accelerator='cpu', threads=2) as e:
    assert (
      e.engine.variant == MANIFEST.default_quant['cpu']
      and e.engine.choice == f'{e.engine.variant} (bundle default)'
    )


def test_the_command_line_says_which_variant_and_why(cache, tmp_path):
  out = tmp_path / 'o.png'
  src = os.path.join(os.path.dirname(pipeline.__file__), '..', 'assets', 'chelsea.jpg')
  cmd = [sys.executable, '-m', 'zoom_enhance.cli', 'enhance', src, '--crop', '0,0,32,32', '--scale', '2']
  cmd += ['--accelerator', 'cpu', '--threads', '2', '-o', str(out), '-v']
  runs = [subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ)) for _ in range(2)]
  assert [r.returncode for r in runs] == [0, 0], runs[0].stderr[-2000:]
  (measured,) = json.loads(cache.read_text())['entries'].values()
  said = cpu_variant.Choice(measured['variant'], measured['tile_ms'], 'measured').describe()
  assert 'cpu variant: measured' in runs[0].stderr and said in runs[0].stderr
  assert 'cpu variant: measured' not in runs[1].stderr and f'(cached in {cache}' in runs[1].stderr
