"""Throughput and latency of ``paddlex_seg serve`` over HTTP, beside direct Predictor calls.

A model with random weights (latency does not depend on them) is exported and served by
the real server (``python -m paddlex_seg serve`` in a subprocess, on 127.0.0.1). For
each concurrency, that many client threads send ``--requests`` JPEG uploads in all
(multipart, httpx, one connection per thread) and wait for each answer (PNG label map).
The same number of images go through the alternatives in this process:

* **direct**: the same client threads share one ``Predictor`` behind a lock (it runs
  one call at a time), each calling ``predict(path)``: decoding, pre-processing, the
  network and the mapping back, without HTTP;
* **HTTP, no batching**: the server with ``--max_batch_size 1``;
* **HTTP, batching**: the server with ``--max_batch_size`` (8) and ``--max_wait_ms`` (5).

Reported: images/s (requests / wall time), and the median and 99th percentile of the
latency each client saw. Each server is warmed up with a few requests first; both
servers and the in-process Predictor use ``--threads`` CPU threads.

    python benchmarks/serve.py                                  # FastSCNN, 256x256, concurrency 1 4 16
    python benchmarks/serve.py --model UNet --size 128 --requests 64
"""
import argparse
import concurrent.futures
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import cv2
import httpx
import numpy as np
import paddle

import paddlex_seg as seg
from paddlex_seg import compat
from paddlex_seg import transforms as T
from paddlex_seg.deploy import Predictor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("FastSCNN", "UNet", "BiSeNetV2", "DeepLabV3P", "HRNet")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="FastSCNN", choices=MODELS)
    p.add_argument("--size", type=int, default=256, help="image height and width")
    p.add_argument("--requests", type=int, default=96, help="requests per concurrency and path")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the Predictor")
    p.add_argument("--max_batch_size", type=int, default=8)
    p.add_argument("--max_wait_ms", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=4, help="untimed requests per configuration")
    p.add_argument("--work_dir", default=None, help="where the model is exported (default: temp)")
    return p.parse_args(argv)


def export_model(name, work_dir):
    paddle.seed(0)
    model = getattr(seg, name)(num_classes=3)
    model.labels = ["background", "a", "b"]
    model.eval_transforms = T.Compose([T.Normalize()])
    # The old IR on Paddle 3 (Paddle Inference 3.3 cannot run the new IR's bilinear
    # interpolation under oneDNN); a no-op on 2.6 and where export already writes it.
    with compat.legacy_program_ir():
        model.export(os.path.join(work_dir, "infer"))
    return os.path.join(work_dir, "infer")


def write_images(work_dir, size, count=8):
    paths = []
    for i in range(count):
        rng = np.random.RandomState(i)
        small = rng.randint(0, 256, (size // 8, size // 8, 3)).astype("uint8")
        image = cv2.GaussianBlur(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), (5, 5), 0)
        path = os.path.join(work_dir, f"photo_{i}.jpg")
        cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def run_clients(concurrency, requests, call):
    """Latencies (s) of ``requests`` calls of ``call(i)`` from ``concurrency`` threads, and the wall time."""
    def one(i):
        start = time.perf_counter()
        call(i)
        return time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(one, range(requests)))
    return latencies, time.perf_counter() - start


class Server:
    def __init__(self, model_dir, threads, max_batch_size, max_wait_ms):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "paddlex_seg", "serve", "--model_dir", model_dir, "--port",
             str(self.port), "--threads", str(threads), "--max_batch_size", str(max_batch_size),
             "--max_wait_ms", str(max_wait_ms), "--log_level", "warning"], env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.3)
        raise RuntimeError("the server did not start in 180 s")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def http_call(url, payloads, batch_sizes):
    local = threading.local()

    def call(i):
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=300)
        name, data = payloads[i % len(payloads)]
        response = local.client.post("/predict", files={"file": (name, data)})
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
        batch_sizes.append(response.json()["timings"]["batch_size"])
    return call


def main(argv=None):
    args = parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="bench_serve_")
    os.makedirs(work_dir, exist_ok=True)
    import logging
    logging.getLogger("paddlex_seg").setLevel(logging.WARNING)
    model_dir = export_model(args.model, work_dir)
    paths = write_images(work_dir, args.size)
    payloads = [(os.path.basename(p), open(p, "rb").read()) for p in paths]
    rows = []

    predictor = Predictor(model_dir, mkl_thread_num=args.threads, cpu_thread_num=args.threads)
    lock = threading.Lock()

    def direct(i):
        with lock:
            predictor.predict(paths[i % len(paths)])

    for i in range(args.warmup):
        direct(i)
    for c in args.concurrency:
        latencies, wall = run_clients(c, args.requests, direct)
        rows.append(("direct Predictor (one, locked)", c, latencies, wall, 1.0))
    del predictor

    for label, batch in (("HTTP, no batching", 1), (f"HTTP, batching (≤{args.max_batch_size}, "
                                                    f"{args.max_wait_ms:g} ms)", args.max_batch_size)):
        server = Server(model_dir, args.threads, batch, args.max_wait_ms)
        try:
            for c in args.concurrency:
                sizes = []
                call = http_call(server.url, payloads, sizes)
                run_clients(min(c, args.warmup), args.warmup, call)
                sizes.clear()
                latencies, wall = run_clients(c, args.requests, call)
                rows.append((label, c, latencies, wall, float(np.mean(sizes))))
        finally:
            server.stop()

    print(f"\n{args.model}, {args.size}x{args.size} JPEG, {args.requests} requests per row, "
          f"{args.threads} Predictor threads, Paddle {paddle.__version__}\n")
    print("| path | clients | images/s | p50 ms | p99 ms | mean batch |")
    print("|---|---|---|---|---|---|")
    for label, c, latencies, wall, batch in sorted(rows, key=lambda r: (r[1], r[0])):
        ms = np.array(latencies) * 1000
        print(f"| {label} | {c} | {len(latencies) / wall:.1f} | {np.percentile(ms, 50):.1f} | "
              f"{np.percentile(ms, 99):.1f} | {batch:.2f} |")


if __name__ == "__main__":
    main()
