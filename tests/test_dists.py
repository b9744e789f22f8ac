"""DISTS (zoom_enhance.evaluation.dists) against the reference implementation, and its basic properties.

The reference scores (tests/reference/dists_reference.json) are DISTS_pytorch's
own code on the same VGG16 weights, written by tests/reference/dists_reference.py
in a venv with torch; where torch and DISTS_pytorch are installed, the test also
runs the reference live.
"""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from zoom_enhance.evaluation import dists as dists_lib

REFERENCE = pathlib.Path(__file__).resolve().parent / 'reference' / 'dists_reference.py'
TOLERANCE = 1e-3
HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in ('torch', 'DISTS_pytorch'))


def _load_reference():
  spec = importlib.util.spec_from_file_location('dists_reference', REFERENCE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ref = _load_reference()


def _key(row) -> tuple:
  return (row['photo'], tuple(row['crop']), row['degradation'], row['strength'], row['seed'])


@pytest.fixture(scope='module')
def pairs():
  """Each entry of the reference JSON, with its rebuilt (image, degraded) pair and our DISTS of it."""
  rows = json.loads(REFERENCE.with_suffix('.json').read_text())['pairs']
  assert [_key(row) for row in rows] == [_key(spec) for spec in ref.PAIRS], 'regenerate dists_reference.json'
  out = []
  for row in rows:
    a, b = ref.pair(row)
    assert ref.digest(a, b) == row['sha256'], f'{_key(row)} rebuilt differently: Pillow or numpy changed?'
    out.append(dict(row, images=(a, b), ours=dists_lib.dists(a, b)))
  return out


def test_matches_the_reference(pairs):
  diffs = {_key(p): abs(p['ours'] - p['reference']) for p in pairs}
  assert max(diffs.values()) <= TOLERANCE, diffs


@pytest.mark.skipif(not HAVE_TORCH, reason='torch and DISTS-pytorch not installed')
def test_matches_the_reference_run_live(pairs):
  live = ref.reference_scores([p['images'] for p in pairs])
  for p, score in zip(pairs, live):
    assert abs(score - p['reference']) <= 1e-5, (_key(p), score, p['reference'])
    assert abs(score - p['ours']) <= TOLERANCE, (_key(p), score, p['ours'])


def test_grows_with_the_degradation(pairs):
  for degradation in ('blur', 'noise'):
    series = sorted(
      (p['strength'], p['ours'])
      for p in pairs
      if p['photo'] == 'astronaut' and p['degradation'] == degradation
    )
    assert len(series) == 3
    scores = [s for _, s in series]
    assert 0.02 < scores[0] < scores[1] < scores[2] < 1, (degradation, series)


def test_equal_images_score_zero_and_the_order_does_not_matter(pairs):
  a, b = pairs[0]['images']
  assert abs(dists_lib.dists(a, a)) < 1e-6
  assert abs(dists_lib.dists(b, a) - pairs[0]['ours']) < 1e-6


def test_refuses_what_it_cannot_score():
  img = np.zeros((16, 16, 3), np.uint8)
  with pytest.raises(ValueError, match='uint8'):
    dists_lib.dists(img, img.astype(np.float32))
  with pytest.raises(ValueError, match='same shape'):
    dists_lib.dists(img, img[:8])
  with pytest.raises(ValueError, match='same shape'):
    dists_lib.dists(img[..., 0], img[..., 0])
