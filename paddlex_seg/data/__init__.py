"""Data: SegDataset (file lists → samples), transforms, and a synthetic data set."""
from . import transforms  # noqa: F401
from .dataset import SegDataError, SegDataset, collate, read_image, read_label, unpack_batch  # noqa: F401
from .synthetic import make_synthetic_dataset  # noqa: F401
