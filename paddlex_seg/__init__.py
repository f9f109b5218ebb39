"""paddlex_seg: a PaddlePaddle-native, high-level semantic segmentation toolkit.

    import paddlex_seg as seg
    from paddlex_seg import transforms as T
    model = seg.UNet(num_classes=2)
    model.train(num_epochs=10, train_dataset=train_ds, eval_dataset=eval_ds)
"""
__version__ = "0.2.0"

# First of all: zlib before Paddle (Paddle 2.6 crashes PNG writes otherwise; see _zlib_first).
from . import _zlib_first  # noqa: F401,E402  isort: skip

from . import transforms, utils  # noqa: F401,E402
from .data.dataset import SegDataset  # noqa: E402
from .data.synthetic import make_synthetic_dataset  # noqa: E402
from .visualize import visualize  # noqa: E402  (the function shadows its module's name)

__all__ = ["SegDataset", "DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN",
           "load_model", "make_synthetic_dataset", "transforms", "utils", "visualize"]

# The model classes load on first use (PEP 562), so that deployment
# (paddlex_seg.deploy.predictor) runs without importing the training code.
_LAZY = {name: ".segmenter" for name in
         ("DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN", "load_model")}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

# PaddleX 2.x namespaces (pdx.seg.UNet, pdx.datasets.SegDataset, pdx.deploy.Predictor):
# the same objects under the names PaddleX scripts use. See docs/migrating_from_paddlex.md.
from . import datasets, deploy, seg  # noqa: F401,E402

__all__ += ["datasets", "deploy", "seg"]
