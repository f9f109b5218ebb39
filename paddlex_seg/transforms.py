"""``from paddlex_seg import transforms as T``: the operators of ``paddlex_seg.data.transforms``.

The same objects (not copies), re-exported under PaddleX's module name.
"""
from .data.transforms import *  # noqa: F401,F403
from .data.transforms import __all__  # noqa: F401
