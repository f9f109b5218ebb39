"""paddlex_seg: a PaddlePaddle-native, high-level semantic segmentation toolkit.

    import paddlex_seg as seg
    from paddlex_seg import transforms as T
    model = seg.UNet(num_classes=2)
    model.train(num_epochs=10, train_dataset=train_ds, eval_dataset=eval_ds)
"""
__version__ = "0.1.0"

from . import transforms, utils  # noqa: F401,E402
from .data.dataset import SegDataset  # noqa: E402
from .data.synthetic import make_synthetic_dataset  # noqa: E402
from .segmenter import BiSeNetV2, DeepLabV3P, FastSCNN, HRNet, UNet, load_model  # noqa: E402

__all__ = ["SegDataset", "DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN",
           "load_model", "make_synthetic_dataset", "transforms", "utils"]
