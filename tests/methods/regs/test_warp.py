"""Depth back-projection and the z-tested forward warp of the reference into other views."""

from __future__ import annotations

import math

import pytest
import torch

from scene3d.core.cameras import intrinsics_from_fov, look_at
from scene3d.methods.regs import warp
from scene3d.renderers.splats import render, viewmats_from_c2w


def _camera(eye, target=(0.0, 0.0, 0.0), size: int = 24):
    c2w = look_at(torch.tensor(eye), torch.tensor(target))
    return viewmats_from_c2w(c2w[None, :3, :4])[0], intrinsics_from_fov(45.0, size, size)


def _splat_scene(n: int = 400):
    """Gaussians on a bumpy height field z = 0.3 sin(2x) cos(2y) (a non-trivial depth map)."""
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * 2.4 - 1.2
    z = 0.3 * torch.sin(2 * xy[:, 0]) * torch.cos(2 * xy[:, 1])
    return {
        "means": torch.cat([xy, z[:, None]], dim=-1),
        "scales": torch.full((n, 3), math.log(0.08)),
        "quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        "features_dc": torch.randn(n, 3, generator=g),
        "features_rest": torch.zeros(n, 0, 3),
        "opacities": torch.full((n, 1), 4.0),
    }


def test_backproject_then_project_is_the_pixel_centre():
    viewmat, K = _camera((1.0, -2.5, 2.0))
    depth = torch.rand(24, 24) * 2 + 1
    points = warp.backproject_depth(depth, viewmat, K)
    uv, z = warp.project_points(points, viewmat, K)
    v, u = torch.meshgrid(torch.arange(24) + 0.5, torch.arange(24) + 0.5, indexing="ij")
    assert torch.allclose(uv, torch.stack([u.reshape(-1), v.reshape(-1)], -1), atol=1e-4)
    assert torch.allclose(z, depth.reshape(-1), atol=1e-5)
    assert torch.allclose(warp.camera_center(viewmat), torch.tensor([1.0, -2.5, 2.0]), atol=1e-5)


def test_warp_of_a_view_into_itself_is_the_identity_on_visible_pixels():
    params = _splat_scene()
    viewmat, K = _camera((0.5, -2.5, 2.2))
    out, alpha, _ = render(params, viewmat[None], K[None], 24, 24, sh_degree=0, render_mode="ED")
    valid = alpha[0, ..., 0] > 0.5
    depth = torch.where(valid, out[0, ..., 0], torch.zeros_like(out[0, ..., 0]))
    assert 100 < int(valid.sum()) < 24 * 24  # a surface with some background around it
    assert float(depth[valid].max() - depth[valid].min()) > 0.3  # and a depth that varies
    points = warp.backproject_depth(depth, viewmat, K)
    corr = warp.forward_warp(points, valid.reshape(-1), viewmat, K, 24, 24, depth, depth_tolerance=1e-3)
    assert len(corr) == int(valid.sum())
    assert torch.equal(corr.target_pixels, corr.source_pixels)
    assert torch.equal(corr.mask(), valid)
    image = torch.rand(24, 24, 3)
    warped = warp.warp_image(image, corr, fill=1.0)
    assert torch.equal(warped[valid], image[valid])
    assert torch.all(warped[~valid] == 1.0)


def test_z_test_rejects_occluded_points_and_keeps_the_nearest():
    K = torch.tensor([[10.0, 0.0, 2.0], [0.0, 10.0, 2.0], [0.0, 0.0, 1.0]])
    # three points on the ray of pixel (1, 1): z = 2 (visible), 2.5 (behind the surface at 2), 1.5 (in front)
    pix = torch.tensor([(1.5 - 2.0) / 10.0, (1.5 - 2.0) / 10.0, 1.0])
    points = torch.stack([pix * 2.0, pix * 2.5, pix * 1.5])
    target_depth = torch.full((4, 4), 2.0)
    corr = warp.forward_warp(points[:2], torch.ones(2, dtype=torch.bool), torch.eye(4), K, 4, 4, target_depth)
    assert corr.target_pixels.tolist() == [5] and corr.source_pixels.tolist() == [0]
    corr = warp.forward_warp(points, torch.ones(3, dtype=torch.bool), torch.eye(4), K, 4, 4, target_depth)
    assert corr.target_pixels.tolist() == [5] and corr.source_pixels.tolist() == [2]  # nearest wins
    corr = warp.forward_warp(points[1:2], torch.ones(1, dtype=torch.bool), torch.eye(4), K, 4, 4, target_depth, depth_tolerance=0.6)
    assert len(corr) == 1  # within the tolerance
    empty = torch.zeros(4, 4)  # no surface in the target: nothing passes
    assert len(warp.forward_warp(points, torch.ones(3, dtype=torch.bool), torch.eye(4), K, 4, 4, empty)) == 0


def test_warp_between_views_lands_on_the_same_surface_points():
    params = _splat_scene()
    ref_vm, K = _camera((0.0, -2.6, 2.0))
    tgt_vm, _ = _camera((1.2, -2.2, 2.1))
    ref, ref_a, _ = render(params, ref_vm[None], K[None], 24, 24, sh_degree=0, render_mode="ED")
    tgt, tgt_a, _ = render(params, tgt_vm[None], K[None], 24, 24, sh_degree=0, render_mode="ED")
    ref_valid = ref_a[0, ..., 0] > 0.5
    tgt_depth = torch.where(tgt_a[0, ..., 0] > 0.5, tgt[0, ..., 0], torch.zeros_like(tgt[0, ..., 0]))
    points = warp.backproject_depth(torch.where(ref_valid, ref[0, ..., 0], torch.zeros_like(ref[0, ..., 0])), ref_vm, K)
    cos = warp.view_cosine_mask(points, warp.camera_center(ref_vm), warp.camera_center(tgt_vm))
    corr = warp.forward_warp(points, ref_valid.reshape(-1) & cos, tgt_vm, K, 24, 24, tgt_depth, depth_tolerance=0.05)
    assert len(corr) > 50
    # every accepted point re-projects into its target pixel and is not behind the target surface
    uv, z = warp.project_points(points[corr.source_pixels], tgt_vm, K)
    assert torch.equal(torch.round(uv[:, 1] - 0.5).long() * 24 + torch.round(uv[:, 0] - 0.5).long(), corr.target_pixels)
    assert torch.all(z <= tgt_depth.reshape(-1)[corr.target_pixels] + 0.05)


def test_view_cosine_mask():
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    same = warp.view_cosine_mask(points, torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.1, 1.0]))
    opposite = warp.view_cosine_mask(points, torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 0.0, -1.0]))
    assert same.tolist() == [True, True] and opposite.tolist() == [False, False]


def test_bad_shapes_are_named():
    K = torch.eye(3)
    with pytest.raises(ValueError, match="target_depth"):
        warp.forward_warp(torch.zeros(2, 3), torch.ones(2, dtype=torch.bool), torch.eye(4), K, 4, 4, torch.zeros(3, 3))
    # a length mismatch is caught by the runtime shape checker in tests, by the ValueError elsewhere
    with pytest.raises((ValueError, TypeError), match="valid"):
        warp.forward_warp(torch.zeros(2, 3), torch.ones(3, dtype=torch.bool), torch.eye(4), K, 4, 4, torch.zeros(4, 4))
