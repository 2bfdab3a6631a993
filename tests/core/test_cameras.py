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


# ------------------------------------------------------------------------------------------------ CameraBatch
def test_camera_batch_constructors_and_batch_operations():
    import pytest

    from scene3d.core.cameras import CameraBatch, intrinsics_from_fov, look_at

    eyes = torch.tensor([[0.0, -3.0, 1.0], [3.0, 0.0, 1.0], [0.0, 3.0, 2.0]])
    c2w = look_at(eyes, torch.zeros(3, 3))
    cams = CameraBatch.from_fov(c2w, 50.0, 64, 48)
    assert len(cams) == 3 and cams.model == "pinhole" and tuple(cams.K.shape) == (3, 3, 3)
    torch.testing.assert_close(cams.K[1], intrinsics_from_fov(50.0, 64, 48))
    assert len(cams[1]) == 1 and torch.equal(cams[1].c2w[0], c2w[1]) and torch.equal(cams[-1].c2w[0], c2w[2])
    assert len(cams[1:]) == 2
    # k candidates per camera, camera-major (as PromptEmbeddings.repeat)
    rep = cams.repeat_interleave(2)
    assert len(rep) == 6 and torch.equal(rep.c2w[2], c2w[1]) and torch.equal(rep.c2w[3], c2w[1])
    assert cams.expand_to(3) is cams and len(cams[0].expand_to(4)) == 4 and torch.equal(cams.expand_to(6).c2w, rep.c2w)
    with pytest.raises(ValueError, match="cannot serve a batch of 4"):
        cams.expand_to(4)
    # scaled intrinsics give the same rays through the same relative image positions
    half = cams.scaled(32, 24)
    from scene3d.core.cameras import camera_directions

    d_full = camera_directions(cams.K, 64, 48)  # un-normalised, linear in the pixel position
    d_half = camera_directions(half.K, 32, 24)
    torch.testing.assert_close(d_half[:, 3, 5], (d_full[:, 6, 10] + d_full[:, 7, 11]) / 2)
    assert tuple(half.rays()[0].shape) == (3, 24, 32, 3)
    both = CameraBatch.cat([cams, cams[0]])
    assert len(both) == 4 and torch.equal(both.centers, torch.cat([eyes, eyes[:1]]))


def test_camera_batch_equirectangular_rays_match_the_panorama_convention():
    from scene3d.core.cameras import CameraBatch, equirect_directions, look_at

    c2w = look_at(torch.tensor([0.5, 0.0, 1.5]), torch.tensor([0.5, 1.0, 1.5]))
    pano = CameraBatch.equirectangular(c2w, 32, 16)
    origins, directions = pano.rays()
    expected = equirect_directions(32, 16) @ c2w[:3, :3].T
    torch.testing.assert_close(directions[0], expected)
    torch.testing.assert_close(origins[0, 3, 5], c2w[:3, 3])
    assert pano.scaled(64, 32).K is None and pano.scaled(64, 32).width == 64


def test_camera_batch_validation_names_the_argument():
    import pytest

    from scene3d.core.cameras import CameraBatch

    eye = torch.eye(4)[None]
    K = torch.eye(3)[None]
    # with runtime shape checking on (as in these tests) jaxtyping rejects a wrong shape first, with a TypeError
    with pytest.raises((ValueError, TypeError), match="c2w must have shape|c2w"):
        CameraBatch(torch.eye(4), K, 8, 8)
    with pytest.raises(ValueError, match="needs K"):
        CameraBatch(eye, None, 8, 8)
    with pytest.raises(ValueError, match="K must be None"):
        CameraBatch(eye, K, 16, 8, "equirectangular")
    with pytest.raises(ValueError, match="width and height"):
        CameraBatch(eye, K, 0, 8)
    with pytest.raises((ValueError, TypeError), match="model must be|fisheye"):
        CameraBatch(eye, K, 8, 8, "fisheye")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        CameraBatch(torch.full((1, 4, 4), float("nan")), K, 8, 8)
    with pytest.raises(ValueError, match="one size and model"):
        CameraBatch.cat([CameraBatch(eye, K, 8, 8), CameraBatch(eye, K, 8, 4)])
