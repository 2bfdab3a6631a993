"""The live viewer while training: nerfstudio's viser viewer, bound to 127.0.0.1, shows the scene in Chromium.

Each case starts a real ``ns-train <method>-tiny --vis viewer`` on CPU in a subprocess, opens the viewer page in
headless Chromium, waits for the first rendered frame and checks from the screenshot that the scene is visible
(not blank, not one colour, and showing the scene's coloured objects rather than an untrained field's grey
noise, which a few dozen training steps turn into the scene). Screenshots are kept under ``test-artifacts/viewer/``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _logged_step(log: Path) -> int:
    """The last step nerfstudio's progress table printed (-1 before the first)."""
    steps = re.findall(r"^\S*?(\d+) \(\d+\.\d+%\)", log.read_text(errors="replace"), flags=re.MULTILINE)
    return int(steps[-1]) if steps else -1


@pytest.fixture(scope="module")
def viewer_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scene3d.datasets.synthetic import generate_scene

    return generate_scene("object", tmp_path_factory.mktemp("live") / "scene", size=64, views=16, seed=3)


@pytest.mark.browser
@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("method", ["s3d-nerf-tiny", "s3d-splat-tiny"])
def test_live_viewer_shows_the_scene(viewer_scene: Path, tmp_path: Path, browser, method: str):
    port = browser.free_port()
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "ns-train"), method,
        "--data", str(viewer_scene), "--output-dir", str(tmp_path / "out"),
        "--vis", "viewer", "--viewer.websocket-port", str(port),
        "--max-num-iterations", "100000", "--machine.device-type", "cpu",
        # no training-camera frustums: they show the training images, and only the model's render may pass
        "--viewer.max-num-display-images", "0",
    ]  # fmt: skip
    log = open(tmp_path / "train.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        hosts = browser.wait_until_listening(proc, port, timeout_s=180, log_path=tmp_path / "train.log")
        assert hosts == {"127.0.0.1"}, "the viewer must bind 127.0.0.1 by default"
        deadline = time.monotonic() + 300
        # connect once training is under way (a hundred steps, seconds on a CPU): a radiance field's first render
        # of an untrained, fully occupied grid is its slowest
        while _logged_step(tmp_path / "train.log") < 100:
            assert proc.poll() is None, f"ns-train exited early:\n{(tmp_path / 'train.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "training did not reach step 100"
            time.sleep(1.0)
        browser.open(port)
        verdict = browser.wait_for_scene(f"viewer/live_{method}.png", timeout_s=240, colourful=0.01)
        assert proc.poll() is None, "training stopped while the viewer was open"
        assert verdict
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
