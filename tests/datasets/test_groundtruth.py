"""The synthetic generator's ground truth is self-consistent: depth across views, normals vs depth, masks vs depth,
stylized vs normal renders, and byte-identical outputs per seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scene3d.datasets.groundtruth import backproject_depth, project_points, read_frame

pytestmark = pytest.mark.data


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    from scene3d.datasets.synthetic import generate_scene

    a = _files(generate_scene("object", tmp_path / "a", size=32, views=4, seed=3, stylized=True))
    b = _files(generate_scene("object", tmp_path / "b", size=32, views=4, seed=3, stylized=True))
    c = _files(generate_scene("object", tmp_path / "c", size=32, views=4, seed=4, stylized=True))
    assert a.keys() == b.keys() and a == b
    assert len(a) > 20  # images, depths, normals, masks, stylized, meshes, points, transforms
    assert a["transforms.json"] != c["transforms.json"]
    assert a["images/frame_00000.png"] != c["images/frame_00000.png"]


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [
        ("forward", {"views": 3}),
        ("changing", {"views": 2, "steps": 2}),
        ("room", {"views": 3}),
        ("collection", {"views": 1, "instances": 2}),
    ],
)
def test_every_kind_is_deterministic(tmp_path: Path, kind: str, kwargs: dict) -> None:
    from scene3d.datasets.synthetic import generate_scene

    a = _files(generate_scene(kind, tmp_path / "a", size=32, seed=1, stylized=True, **kwargs))
    b = _files(generate_scene(kind, tmp_path / "b", size=32, seed=1, stylized=True, **kwargs))
    assert a == b


def _inverse_depth_bilinear(depth: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth at continuous image coordinates by bilinear interpolation of 1/z (exact on planes), and where the
    four neighbouring pixels all hold a surface at similar depth (one surface, not an occlusion edge)."""
    h, w = depth.shape
    x, y = u - 0.5, v - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    ok = (x0 >= 0) & (x0 < w - 1) & (y0 >= 0) & (y0 < h - 1)
    x0, y0, fx, fy = np.clip(x0, 0, w - 2), np.clip(y0, 0, h - 2), x - np.floor(x), y - np.floor(y)
    d = np.stack([depth[y0, x0], depth[y0, x0 + 1], depth[y0 + 1, x0], depth[y0 + 1, x0 + 1]], -1)
    ok &= (d > 0).all(-1)
    ok &= (d.max(-1) - d.min(-1)) < 0.05 * d.max(-1)
    inv = 1.0 / np.where(d > 0, d, 1.0)
    wts = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], -1)
    return 1.0 / (inv * wts).sum(-1), ok


def test_depth_reprojects_into_other_views(object_scene: Path) -> None:
    """Back-project view i's depth, project into view j, compare with view j's depth where the point is visible."""
    for i, j in ((0, 1), (3, 7), (10, 2)):
        a, b = read_frame(object_scene, i), read_frame(object_scene, j)
        valid = a.depth > 0
        pts = backproject_depth(a.depth, a.c2w, a.K)[valid]
        u, v, z = project_points(pts, b.c2w, b.K)
        expected, ok = _inverse_depth_bilinear(b.depth, u, v)
        ok &= z > 0
        signed = (expected[ok] - z[ok]) / z[ok]
        rel = np.abs(signed)
        # Points occluded in view j lie behind j's surface (signed < 0); visible ones agree to the 1 mm depth
        # quantisation. View j must never see *through* a surface point of view i (signed > 0).
        assert ok.sum() > 0.3 * valid.sum()
        assert np.median(rel) < 2e-3, (i, j, np.median(rel))
        assert (rel < 1e-2).mean() > 0.5, (i, j, (rel < 1e-2).mean())
        assert (signed > 0.02).mean() < 0.01, (i, j, (signed > 0.02).mean())


