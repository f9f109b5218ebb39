"""The package logger: ``logging.getLogger('paddlex_seg')``, INFO to stdout.

It has its own handler and does not propagate, because Paddle installs a root
handler at import that would otherwise hide INFO lines. Reconfigure it (level,
handlers) like any logger.
"""
import logging
import sys

logger = logging.getLogger("paddlex_seg")
if not logger.handlers:
    _handler = logging.StreamHandler(sys.stdout)
    _handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
