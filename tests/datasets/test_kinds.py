"""Every kind passes the validator and the dataparser; kind-specific promises (changing, room, collection, unbounded)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scene3d.core.cameras import equirect_directions, pinhole_rays
from scene3d.datasets.groundtruth import backproject_depth, read_frame
from scene3d.datasets.validate import validate_dataset

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from scene3d.datasets.synthetic import generate_scene

    root = tmp_path_factory.mktemp("kinds")
    return {
        "forward": generate_scene("forward", root / "forward", size=32, views=9, stylized=True),
        "changing": generate_scene("changing", root / "changing", size=32, views=6, steps=5, stylized=True),
        "room": generate_scene("room", root / "room", size=32, views=10, stylized=True),
        "collection": generate_scene("collection", root / "collection", size=32, views=2, instances=5),
        "unbounded": generate_scene("unbounded", root / "unbounded", size=32, views=12),
    }


def _parse(path: Path, split: str = "train"):  # noqa: ANN202
    from scene3d.datasets.dataparser import Scene3DDataParserConfig

    return Scene3DDataParserConfig(data=path).setup().get_dataparser_outputs(split)


def test_every_kind_validates_and_parses(kinds: dict[str, Path]) -> None:
    for kind, path in kinds.items():
        summary = validate_dataset(path)
        assert summary.kind == kind
        folders = [s.path for s in summary.steps] if kind == "changing" else [path]
        for folder in folders:
            meta = json.loads((folder / "transforms.json").read_text())
            for split in ("train", "val", "test"):
                out = _parse(folder, split)
                assert len(out.image_filenames) == len(meta[f"{split}_filenames"]) > 0
            assert out.cameras.width[0, 0] == 32
    assert validate_dataset(kinds["changing"]).steps[0].num_frames == 6


def _mesh_depth(mesh_file: Path, c2w: torch.Tensor, K: torch.Tensor, size: int) -> np.ndarray:
    """z-depth of a camera's pixel-centre rays against a mesh read back from disk (0 where they miss)."""
    import open3d as o3d

    legacy = o3d.io.read_triangle_mesh(str(mesh_file))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(legacy))
    origins, dirs = pinhole_rays(c2w, K, size, size)
    rays = torch.cat([origins, dirs], dim=-1).reshape(-1, 6).numpy()
    t = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()
    z = t * (dirs.reshape(-1, 3).numpy() @ -c2w[:3, 2].numpy())
    return np.where(np.isfinite(t), z, 0.0).reshape(size, size)


def test_changing_steps_share_a_frame_and_change(kinds: dict[str, Path]) -> None:
    root = kinds["changing"]
    manifest = json.loads((root / "manifest.json").read_text())
    steps = manifest["steps"]
    assert [s["folder"] for s in steps] == [f"step_{i:02d}" for i in range(5)]
    types = [c["type"] for s in steps for c in s["changes"]]
    assert {"recolour", "move", "appear", "vanish"} <= set(types)
    assert any(c["appearance_only"] for s in steps for c in s["changes"])
    metas = [json.loads((root / s["transforms"]).read_text()) for s in steps]
    assert all(m["scene_box"] == manifest["scene_box"] and m["background_color"] == metas[0]["background_color"]
               for m in metas)  # fmt: skip
    poses = [np.asarray(m["frames"][0]["transform_matrix"]) for m in metas]
    assert all(not np.allclose(poses[0], p) for p in poses[1:]), "each step has its own cameras"
    assert all(f["time_step"] == i for i, m in enumerate(metas) for f in m["frames"])

    for i in range(1, len(steps)):
        folder, prev = root / steps[i]["folder"], root / steps[i - 1]["folder"]
        gt = read_frame(folder, 0)
        c2w = torch.tensor(gt.c2w, dtype=torch.float32)
        K = torch.tensor(gt.K, dtype=torch.float32)
        # the step's own meshes reproduce its depth: meshes, cameras and depth share one world frame
        own = _mesh_depth(folder / "meshes" / "scene.ply", c2w, K, 32)
        assert np.abs(own - gt.depth).max() < 2e-3
        # the previous step's geometry, seen from this step's camera
        before = _mesh_depth(prev / "meshes" / "scene.ply", c2w, K, 32)
        changed_px = (np.abs(before - gt.depth) > 5e-3).mean()
        if steps[i]["geometry_changed"]:
            names_now, names_before = set(steps[i]["objects"]), set(steps[i - 1]["objects"])
            moved = [c["object"] for c in steps[i]["changes"] if c["type"] == "move"]
            assert names_now != names_before or moved
            for name in moved:
                a = (folder / "meshes" / f"{name}.ply").read_bytes()
                assert a != (prev / "meshes" / f"{name}.ply").read_bytes()
        else:  # appearance only: identical geometry, a recoloured object
            assert changed_px == 0.0
            (change,) = steps[i]["changes"]
            name = change["object"]
            assert change["from"] != change["to"]
            before_obj = next(o for o in metas[i - 1]["scene3d"]["objects"] if o["name"] == name)
            now_obj = next(o for o in metas[i]["scene3d"]["objects"] if o["name"] == name)
            assert before_obj["translation"] == now_obj["translation"] and before_obj["texture"] != now_obj["texture"]


