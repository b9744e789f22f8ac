"""Training telemetry: metrics.jsonl, progress with rate and ETA, loss-curve image."""

import datetime
import io
import json
import logging
import math
import os
import sys
import time

import tqdm

from zoom_enhance.imaging import files


class MetricsWriter:
  """Appends one JSON object per logged step to WORKDIR/metrics.jsonl.

  Only the writing process (process 0) writes; the others get a no-op writer.
  Each line is flushed, so a crash loses nothing already logged.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._file = open(self.path, 'a') if enabled else None

  def write(self, step: int, metrics: dict):
    if self._file is None:
      return
    row = {'step': int(step)}
    row.update({k: _jsonable(v) for k, v in metrics.items()})
    self._file.write(json.dumps(row) + '\n')
    self._file.flush()

  def close(self):
    if self._file is not None:
      self._file.close()
      self._file = None


def _jsonable(v):
  if isinstance(v, (bool, int)) or (hasattr(v, 'dtype') and v.dtype.kind in 'iub'):
    return int(v)  # counts stay integers
  v = float(v) if hasattr(v, '__float__') else v
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)  # JSON has no NaN/Inf literal
  return v


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """A tqdm bar on a terminal; otherwise a log line with rate and ETA."""

  def __init__(self, *, start: int, total: int, batch_size: int, enabled: bool = True):
    self.total, self.batch_size, self.enabled = total, batch_size, enabled
    self._tty = enabled and sys.stderr.isatty()
    self._bar = tqdm.tqdm(total=total, initial=start, unit='step', dynamic_ncols=True) if self._tty else None
    self._last_step, self._last_time = start, None

  def update(self, step: int, loss: float) -> dict:
    """Advances to `step`; returns throughput since the previous update."""
    now = time.perf_counter()
    rates = {}
    if self._last_time is not None and step > self._last_step:
      steps_per_sec = (step - self._last_step) / (now - self._last_time)
      rates = {'perf/steps_per_sec': steps_per_sec, 'perf/samples_per_sec': steps_per_sec * self.batch_size}
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix(loss=f'{loss:.4g}')
    elif self.enabled:
      eta = ''
      if rates:
        left = (self.total - step) / rates['perf/steps_per_sec']
        eta = (
          f', {rates["perf/steps_per_sec"]:.2f} steps/s, '
          f'{rates["perf/samples_per_sec"]:.1f} samples/s, '
          f'ETA {datetime.timedelta(seconds=round(left))}'
        )
      logging.info(
        'step %d/%d (%d%%), loss %.4g%s', step, self.total, 100 * step // max(self.total, 1), loss, eta
      )
    self._last_step, self._last_time = step, now
    return rates

  def close(self):
    if self._bar is not None:
      self._bar.close()


# Curves of adversarial distillation, drawn in a panel of their own where logged.
ADVERSARIAL_CURVES = ('train/adversarial_loss', 'train/critic_loss', 'train/critic_real', 'train/critic_fake')


def plot_loss(workdir: str, out_name: str = 'loss.png'):
  """Draws train/loss (and sample PSNR, and adversarial terms when logged) from metrics.jsonl to a PNG."""
  rows = read_metrics(workdir)
  points = [(r['step'], r['train/loss']) for r in rows if isinstance(r.get('train/loss'), float)]
  if len(points) < 2:
    return None
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  psnr = [(r['step'], r['sample/psnr'], r.get('sample/psnr_bicubic')) for r in rows if 'sample/psnr' in r]
  adversarial = {
    key: [(r['step'], r[key]) for r in rows if isinstance(r.get(key), float)] for key in ADVERSARIAL_CURVES
  }
  adversarial = {k: v for k, v in adversarial.items() if v}
  panels = 1 + bool(psnr) + bool(adversarial)
  fig, axes = plt.subplots(1, panels, figsize=(4 + 4 * panels, 4), squeeze=False)
  ax = axes[0][0]
  ax.plot(*zip(*points), lw=1)
  ax.set(xlabel='step', ylabel='train/loss', yscale='log', title='training loss')
  ax.grid(alpha=0.3)
  if adversarial:
    ax = axes[0][-1]
    for key, curve in adversarial.items():
      ax.plot(*zip(*curve), lw=1, label=key.split('/')[-1])
    ax.set(xlabel='step', title='adversarial terms (hinge)')
    ax.legend()
    ax.grid(alpha=0.3)
  if psnr:
    ax = axes[0][1]
    steps, ours, bicubic = zip(*psnr)
    ax.plot(steps, ours, 'o-', label='diffusion sample')
    ax.plot(steps, bicubic, 's--', label='bicubic')
    ax.set(xlabel='step', ylabel='PSNR (dB)', title='sample grid PSNR')
    ax.legend()
    ax.grid(alpha=0.3)
  fig.tight_layout()
  path = os.path.join(workdir, out_name)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100)
  plt.close(fig)
  files.write_atomic(path, buf.getvalue())
  return path
