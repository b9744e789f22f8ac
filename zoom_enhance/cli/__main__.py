"""`python -m zoom_enhance.cli COMMAND ...`: the `zoom-enhance` command."""

import sys

from zoom_enhance.cli import main

sys.exit(main())
