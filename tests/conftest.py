import os
import sys

import pytest

# Tests run on CPU with few threads: CI has 2 cores.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("OMP_NUM_THREADS", "2")
sys.path.insert(0, os.path.dirname(__file__))  # tests/oracle.py and friends

import paddle  # noqa: E402

paddle.set_device("cpu")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long real-data runs (CI runs a short version)")


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    import numpy as np
    np.random.seed(0)
    yield
