import math

import pytest
import torch

from scene3d.core.cameras import (
    camera_directions,
    equirect_directions,
    intrinsics_from_fov,
    look_at,
    pinhole_rays,
)


def test_look_at_points_minus_z_at_target():
    eye = torch.tensor([1.0, -2.0, 0.5])
    c2w = look_at(eye, torch.zeros(3))
    forward = -c2w[:3, 2]
    torch.testing.assert_close(forward, -eye / eye.norm())
    torch.testing.assert_close(c2w[:3, :3] @ c2w[:3, :3].T, torch.eye(3), atol=1e-6, rtol=0)
    assert c2w[2, 1] > 0  # camera +Y has a positive world-Z component: the image is upright
    with pytest.raises(ValueError, match="up vector"):
        look_at(torch.tensor([0.0, 0.0, 3.0]), torch.zeros(3))


def test_centre_ray_and_fov():
    K = intrinsics_from_fov(90.0, 4, 4)
    assert math.isclose(K[0, 0].item(), 2.0)
    d = camera_directions(K, 4, 4)
    # pixel (row 0, col 0) centre is at (-0.75, +0.75) in normalised coordinates: up-left of the centre
    torch.testing.assert_close(d[0, 0], torch.tensor([-0.75, 0.75, -1.0]))
    c2w = look_at(torch.tensor([0.0, -3.0, 0.0]), torch.zeros(3))
    origins, dirs = pinhole_rays(c2w, K, 4, 4)
    assert origins.shape == dirs.shape == (4, 4, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(4, 4))


def test_equirect_centre_looks_forward():
    d = equirect_directions(8, 4)
    assert d.shape == (4, 8, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(4, 8))
    assert d[0, 4, 1] > 0.3 and d[3, 4, 1] < -0.3  # top row looks up, bottom row down
