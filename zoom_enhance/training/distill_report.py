"""Distillation's round reports: the student scored after each round, in distill_report.json.

Methods, each on the same photos and, for the diffusion ones, the same
initial noise: (a) the student at its step count, (b) the original teacher
with plain DDIM at that step count, (c) the original teacher at its full step
count, (d) bicubic. Besides the ground-truth scores, each row scores fidelity
to (c)'s outputs ('*_vs_ref'): distillation should bring the few-step sampler
closer to the many-step one than plain DDIM is. Scoring is the evaluation
protocol's loop (evaluation/protocol.py).
"""

import functools
import json
import logging
import os

from zoom_enhance.evaluation import metrics
from zoom_enhance.evaluation import protocol
from zoom_enhance.evaluation import report
from zoom_enhance.imaging import files

REPORT = 'distill_report.json'
# The report table's columns: ground truth | against the full-step teacher.
COLUMNS = ('psnr_y', 'ssim_y', 'lpips', 'sec_per_mp', '|', 'psnr_y_vs_ref', 'lpips_vs_ref')


class RoundEvaluator:
  """Scores each round's student next to the teacher's samplers; rewrites WORKDIR/distill_report.json."""

  def __init__(self, config, sampler, photos, where: str, teacher_params):
    """`photos` [(name, uint8 RGB)] come from `where`; teacher_params() gives the original teacher."""
    self.config = config
    self.sampler = sampler
    self.where = where
    self.photos = photos
    self.scales = [float(s) for s in config.distill.eval_scales]
    self.scorer = metrics.Scorer(lpips=config.distill.eval_lpips)
    self._teacher_params = teacher_params
    self._pairs = {s: protocol.make_pairs(photos, s) for s in self.scales}
    self._reference = {}  # scale -> {name: full-step teacher output}
    self._cache = {}

  def _method(self, name, params, steps) -> protocol.Method:
    run = functools.partial(self.sampler.upscale_image, params, num_steps=steps, seed=self.config.seed)
    return protocol.Method(name, run, compiles=True)

  def _score(self, method, keep_outputs: bool = False) -> dict:
    """{'x4': mean row, ...} of one method over the photos at every scale."""
    rows = {}
    for s in self.scales:
      outputs = {}
      keep = (lambda i, name, hr, lr, out: outputs.update({name: out[method.name]})) if keep_outputs else None
      _, means = protocol.score(
        [method],
        self._pairs[s],
        s,
        self.scorer,
        on_photo=keep,
        log_progress=False,
        reference=None if keep_outputs else self._reference[s],
      )
      rows[f'x{s:g}'] = means[method.name]
      if keep_outputs:
        self._reference[s] = outputs
    return rows

  def _cached(self, key, make_method, keep_outputs=False):
    if key not in self._cache:
      self._cache[key] = self._score(make_method(), keep_outputs)
    return self._cache[key]

  def evaluate_round(self, workdir: str, round_index: int, steps: int, student_params):
    d = self.config.distill
    teacher = self._teacher_params()
    full = f'teacher@{d.start_steps}'
    # (c) first: its outputs are the other methods' reference.
    full_rows = self._cached('full', lambda: self._method(full, teacher, d.start_steps), keep_outputs=True)
    rows = {
      f'student@{steps}': self._score(self._method(f'student@{steps}', student_params, steps)),
      f'teacher_ddim@{steps}': self._cached(
        ('ddim', steps), lambda: self._method(f'teacher_ddim@{steps}', teacher, steps)
      ),
      full: full_rows,
      'bicubic': self._cached('bicubic', protocol.bicubic_method),
    }
    path = os.path.join(workdir, REPORT)
    results = {'rounds': []}
    if os.path.exists(path):
      with open(path) as f:
        results = json.load(f)
    results['rounds'] = [r for r in results['rounds'] if r['round'] != round_index + 1]
    results['rounds'].append({'round': round_index + 1, 'student_steps': steps, 'methods': rows})
    results['rounds'].sort(key=lambda r: r['round'])
    results.update(
      images=len(self.photos),
      eval_source=self.where,
      scales=self.scales,
      teacher_workdir=d.teacher_workdir,
      reference=full,
    )
    files.write_json(path, results)
    logging.info(
      'round %d report (%d images from %s; "vs ref" = against %s outputs):\n%s',
      round_index + 1,
      len(self.photos),
      self.where,
      full,
      report.format_table(rows, COLUMNS),
    )
