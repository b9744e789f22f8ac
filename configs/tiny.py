"""Tiny SR3-style upscaler: a run of a few minutes on 2 CPU cores; also the test config.

  zoom-enhance train --config configs/tiny.py --workdir /tmp/ze-tiny \
      --config.data.source=folder:/path/to/photos --config.train.num_steps=300

Every field, with its meaning, is in zoom_enhance/training/config.py; the
tiny model's values are the schema's defaults.
"""

from zoom_enhance.training import config


def get_config(arg=None):
  """The schema's defaults: the 'tiny' U-Net, 64-px crops, 300 steps of batch 8."""
  del arg
  return config.defaults()
