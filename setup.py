"""Install paddlex_seg. The README's first command does it for the default stack:

    pip install -c constraints/paddle3.txt ".[cpu]" && pip install -c constraints/paddle3.txt --no-deps paddleslim

Paddle itself is the ``cpu`` extra (``paddlepaddle``); on a GPU machine install
``paddlepaddle-gpu`` first and leave the extra out. PaddleSlim (pruning, QAT) goes in
with ``--no-deps`` because its metadata pins opencv-python==4.6.0.66; what it needs at
run time is listed here instead. ``constraints/*.txt`` lock every package of each
supported stack (see README, "Supported stacks").
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ZLIB_PTH = "paddlex_seg_zlib_first.pth"


class BuildWithZlibFirst(build_py):
    """Also put ``paddlex_seg_zlib_first.pth`` at the top of site-packages.

    Python runs an ``import`` line of a .pth file at start-up, so the system zlib is
    loaded before any script can ``import paddle``; see paddlex_seg/_zlib_first.py for
    why Paddle 2.6 needs this. (An editable install, ``pip install -e``, does not get
    it; the package then warns when it finds the crash possible.)
    """

    def run(self):
        super().run()
        self.copy_file(ZLIB_PTH, os.path.join(self.build_lib, ZLIB_PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, ZLIB_PTH)]


setup(
    name="paddlex_seg",
    version="0.2.0",
    description="PaddlePaddle-native, high-level semantic segmentation toolkit in the style of PaddleX 2.x",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["paddlex_seg", "paddlex_seg.*"]),
    python_requires=">=3.8",
    # Ranges measured to work (constraints/ locks the exact sets); Paddle is an extra.
    install_requires=[
        "numpy>=1.23,<3",
        "opencv-python>=4.6.0.66",
        "Pillow>=9.5",
        "PyYAML>=5.4",
        "tqdm>=4.60",
        "requests>=2.25",
        "matplotlib>=3.7",          # compress report pictures (Agg backend)
        "visualdl>=2.5.3",
        "pandas>=1.5",              # VisualDL's server
        # PaddleSlim 2.6 (installed --no-deps) imports these at run time.
        "six", "decorator", "scikit-learn>=1.1", "scipy>=1.10",
    ],
    extras_require={
        "cpu": ["paddlepaddle>=2.6.2,<3.4"],
        # ONNX export (paddle2onnx 1.2.x reads Paddle 2.6 programs, 2.x Paddle 3's) and running it.
        # onnx and ml_dtypes: onnxruntime.quantization (post-training int8, deploy.ptq).
        "onnx": ["paddle2onnx>=1.2.11", "onnxruntime>=1.18", "onnx>=1.16", "ml_dtypes>=0.5"],
        # The OpenVINO backend of deploy.Predictor.
        "openvino": ["openvino>=2024.0"],
        # paddlex_seg serve: an exported model over HTTP.
        # (pydantic 2: the request schemas; httpx: the client of docs/serving.md and benchmarks/serve.py.)
        "serve": ["fastapi>=0.110", "uvicorn>=0.29", "python-multipart>=0.0.9", "pydantic>=2",
                  "httpx>=0.27"],
        # paddlex_seg convert --source coco (COCO polygons and RLE) and the data tools' tests.
        "data": ["pycocotools>=2.0.7"],
        # Parity oracle and tests. paddleseg==2.8.0 itself goes in with --no-deps (README).
        "test": ["pytest>=7", "filelock", "prettytable", "wcwidth", "nbclient>=0.10", "nbformat>=5.9",
                 "ipykernel>=6.29", "httpx>=0.27", "schemathesis>=3.30"],
    },
    entry_points={"console_scripts": ["paddlex_seg=paddlex_seg.cli:main"]},
    cmdclass={"build_py": BuildWithZlibFirst},
)
