"""The package logger: ``logging.getLogger('paddlex_seg')`` with a plain stdout handler.

A handler is added only when the application has not configured logging itself.
"""
import logging
import sys

logger = logging.getLogger("paddlex_seg")
if not logger.handlers and not logging.getLogger().handlers:
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
