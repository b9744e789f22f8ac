"""The README's commands are the ones the CLI takes: every `zoom-enhance` command of its code blocks parses,
and the files it names ship in a fresh clone. (tests/test_default_model.py runs the quick start's enhance;
docs/development.md says how the rest were run.)"""

import pathlib
import re
import shlex

import pytest

from zoom_enhance import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
  blocks = re.findall(r'```bash\n(.*?)```', (ROOT / 'README.md').read_text(), re.S)
  return [c.strip() for b in blocks for c in b.replace('\\\n', ' ').split('&&') if c.strip()]


def test_the_readme_has_its_quick_start():
  commands = _commands()
  assert any(c.startswith('pip install -e .') for c in commands)
  assert 'pytest -q' in commands
  assert sum(c.startswith('zoom-enhance ') for c in commands) >= 4


@pytest.mark.parametrize('command', [c for c in _commands() if c.startswith('zoom-enhance ')])
def test_each_readme_command_parses_and_names_shipped_files(command):
  argv = shlex.split(command)[1:]
  args = cli._parse(argv)  # as the command parses it: pipeline options and config overrides pass
  assert callable(args.run)
  for value in vars(args).values():
    for path in value if isinstance(value, list) else [value]:
      if isinstance(path, str) and path.startswith(('zoom_enhance/', 'configs/')):
        assert (ROOT / path).is_file(), f'{command}: {path} is not in the repository'