def test_changing_geometry_change_is_visible_in_depth(kinds: dict[str, Path]) -> None:
    """Across all views of the move step, the previous geometry disagrees with the recorded depth somewhere."""
    root = kinds["changing"]
    manifest = json.loads((root / "manifest.json").read_text())
    i = next(k for k, s in enumerate(manifest["steps"]) if any(c["type"] == "move" for c in s["changes"]))
    folder, prev = root / f"step_{i:02d}", root / f"step_{i - 1:02d}"
    diffs = []
    for view in range(6):
        gt = read_frame(folder, view)
        c2w, K = torch.tensor(gt.c2w, dtype=torch.float32), torch.tensor(gt.K, dtype=torch.float32)
        diffs.append((np.abs(_mesh_depth(prev / "meshes" / "scene.ply", c2w, K, 32) - gt.depth) > 5e-3).mean())
    assert max(diffs) > 0.005


def test_room_panorama_matches_centre_views(kinds: dict[str, Path]) -> None:
    root = kinds["room"]
    meta = json.loads((root / "transforms.json").read_text())
    pano = meta["panorama"]
    from PIL import Image

    rgb = np.array(Image.open(root / pano["file_path"]))
    dist_img = Image.open(root / pano["depth_file_path"])
    assert dist_img.mode == "I;16" and rgb.shape == (32, 64, 3) and (pano["w"], pano["h"]) == (64, 32)
    dist = np.array(dist_img).astype(np.float64) * 1e-3
    assert (dist > 0).all(), "a closed room: every panorama ray hits a wall, the floor or the ceiling"
    p2w = np.asarray(pano["transform_matrix"])
    assert {f["view_group"] for f in meta["frames"]} == {"centre", "interior"}
    centre_frames = [i for i, f in enumerate(meta["frames"]) if f["view_group"] == "centre"]
    np.testing.assert_allclose(np.asarray(meta["frames"][centre_frames[0]]["transform_matrix"])[:3, 3], p2w[:3, 3])
    # every centre-view pixel's surface point, seen from the panorama centre, is where the panorama says it is
    for index in centre_frames:
        gt = read_frame(root, index)
        pts = backproject_depth(gt.depth, gt.c2w, gt.K).reshape(-1, 3)
        rel = (pts - p2w[:3, 3]) @ p2w[:3, :3]  # panorama camera frame (OpenGL)
        r = np.linalg.norm(rel, axis=-1)
        d = rel / r[:, None]
        lon = np.arctan2(d[:, 0], -d[:, 2])
        lat = np.arcsin(np.clip(d[:, 1], -1, 1))
        u = ((lon + math.pi) / (2 * math.pi) * 64).astype(int) % 64
        v = np.clip(((math.pi / 2 - lat) / math.pi * 32).astype(int), 0, 31)
        err = np.abs(dist[v, u] - r) / r
        assert np.median(err) < 0.05, np.median(err)
        # colours too (the room is nearly mirror-symmetric in distance, not in texture)
        color_err = np.abs(rgb[v, u].astype(float) - gt.rgb.reshape(-1, 3)).mean(-1)
        assert np.median(color_err) < 12, np.median(color_err)
    # the convention of core.cameras.equirect_directions: middle column looks along the camera's -Z
    mid = equirect_directions(64, 32)[16, 32]
    assert mid[2] < -0.99
    assert (root / "meshes" / "scene.ply").is_file() and meta["scene3d"]["room_meshes"]
    assert (root / "panorama_stylized.png").is_file()


