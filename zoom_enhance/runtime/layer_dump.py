"""Every op's output tensor of one tile, for comparing two machines (or two LiteRT builds) op by op.

  python -m zoom_enhance.runtime.layer_dump MODEL PHOTO OUT.npz --crop X,Y,W,H [--scale 4] [--seed 0]

The tile is the one `zoom-enhance enhance PHOTO --crop X,Y,W,H --scale S`
runs where the result is one tile of the model's size (a 48x48 crop at x4
for a 192-px model): the crop upsampled bicubic, the seed's starting noise,
the factor, full detail. It runs through the classic interpreter's built-in
kernels with every tensor kept (XNNPACK, which the runtime uses, keeps its
partition's tensors to itself), so its numbers show where two machines part,
not what the runtime outputs. launch/arm64_emulated.py --layers runs it under
an emulated arm64 CPU and here.
"""

import argparse
import io
import sys

import numpy as np

from zoom_enhance import errors
from zoom_enhance.imaging import files
from zoom_enhance.imaging import photo as photo_lib
from zoom_enhance.imaging import resample
from zoom_enhance.runtime import backends
from zoom_enhance.runtime import bundle
from zoom_enhance.runtime import tiling


class LayerDumpError(errors.ZoomEnhanceError):
  """The dump cannot run on this model, photo or crop."""


def tile_inputs(photo: str, crop, scale: float = 4.0, seed: int = 0) -> dict:
  """The model's inputs for the one tile of `photo`'s `crop` (x, y, w, h) enlarged `scale` times."""
  x, y, w, h = (int(v) for v in crop)
  rgb = photo_lib.open_photo(photo).rgb
  if w < 1 or h < 1 or x < 0 or y < 0 or x + w > rgb.shape[1] or y + h > rgb.shape[0]:
    raise LayerDumpError(f'--crop {x},{y},{w},{h}: not inside the {rgb.shape[1]}x{rgb.shape[0]} photo')
  out_h, out_w = round(h * scale), round(w * scale)
  return {
    'lr_up': resample.lr_up(rgb[y : y + h, x : x + w], (out_h, out_w))[None],
    'noise': tiling.NoiseField(seed).region(0, 0, out_h, out_w)[None],
    'scale': np.array([scale], np.float32),
    'detail': np.ones((1,), np.float32),
  }


def dump_layers(model: str, photo: str, out: str, crop, *, scale: float = 4.0, seed: int = 0) -> int:
  """Writes the output tensors of every op of `model` on one tile (tile_inputs) to the .npz file `out`,
  keyed 'NNNN OP_NAME' in the graph's order; returns how many there are."""
  feed = tile_inputs(photo, crop, scale, seed)
  try:
    li = backends.interpreter_module()
  except backends.NoRuntime as e:
    raise LayerDumpError(str(e)) from None
  try:
    it = li.Interpreter(
      model_path=model,
      experimental_preserve_all_tensors=True,
      experimental_op_resolver_type=li.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
  except (ValueError, RuntimeError) as e:
    raise LayerDumpError(f'{model}: {errors.first_line(e)}') from None
  for d in it.get_input_details():
    try:
      slot = backends.input_slot(d['name'])
    except bundle.BundleError as e:
      raise LayerDumpError(f'{model}: {e}') from None
    shape = tuple(int(v) for v in d['shape'])
    if shape != feed[slot].shape:
      raise LayerDumpError(
        f'{model}: takes {slot} of {shape}, the crop at x{scale:g} gives {feed[slot].shape}: '
        'choose a crop whose result is one tile of the model'
      )
    it.set_tensor(d['index'], feed[slot])
  it.invoke()
  tensors = {}
  for op in it._get_ops_details():
    for i in op['outputs']:
      tensors[f'{op["index"]:04d} {op["op_name"]}'] = it.get_tensor(i)
  buffer = io.BytesIO()
  np.savez(buffer, **tensors)
  files.write_atomic(out, buffer.getvalue())
  return len(tensors)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(
    prog='python -m zoom_enhance.runtime.layer_dump', description=__doc__.split('\n')[0]
  )
  p.add_argument('model', help='a .tflite model of a bundle')
  p.add_argument('photo', help='the photo')
  p.add_argument('out', help='.npz file to write')
  p.add_argument('--crop', required=True, help='X,Y,W,H in pixels of the upright photo')
  p.add_argument('--scale', type=float, default=4.0, help='factor (default 4)')
  p.add_argument('--seed', type=int, default=0, help='seed of the starting noise (default 0)')
  args = p.parse_args(argv)
  try:
    crop = [int(v) for v in args.crop.split(',')]
    if len(crop) != 4:
      raise ValueError
  except ValueError:
    p.error(f'--crop {args.crop}: expected X,Y,W,H in pixels')
  try:
    count = dump_layers(args.model, args.photo, args.out, crop, scale=args.scale, seed=args.seed)
  except errors.USER_ERRORS as e:
    print(f'layer_dump: error: {errors.first_line(e)}', file=sys.stderr)
    return errors.EXIT_FAILED
  print(f'wrote {args.out}: {count} tensors')
  return 0


if __name__ == '__main__':
  sys.exit(main())
