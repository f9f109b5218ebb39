"""Install paddlex_seg: `pip install -r requirements.txt -e .`"""
from setuptools import find_packages, setup

with open("requirements.txt") as f:
    install_requires = [
        line.split("#")[0].strip() for line in f
        if line.split("#")[0].strip()
    ]

setup(
    name="paddlex_seg",
    version="0.1.0",
    description="PaddlePaddle-native, high-level semantic segmentation toolkit in the style of PaddleX 2.x",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["paddlex_seg", "paddlex_seg.*"]),
    python_requires=">=3.8",
    install_requires=install_requires,
    extras_require={
        # paddleseg itself is installed with --no-deps by the README's test command.
        "test": ["pytest", "filelock", "prettytable", "wcwidth",
                 "nbclient==0.11.0", "nbformat==5.11.1", "ipykernel==7.4.0"],
        # ONNX export (paddle2onnx 1.2.x reads Paddle 2.6 programs) and running it.
        "onnx": ["paddle2onnx==1.2.11", "onnxruntime==1.20.1"],
    },
    entry_points={"console_scripts": ["paddlex_seg=paddlex_seg.cli:main"]},
)
