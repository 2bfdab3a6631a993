"""The live viewer shows the EpiGRAF generator's 3D output for the chosen seed while epigraf-tiny trains.

Starts ``ns-train epigraf-tiny --vis viewer`` on CPU in a subprocess, opens the viewer in headless Chromium, and
checks from a screenshot that the generator's render (not only the grid and camera frustums) reaches the page.
The screenshot is kept under ``test-artifacts/viewer/``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(pid: int, port: int) -> bool:
    import psutil

    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections(kind="tcp")):
                return True
        except psutil.Error:
            pass
    return False


@pytest.mark.browser
@pytest.mark.slow
def test_viewer_shows_the_generator(collection_dir: Path, tmp_path: Path, browser):
    port = _free_port()
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "ns-train"), "epigraf-tiny",
        "--data", str(collection_dir), "--output-dir", str(tmp_path / "out"),
        "--vis", "viewer", "--viewer.websocket-port", str(port), "--max-num-iterations", "100000",
        "--pipeline.datamanager.images-per-batch", "4", "--pipeline.model.viewer-seed", "5",
    ]  # fmt: skip
    log = open(tmp_path / "train.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while not _listening(proc.pid, port):
            assert proc.poll() is None, f"ns-train exited early:\n{(tmp_path / 'train.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the viewer never started listening"
            time.sleep(0.5)
        browser.page.goto(f"http://127.0.0.1:{port}")
        verdict = browser.wait_for_scene("viewer/live_epigraf-tiny.png", timeout_s=180)
        assert proc.poll() is None, "training stopped while the viewer was open"
        # the control panel lists the model's seed and truncation controls
        content = browser.page.content()
        assert "Seed" in content and "Truncation psi" in content
        assert verdict
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