def test_collection_instances_and_cameras(kinds: dict[str, Path]) -> None:
    root = kinds["collection"]
    meta = json.loads((root / "transforms.json").read_text())
    ids = [f["instance_id"] for f in meta["frames"]]
    assert ids == [i for i in range(5) for _ in range(2)]
    assert meta["background_color"] == [1.0, 1.0, 1.0] and "ply_file_path" not in meta
    cam = meta["scene3d"]["camera"]
    for f in meta["frames"]:
        c2w = np.asarray(f["transform_matrix"])
        assert abs(np.linalg.norm(c2w[:3, 3]) - cam["radius"]) < 1e-4
        forward = -c2w[:3, 2]
        np.testing.assert_allclose(forward, -c2w[:3, 3] / np.linalg.norm(c2w[:3, 3]), atol=1e-5)  # at the origin
    fov = 2 * math.degrees(math.atan(0.5 * meta["h"] / meta["fl_y"]))
    assert abs(fov - cam["fov_deg"]) < 1e-3
    gt = read_frame(root, 0)
    assert gt.mask.any() and (gt.rgb[~gt.mask] >= 250).mean() > 0.9  # white background around the instance
    params = {json.dumps(o["params"]) for o in meta["scene3d"]["objects"]}
    assert len(params) == 5  # every instance has its own shape parameters
    out = _parse(root)
    assert out.metadata["instance_ids"].tolist() == [ids[i] for i, f in enumerate(meta["frames"])
                                                     if f["file_path"] in meta["train_filenames"]]  # fmt: skip


def test_forward_cameras_face_forward(kinds: dict[str, Path]) -> None:
    meta = json.loads((kinds["forward"] / "transforms.json").read_text())
    forwards = np.asarray([-np.asarray(f["transform_matrix"])[:3, 2] for f in meta["frames"]])
    centres = np.asarray([np.asarray(f["transform_matrix"])[:3, 3] for f in meta["frames"]])
    assert (forwards[:, 1] > 0.9).all(), "all cameras look along +Y"
    assert np.ptp(centres[:, 1]) < 1e-6 and np.ptp(centres[:, 0]) < 1.3 and np.ptp(centres[:, 2]) < 0.7
    assert len(meta["val_filenames"]) == 1  # every 8th view of 9


def test_unbounded_far_environment_handheld_path_and_image_points(kinds: dict[str, Path]) -> None:
    """Every ray ends on a surface far beyond the region of interest; the path is a jittered loop; the point cloud
    lies on what the training views see."""
    path = kinds["unbounded"]
    meta = json.loads((path / "transforms.json").read_text())
    block = meta["scene3d"]
    assert "background_color" not in meta and block["environment_radius"] >= 20 * block["group_radius"]
    box = np.asarray(meta["scene_box"])
    c2w = np.asarray([f["transform_matrix"] for f in meta["frames"]])
    centres = c2w[:, :3, 3]
    assert bool(((centres > box[0]) & (centres < box[1])).all())  # the region of interest holds the cameras
    far = 0
    for i in range(len(meta["frames"])):
        frame = read_frame(path, i)
        assert bool((frame.depth > 0).all())  # no background anywhere
        points = backproject_depth(frame.depth, frame.c2w, frame.K)
        far += int(((points < box[0]) | (points > box[1])).any(-1).sum())
    assert far > 0.25 * len(meta["frames"]) * 32 * 32  # much of every view lies beyond the box
    # a loop around the group at 3.3-4.6 m, eye height 1.3-1.9 m, with per-frame jitter (steps are not uniform)
    radius = np.linalg.norm(centres[:, :2], axis=-1)
    assert 3.2 < radius.min() and radius.max() < 4.7 and 1.2 < centres[:, 2].min() and centres[:, 2].max() < 2.0
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=-1)
    assert steps.std() > 0.01
    angles = np.unwrap(np.arctan2(centres[:, 1], centres[:, 0]))
    assert abs(angles[-1] - angles[0]) > 1.6 * math.pi
    # COLMAP-like points: on surfaces the training views see, near and far
    from scene3d.datasets.dataparser import read_ply_points

    xyz, rgb = read_ply_points(path / meta["ply_file_path"])
    assert len(xyz) == 30000 and rgb is not None
    dist = np.linalg.norm(xyz[:, :2], axis=-1)
    assert (dist > 15).mean() > 0.05 and (dist < 3).mean() > 0.2
    # the groundtruth priors rebuild it (no background colour: none is ever seen)
    from scene3d.datasets.stored import read_scene

    assert len(read_scene(path).scene.objects) == len(meta["scene3d"]["objects"])
