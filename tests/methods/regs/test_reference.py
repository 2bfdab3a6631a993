"""Reading the reference: image conversions, view names, Ref-NPR-style folders, and the errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from scene3d.core.errors import DataError
from scene3d.methods.regs import reference

FILES = ["images/frame_00000.png", "images/frame_00003.png", "images/frame_00010.png"]


def test_resolve_view_by_name_stem_path_and_index():
    assert reference.resolve_view("frame_00003", FILES) == 1
    assert reference.resolve_view("frame_00003.png", FILES) == 1
    assert reference.resolve_view("images/frame_00010.png", FILES) == 2
    assert reference.resolve_view("2", FILES) == 2
    assert reference.resolve_view(0, FILES) == 0


def test_resolve_view_errors_name_what_exists():
    with pytest.raises(ValueError, match=r"'frame_00042' is not a training view \(there are 3: frame_00000.png"):
        reference.resolve_view("frame_00042", FILES)
    with pytest.raises(ValueError, match=r"index must be in \[0, 3\), got 3"):
        reference.resolve_view("3", FILES)


def test_8_and_16_bit_images_read_at_full_precision(tmp_path: Path):
    rgb16 = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 1000 + 7).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "a16.png"), rgb16[..., ::-1])  # cv2 writes BGR
    got = reference.read_image(tmp_path / "a16.png")
    assert got.dtype == torch.float32 and got.shape == (4, 5, 3)
    assert torch.allclose(got, torch.from_numpy(rgb16.astype(np.float32) / 65535.0))
    rgb8 = (np.arange(4 * 5 * 3).reshape(4, 5, 3) * 4).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a8.png"), rgb8[..., ::-1])
    assert torch.allclose(reference.read_image(tmp_path / "a8.png"), torch.from_numpy(rgb8.astype(np.float32) / 255.0))


def test_alpha_is_composited_over_the_background_and_grey_is_repeated(tmp_path: Path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red
    rgba[0, 0, 3], rgba[0, 1, 3], rgba[1, :, 3] = 255, 0, 51  # opaque, transparent, 20 %
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba[..., [2, 1, 0, 3]])
    got = reference.read_image(tmp_path / "rgba.png", background=(0.0, 0.0, 1.0))
    assert torch.allclose(got[0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(got[0, 1], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(got[1, 0], torch.tensor([0.2, 0.0, 0.8]), atol=1e-6)
    grey16 = np.full((3, 3), 65535 // 2, dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    got = reference.read_image(tmp_path / "grey16.png")
    assert got.shape == (3, 3, 3) and torch.allclose(got, torch.full((3, 3, 3), (65535 // 2) / 65535.0))


def test_wrong_size_missing_and_unreadable_images(tmp_path: Path):
    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((20, 30, 3), dtype=np.uint8))
    with pytest.raises(DataError, match=r"is 30x20 px but the reference view 'frame_00003' is 48x48 px") as err:
        reference.load_reference_image(tmp_path / "small.png", 48, 48, "'frame_00003'")
    assert err.value.path == tmp_path / "small.png"
    with pytest.raises(DataError, match="does not exist"):
        reference.read_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot be read"):
        reference.read_image(tmp_path / "junk.png")


def _style(folder: Path, name: str = "style.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / name), np.zeros((8, 8, 3), dtype=np.uint8))
    return folder / name


def test_ref_npr_folder_with_a_training_index(tmp_path: Path):
    case = tmp_path / "flower_control"
    _style(case)
    config = {"dataset_type": "llff", "scene_name": "flower", "style_img": "./data/ref_case/flower_control/style.png",
              "tmpl_idx_train": 3, "tmpl_idx_test": None, "color_pre": True, "style_name": "flower_control"}  # fmt: skip
    (case / "data_config.json").write_text(json.dumps(config))
    spec = reference.read_reference_folder(case)
    assert spec.image == case / "style.png" and spec.train_index == 3 and spec.test_index is None and spec.camera is None
    config.update(tmpl_idx_train=None, tmpl_idx_test=112)
    (case / "data_config.json").write_text(json.dumps(config))
    assert reference.read_reference_folder(case).test_index == 112


def test_reference_folder_with_a_camera(tmp_path: Path):
    case = tmp_path / "case"
    _style(case)
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, -3.0, 1.0]
    frame = {"transform_matrix": c2w.tolist(), "fl_x": 40.0, "fl_y": 41.0, "cx": 16.0, "cy": 15.0, "w": 32, "h": 30}
    (case / "camera.json").write_text(json.dumps(frame))
    spec = reference.read_reference_folder(case)
    assert spec.camera is not None and spec.camera.width == 32 and spec.camera.height == 30
    assert torch.allclose(spec.camera.K, torch.tensor([[40.0, 0.0, 16.0], [0.0, 41.0, 15.0], [0.0, 0.0, 1.0]]))
    assert torch.allclose(spec.camera.c2w, torch.from_numpy(c2w).float())


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"tmpl_idx_train": 1, "tmpl_idx_test": 2}, "both set"),
        ({"tmpl_idx_train": [1, 2]}, "ReGS uses exactly one reference"),
        ({"style_img": ["a.png", "b.png"], "tmpl_idx_train": 1}, "ReGS uses exactly one"),
        ({"tmpl_idx_train": "three"}, "must be an integer"),
        ({}, "names no reference view"),
        ({"style_img": "missing.png", "tmpl_idx_train": 1}, "reference image does not exist"),
        ({"camera": {"transform_matrix": [[1, 0], [0, 1]], "fl_x": 1, "fl_y": 1, "cx": 0, "cy": 0, "w": 8, "h": 8}}, "4x4"),
    ],
)
def test_bad_reference_folders(tmp_path: Path, config: dict, match: str):
    case = tmp_path / "case"
    _style(case)
    (case / "data_config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=match):
        reference.read_reference_folder(case)


def test_regs_pickled_camera_is_refused_with_the_alternative(tmp_path: Path):
    case = tmp_path / "flower"
    _style(case)
    (case / "ref_view.pth").write_bytes(b"\x80\x04pickled")
    with pytest.raises(DataError, match="camera.json") as err:
        reference.read_reference_folder(case)
    assert err.value.path.name == "ref_view.pth"
