"""Data preparation tools: split a folder into file lists, convert annotations, check a data set.

* :func:`split_dataset` (split.py): JPEGImages/ + Annotations/ -> train/val/test lists, labels.txt.
* :func:`convert` (convert.py): LabelMe, COCO, VOC or plain masks -> palette index PNGs.
* :func:`check_dataset` (check.py): per-file problems, class histogram and weights, ``fix``.

The same tools run from the shell: ``paddlex_seg split_dataset|convert|check_dataset``.
"""
from .check import DatasetReport, check_dataset  # noqa: F401
from .convert import convert  # noqa: F401
from .split import split_dataset  # noqa: F401

__all__ = ['split_dataset', 'convert', 'check_dataset', 'DatasetReport']
