"""docs/migrating_from_paddlex.md: its ```python blocks run, in order, in an empty folder."""
import os
import re

import pytest

from paddlex_seg import segmenter

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "migrating_from_paddlex.md")


def _python_blocks(text):
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_doc_states_the_one_line_change():
    text = open(DOC, encoding="utf-8").read()
    assert "-import paddlex as pdx\n-from paddlex import transforms as T\n" \
           "+import paddlex_seg as pdx\n+from paddlex_seg import transforms as T" in text
    assert "paddlex_seg --export_inference --model_dir=./output/unet/best_model/" in text


def test_doc_python_blocks_run(tmp_path, monkeypatch):
    blocks = _python_blocks(open(DOC, encoding="utf-8").read())
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    # Tiny sizes for the compression step: one pruning ratio per layer, FLOPs at 64x64.
    monkeypatch.setattr(segmenter, "SENSITIVITY_RATIOS", (0.3,))
    monkeypatch.setattr(segmenter, "PRUNE_INPUT_SHAPE", [1, 3, 64, 64])
    namespace = {"__name__": "__doc_example__"}
    for number, block in enumerate(blocks, start=1):
        try:
            exec(compile(block, f"{DOC} python block {number}", "exec"), namespace)
        except Exception as error:  # say which block failed
            pytest.fail(f"python block {number} of {DOC} raised {type(error).__name__}: {error}")
    assert os.path.isfile("output/unet/prune/model.sensi.data")
    assert namespace["model"].status == "Normal"
    assert os.path.isfile("inference_model/model.pdmodel")
