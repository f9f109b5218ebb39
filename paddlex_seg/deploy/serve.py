"""Serve an exported model over HTTP: ``paddlex_seg serve`` (FastAPI on uvicorn).

    paddlex_seg serve --model_dir output/infer --port 8080
    curl -F file=@photo.jpg http://127.0.0.1:8080/predict

or from Python::

    from paddlex_seg.deploy.serve import create_app, serve
    serve('output/infer', port=8080)              # blocks; create_app gives the ASGI app

Endpoints:

* ``POST /predict``: one image, as a multipart upload (a file field, ``file``), as JSON
  ``{"image": "<base64>", "return_scores": false, "format": "png"}``, or as the raw
  bytes with an ``image/*`` content type. ``format`` ('png', 'list' or 'both') and
  ``return_scores`` may also be query parameters. The answer holds the label map (a
  base64 PNG whose pixel values are class ids, and/or a list of rows), the class names,
  the size, optionally the per-class probabilities (their means, and the (H, W, C)
  float32 map as base64), and timings.
* ``GET /health``, ``GET /model`` (the model.yml summary), ``GET /openapi.json`` and
  ``GET /docs`` (the OpenAPI schema and its browser).

Dynamic batching: requests that arrive together are queued and handed to
``Predictor.predict`` as one list, at most ``max_batch_size`` images after waiting at
most ``max_wait_ms`` for the first one's companions (no wait when no other request is
being received or decoded). The Predictor runs in one worker
thread, so the event loop keeps accepting and answering requests meanwhile. A batch
gives the same results as single calls: the Predictor runs same-sized images as one
tensor and others apart, and when a batch fails, each of its images is run alone so
only the image at fault gets the error.

Bad input is answered with a 4xx JSON error ``{"error": <code>, "detail": <what is
wrong>}`` and the server goes on: 400 for an empty body, malformed JSON, bad base64, a
file that is not an image or is truncated; 413 for a body over ``max_upload_bytes`` or
an image over ``max_pixels`` (read from the image header, before decoding); 415 for
another content type; 422 for JSON or parameters that do not fit the schema. A failure
inside the model is a 500 with a one-line message and no traceback.
"""
import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import time
from typing import List, Literal, Optional

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

SERVE_INSTALL = 'pip install "paddlex_seg[serve]"'
try:
    import uvicorn
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from pydantic import BaseModel, Field, ValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
    try:  # python-multipart: Starlette parses uploads with it (renamed module since 0.0.13)
        import python_multipart  # noqa: F401
    except ImportError:
        import multipart  # noqa: F401
except ImportError as error:  # the serve extra is not installed
    raise ImportError(f"paddlex_seg serve needs FastAPI, uvicorn and python-multipart "
                      f"({error.name or error} is missing): {SERVE_INSTALL}") from None

from .._zlib_first import check_png_writes
from ..data.dataset import SegDataError, _check_complete
from .predictor import Predictor, _read_exported_yml

__all__ = ["create_app", "serve", "SERVE_INSTALL"]

logger = logging.getLogger("paddlex_seg")

FORMATS = ("png", "list", "both")
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_WAIT_MS = 5.0
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024
# 25 megapixels: a 6000x4000 photograph passes; a decompression bomb (a small file
# that claims e.g. 20000x20000) is refused from its header.
DEFAULT_MAX_PIXELS = 25_000_000
DEFAULT_MAX_QUEUE = 1024
CONFIG_ENV = "PADDLEX_SEG_SERVE_CONFIG"  # create_app's arguments for --workers > 1


# === Errors =============================================================================

class RequestError(Exception):
    """A request the server refuses: its status code, a short code and a sentence."""

    def __init__(self, status, error, detail):
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _error_response(status, error, detail):
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


# === Request and response schemas (for validation and the OpenAPI schema) ===============

