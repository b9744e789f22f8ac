"""Loading `ml_collections` config files by path (config files are not a package)."""

import importlib.util
import os


def load_module(path: str, name: str = 'zoom_enhance_config'):
  """The config file at `path`, executed as a module."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def sibling(config_file: str, name: str):
  """The config file `name`.py next to `config_file` (pass __file__), as a module."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py')
  return load_module(path, f'zoom_enhance_{name}_config')
