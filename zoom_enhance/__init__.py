"""zoom-enhance: diffusion super-resolution that runs on the device."""

__version__ = '0.1.0'
