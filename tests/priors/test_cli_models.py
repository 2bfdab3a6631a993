"""``s3d models list | fetch | check`` and the import weight of ``scene3d.priors``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scene3d.cli.models import main


def test_list_and_check_report_missing_models(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch.hub.get_dir() reads it on every call
    empty = ["--models-dir", str(tmp_path / "none"), "--hf-cache", str(tmp_path / "hf")]
    assert main(["list", *empty]) == 0
    out = capsys.readouterr().out
    assert "stabilityai/stable-diffusion-2-1-base" in out and "$SCENE3D_REVISION_SD21_BASE" in out
    assert out.count("missing") == 9 and "tiny-random" in out
    assert main(["check", "sd15", *empty]) == 1
    out = capsys.readouterr().out
    assert "MISSING  sd15" in out and "s3d models fetch sd15" in out and "SCENE3D_MODELS_DIR" in out


def test_list_names_only_methods_that_exist(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]):
    from scene3d.cli import models
    from scene3d.priors.presets import PRESETS

    monkeypatch.setattr(models, "registered_methods", lambda: {"regs", "regs-tiny", "s3d-nerf"})
    assert main(["list", "--models-dir", str(tmp_path / "none"), "--hf-cache", str(tmp_path / "hf")]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:] if line.strip()}
    for preset in PRESETS.values():
        used = rows[preset.name][4]
        assert used == ("regs" if "regs" in preset.used_by else "-"), (preset.name, used)
    assert {m for p in PRESETS.values() for m in p.used_by} - {"regs"}, "the presets name methods not installed here"


def test_fetch_tiny_random_then_check_loads_everything(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["fetch", "tiny-random", "--to", str(tmp_path)]) == 0
    assert main(["check", "--models-dir", str(tmp_path), "--load"]) == 0
    out = capsys.readouterr().out
    assert out.count("ok ") == 9 and "MISSING" not in out
    assert main(["list", "--models-dir", str(tmp_path)]) == 0
    assert "missing" not in capsys.readouterr().out


def test_importing_priors_is_light():
    code = (
        "import sys, scene3d.priors; "
        "heavy = [m for m in ('diffusers', 'transformers', 'huggingface_hub', 'nerfstudio', 'torchvision') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
