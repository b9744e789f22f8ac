"""A photo library through Apache Beam: `EnhanceLibrary`, a PTransform, and `EnhanceModelHandler`.

In a pipeline of your own:

  import apache_beam as beam
  from zoom_enhance.library import ledger, transform

  photos, problems = ledger.plan('~/Pictures', '/data/enhanced')
  with beam.Pipeline(options=...) as p:
    results = (p | beam.Create(photos)
                 | transform.EnhanceLibrary('/data/enhanced', enhance={'scale': 2}))

Each element is a ledger.Photo (source, output); each result a dict
{'source', 'output', 'status': 'done' | 'skipped' | 'failed', 'reason',
'output_pixels'}. The work divides by photo: the photos are redistributed
(Reshuffle), each worker checks the ledger (skips photos done before with
the same source checksum), enhances its photos one at a time through
RunInference and writes each result atomically, then its ledger record.
EnhanceModelHandler loads the runtime's Enhancer once per worker process;
LiteRT's interpreters must not be called from two threads at once, so the
worker's threads take turns on it (a lock), and each photo uses the
engine's own tile threads (`threads`). A failed photo (unreadable, too large,
unwritable) becomes a 'failed' result with its one-line reason and a ledger
record, never an exception that stops the pipeline.
"""

import os
import threading
from collections.abc import Iterable
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.ml.inference import base

from zoom_enhance import errors
from zoom_enhance.imaging import files
from zoom_enhance.imaging import save
from zoom_enhance.library import ledger

NAMESPACE = 'zoom_enhance'


class _Model:
  """A worker's Enhancer and the lock its threads take turns with."""

  def __init__(self, enhancer):
    self.enhancer = enhancer
    self.lock = threading.Lock()


class EnhanceModelHandler(base.ModelHandler):
  """RunInference's handler for a bundle: examples (Photo, sha256) in, (image, error) out, one at a time.

  `enhancer` holds pipeline.Enhancer's options (bundle, accelerator, quant,
  threads), `enhance` Enhancer.enhance's (scale, size, crop, strength,
  detail, seed, max_pixels).
  """

  def __init__(self, enhancer: dict | None = None, enhance: dict | None = None):
    super().__init__()
    self._enhancer = dict(enhancer or {})
    self._enhance = dict(enhance or {})

  def load_model(self) -> _Model:
    from zoom_enhance.runtime import native_log
    from zoom_enhance.runtime import pipeline

    native_log.quiet_native_exit()
    return _Model(pipeline.Enhancer(**self._enhancer))

  def run_inference(self, batch: Sequence, model: _Model, inference_args=None) -> Iterable:
    for example in batch:
      photo, _ = example
      try:
        with model.lock:
          image = model.enhancer.enhance(photo.source, **self._enhance)
        result = (image, None)
      except MemoryError:
        result = (None, f'{photo.source}: out of memory')
      except errors.USER_ERRORS as e:
        text = errors.first_line(e, limit=1000)
        result = (None, text if text.startswith(photo.source) else f'{photo.source}: {text}')
      yield base.PredictionResult(example, result)

  def batch_elements_kwargs(self):
    return {'min_batch_size': 1, 'max_batch_size': 1}

  def share_model_across_processes(self) -> bool:
    return False

  def get_metrics_namespace(self) -> str:
    return NAMESPACE


def _result(photo, status: str, reason: str | None = None, pixels: int = 0) -> dict:
  beam.metrics.Metrics.counter(NAMESPACE, status).inc()
  return {
    'source': photo.source,
    'output': photo.output,
    'status': status,
    'reason': reason,
    'output_pixels': pixels,
  }


class _Check(beam.DoFn):
  """Photo -> (Photo, sha256) to enhance, or a 'skipped' result (tagged) where the ledger says done."""

  def __init__(self, out: str):
    self._out = out

  def process(self, photo):
    try:
      digest = files.sha256(photo.source)
    except OSError as e:
      reason = f'{photo.source}: cannot read ({e.strerror or errors.first_line(e)})'
      ledger.mark_failed(self._out, photo, reason)
      yield beam.pvalue.TaggedOutput('finished', _result(photo, 'failed', reason))
      return
    if ledger.is_done(self._out, photo, digest):
      yield beam.pvalue.TaggedOutput('finished', _result(photo, 'skipped'))
    else:
      yield photo, digest


class _Write(beam.DoFn):
  """A PredictionResult -> its result written atomically, then its ledger record; a result dict."""

  def __init__(self, out: str, quality: int, png_level: int):
    self._out, self._quality, self._png_level = out, quality, png_level

  def process(self, prediction):
    (photo, digest), (image, error) = prediction.example, prediction.inference
    if error is None:
      try:
        os.makedirs(os.path.dirname(photo.output), exist_ok=True)
        files.remove_stale_temps(photo.output)  # of a run killed while writing it
        save.save_photo(photo.output, image, quality=self._quality, png_level=self._png_level)
      except OSError as e:
        error = f'{photo.output}: {save.cannot_write(photo.output, e)}'
      except errors.ZoomEnhanceError as e:
        error = errors.first_line(e, limit=1000)
    if error is not None:
      ledger.mark_failed(self._out, photo, error)
      yield _result(photo, 'failed', error)
      return
    ledger.mark_done(self._out, photo, digest)
    pixels = image.size[0] * image.size[1]
    beam.metrics.Metrics.counter(NAMESPACE, 'output_pixels').inc(pixels)
    yield _result(photo, 'done', pixels=pixels)


class EnhanceLibrary(beam.PTransform):
  """PCollection[ledger.Photo] -> PCollection[result dict]: each photo enhanced and written under `out`
  once, photos done by an earlier run (same source checksum) skipped, failures recorded (ledger)."""

  def __init__(
    self,
    out: str,
    *,
    enhancer: dict | None = None,
    enhance: dict | None = None,
    quality: int = 95,
    png_level: int = save.PNG_LEVEL,
  ):
    super().__init__()
    self._out = os.path.abspath(out)
    self._handler = EnhanceModelHandler(enhancer, enhance)
    self._quality, self._png_level = quality, png_level

  def expand(self, photos):
    checked = (
      photos
      | 'Spread' >> beam.Reshuffle()
      | 'Skip done' >> beam.ParDo(_Check(self._out)).with_outputs('finished', main='todo')
    )
    written = (
      checked.todo
      | 'Enhance' >> base.RunInference(self._handler)
      | 'Write' >> beam.ParDo(_Write(self._out, self._quality, self._png_level))
    )
    return (written, checked.finished) | 'Results' >> beam.Flatten()
