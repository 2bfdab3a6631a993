"""Cameras between nerfstudio and scene3d: nerfstudio ``Cameras`` built from poses and intrinsics.

(The conversion between nerfstudio ``Cameras`` and ``scene3d.core.cameras.CameraBatch``, which every prior call
takes as ``cameras=``, lives here too once ``CameraBatch`` is on main.)
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor


def pinhole_cameras(c2w: Float[Tensor, "*batch 4 4"], K: Float[Tensor, "3 3"], width: int, height: int) -> Cameras:
    """nerfstudio ``Cameras`` of ``C`` pinhole cameras sharing ``K`` (``c2w`` ``[4, 4]`` or ``[C, 4, 4]``, OpenGL
    camera-to-world, as in ``transforms.json``)."""
    c2w = torch.as_tensor(c2w, dtype=torch.float32).reshape(-1, 4, 4)
    n = c2w.shape[0]
    return Cameras(
        camera_to_worlds=c2w[:, :3, :4],
        fx=torch.full((n, 1), float(K[0, 0])), fy=torch.full((n, 1), float(K[1, 1])),
        cx=torch.full((n, 1), float(K[0, 2])), cy=torch.full((n, 1), float(K[1, 2])),
        width=torch.full((n, 1), int(width), dtype=torch.long), height=torch.full((n, 1), int(height), dtype=torch.long),
        camera_type=CameraType.PERSPECTIVE,
    )  # fmt: skip
