"""DreamPolish's pure functions: cameras, view prompts, reference mask, losses, the NeRF → NeuS hand-off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scene3d.core.errors import DataError
from scene3d.methods.dreampolish import losses, orbit, reference


def test_view_prompts_follow_dreamfusion_thresholds():
    assert orbit.view_prompt("a cat", 10.0, 0.0) == "a cat, front view"
    assert orbit.view_prompt("a cat", -170.0, 10.0) == "a cat, back view"
    assert orbit.view_prompt("a cat", 90.0, 10.0) == "a cat, side view"
    assert orbit.view_prompt("a cat", 0.0, 70.0) == "a cat, overhead view"
    assert orbit.view_prompt("a cat", 360.0 + 30.0, 0.0) == "a cat, front view"


def test_reference_camera_looks_at_the_centre_from_the_front():
    cams = orbit.reference_camera(torch.zeros(3), 3.0, 0.0, 40.0, 32, 32)
    c2w = cams.c2w[0]
    torch.testing.assert_close(c2w[:3, 3], torch.tensor([0.0, -3.0, 0.0]))
    torch.testing.assert_close(-c2w[:3, 2], torch.tensor([0.0, 1.0, 0.0]))  # looks along +Y


def test_polish_cameras_vary_their_field_of_view_and_stay_outside():
    g = torch.Generator().manual_seed(0)
    cams = orbit.sample_polish_cameras(64, torch.zeros(3), 1.0, 16, 16, fov_range_deg=(15.0, 60.0),
                                       zoom_range=(0.6, 1.2), elevation_range_deg=(-10.0, 45.0), generator=g)
    assert float(cams.fov_deg.max() - cams.fov_deg.min()) > 30.0
    assert float(cams.c2w[:, :3, 3].norm(dim=-1).min()) > 1.0
    # narrower fields of view sit farther away (framing)
    dist = cams.c2w[:, :3, 3].norm(dim=-1)
    assert float(torch.corrcoef(torch.stack([cams.fov_deg, dist]))[0, 1]) < 0


def test_reference_mask_from_alpha_and_from_the_backdrop(tmp_path):
    from PIL import Image

    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 12:28] = (200, 30, 30, 255)
    ref = reference.reference_from_array(rgba.astype(np.float32) / 255.0, 20, 20)
    assert 0.15 < float(ref.mask.mean()) < 0.25 and torch.allclose(ref.background, torch.ones(3))
    assert torch.allclose(ref.rgb[0, 0], torch.ones(3))  # composited over white
    rgb = np.full((40, 40, 3), 240, np.uint8)
    rgb[10:30, 12:28] = (30, 200, 30)
    rgb[2, 2] = (0, 0, 0)  # a speck of noise is opened away
    ref2 = reference.reference_from_array(rgb.astype(np.float32) / 255.0, 40, 40)
    assert int(ref2.mask.sum()) == 20 * 16
    path = tmp_path / "ref.png"
    Image.fromarray(rgba).save(path)
    assert reference.read_image(path).shape == (40, 40, 4)


def test_bad_reference_images(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="unreadable reference image"):
        reference.read_image(bad)
    with pytest.raises(DataError, match="does not exist"):
        reference.read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="no separable object"):
        reference.reference_from_array(np.full((16, 16, 3), 0.5, np.float32), 16, 16)


def test_polish_loss_is_zero_for_true_normals_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    normals = torch.nn.functional.normalize(torch.randn(2, 8, 8, 3, generator=g), dim=-1)
    mask = (torch.rand(2, 8, 8, generator=g) > 0.3).float()
    assert float(losses.normal_polish_loss(normals, normals.clone(), mask)) < 1e-6
    # antialiased (shortened) rendered normals are normalised first: still zero
    assert float(losses.normal_polish_loss(0.5 * normals, normals.clone(), mask)) < 1e-6
    noisy = torch.nn.functional.normalize(normals + 0.3 * torch.randn(2, 8, 8, 3, generator=g), dim=-1)
    assert float(losses.normal_polish_loss(normals, noisy, mask)) > 0.01
    # pixels outside the mask do not count
    outside = normals.clone()
    outside[mask == 0] = -outside[mask == 0]
    assert float(losses.normal_polish_loss(normals, outside, mask)) < 1e-6


def test_normal_consistency_and_laplacian():
    import trimesh

    plane = trimesh.creation.box(extents=(1.0, 1.0, 1.0)).subdivide().subdivide()
    v = torch.tensor(plane.vertices, dtype=torch.float32)
    f = torch.tensor(plane.faces)
    cube = float(losses.normal_consistency_loss(v, f))
    sphere = trimesh.creation.icosphere(3)
    smooth = float(losses.normal_consistency_loss(torch.tensor(sphere.vertices, dtype=torch.float32), torch.tensor(sphere.faces)))
    assert smooth < cube  # a cube's 90° edges cost more than a fine sphere's
    noisy = v + 0.02 * torch.randn_like(v)
    assert float(losses.laplacian_loss(noisy, f)) > float(losses.laplacian_loss(v, f))


def _peanut_density(points: torch.Tensor) -> torch.Tensor:
    a = torch.tensor([0.3, 0.0, 0.0])
    blobs = [torch.sigmoid((0.35 - (points - c).norm(dim=-1)) * 40.0) for c in (a, -a)]
    return 100.0 * torch.maximum(*blobs)


def test_sdf_initialisation_zero_level_lies_on_the_density_iso_surface():
    from scene3d.core.shape_metrics import chamfer_distance, sample_surface
    from scene3d.fields.hash_grid import HashGridEncoding
    from scene3d.fields.sdf import SDFField
    from scene3d.methods.dreampolish import handoff
    from scene3d.renderers import isosurface

    torch.manual_seed(0)
    lower, upper = torch.full((3,), -1.0), torch.full((3,), 1.0)
    enc = HashGridEncoding(n_levels=6, log2_hashmap_size=14, base_resolution=8, max_resolution=96, backend="torch")
    field = SDFField(torch.stack([lower, upper]), enc, hidden=32, color_hidden=16, sphere_radius=0.5)
    red = lambda p, d: torch.tensor([0.9, 0.1, 0.1]).expand(p.shape[0], 3)  # noqa: E731
    level = 50.0
    report = handoff.density_to_sdf(field, _peanut_density, red, level, center=torch.zeros(3), radius=1.0,
                                    resolution=48, steps=150, batch=1024, generator=torch.Generator().manual_seed(0))
    target = handoff.density_surface(_peanut_density, lower, upper, level, 64)
    with torch.no_grad():
        values = isosurface.sample_grid(field.sdf, lower, upper, (64, 64, 64))
    verts, faces = isosurface.marching_cubes(values, lower, upper, 0.0, inside="low")
    a, _ = sample_surface(torch.from_numpy(verts), torch.from_numpy(faces), 4000, seed=0)
    b, _ = sample_surface(torch.from_numpy(target.vertices), torch.from_numpy(target.faces), 4000, seed=1)
    diagonal = float((upper - lower).norm())
    chamfer = float(chamfer_distance(a, b)) / diagonal
    # before the fit the zero level is the base sphere (r = 0.5), far from the two lobes
    before = isosurface.marching_cubes(
        isosurface.sample_grid(lambda p: p.norm(dim=-1) - 0.5, lower, upper, (64, 64, 64)), lower, upper, 0.0, inside="low"
    )
    c, _ = sample_surface(torch.from_numpy(before[0]), torch.from_numpy(before[1]), 4000, seed=0)
    chamfer_before = float(chamfer_distance(c, b)) / diagonal
    assert chamfer < 0.005 < chamfer_before, (chamfer, chamfer_before)
    assert report.color_error < 0.01
    assert float(((field.albedo(b[:100]) - torch.tensor([0.9, 0.1, 0.1])) ** 2).mean()) < 0.01
