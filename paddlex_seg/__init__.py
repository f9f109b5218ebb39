"""paddlex_seg: a PaddlePaddle-native, high-level semantic segmentation toolkit."""
__version__ = "0.1.0"
