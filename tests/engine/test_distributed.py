"""Training under `python -m paddle.distributed.launch` with 2 CPU processes (gloo)."""
import os
import subprocess
import sys

import paddle
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="the CPU (gloo) case; GPUs are launched per device")
def test_two_process_training(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # An empty CUDA_VISIBLE_DEVICES (set by conftest) leaves the launcher no device list.
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
           "--log_dir", str(tmp_path / "log"), os.path.join(HERE, "distributed_script.py"), str(tmp_path)]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("paddle.distributed.launch did not finish in 240 s")
    logs = {rank: (tmp_path / "log" / f"workerlog.{rank}").read_text() for rank in (0, 1)}
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + logs[0][-2000:] + logs[1][-2000:]
    for rank in (0, 1):
        assert f"RANK {rank} WORLD 2 DONE" in logs[rank]
    # 8 samples, batch 2 per process, 2 processes: 2 steps per epoch.
    assert "2 steps per epoch, batch 2 x 2 process(es)" in logs[0]
    # Only rank 0 logs and saves.
    assert "[INFO]" not in logs[1]
    for name in ("epoch_1", "best_model"):
        assert sorted(os.listdir(tmp_path / "out" / name)) == ["model.pdopt", "model.pdparams", "model.yml"]
