"""`s3d data synth` and `s3d data check` end to end (through the s3d dispatcher)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scene3d.cli.main import main

pytestmark = pytest.mark.data


def test_synth_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fwd"
    args = ["data", "synth", "--kind", "forward", "--out", str(out), "--size", "32", "--views", "9", "--seed", "2"]
    assert main([*args, "--stylized"]) == 0
    printed = capsys.readouterr().out
    assert "9 frames of 32x32" in printed and "views/s" in printed
    meta = json.loads((out / "transforms.json").read_text())
    assert meta["scene3d"]["kind"] == "forward" and meta["scene3d"]["seed"] == 2 and meta["scene3d"]["stylized"]
    assert len(meta["frames"]) == 9 and all("stylized_file_path" in f for f in meta["frames"])

    assert main(["data", "check", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("ok")

    (out / "masks" / "frame_00002.png").unlink()
    assert main(["data", "check", str(out)]) == 1
    err = capsys.readouterr().err
    assert "frames[2].mask_path" in err and "frame_00002.png" in err


def test_synth_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", "--kind", "object", "--out", str(tmp_path / "x"), "--size", "16"]) == 2
    assert "size must be an integer from 32 to 800" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "synth", "--kind", "nope", "--out", str(tmp_path / "y")])


def test_imports_stay_light() -> None:
    """`import scene3d.datasets.synthetic` (and the validator, and the CLI module) load no heavy library."""
    import subprocess
    import sys

    code = (
        "import sys, scene3d.datasets.synthetic, scene3d.datasets.validate, scene3d.cli.data; "
        "print(sorted(m for m in ('open3d', 'nerfstudio', 'torch', 'trimesh') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_out_folder_rules(tmp_path: Path) -> None:
    from scene3d.datasets.synthetic import generate_scene

    out = generate_scene("object", tmp_path / "s", size=32, views=6)
    generate_scene("object", out, size=32, views=3)  # regenerating replaces the earlier dataset entirely
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"frame_{i:05d}.png" for i in range(3)]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="empty folder"):
        generate_scene("object", other, size=32, views=3)
    assert (other / "notes.txt").read_text() == "mine"


def test_regenerating_keeps_a_users_file(tmp_path: Path) -> None:
    """Seen: a user's file under data/images/ deleted when a scene was generated again into the folder."""
    from scene3d.datasets.synthetic import generate_scene

    out = generate_scene("object", tmp_path / "s", size=32, views=3)
    (out / "images" / "my_photo.jpg").write_text("mine")
    with pytest.raises(ValueError, match="did not write"):
        generate_scene("object", out, size=32, views=2)
    assert (out / "images" / "my_photo.jpg").read_text() == "mine"
    assert len(list((out / "images").glob("frame_*.png"))) == 3  # the earlier dataset is untouched too
