"""Why PNG writes crashed after ``import paddle`` on Paddle 2.6, and what prevents it.

Cause (measured with ``LD_DEBUG=bindings`` and gdb on Paddle 2.6.2): ``libpaddle.so``
carries its own copy of zlib and exports its symbols (``deflateReset``, ...), and it
needs the system ``libz.so.1``. When ``import paddle`` comes first, ``libz.so.1`` is
loaded as a dependency of ``libpaddle.so`` and shares its symbol lookup scope, in which
``libpaddle.so`` comes first. zlib's own internal calls (``deflateInit2_`` →
``deflateReset`` → ``deflateResetKeep``) then bind to Paddle's copy, which does not
match the system zlib's state layout: the first deflate of any library in the process
(libpng under Pillow or OpenCV, Python's ``zlib`` module, SciPy) dies in
``deflateReset`` with SIGSEGV. Once ``libz.so.1`` is loaded before ``libpaddle.so``, by
anything, it has a scope of its own and every order is safe. Paddle 3.x does not export
these symbols (no crash, measured with 3.3.1).

Prevention, in the order it acts:

1. ``paddlex_seg_zlib_first.pth``, which ``pip install`` puts into site-packages: Python
   runs its ``import zlib`` at start-up, before any user code. This covers every script
   in that environment, with or without paddlex_seg.
2. ``import paddlex_seg`` imports this module, i.e. ``zlib``, before it imports Paddle
   (covers an editable install, where the .pth is missing, when the package comes first).
3. ``check_png_writes()`` is called before each PNG the package writes. When Paddle 2.6
   was loaded before zlib (editable install, ``import paddle`` first), it raises a
   RuntimeError that says what to do, instead of letting the process crash.
"""
import ctypes
import sys
import zlib  # noqa: F401  (the point of this module: load libz.so.1 now)

__all__ = ["zlib_bound_into_paddle", "check_png_writes"]


def _loaded_objects():
    """Paths of the shared objects of this process, in the order they were loaded."""
    names = []

    class _PhdrInfo(ctypes.Structure):
        _fields_ = [("addr", ctypes.c_void_p), ("name", ctypes.c_char_p)]

    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_PhdrInfo), ctypes.c_size_t,
                                     ctypes.c_void_p)

    def collect(info, size, data):
        names.append((info.contents.name or b"").decode("utf-8", "replace"))
        return 0

    try:
        libc = ctypes.CDLL(None)
        libc.dl_iterate_phdr(callback_type(collect), None)
    except (OSError, AttributeError):  # not glibc/Linux: the crash is not known there
        return []
    return names


def zlib_bound_into_paddle():
    """True when Paddle 2.x's libpaddle.so was loaded before the system zlib.

    Then zlib's internal calls bind into Paddle's copy and the next deflate (any PNG
    write) crashes the process. False on Paddle 3, when Paddle is not loaded, and when
    zlib came first.
    """
    paddle = sys.modules.get("paddle")
    if paddle is None or str(getattr(paddle, "__version__", "3")).split(".")[0] not in ("2", "1"):
        return False
    objects = _loaded_objects()
    paddle_at = next((i for i, p in enumerate(objects) if p.endswith("/libpaddle.so")), None)
    zlib_at = next((i for i, p in enumerate(objects) if "/libz.so" in p), None)
    return paddle_at is not None and zlib_at is not None and zlib_at > paddle_at


def check_png_writes(path=None):
    """Raise a clear error instead of a crash when a PNG write would segfault (Paddle 2.6).

    Args:
        path (str|None): the file about to be written, named in the message.

    Raises:
        RuntimeError: Paddle 2.6 was imported before zlib in this process.
    """
    if zlib_bound_into_paddle():
        target = f" {path}" if path else ""
        raise RuntimeError(
            f"cannot write the PNG{target}: Paddle {sys.modules['paddle'].__version__} was "
            "imported before zlib, so zlib now calls into libpaddle.so's own copy and the "
            "write would crash this process (a segfault in deflateReset). Install paddlex_seg "
            "with `pip install .` (not -e: it adds paddlex_seg_zlib_first.pth, which loads "
            "zlib at start-up), or put `import zlib` (or `import paddlex_seg`) before "
            "`import paddle`. Paddle 3 does not have this problem.")
