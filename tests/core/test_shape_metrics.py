"""Chamfer distance and normal angle error between meshes."""

from __future__ import annotations

import math

import torch

from scene3d.core.shape_metrics import chamfer_distance, normal_angle_error, sample_surface


def _sphere(radius: float, subdivisions: int = 3):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions, radius=radius)
    return torch.tensor(m.vertices, dtype=torch.float32), torch.tensor(m.faces)


def test_chamfer_of_concentric_spheres_is_the_radius_gap():
    v1, f1 = _sphere(1.0)
    v2, f2 = _sphere(1.1)
    a, _ = sample_surface(v1, f1, 4000, seed=0)
    b, _ = sample_surface(v2, f2, 4000, seed=1)
    assert abs(float(chamfer_distance(a, b)) - 0.1) < 0.01
    same, _ = sample_surface(v1, f1, 4000, seed=2)
    assert float(chamfer_distance(a, same)) < 0.03  # sampling noise only


def test_normal_angle_error():
    v, f = _sphere(1.0)
    assert float(normal_angle_error(v, f, v, f, n=3000)) < 3.0
    flipped = normal_angle_error(v, f.flip(1), v, f, n=3000)
    assert abs(float(flipped) - 180.0) < 3.0
    # a coarse sphere against a fine one: faceting shows as a few degrees
    vc, fc = _sphere(1.0, 1)
    err = float(normal_angle_error(vc, fc, v, f, n=3000))
    assert 2.0 < err < 20.0 and math.isfinite(err)
