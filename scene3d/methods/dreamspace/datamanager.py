"""DreamSpace's datamanager: it reads the room (``--data``) and plans a walk-through; there are no input images.

The train dataset is a :class:`~scene3d.methods.common.viewer.ViewsDataset` (cameras, no images) carrying the
:class:`~scene3d.methods.dreamspace.room.Room` in its metadata for the model. Its cameras, and the eval dataset's,
are a walk-through of the room: a loop around the centre at eye height through free space, looking ahead and a
little outwards. ``ns-render interpolate --pose-source eval`` renders it as a video, and the pipeline writes it as
a nerfstudio camera path for ``ns-render camera-path``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.scene_box import SceneBox
from torch import Tensor
from torch.nn import Parameter

from scene3d.core.cameras import intrinsics_from_fov, look_at
from scene3d.methods.common.cameras import pinhole_cameras
from scene3d.methods.common.viewer import ViewsDataset
from scene3d.renderers.mesh import MeshRaycaster

from scene3d.methods.dreamspace.model import ROOM_KEY
from scene3d.methods.dreamspace.room import Room, RoomChecks, load_room, ray_statistics

WALK_WIDTH, WALK_HEIGHT, WALK_FOV = 640, 480, 70.0
"""Size and vertical field of view of the walk-through cameras."""


@dataclass
class DreamSpaceDataManagerConfig(DataManagerConfig):
    """Reads the room DreamSpace retextures."""

    _target: type = field(default_factory=lambda: DreamSpaceDataManager)
    data: Path = Path("data/room")
    """The room: a mesh file (.ply/.obj/.glb/.gltf/.off/.stl), or a dataset folder written by `s3d data synth`."""
    centre: tuple[float, float, float] | None = None
    """Viewpoint of the panorama (metres, +Z up). Default: the dataset's stored centre, else the room's middle at
    eye height (moved off any furniture)."""
    max_faces: int = 200_000
    """Meshes with more faces are decimated to this many (with a warning)."""
    walkthrough_views: int = 12
    """Cameras of the walk-through loop (the eval cameras; ns-render interpolates between them)."""


def walkthrough_cameras(room: Room, count: int) -> Float[Tensor, "N 4 4"]:
    """A loop of ``count`` cameras around the centre at its height, through free space (module docstring)."""
    if count < 2:
        raise ValueError(f"walkthrough_views must be >= 2, got {count}")
    raycaster = MeshRaycaster(room.vertices, room.faces, backend="open3d")
    lo, hi = room.bounds
    radii = (0.35 * (hi[:2] - lo[:2]) / 2).clamp_min(0.05)
    angles = torch.arange(count, dtype=torch.float32) * (2.0 * math.pi / count)
    for shrink in (1.0, 0.7, 0.45, 0.25, 0.0):
        offsets = torch.stack([radii[0] * torch.cos(angles), radii[1] * torch.sin(angles), torch.zeros(count)], -1)
        eyes = room.centre + shrink * offsets
        if shrink == 0.0 or all(ray_statistics(raycaster, e, n_rays=64) == (0.0, 0.0) for e in eyes):
            break
    tangent = torch.stack([-torch.sin(angles), torch.cos(angles), torch.zeros(count)], -1)
    outward = torch.stack([torch.cos(angles), torch.sin(angles), torch.zeros(count)], -1)
    ahead = tangent + 0.6 * outward + torch.tensor([0.0, 0.0, -0.15])
    return look_at(eyes, eyes + ahead)


class DreamSpaceDataManager(DataManager):
    """Loads the room and serves the walk-through cameras (module docstring)."""

    config: DreamSpaceDataManagerConfig

    def __init__(
        self,
        config: DreamSpaceDataManagerConfig,
        device: torch.device | str = "cpu",
        test_mode: str = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs: object,
    ) -> None:
        self.config = config
        self.device = device
        self.test_mode = test_mode
        self.room = load_room(config.data, centre=config.centre, checks=RoomChecks(max_faces=config.max_faces))
        lo, hi = self.room.bounds
        margin = 0.05 * (hi - lo).max()
        scene_box = SceneBox(aabb=torch.stack([lo - margin, hi + margin]))
        K = intrinsics_from_fov(WALK_FOV, WALK_WIDTH, WALK_HEIGHT)
        self.walkthrough = walkthrough_cameras(self.room, config.walkthrough_views)
        cameras: Cameras = pinhole_cameras(self.walkthrough, K, WALK_WIDTH, WALK_HEIGHT)
        self.train_dataset = ViewsDataset(cameras, scene_box)
        self.train_dataset.metadata[ROOM_KEY] = self.room
        self.eval_dataset = ViewsDataset(cameras, scene_box)
        super().__init__()

    def setup_train(self) -> None:
        """Nothing to set up: there are no input images."""

    def setup_eval(self) -> None:
        """Nothing to set up: there are no input images."""

    def next_train(self, step: int) -> tuple[Cameras, dict]:
        raise NotImplementedError("DreamSpace runs its own iterations (DreamSpacePipeline.train_iteration)")

    def next_eval(self, step: int) -> tuple[Cameras, dict]:
        raise NotImplementedError("DreamSpace has no evaluation images")

    def next_eval_image(self, step: int) -> tuple[Cameras, dict]:
        raise NotImplementedError("DreamSpace has no evaluation images")

    def get_train_rays_per_batch(self) -> int:
        return 1

    def get_eval_rays_per_batch(self) -> int:
        return 1

    def get_datapath(self) -> Path:
        return self.config.data

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {}
