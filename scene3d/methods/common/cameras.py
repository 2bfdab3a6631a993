"""Cameras between nerfstudio and scene3d: nerfstudio ``Cameras`` ⇄ :class:`~scene3d.core.cameras.CameraBatch`.

Every prior operation takes the cameras it is asked about as ``cameras=`` (a ``CameraBatch``; the
``groundtruth:`` twins answer at exactly these cameras, real models ignore them). Methods hold nerfstudio
``Cameras`` (the viewer's, a datamanager's, a trajectory's); :func:`cameras_to_batch` converts them and
:func:`batch_to_cameras` goes back. Both use the same conventions, so a round trip is exact: OpenGL
camera-to-world, pixel centres at +0.5; nerfstudio's equirectangular cameras carry ``fx = W/2, fy = H, cx = W/2,
cy = H/2``, which makes their rays those of :func:`scene3d.core.cameras.equirect_directions`.

Example:
    >>> import torch
    >>> from scene3d.core.cameras import CameraBatch, look_at
    >>> batch = CameraBatch.from_fov(look_at(torch.tensor([0.0, -3.0, 1.0]), torch.zeros(3)), 50.0, 64, 48)
    >>> back = cameras_to_batch(batch_to_cameras(batch))
    >>> bool(torch.allclose(back.K, batch.K)), back.width, back.model
    (True, 64, 'pinhole')
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from scene3d.core.cameras import CameraBatch


def pinhole_cameras(c2w: Float[Tensor, "*batch 4 4"], K: Float[Tensor, "3 3"], width: int, height: int) -> Cameras:
    """nerfstudio ``Cameras`` of ``C`` pinhole cameras sharing ``K`` (``c2w`` ``[4, 4]`` or ``[C, 4, 4]``, OpenGL
    camera-to-world, as in ``transforms.json``)."""
    return batch_to_cameras(CameraBatch.pinhole(torch.as_tensor(c2w, dtype=torch.float32), K.float(), width, height))


def batch_to_cameras(batch: CameraBatch) -> Cameras:
    """nerfstudio ``Cameras`` of a :class:`CameraBatch` (pinhole → ``PERSPECTIVE``, panorama → ``EQUIRECTANGULAR``)."""
    n = len(batch)
    c2w = batch.c2w.float()
    if batch.model == "pinhole":
        assert batch.K is not None
        K = batch.K.float()
        fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
        camera_type = CameraType.PERSPECTIVE
    else:
        fx = torch.full((n,), batch.width / 2.0)
        fy = torch.full((n,), float(batch.height))
        cx, cy = fx.clone(), torch.full((n,), batch.height / 2.0)
        camera_type = CameraType.EQUIRECTANGULAR
    return Cameras(
        camera_to_worlds=c2w[:, :3, :4],
        fx=fx[:, None], fy=fy[:, None], cx=cx[:, None], cy=cy[:, None],
        width=torch.full((n, 1), batch.width, dtype=torch.long), height=torch.full((n, 1), batch.height, dtype=torch.long),
        camera_type=camera_type,
    )  # fmt: skip


def cameras_to_batch(cameras: Cameras) -> CameraBatch:
    """The :class:`CameraBatch` of nerfstudio ``Cameras`` (flattened to one batch dimension).

    Raises:
        ValueError: cameras of different sizes or types in one batch, a camera type other than perspective or
            equirectangular, or lens distortion (a ``CameraBatch`` is an ideal pinhole).
    """
    flat = cameras.reshape((-1,)) if cameras.shape != (cameras.size,) else cameras
    sizes = {(int(w), int(h)) for w, h in zip(flat.width.reshape(-1), flat.height.reshape(-1))}
    if len(sizes) != 1:
        raise ValueError(f"cameras must all have one image size to form a CameraBatch, got {sorted(sizes)}")
    (width, height), = sizes
    types = {int(t) for t in flat.camera_type.reshape(-1)}
    if len(types) != 1:
        raise ValueError(f"cameras must all have one camera type to form a CameraBatch, got types {sorted(types)}")
    camera_type = CameraType(types.pop())
    if flat.distortion_params is not None and bool((flat.distortion_params != 0).any()):
        raise ValueError("cameras with lens distortion cannot form a CameraBatch (an ideal pinhole); undistort first")
    n = flat.size
    c2w = torch.zeros(n, 4, 4, dtype=torch.float32, device=flat.device)
    c2w[:, :3, :4] = flat.camera_to_worlds.float()
    c2w[:, 3, 3] = 1.0
    if camera_type == CameraType.PERSPECTIVE:
        K = torch.zeros(n, 3, 3, dtype=torch.float32, device=flat.device)
        K[:, 0, 0], K[:, 1, 1] = flat.fx.reshape(-1), flat.fy.reshape(-1)
        K[:, 0, 2], K[:, 1, 2] = flat.cx.reshape(-1), flat.cy.reshape(-1)
        K[:, 2, 2] = 1.0
        return CameraBatch(c2w, K, width, height, "pinhole")
    if camera_type == CameraType.EQUIRECTANGULAR:
        return CameraBatch(c2w, None, width, height, "equirectangular")
    raise ValueError(f"camera type {camera_type.name} has no CameraBatch model; expected PERSPECTIVE or EQUIRECTANGULAR")
