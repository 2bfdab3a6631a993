"""`s3d demo --out DIR` never deletes what scene3d did not write (seen: a user's file under data/images/ deleted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _earlier_demo_data(data: Path) -> None:
    """The layout of an earlier demo's dataset with other settings (written by hand: no rendering needed)."""
    (data / "images").mkdir(parents=True)
    (data / "images" / "frame_00000.png").write_bytes(b"png")
    meta = {"frames": [{"file_path": "images/frame_00000.png"}], "scene3d": {"kind": "object", "size": 64, "views": 1, "seed": 0}}
    (data / "transforms.json").write_text(json.dumps(meta))


def test_the_demo_refuses_to_replace_a_dataset_holding_a_users_file(tmp_path: Path) -> None:
    from rich.console import Console

    from scene3d.cli import demo
    from scene3d.core.errors import OutputFolderError

    out = tmp_path / "demo"
    _earlier_demo_data(out / "data")
    (out / "data" / "images" / "holiday.jpg").write_text("mine")
    (out / "data" / "README.txt").write_text("mine")
    args = demo.parse_args(["--out", str(out), "--size", "32", "--views", "4"])
    ctx = demo.DemoContext(out=out, args=args, console=Console())
    with pytest.raises(OutputFolderError, match=r"images/holiday\.jpg"):
        demo.generate_data(ctx)
    assert (out / "data" / "images" / "holiday.jpg").read_text() == "mine"
    assert (out / "data" / "README.txt").read_text() == "mine"
    assert (out / "data" / "images" / "frame_00000.png").exists()


def test_the_demo_refuses_a_data_folder_that_is_not_a_scene3d_dataset(tmp_path: Path) -> None:
    from rich.console import Console

    from scene3d.cli import demo
    from scene3d.core.errors import OutputFolderError

    out = tmp_path / "demo"
    (out / "data" / "images").mkdir(parents=True)
    (out / "data" / "images" / "a.png").write_bytes(b"png")
    (out / "data" / "transforms.json").write_text(json.dumps({"frames": []}))
    ctx = demo.DemoContext(out=out, args=demo.parse_args(["--out", str(out)]), console=Console())
    with pytest.raises(OutputFolderError, match="holds no scene3d dataset"):
        demo.generate_data(ctx)
    assert (out / "data" / "images" / "a.png").exists() and (out / "data" / "transforms.json").exists()