class PredictJSON(BaseModel):
    """The JSON body of POST /predict."""
    image: str = Field(description="the image file (JPEG, PNG, BMP, TIFF, WebP...) in base64; "
                                   "a data URL prefix 'data:image/...;base64,' is allowed")
    return_scores: Optional[bool] = Field(None, description="also return the class probabilities "
                                                            "(default: the query parameter, false)")
    format: Optional[Literal["png", "list", "both"]] = Field(
        None, description="label map as a base64 PNG, a list of rows, or both "
                          "(default: the query parameter, 'png')")


class ScoreMap(BaseModel):
    dtype: str = "float32"
    shape: List[int] = Field(description="[height, width, num_classes]")
    data: str = Field(description="base64 of the row-major little-endian float32 values")


class Scores(BaseModel):
    mean: List[float] = Field(description="mean probability of each class over the image")
    map: ScoreMap


class Size(BaseModel):
    height: int
    width: int


class PredictResponse(BaseModel):
    label_map_png: Optional[str] = Field(None, description="base64 PNG (8-bit grayscale), pixel "
                                                           "value = class id; format png or both")
    label_map: Optional[List[List[int]]] = Field(None, description="class ids, a list of rows "
                                                                   "(row-major); format list or both")
    classes: List[str] = Field(description="class names, indexed by class id")
    num_classes: int
    size: Size
    scores: Optional[Scores] = None
    timings: dict = Field(description="milliseconds: decode, queue, predict (the whole batch), "
                                      "encode, total; batch_size; and the Predictor's preprocess, "
                                      "inference and postprocess of the batch")


class ErrorResponse(BaseModel):
    error: str = Field(description="a short code, e.g. not_an_image")
    detail: str = Field(description="what is wrong, in a sentence")


_ERRORS = {status: {"model": ErrorResponse, "description": description} for status, description in (
    (400, "empty body, malformed JSON or base64, not an image, truncated image"),
    (413, "body over max_upload_bytes or image over max_pixels"),
    (415, "content type other than multipart/form-data, application/json or image/*"),
    (422, "JSON or parameters that do not fit the schema"),
    (500, "the model failed on this image"),
    (503, "the queue is full"))}

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_PREDICT_BODY = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "the image file"},
                       "return_scores": {"type": "boolean"},
                       "format": {"type": "string", "enum": list(FORMATS)}}}},
    "application/json": {"schema": {
        "type": "object", "required": ["image"],
        "properties": {"image": {"type": "string", "description": PredictJSON.model_fields[
                                     "image"].description},
                       "return_scores": {"type": "boolean"},
                       "format": {"type": "string", "enum": list(FORMATS)}}}},
    "image/jpeg": _BINARY, "image/png": _BINARY, "application/octet-stream": _BINARY}}}


# === Images in, results out =============================================================

