"""The stylized scene in nerfstudio's viewer: live while ``ns-train regs-tiny`` runs, and after with ``ns-viewer``.

Each case starts the real command in a subprocess (CPU, viewer bound to 127.0.0.1), opens the page in headless
Chromium and waits until the screenshot shows a rendered scene. Screenshots are kept under ``test-artifacts/regs/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.data, pytest.mark.slow]


def _show(cmd: list[str], log_path: Path, port: int, browser, shot: str) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            browser.wait_until_listening(proc, port, timeout_s=240, log_path=log_path)
            browser.open(port)
            assert browser.wait_for_scene(shot, timeout_s=180)
            assert proc.poll() is None, "the process stopped while the viewer was open"
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def test_viewer_shows_the_scene_while_regs_tiny_trains(stylized_scene: Path, splat_run: Path, tmp_path: Path, browser):
    port = browser.free_port()
    cmd = [
        _bin("ns-train"), "regs-tiny", "--data", str(stylized_scene), "--output-dir", str(tmp_path / "out"),
        "--load-dir", str(splat_run), "--pipeline.reference-image", str(stylized_scene / "images_stylized" / "frame_00002.png"),
        "--pipeline.reference-view", "frame_00002", "--vis", "viewer", "--viewer.websocket-port", str(port),
        "--max-num-iterations", "100000", "--machine.device-type", "cpu",
    ]  # fmt: skip
    _show(cmd, tmp_path / "train.log", port, browser, "regs/live_regs_tiny.png")


def test_ns_viewer_shows_a_finished_regs_run(stylized_scene: Path, splat_run: Path, tmp_path: Path, browser):
    from scene3d.methods.regs.run import regs_run_config, train

    cfg = regs_run_config(
        stylized_scene, splat_run, stylized_scene / "images_stylized" / "frame_00002.png", "frame_00002",
        tmp_path / "out", max_num_iterations=5, vis="quiet",
    )  # fmt: skip
    train(cfg)
    port = browser.free_port()
    cmd = [_bin("ns-viewer"), "--load-config", str(cfg.get_base_dir() / "config.yml"), "--viewer.websocket-port", str(port)]
    _show(cmd, tmp_path / "viewer.log", port, browser, "regs/ns_viewer_regs_tiny.png")
