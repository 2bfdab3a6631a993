"""TSDF fusion of depth maps: signed distances along the view, free-space carving, the observed-cube mask as
scikit-image reads it, and the colour of the views that see a point."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scene3d.core.cameras import intrinsics_from_fov, look_at
from scene3d.renderers import isosurface
from scene3d.renderers.tsdf import DepthView, fuse_tsdf, observed_cubes, view_colors

LOWER, UPPER = torch.tensor([-0.5, -0.5, -0.5]), torch.tensor([0.5, 0.5, 0.5])


def view_from(eye, depth_fn, size: int = 24, colour=(0.2, 0.4, 0.6), opacity_fn=None) -> DepthView:
    """A view from ``eye`` looking at the origin; ``depth_fn(rows, cols)`` gives its z-depth image."""
    up = (0.0, 1.0, 0.0) if eye[0] == eye[1] == 0 else (0.0, 0.0, 1.0)  # straight down or up: roll about +y
    c2w = look_at(torch.tensor([eye], dtype=torch.float32), torch.zeros(1, 3), up=up)[0]
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    depth = depth_fn(rows, cols).float()
    opacity = torch.ones(size, size) if opacity_fn is None else opacity_fn(rows, cols).float()
    rgb = torch.tensor(colour).expand(size, size, 3).clone()
    return DepthView(rgb, opacity, depth, c2w, intrinsics_from_fov(40.0, size, size))


def test_signed_distance_along_the_view_and_hidden_points():
    # camera on +z at distance 2 looking down: a plane at z = 0 has z-depth 2 everywhere
    view = view_from((0.0, 0.0, 2.0), lambda r, c: torch.full(r.shape, 2.0))
    values, counts = fuse_tsdf([view], LOWER, UPPER, (3, 3, 11), truncation=0.25)
    column = values[1, 1]
    z = np.linspace(-0.5, 0.5, 11)
    seen = z >= -0.25  # more than the truncation behind the surface: hidden, not observed
    assert np.array_equal(counts[1, 1] > 0, seen)
    np.testing.assert_allclose(column[seen], np.clip(z[seen] / 0.25, -1, 1), atol=1e-5)
    assert np.all(column[~seen] == 1.0)  # unobserved points read as empty


def test_a_floater_one_view_sees_is_carved_by_the_views_that_see_through_it():
    # a small blob at the origin in view A; views B, C, D see only background (opacity 0) there
    floater = view_from((0.0, 0.0, 2.0), lambda r, c: torch.full(r.shape, 2.0))
    empty = [view_from(eye, lambda r, c: torch.full(r.shape, 9.0), opacity_fn=lambda r, c: torch.zeros(r.shape))
             for eye in ((2.0, 0.0, 0.1), (0.0, 2.0, 0.1), (-2.0, 0.0, 0.1))]  # fmt: skip
    alone, _ = fuse_tsdf([floater], LOWER, UPPER, (9, 9, 9), truncation=0.2)
    voted, _ = fuse_tsdf([floater, *empty], LOWER, UPPER, (9, 9, 9), truncation=0.2)
    assert alone.min() < 0  # the floater alone makes a surface
    assert voted.min() > 0  # three views that see through it outvote it


def test_observed_cubes_keep_surfaces_off_unobserved_points():
    # a plane seen from above; below it, points further than the truncation are unobserved (+1): without the mask
    # marching cubes would draw a second sheet between "just behind the plane" (−) and "unobserved" (+)
    view = view_from((0.0, 0.0, 2.0), lambda r, c: torch.full(r.shape, 2.0))
    values, counts = fuse_tsdf([view], LOWER, UPPER, (9, 9, 17), truncation=0.15)
    bare, _ = isosurface.marching_cubes(values, LOWER, UPPER, 0.0, inside="low")
    masked, _ = isosurface.marching_cubes(values, LOWER, UPPER, 0.0, inside="low", mask=observed_cubes(counts))
    assert bare[:, 2].min() < -0.1  # the spurious sheet
    assert masked[:, 2].min() > -1e-4 and masked[:, 2].max() < 1e-4  # only the plane, all of it
    assert len(masked) >= 0.9 * (bare[:, 2] > -0.05).sum()


def test_view_colours_weigh_views_by_how_squarely_they_face_the_surface():
    points, normals = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]])
    square = view_from((0.0, 0.0, 2.0), lambda r, c: torch.full(r.shape, 2.0), colour=(1.0, 0.0, 0.0))
    grazing = view_from((2.0, 0.0, 0.35), lambda r, c: torch.full(r.shape, 2.03), colour=(0.0, 0.0, 1.0))
    behind = view_from((0.0, 0.0, -2.0), lambda r, c: torch.full(r.shape, 2.0), colour=(0.0, 1.0, 0.0))
    views = [square, grazing, behind]
    plain, seen = view_colors(points, views, truncation=0.1)
    assert int(seen[0]) == 3
    torch.testing.assert_close(plain[0], torch.tensor([1 / 3, 1 / 3, 1 / 3]))
    weighted, seen = view_colors(points, views, truncation=0.1, normals=normals)
    assert int(seen[0]) == 2  # the view from behind the surface does not count
    cos_grazing = 0.35 / float(torch.tensor([2.0, 0.0, 0.35]).norm())
    expected = torch.tensor([1.0, 0.0, cos_grazing]) / (1.0 + cos_grazing)
    torch.testing.assert_close(weighted[0], expected, atol=1e-5, rtol=0)


def test_bad_inputs():
    good = view_from((0.0, 0.0, 2.0), lambda r, c: torch.full(r.shape, 2.0))
    with pytest.raises((TypeError, ValueError)):  # jaxtyping's check (on in tests) or the constructor's
        DepthView(good.rgb[:, :5], good.opacity, good.depth, good.c2w, good.K)
    with pytest.raises(ValueError, match="truncation"):
        fuse_tsdf([good], LOWER, UPPER, (3, 3, 3), truncation=0.0)
    with pytest.raises(ValueError, match="min_opacity"):
        fuse_tsdf([good], LOWER, UPPER, (3, 3, 3), truncation=0.1, min_opacity=0.0)
    with pytest.raises(ValueError, match="at least one view"):
        fuse_tsdf([], LOWER, UPPER, (3, 3, 3), truncation=0.1)
