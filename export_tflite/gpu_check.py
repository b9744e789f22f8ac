"""Which ops of a .tflite model the TFLite/LiteRT GPU delegate would leave on the CPU.

The rules are those of the delegate's own check (TFLite's
tools/versioning/gpu_compatibility.cc, `CheckGpuDelegateCompatibility`, with
the enhanced broadcasting that its offline check assumes), written out here
because the Python entry points to it do not work in the pinned versions:
`tf.lite.experimental.Analyzer.analyze(gpu_compatibility=True)` in TF 2.21
and LiteRT 2.3's analyzer report every model compatible, UNIQUE and rank-6
transposes included. The delegate works on tensors of rank 4 at most, so a
rank-5 or rank-6 tensor is reported as well. Only what this project's models
can contain is checked in detail; anything else unknown is reported.
"""

import numpy as np

_UNARY = {
  'ABS',
  'CEIL',
  'COS',
  'ELU',
  'EXP',
  'FLOOR',
  'GELU',
  'LOG',
  'LOGISTIC',
  'NEG',
  'RSQRT',
  'SIGN',
  'SIN',
  'SQRT',
  'SQUARE',
  'TANH',
  'RELU',
  'RELU6',
  'LEAKY_RELU',
  'RELU_N1_TO_1',
  'PRELU',
  'HARD_SWISH',
}
_BINARY = {
  'ATAN2',
  'DIV',
  'EQUAL',
  'FLOOR_DIV',
  'FLOOR_MOD',
  'GREATER',
  'GREATER_EQUAL',
  'LOGICAL_AND',
  'LESS',
  'LESS_EQUAL',
  'MAXIMUM',
  'MINIMUM',
  'NOT_EQUAL',
  'POW',
  'SQUARED_DIFFERENCE',
  'SUB',
}
# Supported whenever their inputs are (layout and arity are checked by the delegate at run time).
_PLAIN = {
  'AVERAGE_POOL_2D',
  'MAX_POOL_2D',
  'BATCH_MATMUL',
  'CONCATENATION',
  'CONV_2D',
  'DEPTHWISE_CONV_2D',
  'TRANSPOSE_CONV',
  'CUMSUM',
  'DENSIFY',
  'DEPTH_TO_SPACE',
  'SPACE_TO_DEPTH',
  'DYNAMIC_UPDATE_SLICE',
  'EMBEDDING_LOOKUP',
  'GATHER',
  'LSTM',
  'PACK',
  'ONE_HOT',
  'QUANTIZE',
  'RESHAPE',
  'SELECT',
  'SELECT_V2',
  'SOFTMAX',
  'SPLIT',
  'SPLIT_V',
  'TILE',
  'TRANSPOSE',
  'RESIZE_BILINEAR',
  'RESIZE_NEAREST_NEIGHBOR',
  'STABLEHLO_CLAMP',
}
_REDUCE = {'MEAN', 'SUM', 'REDUCE_MAX', 'REDUCE_MIN', 'REDUCE_PROD'}
_FLOAT_OR_INT32 = {'FLOAT32', 'INT32'}


def _broadcastable(a, b) -> bool:
  for x, y in zip(reversed(a), reversed(b)):
    if x != y and x != 1 and y != 1:
      return False
  return True