def decode_image(data, name, max_pixels):
    """The HWC BGR uint8 array of an image file's bytes, as ``Predictor.predict(path)``
    reads it (OpenCV, EXIF orientation applied; PIL for formats OpenCV cannot read).

    The size is read from the header first (PIL opens lazily), so an image of more than
    ``max_pixels`` is refused before any pixel is decoded.

    Raises:
        RequestError: 400 empty / not an image / truncated / not 8-bit; 413 too many pixels.
    """
    if not data:
        raise RequestError(400, "empty_body", f"{name} is empty: send the bytes of an image "
                                              "file (JPEG, PNG, BMP, TIFF, WebP)")
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
            kind = header.format or "image"
    except Image.DecompressionBombError as error:  # PIL's own, far higher limit
        raise RequestError(413, "too_many_pixels", f"{name} is refused as a decompression bomb "
                                                   f"({error})") from None
    except Exception as error:  # PIL raises many types on arbitrary bytes
        reason = "" if isinstance(error, UnidentifiedImageError) else (
            f" ({type(error).__name__}: {_one_line(error)})")
        raise RequestError(400, "not_an_image", f"{name} ({len(data)} bytes, starting "
                                                f"{data[:8]!r}) is not an image file: send JPEG, "
                                                f"PNG, BMP, TIFF or WebP{reason}") from None
    if width * height > max_pixels:
        raise RequestError(413, "too_many_pixels",
                           f"{name} is a {width}x{height} {kind} ({width * height} pixels), more "
                           f"than this server's limit of {max_pixels} pixels (--max_pixels); "
                           "send a smaller image")
    if width < 1 or height < 1:
        raise RequestError(400, "not_an_image", f"{name} is a {kind} of size {width}x{height}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        _check_complete(buffer, name, "image")
    except SegDataError:
        raise RequestError(400, "truncated_image",
                           f"{name} is a truncated {kind}: its data ends before the end marker "
                           f"({len(data)} bytes received); send the whole file") from None
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        image = None
    if image is None:  # a format OpenCV lacks (e.g. GIF on OpenCV 4): PIL decodes it
        image = _decode_with_pil(data, name, kind, width, height)
    if image.dtype != np.uint8:
        raise RequestError(400, "unsupported_image", f"{name} has {image.dtype} pixels; the model "
                                                     "takes 8-bit images: convert it to 8 bits")
    return image


def _decode_with_pil(data, name, kind, width, height):
    try:
        with Image.open(io.BytesIO(data)) as picture:
            rgb = np.asarray(ImageOps.exif_transpose(picture).convert("RGB"))
    except Exception as error:  # truncated or corrupt pixel data
        raise RequestError(400, "not_an_image", f"{name} is a {kind} ({width}x{height}) whose pixels "
                                                f"cannot be decoded ({type(error).__name__}: "
                                                f"{_one_line(error)}): it is corrupt or truncated") from None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def encode_result(result, labels, fmt, return_scores):
    """The JSON fields of one ``Predictor.predict`` result."""
    label_map = result["label_map"]
    height, width = label_map.shape
    num_classes = int(result["score_map"].shape[2])
    out = {"classes": list(labels) if labels else [str(i) for i in range(num_classes)],
           "num_classes": num_classes, "size": {"height": int(height), "width": int(width)}}
    if fmt in ("png", "both"):
        ok, png = cv2.imencode(".png", label_map)
        if not ok:
            raise RuntimeError("OpenCV could not encode the label map as PNG")
        out["label_map_png"] = base64.b64encode(png.tobytes()).decode("ascii")
    if fmt in ("list", "both"):
        out["label_map"] = label_map.tolist()
    if return_scores:
        scores = np.ascontiguousarray(result["score_map"], dtype="<f4")
        out["scores"] = {"mean": [float(v) for v in scores.mean(axis=(0, 1))],
                         "map": {"dtype": "float32", "shape": list(scores.shape),
                                 "data": base64.b64encode(scores.tobytes()).decode("ascii")}}
    return out


def _decode_base64(text):
    if text.startswith("data:"):  # a data URL: data:image/png;base64,....
        text = text.partition(",")[2]
    text = "".join(text.split())  # base64 tools wrap lines
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, "invalid_base64", f"the JSON field 'image' is not valid base64 "
                                                  f"({_one_line(error)})") from None


def _one_line(error):
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


# === Dynamic batching ===================================================================

@dataclasses.dataclass
class _Job:
    image: np.ndarray
    future: asyncio.Future
    queued: float


