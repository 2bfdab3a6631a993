"""CLNeRF's datamanager: each scan's views, and ray batches drawn uniformly over the current training images.

The pipeline decides what a scan trains on (new real images, replay renders of old poses, buffered real images:
:mod:`scene3d.methods.clnerf.replay`) and hands it over with :meth:`CLNeRFDataManager.set_training_images`; the
datamanager then draws ``train_num_rays_per_batch`` rays per step, uniformly over those images and uniformly over each
image's pixels (official ``ray_sampling_strategy='all_images'``), each ray carrying its image's scan id in
``ray_bundle.metadata["scan_id"]``. Held-out views carry their scan's position in the dataset
(``metadata["scan_index"]``), which the model maps to a scan id.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import UInt8
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from torch import Tensor
from torch.nn import Parameter

from scene3d.core.errors import DataError
from scene3d.methods.clnerf.dataparser import CLNeRFDataParserConfig, ScanSource
from scene3d.methods.clnerf.replay import PoseStore, sample_pixels


def poses_from_cameras(cameras: Cameras, scan_id: int) -> PoseStore:
    """A :class:`PoseStore` of flat nerfstudio cameras, all with ``scan_id``."""
    n = cameras.shape[0]
    dist = cameras.distortion_params
    return PoseStore(
        camera_to_worlds=cameras.camera_to_worlds.reshape(n, 3, 4).float().cpu(),
        intrinsics=torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).reshape(n, 4).float().cpu(),
        sizes=torch.cat([cameras.width, cameras.height], dim=-1).reshape(n, 2).long().cpu(),
        distortion=torch.zeros(n, 6) if dist is None else dist.reshape(n, 6).float().cpu(),
        camera_types=cameras.camera_type.reshape(n).long().cpu(),
        scan_ids=torch.full((n,), scan_id, dtype=torch.long),
    )


def cameras_from_poses(poses: PoseStore, device: torch.device | str = "cpu") -> Cameras:
    """nerfstudio cameras of a :class:`PoseStore` (scan ids in ``metadata["scan_id"]``)."""
    return Cameras(
        camera_to_worlds=poses.camera_to_worlds.to(device),
        fx=poses.intrinsics[:, 0:1].to(device), fy=poses.intrinsics[:, 1:2].to(device),
        cx=poses.intrinsics[:, 2:3].to(device), cy=poses.intrinsics[:, 3:4].to(device),
        width=poses.sizes[:, 0:1].to(device), height=poses.sizes[:, 1:2].to(device),
        distortion_params=poses.distortion.to(device), camera_type=poses.camera_types[:, None].to(device),
        metadata={"scan_id": poses.scan_ids[:, None].to(device)},
    )  # fmt: skip


@dataclass
class TrainingImages:
    """The images a scan trains on, flattened for fast random pixel gathers."""

    poses: PoseStore
    """One pose per image, with the scan id its rays render with."""
    pixels: UInt8[Tensor, "P 3"]
    """Every pixel of every image, image after image, row-major."""
    offsets: Tensor
    """Index of each image's first pixel in ``pixels``."""
    cameras: Cameras
    sources: tuple[str, ...]
    """Per image: ``"new"`` (a real image of a scan being trained), ``"replay"`` (a render) or ``"buffer"``."""

    def __len__(self) -> int:
        return len(self.poses)


@dataclass
class CLNeRFDataManagerConfig(DataManagerConfig):
    """Scans, and ray batches over the current scan's training images (new, replayed, buffered)."""

    _target: type = field(default_factory=lambda: CLNeRFDataManager)
    dataparser: CLNeRFDataParserConfig = field(default_factory=CLNeRFDataParserConfig)
    """Reads the scan(s)."""
    train_num_rays_per_batch: int = 8192
    """Rays per training step (official batch 8192 on WAT)."""
    eval_num_rays_per_batch: int = 4096
    """Rays per evaluation batch."""


