"""Utilities PaddleX users reach as ``pdx.utils``: downloads and archive extraction."""
from .download import DownloadError, download, download_and_decompress

__all__ = ["DownloadError", "download", "download_and_decompress"]
