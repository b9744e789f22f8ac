"""zoom-enhance: diffusion super-resolution that runs on the device."""

__version__ = '0.1.0'

# The runtime is imported on first use: `import zoom_enhance` stays light, and
# the training side (JAX) never comes in through this door.
_RUNTIME_NAMES = ('enhance', 'Enhancer', 'Report', 'save_photo')


def __getattr__(name):
  if name in _RUNTIME_NAMES:
    from zoom_enhance import runtime

    return getattr(runtime, name)
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
