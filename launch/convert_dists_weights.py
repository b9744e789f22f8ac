"""DISTS's learned weights (alpha, beta) from the reference package to the .npz that zoom_enhance ships.

  python3 -m venv /tmp/refvenv && . /tmp/refvenv/bin/activate
  pip install torch==2.13.0 numpy==2.4.6 && pip install --no-deps DISTS-pytorch==0.1
  python launch/convert_dists_weights.py

Reads DISTS_pytorch/weights.pt of the installed DISTS-pytorch (Ding et al.'s
package; a torch pickle of {'alpha', 'beta'}, each of shape (1, 1475, 1, 1):
one weight per channel of the six stages, 3 + 64 + 128 + 256 + 512 + 512).
Writes zoom_enhance/assets/dists_alpha_beta.npz (or --out): 'alpha' and
'beta', float32 (1475,), as stored (zoom_enhance.evaluation.dists divides
both by their joint sum, as the reference does). Run once; needs torch, which
zoom_enhance itself does not.
"""

import argparse
import importlib.util
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(__file__), '..', 'zoom_enhance', 'assets', 'dists_alpha_beta.npz')
CHANNELS = (3, 64, 128, 256, 512, 512)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', default=os.path.normpath(OUT))
  args = parser.parse_args()
  package = importlib.util.find_spec('DISTS_pytorch').submodule_search_locations[0]
  source = os.path.join(package, 'weights.pt')
  weights = torch.load(source, map_location='cpu')
  out = {k: weights[k].detach().numpy().astype(np.float32).reshape(-1) for k in ('alpha', 'beta')}
  assert all(v.shape == (sum(CHANNELS),) for v in out.values()), {k: v.shape for k, v in out.items()}
  np.savez(args.out, **out)
  alpha, beta = out['alpha'].sum(), out['beta'].sum()
  print(
    f'{source} -> {args.out}: alpha sums to {alpha:.6f}, beta to {beta:.6f} (together {alpha + beta:.6f})'
  )


if __name__ == '__main__':
  main()
