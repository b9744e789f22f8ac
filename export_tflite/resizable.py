"""Makes a converted model take any tile size: each pixel shuffle becomes one DEPTH_TO_SPACE op.

The TFLite converter writes the network's pixel shuffle (layers.pixel_shuffle:
rank-4 RESHAPE, TRANSPOSE, RESHAPE, for the GPU delegate) with constant
target shapes that hold the tile's side, so LiteRT cannot resize the model
(the interpreter's resize_tensor_input fails at the first such RESHAPE).
Every other op of the `mobile` network (convolutions, element-wise ops, the
(1, 1, 1, C) FiLM slices) takes its shape from its inputs. Rewritten here:
  RESHAPE -> TRANSPOSE -> RESHAPE  ==  DEPTH_TO_SPACE(x[..., P])
with P the channel permutation that makes them equal (found by running both
on an index tensor, and checked), folded into the output channels of the
1x1 CONV_2D that feeds the shuffle: its weights, bias and per-channel
quantization scales. A shuffle of r^2 concatenated copies of one tensor
(a nearest-neighbour up-sampling, layers.tent_upsample) needs no permutation.
The model's outputs are the same to the bit at the export tile (checked by
export, which also checks parity against JAX at another, non-square size),
and the input shape signatures say the height and width may change.

Hand-written on the flatbuffer schema that ships with ai-edge-litert: neither
the converter nor jax2tf offers it (jax2tf's shape-polymorphic export gives
a model whose broadcasts and sigmoids XNNPACK does not take: 13 times slower
per pixel here).
"""

import flatbuffers
import numpy as np

_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 9: np.int8}
# Ops whose every output pixel depends on a neighbourhood of input pixels only, with no constant that
# holds the image size: the only ones allowed on image-sized tensors of a resizable model. A reduction
# over the image (GroupNorm's SUM and its FULLY_CONNECTED of 1/(H*W)), a TRANSPOSE_CONV (its output
# shape is a constant) or a RESHAPE of an image would be wrong, or fail, at another size.
LOCAL_OPS = {
  'ADD',
  'SUB',
  'MUL',
  'DIV',
  'MAXIMUM',
  'MINIMUM',
  'ABS',
  'LOGISTIC',
  'TANH',
  'RELU',
  'RELU6',
  'LEAKY_RELU',
  'HARD_SWISH',
  'CONV_2D',
  'DEPTHWISE_CONV_2D',
  'CONCATENATION',
  'DEPTH_TO_SPACE',
  'QUANTIZE',
  'DEQUANTIZE',
}


class NotResizable(ValueError):
  """The model has a shape-bound op this rewrite does not handle."""


def _schema():
  from ai_edge_litert import schema_py_generated

  return schema_py_generated


def _op_name(schema, model, op) -> str:
  code = model.operatorCodes[op.opcodeIndex]
  number = max(code.builtinCode, code.deprecatedBuiltinCode)
  return next(k for k, v in vars(schema.BuiltinOperator).items() if v == number and not k.startswith('_'))


def _opcode_index(schema, model, name: str) -> int:
  number = getattr(schema.BuiltinOperator, name)
  for i, code in enumerate(model.operatorCodes):
    if max(code.builtinCode, code.deprecatedBuiltinCode) == number:
      return i
  code = schema.OperatorCodeT()
  code.builtinCode, code.deprecatedBuiltinCode, code.version = number, min(number, 127), 1
  model.operatorCodes.append(code)
  return len(model.operatorCodes) - 1


def _data(model, tensor) -> np.ndarray:
  raw = model.buffers[tensor.buffer].data
  if raw is None or tensor.type not in _TYPES:
    raise NotResizable(f'tensor {tensor.name!r}: no constant data of a known type')
  return np.frombuffer(bytes(bytearray(raw)), _TYPES[tensor.type]).reshape([int(s) for s in tensor.shape])


def shuffle_permutation(shape_in, shape_mid, perm, shape_out, block: int):
  """P such that DEPTH_TO_SPACE(x[..., P], block) == reshape(transpose(reshape(x, mid), perm), out), or None.

  DEPTH_TO_SPACE (TFLite, DCR order): out[h*b + i, w*b + j, c] = in[h, w, (i*b + j)*C + c].
  """
  n, h, w, cin = shape_in
  x = np.arange(n * h * w * cin).reshape(shape_in)
  ours = x.reshape(shape_mid).transpose(perm).reshape(shape_out)
  c = cin // (block * block)
  # Output pixel (i, j) of the first block reads input pixel (0, 0): its value is the input channel.
  p = ours[0, :block, :block, :].reshape(-1)
  if sorted(p.tolist()) != list(range(cin)):
    return None
  moved = x[..., p].reshape(n, h, w, block, block, c).transpose(0, 1, 3, 2, 4, 5)
  return p if np.array_equal(moved.reshape(shape_out), ours) else None


def _copies_of_one_tensor(graph, op_index, name, block: int) -> bool:
  """Whether op `op_index` is a CONCATENATION of block^2 copies of one tensor (nearest-neighbour input)."""
  if op_index is None or name(op_index) != 'CONCATENATION':
    return False
  inputs = list(graph.operators[op_index].inputs)
  return len(inputs) == block * block and len(set(inputs)) == 1


