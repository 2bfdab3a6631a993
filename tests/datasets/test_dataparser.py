"""scene3d-data: nerfstudio outputs in the dataset's own frame, usable by nerfstudio's datamanagers on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from scene3d.core.cameras import pinhole_rays
from scene3d.core.errors import DataError

pytestmark = pytest.mark.data


def _parser(path: Path, **kw: object):  # noqa: ANN202
    from scene3d.datasets.dataparser import Scene3DDataParserConfig

    return Scene3DDataParserConfig(data=path, **kw).setup()


def test_outputs_keep_the_world_frame(object_scene: Path) -> None:
    meta = json.loads((object_scene / "transforms.json").read_text())
    out = _parser(object_scene).get_dataparser_outputs("train")
    train = meta["train_filenames"]
    assert [str(p.relative_to(object_scene)) for p in out.image_filenames] == train
    by_name = {f["file_path"]: f for f in meta["frames"]}
    poses = torch.tensor([by_name[n]["transform_matrix"] for n in train], dtype=torch.float32)[:, :3, :4]
    torch.testing.assert_close(out.cameras.camera_to_worlds, poses)  # no re-orienting, no re-centring
    torch.testing.assert_close(out.dataparser_transform, torch.eye(4)[:3])
    assert out.dataparser_scale == 1.0
    torch.testing.assert_close(out.scene_box.aabb, torch.tensor(meta["scene_box"], dtype=torch.float32))
    md = out.metadata
    assert len(md["depth_filenames"]) == len(train) and md["depth_unit_scale_factor"] == 1e-3
    assert md["points3D_xyz"].shape == (20000, 3) and md["points3D_rgb"].dtype == torch.uint8
    torch.testing.assert_close(md["background_color"], torch.tensor(meta["background_color"], dtype=torch.float32))
    assert out.mask_filenames is None and len(md["foreground_mask_filenames"]) == len(train)
    assert len(md["stylized_filenames"]) == len(train) and md["scene3d"]["kind"] == "object"

    masked = _parser(object_scene, load_masks=True).get_dataparser_outputs("val")
    assert [str(p.relative_to(object_scene)) for p in masked.image_filenames] == meta["val_filenames"]
    assert masked.mask_filenames is not None and len(masked.mask_filenames) == len(meta["val_filenames"])


def test_rays_match_scene3d_cameras_exactly(object_scene: Path) -> None:
    """nerfstudio's Cameras from the parser generate the rays the generator rendered with."""
    out = _parser(object_scene).get_dataparser_outputs("train")
    meta = json.loads((object_scene / "transforms.json").read_text())
    K = torch.tensor([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1]], dtype=torch.float32)
    bundle = out.cameras.generate_rays(camera_indices=2)
    c2w = torch.eye(4)
    c2w[:3] = out.cameras.camera_to_worlds[2]
    origins, dirs = pinhole_rays(c2w, K, meta["w"], meta["h"])
    torch.testing.assert_close(bundle.directions, dirs, atol=1e-6, rtol=0)
    torch.testing.assert_close(bundle.origins, origins)


def test_scale_factor_scales_everything(object_scene: Path) -> None:
    base = _parser(object_scene).get_dataparser_outputs("train")
    scaled = _parser(object_scene, scale_factor=0.5).get_dataparser_outputs("train")
    torch.testing.assert_close(scaled.cameras.camera_to_worlds[:, :3, 3], base.cameras.camera_to_worlds[:, :3, 3] * 0.5)
    torch.testing.assert_close(scaled.cameras.camera_to_worlds[:, :3, :3], base.cameras.camera_to_worlds[:, :3, :3])
    torch.testing.assert_close(scaled.scene_box.aabb, base.scene_box.aabb * 0.5)
    torch.testing.assert_close(scaled.metadata["points3D_xyz"], base.metadata["points3D_xyz"] * 0.5)
    assert scaled.dataparser_scale == 0.5


