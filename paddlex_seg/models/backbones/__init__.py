"""Backbones: feature extractors for the segmentation networks.

Every registered backbone exposes ``feat_channels`` (a list of ints) and its forward
returns a list of feature maps with those channels, highest resolution first.
The modules below are imported eagerly so that the registry is always complete.
"""
from .registry import BACKBONES, get_backbone, list_backbones, register

# Eager imports: each module registers its builders on import.
from . import resnet_vd  # noqa: E402,F401
from . import hrnet  # noqa: E402,F401

__all__ = ["BACKBONES", "get_backbone", "list_backbones", "register"]
from . import mobilenetv3  # noqa: E402,F401
from . import mobilenetv2  # noqa: E402,F401
from . import xception_deeplab  # noqa: E402,F401
