"""What ``ns-train`` of a scene3d method shows a user: a bad dataset is one line (no traceback, no config dump), and
Ctrl-C once training is done ends the run cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from scene3d.core.errors import DataError, SettingsError

NS_TRAIN = str(Path(sys.executable).parent / "ns-train")


@pytest.mark.slow
def test_a_folder_of_images_without_transforms_is_one_line(tmp_path: Path) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(photos / f"IMG_{i}.jpg")
    done = subprocess.run(
        [NS_TRAIN, "s3d-nerf-tiny", "--data", str(photos), "--vis", "tensorboard", "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "S3DTrainerConfig(" not in output and "MachineConfig(" not in output, output[-3000:]
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last == (
        f"ns-train: error: {photos / 'transforms.json'}: file does not exist; the folder holds 2 image(s) but no camera "
        f"poses: compute them with `ns-process-data images --data {photos} --output-dir DATASET` (COLMAP) and train on DATASET"
    )
    # what is left is nerfstudio's own start-up (its --data and save-path log lines, its import-time deprecation
    # warnings): ~15 lines rather than 168-239
    assert len(output.strip().splitlines()) < 25, output


def test_scene3d_errors_are_one_line_and_others_keep_their_traceback(monkeypatch, capsys) -> None:
    from scene3d.methods.common import trainer

    seen: list[type] = []
    monkeypatch.setattr(sys, "excepthook", lambda exc_type, exc, tb: seen.append(exc_type))
    monkeypatch.delenv("SCENE3D_TRACEBACK", raising=False)
    trainer.install_error_hook("ns-train")
    trainer.install_error_hook("ns-train")  # idempotent
    err = SettingsError("--pipeline.buffer-size", "must be >= 0, got -1")
    sys.excepthook(SettingsError, err, None)
    assert capsys.readouterr().err == "ns-train: error: --pipeline.buffer-size: must be >= 0, got -1\n" and seen == []
    sys.excepthook(RuntimeError, RuntimeError("a bug"), None)  # not scene3d's: the previous hook reports it
    assert seen == [RuntimeError]
    monkeypatch.setenv("SCENE3D_TRACEBACK", "1")
    sys.excepthook(DataError, DataError("x.json", None, "bad"), None)
    assert seen == [RuntimeError, DataError]


def test_ctrl_c_after_training_ends_the_run_cleanly(monkeypatch, capsys) -> None:
    """nerfstudio keeps the viewer up after training until Ctrl-C and then printed a traceback; now it says how to
    exit (and the flag that exits by itself) and returns normally."""
    import nerfstudio.engine.trainer as ns_trainer

    from scene3d.methods.common.trainer import S3DTrainer

    def ctrl_c(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ns_trainer.time, "sleep", ctrl_c)
    completed: list[bool] = []
    trainer = S3DTrainer.__new__(S3DTrainer)
    trainer.config = SimpleNamespace(is_viewer_enabled=lambda: True, is_viewer_legacy_enabled=lambda: False)
    trainer.viewer_state = SimpleNamespace(training_complete=lambda: completed.append(True))
    trainer._train_complete_viewer()  # returns instead of raising KeyboardInterrupt
    printed = " ".join(capsys.readouterr().out.split())
    assert completed == [True] and "--viewer.quit-on-train-completion True" in printed and "Viewer closed" in printed
    trainer.config = SimpleNamespace(is_viewer_enabled=lambda: False, is_viewer_legacy_enabled=lambda: False)
    trainer._train_complete_viewer()  # no viewer: nothing to wait for
    assert completed == [True]
