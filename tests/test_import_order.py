"""``import paddle`` first, then the package, then every PNG the package writes (issue 17).

Paddle 2.6's libpaddle.so exports zlib's symbols; a process that imports it before zlib
crashed (segfault in deflateReset) at its first PNG write. Each case runs in a fresh
interpreter, the way a user's script does, because pytest itself imports zlib first.
"""
import os
import subprocess
import sys
import sysconfig
import textwrap

import numpy as np
import pytest
from PIL import Image

import paddlex_seg.compat as compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZLIB_PTH_INSTALLED = os.path.isfile(os.path.join(sysconfig.get_paths()["purelib"],
                                                 "paddlex_seg_zlib_first.pth"))

SCRIPT = textwrap.dedent("""
    import paddle                       # first, as in docs/augmented_inference.md
    import os, sys, subprocess
    import numpy as np
    import paddlex_seg as seg
    from paddlex_seg.compress import plot_sensitivity, plot_tradeoff

    out = sys.argv[1]
    gray = seg.make_synthetic_dataset(os.path.join(out, "gray"), num_train=2, num_val=1,
                                      image_size=(32, 32), num_classes=3)
    pal = seg.make_synthetic_dataset(os.path.join(out, "palette"), num_train=2, num_val=1,
                                     image_size=(32, 32), num_classes=3, palette_labels=True)
    model = seg.UNet(num_classes=3, use_deconv=False)
    model.net.eval()
    model.eval_transforms = seg.transforms.Compose([seg.transforms.Normalize()])
    image = os.path.join(pal.root, open(pal.val_list).read().split()[0])
    result = model.predict(image)
    seg.visualize(image, result, save_dir=os.path.join(out, "vis"))
    model.save(os.path.join(out, "model"))
    plot_sensitivity({"conv_a.weight": {0.1: 0.01, 0.2: 0.05}}, os.path.join(out, "sens.png"))
    plot_tradeoff([{"stage": "baseline", "latency_ms": 3.0, "miou_deployed": 0.5,
                    "export_bytes": 2**20, "flops": 1e9}], os.path.join(out, "tradeoff.png"))
    # predict --save_label goes through the CLI, in this same process order.
    sys.argv = ["paddlex_seg", "predict", "--model_dir", os.path.join(out, "model"),
                "--image", image, "--save_dir", os.path.join(out, "pred"), "--save_label"]
    from paddlex_seg.cli import main
    main()
    print("OK")
""")


def _run(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, str(script), str(tmp_path / "out")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not compat.PADDLE3 and not ZLIB_PTH_INSTALLED,
                    reason="covered by test_editable_install_on_paddle_26_gets_a_clear_error")
def test_paddle_first_then_every_png_the_package_writes(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode} (-11 is the segfault)\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("OK")
    out = tmp_path / "out"
    gray_labels = sorted((out / "gray" / "annotations").glob("*.png"))
    palette_labels = sorted((out / "palette" / "annotations").glob("*.png"))
    assert gray_labels and palette_labels
    for path in gray_labels:
        assert Image.open(path).mode == "L"
        assert np.asarray(Image.open(path)).max() < 3
    for path in palette_labels:
        assert Image.open(path).mode == "P" and np.asarray(Image.open(path)).max() < 3
    for name in ("sens.png", "tradeoff.png"):
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and min(picture.size) > 100
    (overlay,) = (out / "vis").iterdir()
    assert Image.open(overlay).size == (32, 32)
    (label,) = (out / "pred").glob("label_*.png")
    assert Image.open(label).size == (32, 32) and np.asarray(Image.open(label)).max() < 3


@pytest.mark.skipif(compat.PADDLE3 or ZLIB_PTH_INSTALLED,
                    reason="only an editable install on Paddle 2.6 lacks the start-up zlib load")
def test_editable_install_on_paddle_26_gets_a_clear_error(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 1, f"exit {proc.returncode} (-11 is the segfault)\n{proc.stderr[-3000:]}"
    assert "imported before zlib" in proc.stderr and "cannot write the PNG" in proc.stderr
