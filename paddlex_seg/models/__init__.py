"""Networks as plain ``paddle.nn.Layer``s, PaddleSeg-compatible parameter names.

Each network returns a list of logits at the input's resolution (the first is the
main output; training mode may add auxiliary logits).
"""
from . import layers  # noqa: F401
from .backbones import BACKBONES, get_backbone, list_backbones, register  # noqa: F401
