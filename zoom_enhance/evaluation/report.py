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
  'sec_per_mp': ('s/MP', '6.2f'),
  'cpu_sec_per_mp': ('CPU s/MP', '8.2f'),
  'psnr_y_vs_ref': ('PSNR-Y', '7.3f'),
  'lpips_vs_ref': ('LPIPS', '7.4f'),
}
# `zoom-enhance eval`'s table.
EVAL_COLUMNS = ('psnr_y', 'ssim_y', 'lpips', 'sec_per_mp', 'cpu_sec_per_mp')


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
  return {'platform': platform.platform(), 'cpus': os.cpu_count(), 'python': platform.python_version()}


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


def plot_fidelity_detail(path: str, means: dict, title: str = '') -> str | None:
  """Draws PSNR-Y against LPIPS of every method to `path` (PNG); the bundle's detail values as one curve.

  `means` is eval's {method: {'psnr_y':, 'lpips':, ...}}; methods named
  'zoom-enhance detail=D' are joined in order of D. Returns the path, or None
  without LPIPS scores.
  """
  points = {m: v for m, v in means.items() if v.get('lpips') is not None and v.get('psnr_y') is not None}
  if not points:
    return None
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 5))
  curve = []
  for name, v in points.items():
    found = re.fullmatch(r'(.+) detail=([0-9.eE+-]+)', name)
    if found:
      curve.append((float(found.group(2)), v, found.group(1)))
      continue
    ax.plot(v['lpips'], v['psnr_y'], 'o', ms=7)
    ax.annotate(name, (v['lpips'], v['psnr_y']), textcoords='offset points', xytext=(6, 4), fontsize=8)
  if curve:
    curve.sort(key=lambda c: c[0])
    ax.plot(
      [c[1]['lpips'] for c in curve], [c[1]['psnr_y'] for c in curve], 's-', color='C3', label=curve[0][2]
    )
    for i, (d, v, _) in enumerate(curve):
      # Neighbouring detail values can land close together: their labels go below and above in turn.
      ax.annotate(
        f'detail {d:g}',
        (v['lpips'], v['psnr_y']),
        textcoords='offset points',
        xytext=(4, -12 if i % 2 == 0 else 6),
        fontsize=8,
      )
    ax.legend(loc='best')
  ax.set(
    xlabel='LPIPS (AlexNet), lower = closer in appearance',
    ylabel='PSNR-Y (dB), higher = closer in pixels',
    title=f'fidelity-detail trade-off{": " + title if title else ""}',
  )
  ax.grid(alpha=0.3)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=110)
  plt.close(fig)
  files.write_atomic(path, buf.getvalue())
  return path
