"""`export --npu`: ahead-of-time compilation for phone NPUs with LiteRT's AOT compiler.

LiteRT compiles a .tflite model for a vendor's NPU through that vendor's
compiler plugin, which ships in a separate SDK package per vendor (each
fetches the vendor's compiler when it is installed). A target whose SDK
package is missing is skipped with the name of the package to install; the
other targets go on.
"""

import dataclasses
import importlib
import importlib.util
import logging
import os
import tempfile

from zoom_enhance import errors
from zoom_enhance.imaging import files


@dataclasses.dataclass(frozen=True)
class NpuTarget:
  """One vendor of phone NPUs as LiteRT's AOT compiler names it."""

  # Where the SoC covers: shown in the manifest and logs.
  description: str
  # ai_edge_litert.aot.vendors.<backend> holds the backend and its Target.
  backend: str
  # Python module of the vendor SDK (the compiler plugin's libraries).
  sdk_module: str
  # The PyPI package that provides sdk_module.
  sdk_package: str


NPU_TARGETS = {
  'google_tensor': NpuTarget(
    'Google Tensor G3-G6 (Pixel 8 and later)',
    'google_tensor',
    'ai_edge_litert_sdk_google_tensor',
    'ai-edge-litert-sdk-google-tensor',
  ),
  'qualcomm': NpuTarget(
    'Qualcomm Snapdragon (Hexagon NPU)',
    'qualcomm',
    'ai_edge_litert_sdk_qualcomm',
    'ai-edge-litert-sdk-qualcomm',
  ),
  'mediatek': NpuTarget(
    'MediaTek Dimensity (APU)', 'mediatek', 'ai_edge_litert_sdk_mediatek', 'ai-edge-litert-sdk-mediatek'
  ),
}


def source_quant(quants) -> str:
  """The exported variant an NPU compiler gets: NPUs run integer models best, then fp16."""
  for q in ('int8_full', 'fp16', 'fp32', 'int8'):
    if q in quants:
      return q
  raise ValueError(f'no model to compile for the NPU among {quants}')


def missing_sdk(target: NpuTarget) -> str | None:
  """Why `target` cannot be compiled here, or None when its SDK is installed."""
  if importlib.util.find_spec(target.sdk_module) is None:
    return f'package {target.sdk_package} is not installed (pip install {target.sdk_package})'
  return None


def _compile_one(name: str, target: NpuTarget, model_path: str, out_dir: str, stem: str) -> dict:
  """Runs the AOT compiler for every SoC of one vendor; returns the manifest entries."""
  from ai_edge_litert.aot import aot_compile

  # Importing the backend module registers it with the compiler.
  importlib.import_module(f'ai_edge_litert.aot.vendors.{target.backend}.{target.backend}_backend')
  target_lib = importlib.import_module(f'ai_edge_litert.aot.vendors.{target.backend}.target')
  with tempfile.TemporaryDirectory() as tmp:
    result = aot_compile.aot_compile(
      model_path, output_dir=tmp, target=target_lib.Target(soc_model=target_lib.SocModel.ALL), keep_going=True
    )
    entries = {}
    for backend, model in result.models_with_backend:
      file = f'{stem}_npu{backend.target_id_suffix}.tflite'
      model.save(os.path.join(out_dir, file), export_only=True)
      path = os.path.join(out_dir, file)
      entries[f'{name}{backend.target_id_suffix}'] = {
        'file': file,
        'vendor': name,
        'soc': str(backend.target),
        'sha256': files.sha256(path),
        'bytes': os.path.getsize(path),
      }
    for backend, error in result.failed_backends:
      logging.warning('NPU %s: compilation failed: %s', backend.target_id, errors.first_line(error))
  return entries


def compile_for_npus(model_path: str, out_dir: str, quant: str, targets=tuple(NPU_TARGETS)):
  """Compiles the bundle's `quant` model for each target whose SDK is installed.

  Returns (models, skipped): manifest entries of the compiled files, and
  {vendor: reason} for each target that was not compiled.
  """
  models, skipped = {}, {}
  stem = os.path.splitext(os.path.basename(model_path))[0]
  for name in targets:
    target = NPU_TARGETS[name]
    reason = missing_sdk(target)
    if reason is None:
      try:
        compiled = _compile_one(name, target, model_path, out_dir, stem)
      except Exception as e:  # a vendor compiler's failure must not stop the other targets
        reason = f'compiler failed: {errors.first_line(e)}'
      else:
        if compiled:
          for entry in compiled.values():
            entry['source_quantization'] = quant
          models.update(compiled)
          print(f'NPU {name}: compiled {", ".join(compiled)} from the {quant} model', flush=True)
          continue
        reason = 'the compiler produced no model for any SoC'
    skipped[name] = reason
    print(f'NPU {name} ({target.description}): skipped: {reason}', flush=True)
  return models, skipped
