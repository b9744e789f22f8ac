"""Reports of evaluations and benchmarks: text tables, the host, results files (JSON, written atomically)."""

import io
import os
import platform
import re

from zoom_enhance import errors
from zoom_enhance.imaging import files

# Table columns: key -> (header, format).
COLUMNS = {
  'psnr_y': ('PSNR-Y', '7.3f'),
  'ssim_y': ('SSIM-Y', '7.4f'),
  'lpips': ('LPIPS', '7.4f'),
  'dists': ('DISTS', '7.4f'),
  'lattice': ('lattice', '7.2f'),
  'lattice_median': ('lat.med', '7.2f'),
  'sec_per_mp': ('s/MP', '6.2f'),
  'cpu_sec_per_mp': ('CPU s/MP', '8.2f'),
  'psnr_y_vs_ref': ('PSNR-Y', '7.3f'),
  'lpips_vs_ref': ('LPIPS', '7.4f'),
}
# `zoom-enhance eval`'s table: those of these that some method has.
EVAL_COLUMNS = (
  'psnr_y',
  'ssim_y',
  'lpips',
  'dists',
  'lattice',
  'lattice_median',
  'sec_per_mp',
  'cpu_sec_per_mp',
)
# The fidelity-detail picture's panels: (x, y, x label, y label, log y), each drawn where the scores exist.
PANELS = (
  (
    'lpips',
    'psnr_y',
    'LPIPS (AlexNet), lower = closer in appearance',
    'PSNR-Y (dB), higher = closer in pixels',
    0,
  ),
  ('lpips', 'lattice', 'LPIPS (AlexNet)', 'median lattice score (log): 1 = as the photo, >> 1 = a grid', 1),
  ('dists', 'psnr_y', 'DISTS, lower = closer in texture', 'PSNR-Y (dB)', 0),
)


def format_table(rows: dict, columns=EVAL_COLUMNS) -> str:
  """A text table of {method: {scale: {metric: value}}}; '|' in `columns` starts a 'vs ref' part."""
  width = max([18] + [len(m) + 1 for m in rows])
  head = [f'{"method":{width}s} {"scale":>5s}']
  for key in columns:
    head.append('|' if key == '|' else format(COLUMNS[key][0], '>' + COLUMNS[key][1].split('.')[0]))
  lines = [' '.join(head) + (' vs ref' if '|' in columns else '')]
  for method, by_scale in rows.items():
    for scale, m in by_scale.items():
      cells = [f'{method:{width}s} {scale:>5s}']
      for key in columns:
        if key == '|':
          cells.append('|')
          continue
        fmt = COLUMNS[key][1]
        cells.append(format(m[key], fmt) if m.get(key) is not None else format('-', '>' + fmt.split('.')[0]))
      lines.append(' '.join(cells))
  return '\n'.join(lines)


def host() -> dict:
  """The machine a figure was measured on."""
  return {
    'platform': platform.platform(),
    'cpu': _cpu_model(),
    'cpus': os.cpu_count(),
    'python': platform.python_version(),
  }


def _cpu_model() -> str:
  """The CPU's model name where the OS tells it (Linux's /proc/cpuinfo), else the platform's processor."""
  try:
    with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def output_path(out: str) -> str:
  """The absolute path of a results file to write later; its folder is made now, so a bad one fails first."""
  out = os.path.abspath(out)
  if os.path.isdir(out):
    raise errors.ConfigError(f'--out {out}: is a folder; give the path of a .json file')
  os.makedirs(os.path.dirname(out), exist_ok=True)
  return out


def write_json(path: str, results: dict) -> None:
  """Writes a results file atomically."""
  files.write_json(path, results)


def _panel_points(means: dict, x: str, y: str, log: bool) -> dict:
  """{method: {x:, y:}} of the methods with both scores (y 'lattice' is the median; > 0 on a log axis)."""
  key = 'lattice_median' if y == 'lattice' else y
  points = {m: {x: v.get(x), y: v.get(key)} for m, v in means.items()}
  return {m: p for m, p in points.items() if p[x] is not None and p[y] is not None and (not log or p[y] > 0)}


def _draw_panel(ax, means: dict, x: str, y: str, colors: dict) -> None:
  """One scatter of every method's means; 'NAME detail=D' methods joined as one curve in order of D."""
  curve = []
  for name, v in means.items():
    found = re.fullmatch(r'(.+) detail=([0-9.eE+-]+)', name)
    if found:
      curve.append((float(found.group(2)), v, found.group(1)))
      continue
    ax.plot(v[x], v[y], 'o', ms=7, color=colors.get(name))
    ax.annotate(name, (v[x], v[y]), textcoords='offset points', xytext=(6, 4), fontsize=8)
  if curve:
    curve.sort(key=lambda c: c[0])
    ax.plot([c[1][x] for c in curve], [c[1][y] for c in curve], 's-', color='C3', label=curve[0][2])
    for i, (d, v, _) in enumerate(curve):
      # Neighbouring detail values can land close together: their labels go below and above in turn.
      ax.annotate(
        f'detail {d:g}',
        (v[x], v[y]),
        textcoords='offset points',
        xytext=(4, -12 if i % 2 == 0 else 6),
        fontsize=8,
      )
    ax.legend(loc='best')
  ax.grid(alpha=0.3)


def plot_fidelity_detail(path: str, means: dict, title: str = '') -> str | None:
  """Draws PSNR-Y against LPIPS of every method to `path` (PNG), beside it the lattice score (median)
  against LPIPS and PSNR-Y against DISTS where those were scored; the bundle's detail values as one curve.

  `means` is eval's {method: {'psnr_y':, 'lpips':, ...}}; methods named
  'zoom-enhance detail=D' are joined in order of D. Returns the path, or None
  without LPIPS scores.
  """
  panels = []
  for x, y, xlabel, ylabel, log in PANELS:
    points = _panel_points(means, x, y, log)
    if points:
      panels.append((points, x, y, xlabel, ylabel, log))
  if not panels or panels[0][1:3] != ('lpips', 'psnr_y'):
    return None
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  # The same colour for a method in every panel (C3 is the detail curve's).
  colors = {m: f'C{k + (k >= 3)}' for k, m in enumerate(m for m in means if ' detail=' not in m)}
  fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
  for ax, (points, x, y, xlabel, ylabel, log) in zip(axes[0], panels):
    _draw_panel(ax, points, x, y, colors)
    if y == 'lattice':
      ax.axhline(1.0, color='0.5', ls='--', lw=1)  # the photo's own score
    ax.set(
      xlabel=xlabel,
      ylabel=ylabel,
      yscale='log' if log else 'linear',
    )
  fig.suptitle(f'fidelity-detail trade-off{": " + title if title else ""}')
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110)
  plt.close(fig)
  files.write_atomic(path, buf.getvalue())
  return path