class Batcher:
    """Collects queued images into batches and runs the Predictor on them in one thread.

    Args:
        predictor (Predictor): the model.
        max_batch_size (int): most images per ``predict`` call.
        max_wait_ms (float): longest wait, from the first queued image, for more.
        max_queue (int): images waiting at most; more get 503.
    """

    def __init__(self, predictor, max_batch_size, max_wait_ms, max_queue=DEFAULT_MAX_QUEUE):
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.batches = self.images = 0
        # Requests being read or decoded: the only ones worth waiting for.
        self.arriving = 0
        self._queue = None
        self._task = None
        # One thread: a Paddle predictor must not run two batches at once.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="paddlex_seg-predict")

    def start(self):
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    @property
    def waiting(self):
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, image):
        """(result, batch info) for one image; raises what the Predictor raised on it."""
        if self._queue is None:
            raise RequestError(503, "not_ready", "the server is starting or stopping; retry")
        if self._queue.qsize() >= self.max_queue:
            raise RequestError(503, "busy", f"{self._queue.qsize()} images are waiting already; "
                                            "retry later")
        job = _Job(image, asyncio.get_running_loop().create_future(), time.perf_counter())
        self._queue.put_nowait(job)
        return await job.future

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                if self.arriving == 0:  # nobody else on the way: run now
                    break
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except asyncio.TimeoutError:
                    break
            batch = [job for job in batch if not job.future.done()]  # callers that went away
            if not batch:
                continue
            started = time.perf_counter()
            try:
                outcomes, timings = await loop.run_in_executor(
                    self._executor, self._predict, [job.image for job in batch])
            except Exception as error:  # _predict catches model errors; this is a last resort
                outcomes, timings = [error] * len(batch), {}
            finished = time.perf_counter()
            self.batches += 1
            self.images += len(batch)
            info = dict(timings, batch_size=len(batch), predict_ms=1000 * (finished - started))
            for job, outcome in zip(batch, outcomes):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result((outcome, dict(info, queue_ms=1000 * (started - job.queued))))

    def _predict(self, images):
        """Results (or the exception of each failing image) and the batch's Predictor timings."""
        try:
            results = self.predictor.predict(images if len(images) > 1 else images[0])
            results = results if len(images) > 1 else [results]
            return results, _stage_timings(self.predictor)
        except Exception as error:
            if len(images) == 1:
                return [error], {}
        outcomes = []  # find the image at fault: each alone
        for image in images:
            try:
                outcomes.append(self.predictor.predict(image))
            except Exception as error:
                outcomes.append(error)
        return outcomes, _stage_timings(self.predictor)


def _stage_timings(predictor):
    timings = getattr(predictor, "timings", None) or {}
    return {f"{key}_ms": float(timings[key]) for key in ("preprocess", "inference", "postprocess")
            if key in timings}


# === Body size limit ====================================================================

