"""paddlex_seg serve: the real server in a subprocess, called over HTTP with httpx.

One server (module fixture) serves a tiny exported UNet whose eval transforms pad to
64x64: images up to 64x64 work, a larger one makes the model fail (Padding raises), which
is how the 500 path is reached. Every bad request is followed by a good one, answered.
"""
import base64
import concurrent.futures
import io
import os
import socket
import struct
import subprocess
import sys
import time
import zlib

import cv2
import numpy as np
import paddle
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import paddlex_seg as seg  # noqa: E402
from oracle import randomize_batch_norm_stats  # noqa: E402
from paddlex_seg import compat  # noqa: E402
from paddlex_seg import transforms as T  # noqa: E402
from paddlex_seg.deploy import Predictor  # noqa: E402
from paddlex_seg.deploy import serve as serve_module  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LABELS = ["background", "circle", "rectangle"]
MAX_PIXELS = 100_000
MAX_UPLOAD = 2_000_000
MAX_BATCH = 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    paddle.seed(0)
    model = seg.UNet(num_classes=3)
    randomize_batch_norm_stats(model.net, seed=1)
    model.net.eval()
    model.labels = LABELS
    model.eval_transforms = T.Compose([T.Padding(target_size=64), T.Normalize()])
    root = tmp_path_factory.mktemp("serve")
    # The old IR on Paddle 3: Paddle Inference 3.3 cannot run the new IR's bilinear
    # interpolation on this CPU (see compat); a no-op on 2.6.
    with compat.legacy_program_ir():
        model.export(str(root / "infer"))
    return str(root / "infer")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_dir, log_path, *options):
    """``python -m paddlex_seg serve`` on a free port; (url, process) once /health answers."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "paddlex_seg", "serve", "--model_dir", model_dir,
               "--port", str(port), *options]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return url, process
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop_server(process)
            pytest.fail(f"the server did not answer /health in 120 s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.3)


def stop_server(process):
    process.terminate()
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("serve_log") / "server.log"
    url, process = start_server(
        exported, log_path, "--threads", "2", "--max_batch_size", str(MAX_BATCH),
        "--max_wait_ms", "5", "--max_pixels", str(MAX_PIXELS), "--max_upload_bytes",
        str(MAX_UPLOAD), "--log_level", "warning")
    try:
        yield url, process, log_path
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server[0], timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def predictor(exported):
    # The server's options: --threads 2.
    return Predictor(exported, mkl_thread_num=2, cpu_thread_num=2)


def photo(h, w, seed):
    """A smooth random colour picture (photograph-like, not noise)."""
    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, (max(2, h // 8), max(2, w // 8), 3)).astype("uint8")
    return cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (5, 5), 0)


def encoded(image, ext):
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_images")
    paths = {"a.jpg": photo(64, 64, 1), "b.png": photo(40, 48, 2), "c.jpg": photo(64, 50, 3),
             "d.png": photo(33, 64, 4)}
    out = {}
    for name, image in paths.items():
        path = root / name
        path.write_bytes(encoded(image, os.path.splitext(name)[1]))
        out[name] = str(path)
    return out


def label_map_of(body):
    data = base64.b64decode(body["label_map_png"])
    label_map = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert label_map.dtype == np.uint8 and label_map.ndim == 2
    return label_map


def upload(client, path, **params):
    with open(path, "rb") as f:
        return client.post("/predict", files={"file": (os.path.basename(path), f.read())},
                           params=params)


def assert_good_request(client, files, predictor):
    response = upload(client, files["a.jpg"])
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(label_map_of(response.json()),
                                  predictor.predict(files["a.jpg"])["label_map"])


# === Results equal Predictor.predict ===

def test_health_and_model(client):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    summary = client.get("/model").json()
    assert summary["model"] == "UNet" and summary["status"] == "Infer"
    assert summary["labels"] == LABELS and summary["num_classes"] == 3
    assert summary["input_shape"] == [None, 3, None, None]
    assert [op[0] for op in summary["transforms"]] == ["Compose", "Padding", "Normalize"]
    assert summary["limits"] == {"max_upload_bytes": MAX_UPLOAD, "max_pixels": MAX_PIXELS}
    assert summary["batching"]["max_batch_size"] == MAX_BATCH


@pytest.mark.parametrize("name", ["a.jpg", "b.png"])
def test_multipart_upload_equals_predictor(client, files, predictor, name):
    response = upload(client, files[name], format="both", return_scores="true")
    assert response.status_code == 200, response.text
    body = response.json()
    expected = predictor.predict(files[name])
    height, width = expected["label_map"].shape
    assert body["size"] == {"height": height, "width": width}
    assert body["classes"] == LABELS and body["num_classes"] == 3
    np.testing.assert_array_equal(label_map_of(body), expected["label_map"])
    np.testing.assert_array_equal(np.array(body["label_map"], dtype=np.uint8), expected["label_map"])
    scores = body["scores"]
    assert scores["map"]["shape"] == [height, width, 3] and scores["map"]["dtype"] == "float32"
    score_map = np.frombuffer(base64.b64decode(scores["map"]["data"]), "<f4").reshape(height, width, 3)
    np.testing.assert_array_equal(score_map, expected["score_map"])
    np.testing.assert_allclose(scores["mean"], expected["score_map"].mean(axis=(0, 1)), rtol=1e-5)
    timings = body["timings"]
    assert timings["batch_size"] >= 1 and timings["total_ms"] >= timings["predict_ms"] > 0
    assert {"decode_ms", "queue_ms", "encode_ms", "inference_ms"} <= set(timings)


def test_base64_json_and_raw_bytes_equal_predictor(client, files, predictor):
    path = files["c.jpg"]
    with open(path, "rb") as f:
        data = f.read()
    expected = predictor.predict(path)["label_map"]
    text = base64.b64encode(data).decode()
    plain = client.post("/predict", json={"image": text, "format": "list"})
    assert plain.status_code == 200, plain.text
    assert "label_map_png" not in plain.json() and "scores" not in plain.json()
    np.testing.assert_array_equal(np.array(plain.json()["label_map"], dtype=np.uint8), expected)
    # A data URL with line-wrapped base64 (what `base64` prints) works too.
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    data_url = client.post("/predict", json={"image": "data:image/jpeg;base64," + wrapped})
    assert data_url.status_code == 200, data_url.text
    np.testing.assert_array_equal(label_map_of(data_url.json()), expected)
    raw = client.post("/predict", content=data, headers={"Content-Type": "image/jpeg"})
    assert raw.status_code == 200, raw.text
    np.testing.assert_array_equal(label_map_of(raw.json()), expected)


def test_gif_grayscale_and_rgba_images_are_answered(client, predictor):
    from PIL import Image
    rgb = photo(40, 56, 7)[:, :, ::-1]
    cases = {"p.gif": ("GIF", Image.fromarray(rgb).quantize(64)),
             "g.png": ("PNG", Image.fromarray(rgb[:, :, 0])),
             "a.png": ("PNG", Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])))}
    for name, (kind, picture) in cases.items():
        buffer = io.BytesIO()
        picture.save(buffer, kind)
        response = client.post("/predict", files={"file": (name, buffer.getvalue())})
        assert response.status_code == 200, (name, response.text)
        expected = np.asarray(picture.convert("RGB"))[:, :, ::-1]  # what the server decodes
        np.testing.assert_array_equal(label_map_of(response.json()),
                                      predictor.predict(np.ascontiguousarray(expected))["label_map"])


# === Bad input: a 4xx JSON error naming the problem, then the next request is served ===

def png_header_claiming(width, height):
    """A valid PNG of a few bytes whose header claims ``width`` x ``height`` pixels."""
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def _multipart(name, data):
    return {"files": {"file": (name, data)}}


def _bad_requests():
    jpeg = encoded(photo(64, 64, 5), ".jpg")
    black = encoded(np.zeros((1000, 1000), np.uint8), ".png")  # 1 MP in ~1 KB
    return {
        "empty body": (dict(), 400, "empty_body", "empty"),
        "empty file": (_multipart("empty.jpg", b""), 400, "empty_body", "'empty.jpg' is empty"),
        "empty JSON body": (dict(content=b"", headers={"Content-Type": "application/json"}),
                            400, "empty_body", "empty"),
        "not an image": (_multipart("notes.txt", b"just some text, not pixels\n" * 20),
                         400, "not_an_image", "'notes.txt'"),
        "truncated JPEG": (_multipart("cut.jpg", jpeg[:len(jpeg) // 2]), 400, "truncated_image",
                           "truncated JPEG"),
        "decompression bomb": (_multipart("bomb.png", black), 413, "too_many_pixels",
                               f"1000x1000 PNG (1000000 pixels), more than this server's limit of {MAX_PIXELS}"),
        "header bomb": (_multipart("huge.png", png_header_claiming(30000, 30000)), 413,
                        "too_many_pixels", "decompression bomb"),
        "oversized upload": (_multipart("big.jpg", os.urandom(MAX_UPLOAD + 1000)), 413,
                             "upload_too_large", f"more than {MAX_UPLOAD} bytes"),
        "oversized JSON": (dict(json={"image": "A" * (MAX_UPLOAD + 10)}), 413, "upload_too_large",
                           "--max_upload_bytes"),
        "wrong content type": (dict(content=jpeg, headers={"Content-Type": "text/plain"}), 415,
                               "unsupported_media_type", "'text/plain' is not accepted"),
        "malformed JSON": (dict(content=b'{"image": "abc', headers={"Content-Type": "application/json"}),
                           400, "invalid_json", "not valid JSON"),
        "bad base64": (dict(json={"image": "this is not base64!"}), 400, "invalid_base64",
                       "not valid base64"),
        "base64 of a non-image": (dict(json={"image": base64.b64encode(b"hello").decode()}),
                                  400, "not_an_image", "JSON field 'image'"),
        "JSON without image": (dict(json={"picture": "abc"}), 422, "invalid_request", "image"),
        "JSON of a list": (dict(json=[1, 2]), 422, "invalid_request", "body"),
        "wrong format": (dict(json={"image": base64.b64encode(jpeg).decode(), "format": "gif"}),
                         422, "invalid_request", "format"),
        "multipart without file": (dict(data={"format": "png"}, files={"other": ("", b"")}), 422,
                                   "missing_file", "no file"),
    }


BAD_REQUESTS = _bad_requests()


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_4xx_json_error_and_the_server_goes_on(client, files, predictor, case):
    kwargs, status, error, detail = BAD_REQUESTS[case]
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error and detail in body["detail"], body
    assert "Traceback" not in response.text
    assert_good_request(client, files, predictor)


def test_unknown_path_and_method_are_json_errors(client, files, predictor):
    missing = client.get("/segment")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"
    bad_query = upload(client, files["a.jpg"], return_scores="maybe")
    assert bad_query.status_code == 422 and "return_scores" in bad_query.json()["detail"]
    assert_good_request(client, files, predictor)


def test_a_model_error_is_a_500_with_a_message_and_no_traceback(client, files, predictor, server):
    # Padding(64) cannot take a 100x80 image: the Predictor raises ValueError.
    response = client.post("/predict", files={"file": ("large.png", encoded(photo(100, 80, 6), ".png"))})
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "model_error", body
    assert "'large.png'" in body["detail"] and "ValueError" in body["detail"]
    assert "target_size" in body["detail"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert_good_request(client, files, predictor)
    assert server[1].poll() is None


# === Load: 200 requests from 8 clients, batched, all answered and right ===

def test_load_200_requests_from_8_clients(server, files, predictor):
    names = sorted(files)
    payloads = {name: open(files[name], "rb").read() for name in names}
    expected = {name: predictor.predict(files[name])["label_map"] for name in names}

    def one(i):
        name = names[i % len(names)]
        start = time.perf_counter()
        response = client.post("/predict", files={"file": (name, payloads[name])})
        latency = time.perf_counter() - start
        ok = response.status_code == 200 and np.array_equal(label_map_of(response.json()), expected[name])
        return ok, latency, response.json()["timings"]["batch_size"] if ok else None, response.text[:300]

    with httpx.Client(base_url=server[0], timeout=120,
                      limits=httpx.Limits(max_connections=8, max_keepalive_connections=8)) as client:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(one, range(200)))
    failures = [text for ok, _, _, text in outcomes if not ok]
    assert not failures, f"{len(failures)} of 200 failed, e.g. {failures[:3]}"
    latencies = np.array([latency for _, latency, _, _ in outcomes]) * 1000
    batch_sizes = [size for _, _, size, _ in outcomes]
    assert max(batch_sizes) <= MAX_BATCH
    assert max(batch_sizes) > 1, "8 concurrent clients never shared a batch"
    print(f"\nserve load test: 200 requests, 8 clients: p50 {np.percentile(latencies, 50):.1f} ms, "
          f"p99 {np.percentile(latencies, 99):.1f} ms, mean batch {np.mean(batch_sizes):.2f}")


# === The OpenAPI schema, fuzzed: no 5xx ===

def test_schemathesis_finds_no_server_error(server, client, files, predictor, tmp_path):
    schema = client.get("/openapi.json").json()
    assert {"/predict", "/health", "/model"} <= set(schema["paths"])
    assert {"multipart/form-data", "application/json"} <= set(
        schema["paths"]["/predict"]["post"]["requestBody"]["content"])
    st = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    if not os.path.exists(st):
        pytest.skip("schemathesis is not installed")
    out = subprocess.run(
        [st, "run", server[0] + "/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "40", "--seed", "1", "--workers", "1", "--generation-database", "none",
         "--request-timeout", "30", "--no-color"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path)  # its cache goes to cwd
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Tested: 3" in out.stdout and "No issues found" in out.stdout, out.stdout[-2000:]
    assert server[1].poll() is None
    assert_good_request(client, files, predictor)


# === Several worker processes ===

def test_two_workers_serve_and_shut_down_gracefully(exported, files, predictor, tmp_path):
    log_path = tmp_path / "workers.log"
    url, process = start_server(exported, log_path, "--workers", "2", "--threads", "1")
    try:
        expected = predictor.predict(files["b.png"])["label_map"]
        with open(files["b.png"], "rb") as f:
            data = f.read()
        with httpx.Client(base_url=url, timeout=60) as c:
            for _ in range(6):
                response = c.post("/predict", files={"file": ("b.png", data)})
                assert response.status_code == 200, response.text
                np.testing.assert_array_equal(label_map_of(response.json()), expected)
    finally:
        stop_server(process)
    log = log_path.read_text()
    # Each worker shuts down through uvicorn, not through Paddle's signal handler.
    assert log.count("Application shutdown complete") == 2, log[-3000:]
    assert "FatalError" not in log, log[-3000:]


# === Arguments ===

def test_backend_precision_and_threads_reach_the_predictor(exported):
    assert serve_module._predictor_options("openvino", "bf16", 2) == {
        "backend": "openvino", "precision": "bf16", "mkl_thread_num": 2, "cpu_thread_num": 2}
    assert serve_module._predictor_options(None, None, 3) == {"mkl_thread_num": 3, "cpu_thread_num": 3}
    with pytest.raises(ValueError, match="threads must be an int >= 1, got 0"):
        serve_module._predictor_options(None, None, 0)
    # /model says what runs the model; a bad choice fails at start-up, naming it.
    from fastapi.testclient import TestClient
    with TestClient(serve_module.create_app(exported, backend="paddle", precision="fp32")) as client:
        summary = client.get("/model").json()
    assert (summary["backend"], summary["precision"]) == ("paddle", "fp32")
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        serve_module.create_app(exported, backend="tensorrt")


def test_cli_errors_before_serving(exported, tmp_path, capsys):
    from paddlex_seg.cli import main
    assert main(["serve", "--model_dir", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve", "--model_dir", exported, "--max_batch_size", "0"]) == 1
    assert "max_batch_size must be an int >= 1, got 0" in capsys.readouterr().err


def test_missing_fastapi_names_the_serve_extra(exported):
    code = ("import sys\nsys.modules['fastapi'] = None\n"
            "from paddlex_seg.cli import main\n"
            f"sys.exit(main(['serve', '--model_dir', {exported!r}]))\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 1, out.stderr[-2000:]
    assert 'pip install "paddlex_seg[serve]"' in out.stderr and "fastapi" in out.stderr


def test_the_app_loads_no_training_code(exported):
    code = ("import sys\nfrom paddlex_seg.deploy.serve import create_app\n"
            f"create_app({exported!r})\n"
            "print(' '.join(m for m in sys.modules if m.startswith('paddlex_seg')))\n")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = set(out.stdout.split())
    assert "paddlex_seg.deploy.serve" in loaded and "paddlex_seg.deploy.predictor" in loaded
    training = sorted(m for m in loaded if m.startswith((
        "paddlex_seg.engine", "paddlex_seg.segmenter", "paddlex_seg.slim", "paddlex_seg.models")))
    assert not training, f"the server imported training code: {training}"


def test_cli_defaults_are_the_servers():
    # cli.py spells them out, so that `paddlex_seg --help` works without the serve extra.
    import inspect
    from paddlex_seg.cli import build_parser
    args = build_parser().parse_args(["serve", "--model_dir", "m"])
    defaults = {name: p.default for name, p in inspect.signature(serve_module.serve).parameters.items()}
    for name in ("host", "port", "workers", "backend", "precision", "threads", "max_batch_size",
                 "max_wait_ms", "max_upload_bytes", "max_pixels", "log_level"):
        assert getattr(args, name) == defaults[name], name