def _problem(name, op, tensors, is_const, options) -> str | None:
  """Why the delegate would reject this op, or None."""
  ins = [tensors[i] for i in op.inputs if i >= 0]
  outs = [tensors[i] for i in op.outputs]
  shapes = [list(t.shape) if t.shape is not None else [] for t in ins]
  rank = max(len(s) for s in shapes + [list(t.shape if t.shape is not None else []) for t in outs])
  if rank > 4:
    return f'rank-{rank} tensor'
  if name in _UNARY or name in _PLAIN:
    return None
  if name in _BINARY:
    return None if len(ins) == 2 else 'needs two operands'
  if name in ('ADD', 'MUL'):
    if len(ins) != 2:
      return 'needs two inputs'
    a, b = shapes
    if len(a) == len(b):
      smaller = [np.less(a, b).any(), np.less(b, a).any()]
      return 'each input smaller in some dimension' if name == 'MUL' and all(smaller) else None
    if len(a) > 1 and len(b) > 1 and not _broadcastable(a, b):
      return f'cannot broadcast {a} with {b}'
    return None
  if name == 'ADD_N':
    return None if len(ins) == 2 else 'ADD_N of more than two inputs'
  if name in _REDUCE:
    return None if len(op.inputs) > 1 and is_const(op.inputs[1]) else 'axes are not constant'
  if name in ('SLICE', 'STRIDED_SLICE'):
    if len(shapes[0]) not in (3, 4):
      return f'{len(shapes[0])}-d input (3-d or 4-d only)'
    if (
      name == 'STRIDED_SLICE'
      and options is not None
      and (options.ellipsisMask or options.newAxisMask or options.shrinkAxisMask)
    ):
      return 'ellipsis, new-axis or shrink-axis mask'
    return None
  if name in ('PAD', 'PADV2', 'MIRROR_PAD'):
    if name == 'MIRROR_PAD' and options is not None and options.mode != 0:  # 0 = REFLECT
      return 'symmetric mirror padding (reflect only)'
    return None if len(op.inputs) > 1 and shapes[1] in ([3, 2], [4, 2]) else 'paddings not 3x2 or 4x2'
  if name == 'FULLY_CONNECTED':
    return 'constant input' if is_const(op.inputs[0]) else None
  if name == 'CAST':
    kinds = {_type_name(ins[0].type), _type_name(outs[0].type)}
    return (
      None
      if kinds <= _FLOAT_OR_INT32 | {'FLOAT16', 'BOOL'} and kinds != {'INT32', 'BOOL'}
      else f'cast {"->".join(sorted(kinds))}'
    )
  if name == 'DEQUANTIZE':
    return 'int16 dequantization' if _type_name(ins[0].type) == 'INT16' else None
  return 'not supported by the GPU delegate'


def _type_name(code: int) -> str:
  from ai_edge_litert import schema_py_generated as schema

  return {v: k for k, v in vars(schema.TensorType).items() if not k.startswith('_')}[code]


def incompatible_ops(model: bytes) -> list[str]:
  """'OP' or 'OP (reason)' for each kind of op the GPU delegate would not take, sorted."""
  from ai_edge_litert.tools import flatbuffer_utils

  m = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
  names = [flatbuffer_utils.opcode_to_name(m, i) for i in range(len(m.operatorCodes))]
  found = set()
  for graph in m.subgraphs:
    produced_by_const = set()
    for op in graph.operators:  # DEQUANTIZE of constant weights (fp16 models) is constant too
      weights = m.buffers[graph.tensors[op.inputs[0]].buffer].data
      if names[op.opcodeIndex] == 'DEQUANTIZE' and weights is not None:
        produced_by_const.update(op.outputs)

    def is_const(index, graph=graph, produced_by_const=produced_by_const):
      buffer = m.buffers[graph.tensors[index].buffer]
      return index in produced_by_const or (buffer.data is not None and len(buffer.data) > 0)

    for op in graph.operators:
      name = names[op.opcodeIndex]
      reason = _problem(name, op, graph.tensors, is_const, op.builtinOptions)
      if reason:
        found.add(name if reason == 'not supported by the GPU delegate' else f'{name} ({reason})')
  return sorted(found)


def make_probe_model() -> bytes:
  """The runtime's GPU probe (zoom_enhance/assets/gpu_probe.tflite): y = 2 x + 1 on a (1, 8, 8, 4) tensor.

  A model this small compiles on LiteRT's GPU accelerator in a tenth of a
  second, which is all gpu_probe.probe_gpu needs: the adapter WebGPU selects (a
  software one is passed over) or why there is none, before the bundle's
  model is compiled for the GPU (17 s on a software adapter).
  """
  import tensorflow as tf

  @tf.autograph.experimental.do_not_convert
  def affine(x):
    return x * 2.0 + 1.0

  fn = tf.function(affine, input_signature=[tf.TensorSpec((1, 8, 8, 4), tf.float32, name='x')])
  converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()])
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  return converter.convert()


if __name__ == '__main__':
  # Rewrites the probe: python -m export_tflite.gpu_check
  import pathlib

  out = pathlib.Path(__file__).resolve().parents[1] / 'zoom_enhance' / 'assets' / 'gpu_probe.tflite'
  out.write_bytes(make_probe_model())
  print(f'{out}: {out.stat().st_size} bytes')
