"""Reading EpiGRAF collections (official dataset.json layout and nerfstudio transforms.json), and bad input."""

import json
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from scene3d.core.errors import DataError
from scene3d.methods.epigraf.data import read_collection
from scene3d.methods.epigraf.datamanager import mirror_views


def test_nerfstudio_layout_is_normalised(collection_dir: Path):
    col = read_collection(collection_dir)
    assert col.layout == "nerfstudio" and len(col) == 16 and col.resolution == 32
    torch.testing.assert_close(col.c2w[:, :3, 3].norm(dim=-1).mean(), torch.tensor(1.0))
    assert col.world_scale == pytest.approx(1 / 3.0, rel=1e-4)
    # scene_box half-diagonal 0.45·√3 in world units, cameras at 3 -> object radius 0.26
    torch.testing.assert_close(col.far - col.near, torch.full((16,), 2 * 0.45 * 3**0.5 / 3.0), atol=1e-4, rtol=0)
    assert col.background == (1.0, 1.0, 1.0)
    assert col.instance_ids is not None and col.instance_ids.tolist()[:4] == [0, 0, 1, 1]
    img = col.load_image(0)
    assert img.dtype == torch.uint8 and img.shape == (3, 32, 32)


def test_official_layout_folder_and_zip(official_dir: Path, tmp_path: Path):
    col = read_collection(official_dir, fov_deg=12.0)
    assert col.layout == "official" and len(col) == 12
    torch.testing.assert_close(col.c2w[:, :3, 3].norm(dim=-1), torch.ones(12))
    assert col.labels.shape == (12, 3)  # integer classes 0..2, one-hot
    torch.testing.assert_close(col.labels.sum(dim=1), torch.ones(12))
    # the frustum cube holds the near/far range of every camera
    assert col.cube_scale > (col.far.max() - 1.0)
    zpath = tmp_path / "official.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for f in sorted(official_dir.rglob("*")):
            if f.is_file():
                z.write(f, f"official/{f.relative_to(official_dir).as_posix()}")
    zcol = read_collection(zpath, fov_deg=12.0)
    assert len(zcol) == 12
    torch.testing.assert_close(zcol.c2w, col.c2w)
    torch.testing.assert_close(zcol.load_image(3), col.load_image(3))


def test_mixed_sizes_name_the_file(collection_dir: Path):
    odd = collection_dir / "images" / "img_005.png"
    Image.new("RGB", (24, 24), "white").save(odd)
    with pytest.raises(DataError, match="img_005.png.*same size"):
        read_collection(collection_dir)


def test_official_errors_name_dataset_json(official_dir: Path):
    desc = official_dir / "dataset.json"
    meta = json.loads(desc.read_text())

    desc.write_text(json.dumps({"labels": meta["labels"]}))
    with pytest.raises(DataError, match=r"dataset\.json: field 'camera_angles': missing"):
        read_collection(official_dir)

    angles = dict(meta["camera_angles"])
    del angles["images/img_004.png"]
    desc.write_text(json.dumps({"camera_angles": angles}))
    with pytest.raises(DataError, match=r"camera_angles\['images/img_004'\].*no camera pose"):
        read_collection(official_dir)

    labels = dict(list(meta["labels"].items())[:5])
    desc.write_text(json.dumps({"camera_angles": meta["camera_angles"], "labels": labels}))
    with pytest.raises(DataError, match=r"dataset\.json: field 'labels': has 5 entries but .* 12 images"):
        read_collection(official_dir)

    bad = dict(meta["camera_angles"])
    bad["images/img_000.png"] = [0.0, 4.0, 0.0]
    desc.write_text(json.dumps({"camera_angles": bad}))
    with pytest.raises(DataError, match="pitch in"):
        read_collection(official_dir)


def test_missing_and_unknown_paths(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        read_collection(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "plain" / "a.png")
    with pytest.raises(DataError, match="neither transforms.json nor dataset.json"):
        read_collection(tmp_path / "plain")


def test_non_square_images_are_refused(collection_dir: Path):
    for f in (collection_dir / "images").iterdir():
        Image.new("RGB", (32, 16)).save(f)
    with pytest.raises(DataError, match="square"):
        read_collection(collection_dir)


def test_mirrored_camera_sees_the_flipped_image():
    from scene3d.core.cameras import orbit_c2w
    from scene3d.core.cameras import intrinsics_from_fov

    c2w = orbit_c2w(torch.tensor([0.7]), torch.tensor([1.2]), 1.0)
    K = intrinsics_from_fov(30.0, 32, 32)[None].clone()
    K[0, 0, 2] = 14.0  # off-centre principal point
    mc2w, mK = mirror_views(c2w, K, 32)
    assert torch.allclose(torch.det(mc2w[:, :3, :3]), torch.ones(1))

    def project(c2w, K, X):
        Xc = torch.linalg.inv(c2w[0]) @ torch.cat([X, torch.ones(1)])
        return K[0, 0, 0] * Xc[0] / -Xc[2] + K[0, 0, 2], K[0, 1, 1] * -Xc[1] / -Xc[2] + K[0, 1, 2]

    X = torch.tensor([0.05, -0.1, 0.08])
    u, v = project(c2w, K, X)
    mu, mv = project(mc2w, mK, X * torch.tensor([1.0, -1.0, 1.0]))
    torch.testing.assert_close(mu, 32 - u)
    torch.testing.assert_close(mv, v)