def test_vanilla_datamanager_on_cpu(object_scene: Path) -> None:
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nerfstudio.data.datasets.depth_dataset import DepthDataset

    from scene3d.datasets.dataparser import Scene3DDataParserConfig

    meta = json.loads((object_scene / "transforms.json").read_text())
    config = VanillaDataManagerConfig(
        dataparser=Scene3DDataParserConfig(data=object_scene), train_num_rays_per_batch=64, eval_num_rays_per_batch=64
    )
    dm = config.setup(device="cpu", test_mode="val")
    bundle, batch = dm.next_train(0)
    assert bundle.origins.shape == (64, 3) and batch["image"].shape == (64, 3)
    assert len(dm.train_dataset) == len(meta["train_filenames"])
    assert len(dm.eval_dataset) == len(meta["val_filenames"])
    camera, data = dm.next_eval_image(0)
    assert data["image"].shape == (48, 48, 3)

    # depth supervision through nerfstudio's own DepthDataset: metres, matching the PNG / 1000
    out = Scene3DDataParserConfig(data=object_scene).setup().get_dataparser_outputs("train")
    depth_ds = DepthDataset(out)
    sample = depth_ds[0]
    from PIL import Image

    png = np.array(Image.open(out.metadata["depth_filenames"][0])).astype(np.float32) / 1000.0
    np.testing.assert_allclose(sample["depth_image"][..., 0].numpy(), png, atol=1e-6)


def test_full_image_datamanager_on_cpu(object_scene: Path) -> None:
    from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig

    from scene3d.datasets.dataparser import Scene3DDataParserConfig

    # cache_images="cpu" pins memory, which needs CUDA; "gpu" caches on the datamanager's device, here the CPU
    config = FullImageDatamanagerConfig(dataparser=Scene3DDataParserConfig(data=object_scene), cache_images="gpu")
    dm = config.setup(device="cpu", test_mode="val")
    camera, data = dm.next_train(0)
    assert data["image"].shape == (48, 48, 3)
    assert camera.camera_to_worlds.shape[-2:] == (3, 4)
    assert "points3D_xyz" in dm.train_dataparser_outputs.metadata


def test_parser_validates_first_and_rejects_changing_root(object_scene: Path, tmp_path: Path) -> None:
    broken = Path(shutil.copytree(object_scene, tmp_path / "broken"))
    (broken / "normals" / "frame_00004.png").unlink()
    with pytest.raises(DataError) as info:
        _parser(broken).get_dataparser_outputs("train")
    assert info.value.field == "frames[4].normal_file_path"
    root = tmp_path / "changing"
    root.mkdir()
    (root / "manifest.json").write_text('{"steps": []}')
    with pytest.raises(DataError, match="step folder"):
        _parser(root).get_dataparser_outputs("train")


def test_entry_point_registered() -> None:
    from nerfstudio.plugins.registry_dataparser import discover_dataparsers

    from scene3d.datasets.dataparser import Scene3DDataParserConfig

    configs, descriptions = discover_dataparsers()
    assert isinstance(configs["scene3d-data"], Scene3DDataParserConfig)
    assert "scene3d" in descriptions["scene3d-data"]


def test_ply_reader_matches_open3d(object_scene: Path, tmp_path: Path) -> None:
    import open3d as o3d

    from scene3d.datasets.dataparser import read_ply_points

    xyz, rgb = read_ply_points(object_scene / "points3d.ply")
    pcd = o3d.io.read_point_cloud(str(object_scene / "points3d.ply"))  # what nerfstudio's own parser uses
    np.testing.assert_allclose(xyz, np.asarray(pcd.points), atol=1e-6)
    assert rgb is not None
    np.testing.assert_array_equal(rgb, np.round(np.asarray(pcd.colors) * 255).astype(np.uint8))
    assert len(np.asarray(pcd.normals)) == len(xyz)
    ascii_ply = tmp_path / "a.ply"
    o3d.io.write_point_cloud(str(ascii_ply), pcd, write_ascii=True)
    xyz2, rgb2 = read_ply_points(ascii_ply)
    np.testing.assert_allclose(xyz2, xyz, atol=1e-5)
    np.testing.assert_array_equal(rgb2, rgb)
