"""sample, export and save-weights: what a training or distillation checkpoint becomes."""

import logging
import os

from zoom_enhance.cli import flags


def register(commands) -> None:
  p = commands.add_parser(
    'sample',
    parents=[flags.checkpoint()],
    description='Enhance one photo with a training checkpoint (JAX).',
    help='enhance one photo with a training checkpoint (JAX)',
  )
  p.add_argument('-i', '--input', dest='source', metavar='INPUT', required=True, help='input image')
  flags.output(p, 'output image (PNG, JPEG, WebP, BMP or TIFF)')
  flags.scale_or_size(p, 4.0, 'upscale factor (default 4)')
  flags.steps(p, None, "DDIM steps (default: the checkpoint's: a distilled student's, else the config's)")
  flags.seed(p)
  flags.max_pixels(p, 4_000_000, 'refuse outputs larger than this (no tiling on this path)')
  p.set_defaults(run=run_sample)

  p = commands.add_parser(
    'export',
    parents=[flags.checkpoint()],
    description='Export a checkpoint to a LiteRT bundle (TFLite models + manifest.json), checked '
    'against JAX.',
    help='export a checkpoint to a LiteRT bundle',
  )
  p.add_argument('--out', required=True, help='bundle directory to write')
  flags.quant(p, 'fp32,fp16,int8', 'comma-separated variants: fp32, fp16, int8 (dynamic range), int8_full')
  flags.tile(p, 128, 'output tile side in pixels')
  p.add_argument('--overlap', type=int, default=None, help='tile overlap (default tile/8)')
  flags.steps(p, None, "sampler steps (default: the checkpoint's: a distilled student's, else the config's)")
  p.add_argument(
    '--photos',
    default='',
    help='folder of real photos for calibration and parity tiles (default: the training '
    "config's, else a packaged photo)",
  )
  flags.step(
    p,
    "checkpoint step to export (default: the latest); with a distillation, a round's last step exports "
    "that round's student",
  )
  p.add_argument(
    '--noise-temperature',
    type=float,
    default=1.0,
    help="scale of the sampler's starting noise, baked into the models: 1 samples, lower "
    'trades generated texture for fidelity (default 1)',
  )
  flags.detail(
    p,
    1.0,
    "the bundle's default detail (enhance --detail): the scale of the noise the runtime feeds, "
    '0 fidelity, 1 all the drawn detail (default 1)',
  )
  p.add_argument(
    '--cpu-quant',
    default='fp32',
    help='variant the runtime runs on the CPU when none is asked for (default fp32)',
  )
  p.add_argument(
    '--npu',
    action='store_true',
    help="also compile for phone NPUs (Google Tensor, Qualcomm, MediaTek) with LiteRT's AOT "
    'compiler, for each vendor whose SDK package is installed',
  )
  p.set_defaults(run=run_export)

  p = commands.add_parser(
    'save-weights',
    parents=[flags.checkpoint()],
    description="Write a checkpoint's EMA parameters and config to a weights directory (params.msgpack, "
    'config.json, weights.json): what ships in the repository, and what --config.train.init_from, '
    '--config.distill.teacher_workdir and export --workdir accept in place of a workdir.',
    help="write a checkpoint's EMA parameters and config to a weights directory",
  )
  p.add_argument('--out', required=True, help='weights directory to write (replaced if it exists)')
  flags.step(p, 'checkpoint step (default: the latest)')
  p.set_defaults(run=run_save_weights)


def run_sample(args) -> int:
  flags.at_least_one(steps=args.steps, max_pixels=args.max_pixels)
  from zoom_enhance.training import sample

  sample.sample_photo(
    args.workdir,
    args.source,
    args.output,
    scale=args.scale,
    size=args.size,
    steps=args.steps,
    seed=args.seed,
    max_pixels=args.max_pixels,
  )
  return 0


def run_export(args) -> int:
  flags.at_least_one(tile=args.tile, steps=args.steps)
  from export_tflite import export

  manifest = export.export(
    args.workdir,
    args.out,
    quants=flags.names(args.quant),
    tile=args.tile,
    steps=args.steps,
    overlap=args.overlap,
    photos=args.photos,
    npu=args.npu,
    step=args.step,
    cpu_quant=args.cpu_quant,
    noise_temperature=args.noise_temperature,
    detail=args.detail,
  )
  models = ', '.join(manifest['models'])
  logging.info('wrote %s: %d steps, tile %d, models %s', args.out, manifest['steps'], args.tile, models)
  return 0


def run_save_weights(args) -> int:
  from zoom_enhance.training import checkpoint
  from zoom_enhance.training import weights

  params, config, step = checkpoint.restore_params(args.workdir, args.step)
  position = checkpoint.read_position(args.workdir, step)
  info = weights.write(args.out, params, config, source=args.workdir, step=step, position=position)
  size = os.path.getsize(os.path.join(args.out, weights.PARAMS))
  logging.info(
    'wrote %s: %s parameters of step %d (%s bytes)', args.out, f'{info["parameters"]:,}', step, f'{size:,}'
  )
  return 0
