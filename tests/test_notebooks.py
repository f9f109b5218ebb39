"""The example notebooks (examples/*.ipynb) run top to bottom and produce what they promise.

Each notebook is copied into a temporary directory with small values put into its first
code cell (the parameter cell: tiny images, few epochs, synthetic data) and executed there
with nbclient on the 'python3' kernel. The checks read the files the notebook wrote and
the text it printed. A copy of the executed notebook is left beside them, to open when a
check fails.
"""
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
NOTEBOOKS = ("quick_start.ipynb", "compression.ipynb", "deployment.ipynb")


# === Helpers ===

def set_parameters(nb, values):
    """Replace ``NAME = ...`` lines of the first code cell; every NAME must be there."""
    cell = next(c for c in nb.cells if c.cell_type == "code")
    source = cell.source
    for name, value in values.items():
        source, count = re.subn(rf"^{name}\s*=.*$", lambda _: f"{name} = {value!r}", source,
                                flags=re.MULTILINE)
        assert count == 1, f"parameter {name} is not assigned once in the first code cell"
    cell.source = source


def execute(name, work, parameters, budget):
    """Run examples/<name> in ``work`` with ``parameters``; the whole run gets ``budget`` s."""
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    set_parameters(nb, parameters)
    nbformat.write(nb, work / name)  # the temporary copy that runs
    deadline = time.monotonic() + budget
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", resources={"metadata": {"path": str(work)}},
        # Each cell may use what is left of the notebook's budget.
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())), startup_timeout=60)
    try:
        client.execute()
    finally:
        nbformat.write(nb, work / name)
    return nb


def printed(nb):
    """Everything the notebook printed to stdout, and the text/plain of its results."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream" and out.name == "stdout":
                parts.append(out.text)
            elif out.output_type in ("execute_result", "display_data"):
                parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def count_figures(nb):
    return sum("image/png" in out.get("data", {})
               for cell in nb.cells for out in cell.get("outputs", []))


@pytest.fixture
def kernel_env(monkeypatch):
    # The kernel is a new process: it must find paddlex_seg from a temporary working directory.
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", str(REPO) + (os.pathsep + path if path else ""))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


# === The notebooks as stored ===

@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_clean(name):
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code_cells), \
        f"{name}: clear the outputs before committing"
    # The first code cell holds the parameters and nothing else: NAME = value lines.
    for line in code_cells[0].source.splitlines():
        assert not line.strip() or line.startswith("#") or re.match(r"^[A-Z_0-9]+ = ", line), line
    assert "WORK_DIR" in code_cells[0].source and "DATA" in code_cells[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


# === The notebooks, executed with small parameters ===

SMALL_DATA = {"DATA": "synthetic", "NUM_TRAIN": 8, "NUM_VAL": 2, "BATCH_SIZE": 4, "WORK_DIR": "work"}


def test_quick_start(tmp_path, kernel_env):
    nb = execute("quick_start.ipynb", tmp_path, dict(
        SMALL_DATA, IMAGE_SIZE=64, DEEPLAB_EPOCHS=1, UNET_EPOCHS=1, NUM_PICTURES=2), budget=150)
    work = tmp_path / "work"
    text = printed(nb)
    for model in ("DeepLabV3P", "UNet"):
        found = re.search(rf"^{model}\s+mIoU (\d\.\d+)\s+oacc (\d\.\d+)\s+kappa (-?\d\.\d+)", text, re.M)
        assert found, f"no metrics line for {model} in:\n{text}"
        assert 0.0 <= float(found.group(1)) <= 1.0 and 0.0 <= float(found.group(2)) <= 1.0
        overlays = sorted((work / "overlays" / model).glob("visualize_*"))
        assert len(overlays) == 2, overlays
        picture = cv2.imread(str(overlays[0]))
        assert picture is not None and picture.shape == (64, 64, 3)
    assert (work / "unet" / "best_model" / "model.yml").is_file()
    assert (work / "deeplabv3p" / "best_model" / "model.yml").is_file()
    assert "label_map (64, 64) uint8, score_map (64, 64, 3) float32" in text
    assert count_figures(nb) >= 2  # the data and the overlays


def test_compression(tmp_path, kernel_env):
    nb = execute("compression.ipynb", tmp_path, dict(
        SMALL_DATA, IMAGE_SIZE=32, TRAIN_EPOCHS=1, FINETUNE_EPOCHS=1, QAT_EPOCHS=1,
        SENSITIVITY_IMAGES=1, LATENCY_REPEATS=3), budget=180)
    work = tmp_path / "work"
    table = pd.read_csv(work / "compression_results.csv", index_col="stage")
    assert list(table.index) == ["float", "pruned", "int8"]
    assert {"mIoU", "GFLOPs", "size (MB)", "latency (ms)", "speed-up"} <= set(table.columns)
    assert table["mIoU"].between(0, 1).all() and (table["latency (ms)"] > 0).all()
    assert table.loc["pruned", "GFLOPs"] < table.loc["float", "GFLOPs"]
    assert table.loc["pruned", "parameters (M)"] < table.loc["float", "parameters (M)"]
    # int8 weights take about a quarter of the pruned model's float32 ones.
    assert table.loc["int8", "size (MB)"] < 0.5 * table.loc["pruned", "size (MB)"]
    for stage in ("float", "pruned", "int8"):
        assert (work / "export" / stage / "model.pdiparams").is_file()
        assert (work / "models" / stage / "model.yml").is_file()
    assert (work / "sensitivity" / "model.sensi.data").is_file()
    assert (work / "sensitivity.png").stat().st_size > 0
    text = printed(nb)
    assert re.search(r"prunable layers", text) and re.search(r"of the FLOPs removed", text)
    assert "speed-up" in text  # the printed table
    assert count_figures(nb) >= 1  # the sensitivity plot


def test_deployment(tmp_path, kernel_env):
    pytest.importorskip("paddle2onnx")
    pytest.importorskip("onnxruntime")
    nb = execute("deployment.ipynb", tmp_path, dict(
        SMALL_DATA, IMAGE_SIZE=64, EPOCHS=1, REPEATS=3), budget=120)
    work = tmp_path / "work"
    from paddlex_seg.compat import program_file
    assert program_file(str(work / "inference_model" / "model")), "no exported program"
    for name in ("model.pdiparams", "model.yml"):
        assert (work / "inference_model" / name).is_file()
    assert (work / "onnx_model" / "model.onnx").is_file()
    text = printed(nb)
    agree = re.search(r"label maps agree on ([\d.]+)% of the pixels, largest probability difference (\S+)", text)
    # A barely trained model may have near-ties, where a 1e-6 difference flips a pixel.
    assert agree and float(agree.group(1)) >= 99.9 and float(agree.group(2)) < 1e-4, text
    onnx = re.search(r"Paddle Inference: label maps identical: (\w+), largest probability difference (\S+)", text)
    assert onnx and float(onnx.group(2)) < 1e-4, text
    # Section 7: the exported model served over HTTP answers as the Predictor does.
    assert re.search(r"HTTP 200: .*label map identical to the Predictor's: True", text), text
    assert "a text file instead of an image: HTTP 400, not_an_image" in text, text
    timings = pd.read_csv(work / "deployment_timings.csv", index_col="engine")
    assert len(timings) == 4 and any("ONNX Runtime" in name for name in timings.index)
    assert np.all(timings["ms per image (median)"] > 0)
    assert np.allclose(timings["images/s"], 1000 / timings["ms per image (median)"])