class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered with 413.

    The body is counted as it streams in; past the limit the rest is read and dropped
    (up to a bound), so that clients that send the whole body before reading the
    answer get the 413 instead of a broken connection, and the app sees a disconnect.
    """

    def __init__(self, app, limit):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"received": 0, "refused": False}

        async def limited_receive():
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] != "http.request":
                return message
            state["received"] += len(message.get("body", b""))
            if state["received"] <= self.limit:
                return message
            state["refused"] = True
            more = message.get("more_body", False)
            while more and state["received"] < 4 * self.limit + (64 << 20):
                message = await receive()
                if message["type"] != "http.request":
                    break
                state["received"] += len(message.get("body", b""))
                more = message.get("more_body", False)
            body = json.dumps({"error": "upload_too_large", "detail": (
                f"the request body has more than {self.limit} bytes, this server's limit "
                "(--max_upload_bytes); send a smaller file")}).encode()
            await send({"type": "http.response.start", "status": 413, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return {"type": "http.disconnect"}

        async def guarded_send(message):
            if not state["refused"]:  # the app's answer after a 413 is dropped
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


# === The app ============================================================================

def _predictor_options(backend=None, precision=None, threads=None, predictor_options=None):
    """Predictor keyword arguments (None: the Predictor's own default)."""
    options = dict(predictor_options or {})
    for name, value in (("backend", backend), ("precision", precision)):
        if value is not None:
            options[name] = value
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an int >= 1, got {threads!r}")
        options.setdefault("mkl_thread_num", threads)
        options.setdefault("cpu_thread_num", threads)
    return options


def _check_limits(max_batch_size, max_wait_ms, max_upload_bytes, max_pixels, max_queue):
    for name, value, low in (("max_batch_size", max_batch_size, 1), ("max_upload_bytes", max_upload_bytes, 1),
                             ("max_pixels", max_pixels, 1), ("max_queue", max_queue, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if isinstance(max_wait_ms, bool) or not isinstance(max_wait_ms, (int, float)) or not (
            0 <= max_wait_ms <= 10_000):
        raise ValueError(f"max_wait_ms must be a number of milliseconds in [0, 10000], got {max_wait_ms!r}")


def _model_summary(model_dir, info, predictor, options):
    export = info.get("Export") or {}
    return {
        "model": info.get("Model"), "model_dir": os.path.abspath(model_dir),
        "status": info.get("status"), "model_status": export.get("model_status", "Normal"),
        "backend": predictor.backend, "precision": predictor.precision,
        "labels": list(info.get("labels") or []),
        "num_classes": info.get("num_classes"), "input_shape": predictor.input_shape,
        "fixed_input_shape": export.get("fixed_input_shape"), "transforms": info.get("Transforms"),
        "aug": export.get("aug"), "init_params": info.get("_init_params"),
        "paddle_version": export.get("paddle_version"), "export": export,
        "predictor": {key: value for key, value in options.items()
                      if isinstance(value, (str, int, float, bool, type(None)))},
    }


def create_app(model_dir, backend=None, precision=None, threads=None,
               max_batch_size=DEFAULT_MAX_BATCH_SIZE, max_wait_ms=DEFAULT_MAX_WAIT_MS,
               max_upload_bytes=DEFAULT_MAX_UPLOAD_BYTES, max_pixels=DEFAULT_MAX_PIXELS,
               max_queue=DEFAULT_MAX_QUEUE, predictor_options=None):
    """The FastAPI app serving an exported model (see the module docstring for the API).

    Args:
        model_dir (str): an exported model (``model.export`` / ``paddlex_seg export``).
        backend (str|None): the Predictor's ``backend`` (None: its default, 'auto');
            an error otherwise. Default: None (the Predictor's default).
        precision (str|None): the Predictor's ``precision`` (None: 'auto'). Default: None.
        threads (int|None): CPU threads of the Predictor. Default: None (its default).
        max_batch_size (int): most images per Predictor call. Default: 8.
        max_wait_ms (float): longest wait for more images once one is queued. Default: 5.
        max_upload_bytes (int): largest request body; more gets 413. Default: 32 MiB.
        max_pixels (int): largest image (width x height, read from its header); more
            gets 413. Default: 25,000,000.
        max_queue (int): images waiting at most; more get 503. Default: 1024.
        predictor_options (dict|None): other ``Predictor`` keyword arguments.

    Returns:
        fastapi.FastAPI: the app; run it with uvicorn (``serve`` does).

    Raises:
        InferenceModelError: ``model_dir`` is not a loadable exported model.
        ValueError: an argument out of range (named, with the value received).
    """
    _check_limits(max_batch_size, max_wait_ms, max_upload_bytes, max_pixels, max_queue)
    model_dir = os.fspath(model_dir)
    options = _predictor_options(backend, precision, threads, predictor_options)
    info = _read_exported_yml(model_dir)
    predictor = Predictor(model_dir, **options)
    check_png_writes("(the label map of a response)")  # Paddle 2.6 + zlib: fail now, not per request
    labels = list(predictor.labels)
    summary = _model_summary(model_dir, info, predictor, options)
    summary["batching"] = {"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms}
    summary["limits"] = {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels}
    batcher = Batcher(predictor, max_batch_size, max_wait_ms, max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="paddlex_seg serve",
                  description=f"Semantic segmentation with the exported {summary['model']} model "
                              f"in {summary['model_dir']}.",
                  version=_package_version(), lifespan=lifespan)
    app.state.predictor = predictor
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, limit=max_upload_bytes)

    @app.exception_handler(RequestError)
    async def _request_error(request, error):
        return _error_response(error.status, error.error, error.detail)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, error):
        return _error_response(422, "invalid_request", _validation_message(error.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, error):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        detail = error.detail if isinstance(error.detail, str) else json.dumps(error.detail)
        if error.status_code == 404:
            detail = f"no endpoint {request.url.path}: see /docs (POST /predict, GET /health, GET /model)"
        return JSONResponse({"error": code, "detail": detail}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _internal_error(request, error):  # logged by uvicorn; never in the body
        logger.exception("serve: %s %s failed", request.method, request.url.path)
        return _error_response(500, "internal_error", f"the server failed on this request "
                                                      f"({type(error).__name__}); see its log")

    @app.get("/health", summary="liveness and queue state")
    async def health():
        return {"status": "ok", "model": summary["model"], "waiting": batcher.waiting,
                "batches": batcher.batches, "images": batcher.images}

    @app.get("/model", summary="the exported model's model.yml, summarised")
    async def model():
        return summary

    @app.post("/predict", summary="segment one image", response_model=PredictResponse,
              responses=_ERRORS, openapi_extra=_PREDICT_BODY)
    async def predict(request: Request,
                      return_scores: bool = Query(False, description="also return class probabilities"),
                      format: Literal["png", "list", "both"] = Query(
                          "png", description="label map as base64 PNG, list of rows, or both")):
        start = time.perf_counter()
        batcher.arriving += 1
        try:
            try:
                data, name, fields = await _read_image_bytes(request)
            except ClientDisconnect:  # the body limit answered already, or the client left
                return Response(status_code=400)
            image = await asyncio.get_running_loop().run_in_executor(
                None, decode_image, data, name, max_pixels)
        finally:
            batcher.arriving -= 1  # no await from here to the queue: the batcher sees it queued
        fmt = fields.get("format") or format
        scores = fields.get("return_scores")
        scores = return_scores if scores is None else scores
        decoded = time.perf_counter()
        try:
            result, timings = await batcher.submit(image)
        except RequestError:
            raise
        except Exception as error:
            logger.warning("serve: the model failed on %s: %s: %s", name, type(error).__name__,
                           _one_line(error))
            return _error_response(500, "model_error", f"the model failed on {name} "
                                                       f"({image.shape[1]}x{image.shape[0]}): "
                                                       f"{type(error).__name__}: {_one_line(error)}")
        predicted = time.perf_counter()
        body = await asyncio.get_running_loop().run_in_executor(
            None, encode_result, result, labels, fmt, scores)
        done = time.perf_counter()
        body["timings"] = dict(timings, decode_ms=1000 * (decoded - start),
                               encode_ms=1000 * (done - predicted), total_ms=1000 * (done - start))
        return JSONResponse(body)

    return app


async def _read_image_bytes(request):
    """(image bytes, a name for messages, fields given in the body) of a /predict request."""
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";")[0].strip().lower()
    if media == "multipart/form-data":
        try:
            form = await request.form(max_files=4, max_fields=16)
        except ClientDisconnect:
            raise
        except Exception as error:  # Starlette: MultiPartException / HTTPException(400)
            raise RequestError(400, "invalid_multipart", f"the multipart body cannot be parsed "
                                                         f"({_one_line(getattr(error, 'detail', error))})") from None
        files = [(key, value) for key, value in form.multi_items() if not isinstance(value, str)]
        chosen = next((item for item in files if item[0] == "file"), files[0] if files else None)
        if chosen is None:
            raise RequestError(422, "missing_file", "the multipart body has no file: upload the "
                                                    "image as the file field 'file'")
        upload = chosen[1]
        data = await upload.read()
        name = f"the uploaded file {upload.filename or chosen[0]!r}"
        fields = {}
        if "format" in form:
            fields["format"] = _check_format(form["format"])
        if "return_scores" in form:
            fields["return_scores"] = _form_bool("return_scores", form["return_scores"])
        return data, name, fields
    if media == "application/json" or media.endswith("+json"):
        body = await request.body()
        if not body.strip():
            raise RequestError(400, "empty_body", "the request body is empty: send "
                                                  "{\"image\": \"<base64 of an image file>\"}")
        try:
            document = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            raise RequestError(400, "invalid_json", f"the body is not valid JSON "
                                                    f"({_one_line(error)})") from None
        try:
            parsed = PredictJSON.model_validate(document)
        except ValidationError as error:
            raise RequestError(422, "invalid_request", _validation_message(error.errors())) from None
        fields = {key: value for key, value in (("format", parsed.format),
                                                ("return_scores", parsed.return_scores))
                  if value is not None}
        return _decode_base64(parsed.image), "the JSON field 'image'", fields
    if media.startswith("image/") or media == "application/octet-stream":
        return await request.body(), f"the {media} body", {}
    body = await request.body()
    if not body and not media:
        raise RequestError(400, "empty_body", "the request body is empty: upload an image as "
                                              "multipart/form-data (file field 'file'), as JSON "
                                              "{\"image\": <base64>}, or as image/* bytes")
    raise RequestError(415, "unsupported_media_type",
                       f"Content-Type {content_type or '(none)'!r} is not accepted: send "
                       "multipart/form-data with a file field 'file', application/json "
                       "{\"image\": <base64>}, or the image bytes as image/*")


def _check_format(value):
    if value not in FORMATS:
        raise RequestError(422, "invalid_request", f"format must be one of {list(FORMATS)}, got {value!r}")
    return value


def _form_bool(name, value):
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off", ""):
        return False
    raise RequestError(422, "invalid_request", f"{name} must be true or false, got {value!r}")


def _validation_message(errors):
    parts = []
    for item in errors[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request does not fit the schema"


def _package_version():
    from .. import __version__
    return __version__


# === Running it =========================================================================

def _app_from_environment():
    """App factory for uvicorn's worker processes (``--workers`` > 1)."""
    # A worker imports Paddle here, after uvicorn installed its SIGINT/SIGTERM handlers,
    # and Paddle puts its own in their place (they abort with a "FatalError"); put
    # uvicorn's back so that a worker shuts down gracefully.
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    app = create_app(**json.loads(os.environ[CONFIG_ENV]))
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)
    return app


def serve(model_dir, host="127.0.0.1", port=8080, workers=1, backend=None, precision=None,
          threads=None, max_batch_size=DEFAULT_MAX_BATCH_SIZE, max_wait_ms=DEFAULT_MAX_WAIT_MS,
          max_upload_bytes=DEFAULT_MAX_UPLOAD_BYTES, max_pixels=DEFAULT_MAX_PIXELS,
          log_level="info"):
    """Serve ``model_dir`` on ``host:port`` with uvicorn until interrupted (Ctrl-C, SIGTERM).

    Args:
        model_dir (str): an exported model.
        host (str): address to bind; 0.0.0.0 serves other machines. Default: 127.0.0.1.
        port (int): TCP port. Default: 8080.
        workers (int): server processes, each with its own Predictor and batcher. Default: 1.
        backend, precision, threads, max_batch_size, max_wait_ms, max_upload_bytes,
        max_pixels: as in ``create_app``.
        log_level (str): uvicorn's log level. Default: 'info'.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in [0, 65535], got {port!r}")
    # The package's own log lines (one per Predictor call) follow the server's level.
    logging.getLogger("paddlex_seg").setLevel(log_level.upper())
    config = dict(model_dir=os.path.abspath(os.fspath(model_dir)), backend=backend,
                  precision=precision, threads=threads, max_batch_size=max_batch_size,
                  max_wait_ms=max_wait_ms, max_upload_bytes=max_upload_bytes, max_pixels=max_pixels)
    if workers == 1:
        app = create_app(**config)  # a bad model or argument fails here, before the port opens
        uvicorn.run(app, host=host, port=port, log_level=log_level)
        return
    _check_limits(max_batch_size, max_wait_ms, max_upload_bytes, max_pixels, DEFAULT_MAX_QUEUE)
    _predictor_options(backend, precision, threads)
    _read_exported_yml(config["model_dir"])
    os.environ[CONFIG_ENV] = json.dumps(config)
    uvicorn.run(f"{__name__}:_app_from_environment", factory=True, host=host, port=port,
                workers=workers, log_level=log_level)