def _within_copies(p, block: int) -> bool:
  """Whether the permutation p of block^2 equal copies of C channels maps channel c of a copy to channel c
  of a copy: then x[..., p] == x, and DEPTH_TO_SPACE needs no permutation at all."""
  c = len(p) // (block * block)
  return all(int(v) % c == k % c for k, v in enumerate(p))


def _permute_output_channels(model, graph, conv: int, p, producer, consumers, name):
  """Folds the permutation p into the output channels of CONV_2D `conv`: weights, bias, per-channel scales."""
  for t in graph.operators[conv].inputs[1:3]:  # weights (O, kh, kw, I), bias (O,): output channels first
    if t < 0:
      continue
    if t in producer and name(producer[t]) == 'DEQUANTIZE':  # fp16 weights, widened at load
      if len(consumers[t]) != 1:
        raise NotResizable(f'op {conv}: its weights are shared')
      t = graph.operators[producer[t]].inputs[0]
    tensor = graph.tensors[t]
    model.buffers[tensor.buffer].data = np.frombuffer(_data(model, tensor)[p].tobytes(), np.uint8)
    q = tensor.quantization
    if q is not None and q.scale is not None and len(q.scale) > 1:
      if q.quantizedDimension != 0:
        raise NotResizable(f'tensor {tensor.name!r}: quantized along axis {q.quantizedDimension}')
      q.scale, q.zeroPoint = np.asarray(q.scale)[p], np.asarray(q.zeroPoint)[p]


def make_resizable(model_bytes: bytes) -> tuple[bytes, int]:
  """(the rewritten model, how many pixel shuffles it had). Raises NotResizable where it cannot."""
  schema = _schema()
  model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
  if len(model.subgraphs) != 1:
    raise NotResizable(f'{len(model.subgraphs)} subgraphs')
  graph = model.subgraphs[0]
  producer, consumers = {}, {}
  for i, op in enumerate(graph.operators):
    for t in op.outputs:
      producer[t] = i
    for t in op.inputs:
      consumers.setdefault(t, []).append(i)
  name = lambda i: _op_name(schema, model, graph.operators[i])  # noqa: E731
  shape = lambda t: [int(s) for s in graph.tensors[t].shape]  # noqa: E731
  dropped, count = set(), 0
  for t_index, op in enumerate(graph.operators):
    if name(t_index) != 'TRANSPOSE':
      continue
    first, after = producer.get(op.inputs[0]), consumers.get(op.outputs[0], [])
    if first is None or name(first) != 'RESHAPE' or len(after) != 1 or name(after[0]) != 'RESHAPE':
      raise NotResizable(f'op {t_index}: a TRANSPOSE that is not a pixel shuffle')
    last = after[0]
    src, dst = graph.operators[first].inputs[0], graph.operators[last].outputs[0]
    shape_in, shape_out = shape(src), shape(dst)
    block = shape_out[1] // shape_in[1] if len(shape_in) == 4 == len(shape_out) else 0
    perm = [int(v) for v in _data(model, graph.tensors[op.inputs[1]]).reshape(-1)]
    p = None
    if block >= 2 and shape_out[2] == shape_in[2] * block and shape_out[3] * block * block == shape_in[3]:
      p = shuffle_permutation(shape_in, shape(graph.operators[first].outputs[0]), perm, shape_out, block)
    conv = producer.get(src)
    if p is not None and _copies_of_one_tensor(graph, conv, name, block) and _within_copies(p, block):
      pass  # a nearest-neighbour up-sampling (layers.tent_upsample): the permutation moves whole copies
    elif p is None or conv is None or name(conv) != 'CONV_2D' or len(consumers[src]) != 1:
      raise NotResizable(f'op {t_index}: a pixel shuffle that is not DEPTH_TO_SPACE after a CONV_2D')
    else:
      _permute_output_channels(model, graph, conv, p, producer, consumers, name)
    d2s = schema.OperatorT()
    d2s.opcodeIndex = _opcode_index(schema, model, 'DEPTH_TO_SPACE')
    d2s.inputs, d2s.outputs = np.array([src], np.int32), np.array([dst], np.int32)
    d2s.builtinOptionsType = schema.BuiltinOptions.DepthToSpaceOptions
    d2s.builtinOptions = schema.DepthToSpaceOptionsT()
    d2s.builtinOptions.blockSize = block
    graph.operators[last] = d2s
    dropped |= {first, t_index}
    count += 1
  graph.operators = [op for i, op in enumerate(graph.operators) if i not in dropped]
  for i, op in enumerate(graph.operators):
    image_sized = any(
      t >= 0 and len(shape(t)) == 4 and (shape(t)[1] > 1 or shape(t)[2] > 1)
      for t in list(op.inputs) + list(op.outputs)
    )
    if image_sized and name(i) not in LOCAL_OPS:
      raise NotResizable(f'{name(i)} on an image-sized tensor')
  for t in list(graph.inputs) + list(graph.outputs):
    s = shape(t)
    if len(s) == 4:
      graph.tensors[t].shapeSignature = np.array([s[0], -1, -1, s[3]], np.int32)
  builder = flatbuffers.Builder(len(model_bytes) + 1024)
  builder.Finish(model.Pack(builder), file_identifier=b'TFL3')
  return bytes(builder.Output()), count