class CLNeRFDataManager(DataManager):
    """Serves CLNeRF's ray batches (module docstring)."""

    config: CLNeRFDataManagerConfig
    train_dataset: InputDataset
    eval_dataset: InputDataset

    def __init__(
        self,
        config: CLNeRFDataManagerConfig,
        device: torch.device | str = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs: object,
    ) -> None:
        self.config = config
        self.device = device
        self.test_mode = test_mode
        if config.data is not None:
            config.dataparser.data = Path(config.data)
        self.dataparser = config.dataparser.setup()
        self.train_dataparser_outputs = self.dataparser.get_dataparser_outputs(split="train")
        self.train_dataset = InputDataset(self.train_dataparser_outputs)
        eval_outputs = self.dataparser.get_dataparser_outputs(split="val" if test_mode == "val" else "test")
        self.eval_dataset = InputDataset(eval_outputs)
        self.eval_dataset.cameras.metadata = {"scan_index": eval_outputs.metadata["clnerf_scan_index"][:, None].clone()}
        self.train_dataset.cameras.metadata = {
            "scan_index": self.train_dataparser_outputs.metadata["clnerf_scan_index"][:, None].clone()
        }
        self.scans: list[ScanSource] = list(self.train_dataparser_outputs.metadata["clnerf_scans"])
        self.train_images: TrainingImages | None = None
        self._generator = torch.Generator().manual_seed(0)
        self._eval_cursor = 0
        super().__init__()

    # ----------------------------------------------------------------- scans
    @property
    def num_scans(self) -> int:
        """Scans in the dataset (selected ones)."""
        return len(self.scans)

    def scan_train_indices(self, position: int) -> list[int]:
        """Training-image indices of the scan at ``position``."""
        idx = self.train_dataparser_outputs.metadata["clnerf_scan_index"]
        return torch.nonzero(idx == position).flatten().tolist()

    def scan_eval_indices(self, position: int) -> list[int]:
        """Held-out image indices of the scan at ``position``."""
        idx = self.eval_dataset.cameras.metadata["scan_index"].flatten()
        return torch.nonzero(idx == position).flatten().tolist()

    def load_image(self, dataset: InputDataset, index: int) -> UInt8[Tensor, "H W 3"]:
        """An image as uint8 RGB, checked against its camera's size."""
        image = dataset.get_image_uint8(index)[..., :3]
        cam = dataset.cameras[index]
        w, h = int(cam.width), int(cam.height)
        if tuple(image.shape[:2]) != (h, w):
            raise DataError(
                dataset.image_filenames[index], None, f"is {image.shape[1]}x{image.shape[0]} pixels, its camera says {w}x{h}"
            )
        return image.contiguous()

    def scan_train_views(self, position: int, scan_id: int) -> tuple[PoseStore, list[UInt8[Tensor, "H W 3"]]]:
        """The scan's training poses (with ``scan_id``) and real images.

        Raises:
            DataError: if the scan has no training image.
        """
        indices = self.scan_train_indices(position)
        if not indices:
            raise DataError(Path(self.scans[position].source), None, "the scan has no training images")
        cameras = self.train_dataset.cameras[torch.tensor(indices)]
        return poses_from_cameras(cameras, scan_id), [self.load_image(self.train_dataset, i) for i in indices]

    # ------------------------------------------------------------ training
    def set_training_images(self, poses: PoseStore, images: list[UInt8[Tensor, "H W 3"]], sources: list[str]) -> None:
        """Make these images (with their poses' scan ids) what :meth:`next_train` draws rays from."""
        if not (len(poses) == len(images) == len(sources)) or len(images) == 0:
            raise ValueError(f"need as many poses, images and sources (>= 1), got {len(poses)}, {len(images)}, {len(sources)}")
        for i, image in enumerate(images):
            w, h = (int(v) for v in poses.sizes[i])
            if image.dtype != torch.uint8 or tuple(image.shape) != (h, w, 3):
                raise ValueError(f"image {i} must be uint8 ({h}, {w}, 3), got {image.dtype} {tuple(image.shape)}")
        sizes = poses.sizes[:, 0] * poses.sizes[:, 1]
        self.train_images = TrainingImages(
            poses=poses,
            pixels=torch.cat([im.reshape(-1, 3) for im in images]),
            offsets=torch.cumsum(sizes, 0) - sizes,
            cameras=cameras_from_poses(poses, self.device),
            sources=tuple(sources),
        )

    def next_train(self, step: int) -> tuple[RayBundle, dict[str, Tensor]]:
        """``train_num_rays_per_batch`` rays uniform over the training images, with targets and scan ids."""
        if self.train_images is None:
            raise RuntimeError("no training images yet: the CLNeRF pipeline sets them before training")
        self.train_count += 1
        t = self.train_images
        image, rows, cols = sample_pixels(self.config.train_num_rays_per_batch, t.poses.sizes, self._generator)
        rgb = t.pixels[t.offsets[image] + rows * t.poses.sizes[image, 0] + cols]
        coords = torch.stack([rows, cols], -1).float() + 0.5
        with warnings.catch_warnings():  # nerfstudio 1.1.5 indexes with a list of tensors, which torch 2.x warns about
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
            bundle = t.cameras.generate_rays(camera_indices=image[:, None].to(self.device), coords=coords.to(self.device))
        bundle.metadata["scan_id"] = t.poses.scan_ids[image][:, None].to(self.device)
        return bundle, {"image": rgb.to(self.device, torch.float32) / 255.0}

    # ---------------------------------------------------------------- eval
    def next_eval(self, step: int) -> tuple[RayBundle, dict[str, Tensor]]:
        """Random rays of one held-out view (with its scan index)."""
        self.eval_count += 1
        camera, batch = self.next_eval_image(step)
        h, w = batch["image"].shape[:2]
        n = min(self.config.eval_num_rays_per_batch, h * w)
        pick = torch.randperm(h * w, generator=self._generator)[:n]
        rows, cols = pick // w, pick % w
        coords = torch.stack([rows, cols], -1).float() + 0.5
        bundle = camera.generate_rays(camera_indices=torch.zeros(n, 1, dtype=torch.long, device=self.device),
                                      coords=coords.to(self.device))  # fmt: skip
        return bundle, {"image": batch["image"][rows, cols]}

    def next_eval_image(self, step: int) -> tuple[Cameras, dict[str, Tensor]]:
        """The held-out views in turn: camera (``metadata["scan_index"]``) and float image."""
        index = self._eval_cursor % len(self.eval_dataset)
        self._eval_cursor += 1
        return self.eval_view(index)

    def eval_view(self, index: int) -> tuple[Cameras, dict[str, Tensor]]:
        """Held-out view ``index``: its camera and ``{"image": float (H, W, 3), "image_idx": index}``."""
        camera = self.eval_dataset.cameras[index : index + 1].to(self.device)
        image = self.load_image(self.eval_dataset, index).to(self.device, torch.float32) / 255.0
        return camera, {"image": image, "image_idx": index}

    def get_train_rays_per_batch(self) -> int:
        return self.config.train_num_rays_per_batch

    def get_eval_rays_per_batch(self) -> int:
        return self.config.eval_num_rays_per_batch

    def get_datapath(self) -> Path:
        return Path(self.config.dataparser.data)

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {}

    def setup_train(self) -> None:
        """Training images are set by the pipeline (:meth:`set_training_images`)."""

    def setup_eval(self) -> None:
        """Held-out views are read on demand."""