def test_normals_match_depth_derived_normals_on_planes(object_scene: Path) -> None:
    for index in (0, 5, 11):
        gt = read_frame(object_scene, index)
        pts = backproject_depth(gt.depth, gt.c2w, gt.K)
        n = gt.normals
        # central differences where the pixel and its 4 neighbours are on one plane (same stored normal)
        c = (slice(1, -1), slice(1, -1))
        same = np.ones_like(gt.depth[c], dtype=bool)
        for dv, du in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            nb = n[1 + dv : n.shape[0] - 1 + dv, 1 + du : n.shape[1] - 1 + du]
            dnb = gt.depth[1 + dv : n.shape[0] - 1 + dv, 1 + du : n.shape[1] - 1 + du]
            same &= (np.abs(nb - n[c]).max(-1) < 1e-3) & (dnb > 0)
        same &= gt.depth[c] > 0
        assert same.sum() > 100
        du_ = pts[1:-1, 2:] - pts[1:-1, :-2]
        dv_ = pts[2:, 1:-1] - pts[:-2, 1:-1]
        derived = np.cross(dv_, du_)
        derived /= np.linalg.norm(derived, axis=-1, keepdims=True).clip(1e-12)
        derived *= np.sign((derived * n[c]).sum(-1, keepdims=True))  # orientation is free; compare the line
        cos = (derived * n[c]).sum(-1)[same]
        angle = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        assert np.median(angle) < 1.0 and np.percentile(angle, 95) < 4.0, (index, np.median(angle))
        # the stored normals face the camera
        to_cam = gt.c2w[:3, 3] - pts
        assert ((to_cam * n).sum(-1)[gt.depth > 0] > -1e-6).mean() > 0.99


def test_masks_agree_with_depth(object_scene: Path) -> None:
    for index in range(0, 12, 3):
        gt = read_frame(object_scene, index)
        assert gt.mask.any() and (gt.depth > 0).any()
        assert not (gt.mask & (gt.depth == 0)).any(), "a foreground pixel without depth"
        world = backproject_depth(gt.depth, gt.c2w, gt.K)
        ground = (gt.depth > 0) & ~gt.mask
        # everything hit that is not foreground is the ground plane z = 0 (up to 1 mm depth quantisation)
        assert np.abs(world[ground][:, 2]).max() < 0.03
        assert np.abs(gt.normals[ground] - [0, 0, 1]).max() < 0.02
        # the foreground stands on the ground: most of it is clearly above it
        assert (world[gt.mask][:, 2] > 0.02).mean() > 0.9
        # no surface: background colour
        meta = json.loads((object_scene / "transforms.json").read_text())
        bg = np.round(np.asarray(meta["background_color"]) * 255)
        miss = gt.depth == 0
        if miss.any():
            # anti-aliasing blends edge pixels; pixels away from any surface are exactly the background
            inner = np.zeros_like(miss)
            h, w = miss.shape
            shifted = [miss[1 + dv : h - 1 + dv, 1 + du : w - 1 + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)]
            inner[1:-1, 1:-1] = np.all(shifted, axis=0)
            assert np.abs(gt.rgb[inner].astype(float) - bg).max() <= 1


def test_stylized_shares_geometry_but_not_colour(object_scene: Path) -> None:
    meta = json.loads((object_scene / "transforms.json").read_text())
    assert all("stylized_file_path" in f for f in meta["frames"])
    for index in (0, 6):
        gt = read_frame(object_scene, index)
        assert gt.stylized is not None and gt.stylized.shape == gt.rgb.shape
        hit = gt.depth > 0
        diff = np.abs(gt.stylized.astype(float) - gt.rgb.astype(float)).mean(-1)
        assert diff[hit].mean() > 40, diff[hit].mean()  # clearly different colours on surfaces
        assert diff[~hit].max() <= 1 or not (~hit).any() or np.median(diff[~hit]) == 0  # same background
    # the same geometry: the stylized look lives in the same transforms.json with the same depth maps
    objs = meta["scene3d"]["objects"]
    assert all(o["stylized_texture"] != o["texture"] for o in objs)


def test_object_scene_metadata(object_scene: Path) -> None:
    meta = json.loads((object_scene / "transforms.json").read_text())
    assert meta["camera_model"] == "OPENCV" and meta["w"] == meta["h"] == 48
    assert meta["scene3d"]["kind"] == "object" and meta["scene3d"]["seed"] == 0
    box = np.asarray(meta["scene_box"])
    centres = np.asarray([np.asarray(f["transform_matrix"])[:3, 3] for f in meta["frames"]])
    assert (centres[:, 2] > 0.5).all(), "cameras look from the upper hemisphere"
    # every surface point seen by any camera lies in the scene box
    for index in (0, 4, 8):
        gt = read_frame(object_scene, index)
        pts = backproject_depth(gt.depth, gt.c2w, gt.K)[gt.depth > 0]
        assert (pts >= box[0] - 0.01).all() and (pts <= box[1] + 0.01).all()
    assert (object_scene / "meshes" / "scene.ply").is_file()
    assert all((object_scene / m["file"]).is_file() for m in meta["scene3d"]["meshes"])
    assert set(meta["val_filenames"]).isdisjoint(meta["train_filenames"])
