"""Splat export: the 3DGS PLY layout, lossless PLY round trip, lossy .splat round trip, the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scene3d.export.splat import ply_bytes, read_ply, read_splat, write_splats
from scene3d.renderers.splats import render
from scene3d.renderers.gaussians_project import rgb_to_sh


def _params(n=300, sh_degree=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "means": torch.rand(n, 3, generator=g) * 2 - 1,
        "scales": torch.log(torch.rand(n, 3, generator=g) * 0.08 + 0.01),
        "quats": torch.randn(n, 4, generator=g),
        "features_dc": rgb_to_sh(torch.rand(n, 3, generator=g)),
        "features_rest": torch.randn(n, (sh_degree + 1) ** 2 - 1, 3, generator=g) * 0.1,
        "opacities": torch.randn(n, 1, generator=g),
    }


def _camera(size=64):
    viewmat = torch.eye(4)[None].clone()
    viewmat[0, 2, 3] = 3.0
    f = 0.5 * size / math.tan(math.radians(25))
    K = torch.tensor([[[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]]])
    return viewmat, K


def test_ply_has_the_3dgs_layout():
    plyfile = pytest.importorskip("plyfile")
    params = _params(n=5, sh_degree=1)
    params["features_rest"] = torch.arange(5 * 3 * 3, dtype=torch.float32).reshape(5, 3, 3)  # [N, K-1, 3]
    ply = plyfile.PlyData.read(__import__("io").BytesIO(ply_bytes(params)))
    vertex = ply["vertex"]
    names = [p.name for p in vertex.properties]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    expected += [f"f_rest_{i}" for i in range(9)] + ["opacity", "scale_0", "scale_1", "scale_2"]
    expected += ["rot_0", "rot_1", "rot_2", "rot_3"]
    assert names == expected and ply.header.startswith("ply\nformat binary_little_endian 1.0")
    assert all(p.val_dtype in ("f4", "float32", "float") for p in vertex.properties)
    # f_rest is channel-major (the INRIA code's transpose(1, 2)): f_rest_{c·(K−1)+k} = features_rest[:, k, c]
    for k in range(3):
        for c in range(3):
            np.testing.assert_array_equal(vertex[f"f_rest_{c * 3 + k}"], params["features_rest"][:, k, c].numpy())
    np.testing.assert_array_equal(vertex["opacity"], params["opacities"][:, 0].numpy())
    np.testing.assert_array_equal(vertex["rot_0"], params["quats"][:, 0].numpy())
    np.testing.assert_array_equal(vertex["scale_2"], params["scales"][:, 2].numpy())


def test_ply_round_trip_is_lossless_and_renders_the_same_image(tmp_path):
    params = _params()
    path = write_splats(params, tmp_path / "scene.ply")
    back = read_ply(path)
    for k, v in params.items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0)
    viewmat, K = _camera()
    a = render(params, viewmat, K, 64, 64, sh_degree=2, backend="torch")[0]
    b = render(back, viewmat, K, 64, 64, sh_degree=2, backend="torch")[0]
    assert float(a.std()) > 0.05
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_splat_round_trip_renders_nearly_the_same_image(tmp_path):
    params = _params(sh_degree=0)
    path = write_splats(params, tmp_path / "scene.splat")
    assert path.stat().st_size == 32 * 300
    back = read_splat(path)
    # positions and scales are float32 (reordered by size × opacity); colours and rotations quantised
    order = np.argsort(-(params["scales"].exp().prod(1) * torch.sigmoid(params["opacities"][:, 0])).numpy(), kind="stable")
    torch.testing.assert_close(back["means"], params["means"][order], rtol=0, atol=0)
    torch.testing.assert_close(back["scales"], params["scales"][order], rtol=1e-6, atol=1e-6)
    viewmat, K = _camera()
    a = render(params, viewmat, K, 64, 64, sh_degree=0, backend="torch")[0]
    b = render(back, viewmat, K, 64, 64, sh_degree=0, backend="torch")[0]
    psnr = -10 * math.log10(float(((a - b) ** 2).mean()))
    assert psnr > 35, psnr


def test_non_finite_gaussians_are_dropped(tmp_path):
    params = _params(n=10)
    params["means"][3, 1] = float("nan")
    params["opacities"][7, 0] = float("inf")
    back = read_ply(write_splats(params, tmp_path / "x.ply"))
    assert back["means"].shape == (8, 3)


def test_bad_format_and_files_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="format must be 'ply' or 'splat'"):
        write_splats(_params(n=4), tmp_path / "x.obj")
    (tmp_path / "bad.ply").write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "bad.ply")
    (tmp_path / "bad.splat").write_bytes(b"\0" * 33)
    with pytest.raises(ValueError, match="32-byte records"):
        read_splat(tmp_path / "bad.splat")
    with pytest.raises(ValueError, match="missing"):
        ply_bytes({"means": torch.zeros(2, 3)})


def test_export_cli_usage_lists_splat(capsys):
    from scene3d.cli.export import main

    assert main([]) == 0
    assert "splat" in capsys.readouterr().out
    assert main(["nonsense"]) == 2
