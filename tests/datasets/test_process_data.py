"""Datasets as ``ns-process-data`` writes them: no split lists, no scene box, COLMAP's ``sparse_pc.ply``, global or
per-frame distortion, ``aabb_scale``, ``images_N`` copies; and what scene3d-data derives or refuses for them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scene3d.core.errors import DataError
from scene3d.datasets.bounds import cascade_levels, far_field_scale, scene_box_from_cameras
from scene3d.datasets.validate import default_split, validate_dataset

pytestmark = pytest.mark.data


def _parser(path: Path, **kw: object):  # noqa: ANN202
    from scene3d.datasets.dataparser import Scene3DDataParserConfig

    return Scene3DDataParserConfig(data=path, **kw).setup()


def write_sparse_pc(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """A point cloud as ns-process-data writes it (open3d: binary, double x y z, uchar colours)."""
    rec = np.empty(len(xyz), dtype=[("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    for i, k in enumerate("xyz"):
        rec[k] = xyz[:, i]
    for i, k in enumerate(("red", "green", "blue")):
        rec[k] = rgb[:, i]
    header = (f"ply\nformat binary_little_endian 1.0\ncomment Created by Open3D\nelement vertex {len(xyz)}\n"
              "property double x\nproperty double y\nproperty double z\nproperty uchar red\nproperty uchar green\n"
              "property uchar blue\nend_header\n")  # fmt: skip
    path.write_bytes(header.encode() + rec.tobytes())


def as_process_data(src: Path, out: Path, *, downscale: int | None = None) -> Path:
    """A scene3d dataset rewritten as ns-process-data output: frames only (no splits, box, background, depth,
    extras), ``sparse_pc.ply``, per-frame intrinsics of a COLMAP camera, ``applied_transform``."""
    from scene3d.datasets.dataparser import read_ply_points

    meta = json.loads((src / "transforms.json").read_text())
    (out / "images").mkdir(parents=True)
    frames = []
    for i, f in enumerate(meta["frames"]):
        name = f"images/frame_{i + 1:05d}.png"
        shutil.copy(src / f["file_path"], out / name)
        frames.append({"file_path": name, "transform_matrix": f["transform_matrix"], "colmap_im_id": i + 1})
        if downscale:
            (out / f"images_{downscale}").mkdir(exist_ok=True)
            with Image.open(out / name) as img:
                img.resize((img.width // downscale, img.height // downscale), Image.BILINEAR).save(
                    out / f"images_{downscale}" / Path(name).name
                )
    xyz, rgb = read_ply_points(src / meta["ply_file_path"])
    write_sparse_pc(out / "sparse_pc.ply", xyz.astype(np.float64), rgb)
    tf = {"w": meta["w"], "h": meta["h"], "fl_x": meta["fl_x"], "fl_y": meta["fl_y"], "cx": meta["cx"], "cy": meta["cy"],
          "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "camera_model": "OPENCV", "frames": frames,
          "applied_transform": np.eye(4)[:3].tolist(), "ply_file_path": "sparse_pc.ply"}  # fmt: skip
    (out / "transforms.json").write_text(json.dumps(tf, indent=2))
    return out


@pytest.fixture(scope="module")
def unbounded_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from scene3d.datasets.synthetic import generate_scene

    return generate_scene("unbounded", tmp_path_factory.mktemp("ub") / "scene", size=32, views=20, seed=0)


@pytest.fixture()
def capture(unbounded_scene: Path, tmp_path: Path) -> Path:
    return as_process_data(unbounded_scene, tmp_path / "capture", downscale=2)


def _edit(path: Path, change) -> None:  # noqa: ANN001
    tf = path / "transforms.json"
    meta = json.loads(tf.read_text())
    change(meta)
    tf.write_text(json.dumps(meta))


def test_process_data_output_loads_with_nerfstudios_split_and_a_derived_box(capture: Path, unbounded_scene: Path) -> None:
    from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_fraction

    summary = validate_dataset(capture)
    assert (summary.num_train, summary.num_val, summary.num_test) == (18, 2, 2)
    parser = _parser(capture)
    train, test = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
    names = sorted(f"images/frame_{i + 1:05d}.png" for i in range(20))
    i_train, i_eval = get_train_eval_split_fraction(names, 0.9)
    assert [p.name for p in train.image_filenames] == [Path(names[i]).name for i in i_train]
    assert [p.name for p in test.image_filenames] == [Path(names[i]).name for i in i_eval]
    # the point cloud (double coordinates, as open3d writes them)
    assert train.metadata["points3D_xyz"].shape == (30000, 3) and train.metadata["points3D_rgb"].dtype == torch.uint8
    # a box around what the cameras see (the object group and the cameras), neither degenerate nor the far field
    box = train.scene_box.aabb
    torch.testing.assert_close(box, test.scene_box.aabb)
    side = box[1] - box[0]
    truth = torch.tensor(json.loads((unbounded_scene / "transforms.json").read_text())["scene_box"])
    assert bool((side > 0.2 * side.max()).all()) and float(side.max()) < 20.0, box
    assert bool((box[0] <= truth[0] + 0.3).all() and (box[1] >= truth[1] - 0.3).all()), (box, truth)
    # the far field reaches the environment (36 m from a box of ~10 m): cascades beyond ×4
    assert 4.0 <= train.metadata["far_field_scale"] <= 16.0
    assert train.metadata["background_color"] is None


def test_aabb_scale_and_downscaled_copies(capture: Path) -> None:
    _edit(capture, lambda m: m.update(aabb_scale=32))
    full = _parser(capture).get_dataparser_outputs("train")
    half = _parser(capture, downscale_factor=2).get_dataparser_outputs("train")
    assert full.metadata["far_field_scale"] == 32.0 and cascade_levels(32.0) == 6
    assert half.image_filenames[0].parent.name == "images_2"
    assert int(half.cameras.width[0]) == 16 and int(half.cameras.height[0]) == 16
    torch.testing.assert_close(half.cameras.fx, full.cameras.fx / 2)
    torch.testing.assert_close(half.cameras.cx, full.cameras.cx / 2)
    shutil.rmtree(capture / "images_2")
    with pytest.raises(DataError, match="1/2 resolution") as err:
        _parser(capture, downscale_factor=2).get_dataparser_outputs("train")
    assert err.value.field == "frames[0].file_path"


def test_distortion_global_per_frame_and_refused(capture: Path) -> None:
    _edit(capture, lambda m: m.update(k1=-0.05, k2=0.01, p1=0.001))
    glob = _parser(capture).get_dataparser_outputs("train").cameras
    torch.testing.assert_close(glob.distortion_params[0], torch.tensor([-0.05, 0.01, 0.0, 0.0, 0.001, 0.0]))

    def per_frame(m: dict) -> None:
        for k in ("k1", "k2", "p1", "p2"):
            m.pop(k)
        for i, f in enumerate(m["frames"]):
            f["k1"] = -0.01 * i
        m["frames"][3]["distortion_params"] = [0.1, 0, 0, 0, 0, 0]

    _edit(capture, per_frame)
    out = _parser(capture).get_dataparser_outputs("train")
    names = [p.name for p in out.image_filenames]
    k1 = out.cameras.distortion_params[:, 0]
    assert float(k1[names.index("frame_00005.png")]) == pytest.approx(-0.04)
    assert float(k1[names.index("frame_00004.png")]) == pytest.approx(0.1)
    # honoured: the rays of a distorted camera are not the pinhole's (nerfstudio undistorts them)
    rays = out.cameras.generate_rays(camera_indices=names.index("frame_00004.png"))
    pinhole = out.cameras.generate_rays(camera_indices=names.index("frame_00001.png"))
    assert float((rays.directions - pinhole.directions).abs().max()) > 1e-3

    tf = capture / "transforms.json"
    for change, field, words in (
        (lambda m: m.update(k5=0.2), "k5", "not supported"),
        (lambda m: m["frames"][2].update(k4=0.2), "frames[2].k4", "only read for OPENCV_FISHEYE"),
        (lambda m: m.update(camera_model="OPENCV_FISHEYE", p1=0.01), "p1", "no tangential"),
        (lambda m: m["frames"][1].update(distortion_params=[0.1, 0.2]), "frames[1].distortion_params", "6 numbers"),
    ):
        meta = json.loads(tf.read_text())
        change(meta)
        (capture / "bad.json").write_text(json.dumps(meta))
        with pytest.raises(DataError, match=words) as err:
            validate_dataset(capture / "bad.json")
        assert err.value.field == field


def test_fisheye_cameras(capture: Path) -> None:
    from nerfstudio.cameras.cameras import CameraType

    _edit(capture, lambda m: m.update(camera_model="OPENCV_FISHEYE", k1=0.02, k2=0.0, k3=0.0, k4=0.001, p1=0.0, p2=0.0))
    cams = _parser(capture).get_dataparser_outputs("train").cameras
    assert int(cams.camera_type[0]) == CameraType.FISHEYE.value
    torch.testing.assert_close(cams.distortion_params[0], torch.tensor([0.02, 0.0, 0.0, 0.001, 0.0, 0.0]))


def test_box_is_never_degenerate_or_guessed(capture: Path) -> None:
    """Forward-facing cameras on a plane: the box reaches out to what they look at; parallel cameras without
    points: a clear error (the old box was the camera centres ± 1 mm)."""
    n = 8
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, 0, 3] = np.linspace(-0.5, 0.5, n)  # a row of cameras on the plane z = 0 ...
    yaw = np.linspace(-0.15, 0.15, n)  # ... turned slightly inwards, looking along -Z at a point ~3 m away
    c2w[:, 0, 0], c2w[:, 0, 2], c2w[:, 2, 0], c2w[:, 2, 2] = np.cos(yaw), np.sin(yaw), -np.sin(yaw), np.cos(yaw)
    K = np.tile(np.array([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]), (n, 1, 1))
    wh = np.full(n, 32.0)
    box = scene_box_from_cameras(c2w, K, wh, wh)
    assert box[0, 2] < -2.0 and box[1, 2] > -0.01 and bool((box[1] - box[0] > 0.3).all()), box
    parallel = np.tile(np.eye(4), (n, 1, 1))
    parallel[:, 0, 3] = np.linspace(-0.5, 0.5, n)
    with pytest.raises(DataError, match="cannot be derived") as err:
        scene_box_from_cameras(parallel, K, wh, wh)
    assert err.value.field == "scene_box"
    points = np.random.default_rng(0).normal([0.0, 0.0, -3.0], 0.3, size=(500, 3))
    with_points = scene_box_from_cameras(parallel, K, wh, wh, points)
    assert with_points[0, 2] < -3.0 and bool((with_points[1] - with_points[0] > 0.3).all())


def test_far_field_scale_from_points_and_defaults() -> None:
    box = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    near = np.random.default_rng(0).uniform(-1, 1, size=(1000, 3))
    far = np.concatenate([near, near[:100] * 10])
    assert far_field_scale(box, near) == 4.0 and 10.0 <= far_field_scale(box, far) <= 11.0
    assert far_field_scale(box) == 16.0 and far_field_scale(box, far, aabb_scale=64) == 64.0
    assert [cascade_levels(s) for s in (1, 2, 4.0, 5, 16, 128)] == [1, 2, 3, 4, 5, 8]


def test_default_split_matches_nerfstudio() -> None:
    from nerfstudio.data.utils.dataparsers_utils import get_train_eval_split_fraction

    rng = np.random.default_rng(0)
    for n in (2, 7, 10, 37, 101):
        names = [f"images/frame_{i:05d}.jpg" for i in rng.permutation(n)]
        train, evaluation = default_split(names)
        i_train, i_eval = get_train_eval_split_fraction(sorted(names), 0.9)
        assert sorted(names[i] for i in train) == [sorted(names)[i] for i in i_train]
        assert sorted(names[i] for i in evaluation) == [sorted(names)[i] for i in i_eval]
