"""Networks as plain ``paddle.nn.Layer``s with PaddleSeg-compatible parameter names.

Each network returns a list of logits at the input's resolution (the first is the
main output; in training mode BiSeNetV2 and FastSCNN append auxiliary logits).
Backbones live in ``backbones`` (registry: ``get_backbone``, ``list_backbones``).
"""
from . import layers, losses  # noqa: F401
from .backbones import BACKBONES, get_backbone, list_backbones, register  # noqa: F401
from .bisenetv2 import BiSeNetV2  # noqa: F401
from .deeplab import DeepLabV3P  # noqa: F401
from .fast_scnn import FastSCNN  # noqa: F401
from .fcn import FCN  # noqa: F401
from .unet import UNet  # noqa: F401

__all__ = ["BiSeNetV2", "DeepLabV3P", "FastSCNN", "FCN", "UNet",
           "get_backbone", "list_backbones", "register"]
