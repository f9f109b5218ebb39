"""``pdx.datasets``: PaddleX 2.x's name for the data set classes.

``pdx.datasets.SegDataset`` is :class:`paddlex_seg.data.dataset.SegDataset` itself.
"""
from .data.dataset import SegDataset  # noqa: F401

__all__ = ["SegDataset"]
