"""``python -m paddlex_seg``: the same as the ``paddlex_seg`` command (see paddlex_seg.cli)."""
import sys

from .cli import main

sys.exit(main())
