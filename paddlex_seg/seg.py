"""``pdx.seg``: PaddleX 2.x's name for the segmentation model classes and ``visualize``.

A PaddleX 2.x script runs with only its import changed::

    import paddlex_seg as pdx
    model = pdx.seg.UNet(num_classes=2)
    pdx.seg.visualize('test.jpg', model.predict('test.jpg'), weight=0.0, save_dir='./')

The names are the objects of :mod:`paddlex_seg.segmenter` and :mod:`paddlex_seg.visualize`
themselves, not copies. The model classes load on first use, as in the package itself,
so that ``import paddlex_seg`` stays light for deployment.
"""
from .visualize import visualize  # noqa: F401

__all__ = ["DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN", "visualize"]

_MODEL_CLASSES = ("DeepLabV3P", "BiSeNetV2", "UNet", "HRNet", "FastSCNN")


def __getattr__(name):
    if name in _MODEL_CLASSES:
        from . import segmenter
        value = getattr(segmenter, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MODEL_CLASSES))
