"""A real ``ns-train s3d-nerf-tiny`` killed with SIGKILL (while a checkpoint is being written, when we catch one)
leaves its last checkpoint loadable with ``weights_only=True`` and resumable with ``--load-dir``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scene3d.core.checkpoint import checkpoint_steps, latest_checkpoint, load_checkpoint

NS_TRAIN = str(Path(sys.executable).parent / "ns-train")


def _train_cmd(data: Path, out: Path, timestamp: str, iterations: int, *extra: str) -> list[str]:
    return [
        NS_TRAIN, "s3d-nerf-tiny", "--machine.device-type", "cpu", "--vis", "tensorboard",
        "--output-dir", str(out), "--experiment-name", "kill", "--timestamp", timestamp,
        "--max-num-iterations", str(iterations), "--steps-per-save", "1",
        "--pipeline.model.grid-resolution", "32", "--logging.local-writer.enable", "False", *extra,
        "scene3d-data", "--data", str(data),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.data
def test_sigkill_mid_run_leaves_a_resumable_checkpoint(object_scene: Path, tmp_path: Path):
    out = tmp_path / "outputs"
    run = out / "kill" / "s3d-nerf-tiny" / "first"
    models = run / "nerfstudio_models"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_train_cmd(object_scene, out, "first", 100_000), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    caught_mid_write = False
    try:
        deadline = time.monotonic() + 300
        while not (models.is_dir() and checkpoint_steps(models) and checkpoint_steps(models)[-1] >= 3):
            assert proc.poll() is None, f"ns-train exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint of step 3 within 300 s"
            time.sleep(0.05)
        # a checkpoint is written every step: kill the moment a temporary file shows a write in progress
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(run.glob(".step-*.tmp")):
                caught_mid_write = True
                break
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    print(f"killed {'while a checkpoint was being written' if caught_mid_write else 'between checkpoint writes'}")

    # only complete checkpoints in the folder; the newest loads weights-only
    assert all(p.name.startswith("step-") for p in models.iterdir())
    last = latest_checkpoint(models)
    state = load_checkpoint(last)
    assert state["step"] == checkpoint_steps(models)[-1]

    # what a save killed mid-write leaves (the killed run's own, when we caught one, and one planted with its pid)
    planted = run / f".step-000000002.ckpt.{proc.pid}.k1lled00.tmp"
    planted.write_bytes(b"torn")
    resumed = subprocess.run(_train_cmd(object_scene, out, "second", 3, "--load-dir", str(models)), env=env,
                             capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout  # (rich wraps the path; the step numbers below show where it resumed)
    new_models = out / "kill" / "s3d-nerf-tiny" / "second" / "nerfstudio_models"
    assert checkpoint_steps(new_models) == [state["step"] + 3]
    assert not list(run.glob(".step-*.tmp")), "the resumed run left the killed run's temporary files behind"
