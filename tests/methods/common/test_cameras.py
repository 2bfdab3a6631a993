"""nerfstudio Cameras ⇄ CameraBatch: exact round trips and the same rays on both sides."""

from __future__ import annotations

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType

from scene3d.core.cameras import CameraBatch, look_at
from scene3d.methods.common.cameras import batch_to_cameras, cameras_to_batch, pinhole_cameras

EYES = torch.tensor([[0.0, -3.0, 1.0], [2.0, 1.0, 0.5]])


def test_pinhole_round_trip_and_rays():
    batch = CameraBatch.from_fov(look_at(EYES, torch.zeros(2, 3)), 50.0, 40, 24)
    cams = batch_to_cameras(batch)
    back = cameras_to_batch(cams)
    assert (back.width, back.height, back.model, len(back)) == (40, 24, "pinhole", 2)
    assert torch.allclose(back.c2w, batch.c2w) and torch.allclose(back.K, batch.K)
    origins, directions = batch.rays()
    bundle = cams.generate_rays(camera_indices=1)
    assert torch.allclose(bundle.directions, directions[1], atol=1e-5)
    assert torch.allclose(bundle.origins, origins[1], atol=1e-6)
    assert torch.allclose(pinhole_cameras(batch.c2w, batch.K[0], 40, 24).camera_to_worlds, cams.camera_to_worlds)


def test_equirectangular_round_trip_and_rays():
    batch = CameraBatch.equirectangular(look_at(EYES[:1], torch.zeros(1, 3)), 32, 16)
    cams = batch_to_cameras(batch)
    assert int(cams.camera_type[0]) == CameraType.EQUIRECTANGULAR.value
    back = cameras_to_batch(cams)
    assert back.model == "equirectangular" and back.K is None and (back.width, back.height) == (32, 16)
    _, directions = batch.rays()
    assert torch.allclose(cams.generate_rays(camera_indices=0).directions, directions[0], atol=1e-5)


def test_mixed_or_unsupported_cameras_are_rejected():
    a = batch_to_cameras(CameraBatch.from_fov(look_at(EYES, torch.zeros(2, 3)), 50.0, 40, 24))
    a.width[1] = 20
    with pytest.raises(ValueError, match="one image size"):
        cameras_to_batch(a)
    fisheye = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=10.0, fy=10.0, cx=8.0, cy=8.0, width=16, height=16,
                      camera_type=CameraType.FISHEYE)  # fmt: skip
    with pytest.raises(ValueError, match="FISHEYE"):
        cameras_to_batch(fisheye)
