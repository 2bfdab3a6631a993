"""The live viewer shows the EpiGRAF generator's 3D output for the chosen seed while epigraf-tiny trains.

Starts ``ns-train epigraf-tiny --vis viewer`` on CPU in a subprocess, opens the viewer in headless Chromium, and
checks from a screenshot that the generator's render (not only the grid and camera frustums) reaches the page.
The screenshot is kept under ``test-artifacts/viewer/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.browser
@pytest.mark.slow
def test_viewer_shows_the_generator(collection_dir: Path, tmp_path: Path, browser):
    port = browser.free_port()
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
        browser.wait_until_listening(proc, port, timeout_s=180, log_path=tmp_path / "train.log")
        browser.open(port)
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
