"""EpiGRAF's dataparser and datamanager: read a collection (official ``dataset.json`` layout or a nerfstudio
``transforms.json``, :mod:`scene3d.methods.epigraf.data`) and serve batches of whole real images and random dataset
poses (for the fakes).

The datamanager serves whole images: patches are cut by the model, at parameters it draws itself. Images are
decoded once into memory when they fit in ``cache_bytes``; otherwise a ``DataLoader`` decodes each batch with
``num_workers`` processes. With ``mirror`` (official ``training.mirror``) every drawn image is flipped
horizontally with probability ½ together with its camera, which is mirrored through the world's XZ plane; fake
poses are drawn from the same mirrored set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.scene_box import SceneBox
from torch import Tensor
from torch.nn import Parameter

from scene3d.core.errors import DataError
from scene3d.methods.epigraf.data import ImageCollection, read_collection
from scene3d.methods.epigraf.gan import Views
from scene3d.core.cameras import camera_angles

MIRROR_WORLD = torch.diag(torch.tensor([1.0, -1.0, 1.0, 1.0]))
MIRROR_CAMERA = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))


def mirror_views(c2w: Tensor, K: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """Camera of the horizontally flipped image: the world mirrored through y = 0, the camera's x axis flipped.

    ``c2w' = S_world · c2w · S_cam`` keeps a proper rotation (two reflections) and maps the mirrored world's
    projection onto the flipped image; the principal point moves to ``R − c_x``.
    """
    K2 = K.clone()
    K2[..., 0, 2] = resolution - K[..., 0, 2]
    return MIRROR_WORLD.to(c2w) @ c2w @ MIRROR_CAMERA.to(c2w), K2


@dataclass
class EpiGRAFDataParserConfig(DataParserConfig):
    """Reads an EpiGRAF collection: a folder or .zip with dataset.json, or a nerfstudio transforms.json."""

    _target: type = field(default_factory=lambda: EpiGRAFDataParser)
    data: Path = Path()
    """Dataset folder, .zip, dataset.json or transforms.json."""
    fov_deg: float = 12.0
    """Field of view of dataset.json datasets (not stored there): 12 for FFHQ, 30 for Megascans (official configs)."""
    object_radius: float | None = None
    """Object bounding radius with cameras at distance 1; None: from scene_box, else d·sin(fov/2)."""
    cube_scale: float | None = None
    """Half-side of the tri-plane cube; None: the smallest cube holding every camera frustum."""


class EpiGRAFDataParser(DataParser):
    """:func:`read_collection` as nerfstudio ``DataparserOutputs`` (the collection itself in ``metadata['epigraf']``)."""

    config: EpiGRAFDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs: object) -> DataparserOutputs:
        col = read_collection(
            self.config.data, fov_deg=self.config.fov_deg, object_radius=self.config.object_radius,
            cube_scale=self.config.cube_scale,
        )
        n = len(col)
        cameras = Cameras(
            camera_to_worlds=col.c2w[:, :3, :4].clone(),
            fx=col.intrinsics[:, 0, 0:1].clone(), fy=col.intrinsics[:, 1, 1:2].clone(),
            cx=col.intrinsics[:, 0, 2:3].clone(), cy=col.intrinsics[:, 1, 2:3].clone(),
            width=torch.full((n, 1), col.resolution, dtype=torch.int32),
            height=torch.full((n, 1), col.resolution, dtype=torch.int32),
            camera_type=CameraType.PERSPECTIVE,
        )
        transform = torch.eye(4)[:3]
        transform[:, 3] = -torch.tensor(col.world_center)
        s = col.cube_scale
        return DataparserOutputs(
            image_filenames=[col.root / name for name in col.names],
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-s, -s, -s], [s, s, s]])),
            metadata={"epigraf": col},
            dataparser_transform=transform,
            dataparser_scale=col.world_scale,
        )


class EpiGRAFInputDataset(InputDataset):
    """nerfstudio dataset whose images come from the collection (so zips work, and the viewer shows thumbnails)."""

    def get_numpy_image(self, image_idx: int) -> np.ndarray:
        col: ImageCollection = self.metadata["epigraf"]
        return col.load_image(image_idx).permute(1, 2, 0).numpy()


class _ImageReader(torch.utils.data.Dataset):
    def __init__(self, collection: ImageCollection) -> None:
        self.collection = collection

    def __len__(self) -> int:
        return len(self.collection)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.collection.load_image(index), index


@dataclass(frozen=True)
class RealBatch:
    """Whole real images in ``[−1, 1]`` with their labels and cameras."""

    images: Tensor
    labels: Tensor
    views: Views
    camera: Tensor
    """(yaw, pitch) of each camera, for D's optional camera conditioning."""


@dataclass(frozen=True)
class FakeConditions:
    """What fakes are generated with: dataset labels and poses drawn at random."""

    labels: Tensor
    views: Views
    camera: Tensor


@dataclass
class EpiGRAFDataManagerConfig(DataManagerConfig):
    """Batches of real images and of dataset poses for EpiGRAF."""

    _target: type = field(default_factory=lambda: EpiGRAFDataManager)
    dataparser: EpiGRAFDataParserConfig = field(default_factory=EpiGRAFDataParserConfig)
    """Reads the collection."""
    images_per_batch: int = 64
    """Real images (and fakes) per iteration (official batch 64); a multiple of the minibatch-std group."""
    mirror: bool = True
    """Random horizontal flips of real images with mirrored cameras (official training.mirror)."""
    cache_bytes: int = 4 << 30
    """Decode all images into memory once when they take at most this many bytes; else decode per batch."""
    num_workers: int = 4
    """Decoding processes when images are not cached."""


class EpiGRAFDataManager(DataManager):
    """Serves :class:`RealBatch` and :class:`FakeConditions` for EpiGRAF's pipeline."""

    config: EpiGRAFDataManagerConfig
    train_dataset: EpiGRAFInputDataset

    def __init__(
        self,
        config: EpiGRAFDataManagerConfig,
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
        self.train_dataset = EpiGRAFInputDataset(self.train_dataparser_outputs)
        self.eval_dataset = None
        self.collection: ImageCollection = self.train_dataparser_outputs.metadata["epigraf"]
        super().__init__()

    def setup_train(self) -> None:
        col = self.collection
        batch = self.config.images_per_batch
        if batch < 1:
            raise ValueError(f"images_per_batch must be >= 1, got {batch}")
        if len(col) < batch:
            raise DataError(
                col.description, None,
                f"holds {len(col)} images, fewer than one batch ({batch}); add images or lower "
                "--pipeline.datamanager.images-per-batch",
            )
        self._cache: Tensor | None = None
        self._loader_iter = None
        if len(col) * 3 * col.resolution**2 <= self.config.cache_bytes:
            self._cache = torch.stack([col.load_image(i) for i in range(len(col))])
        else:
            loader = torch.utils.data.DataLoader(
                _ImageReader(col), batch_size=batch, drop_last=True, num_workers=self.config.num_workers,
                sampler=torch.utils.data.RandomSampler(range(len(col)), replacement=True, num_samples=1 << 62),
                persistent_workers=self.config.num_workers > 0,
            )
            self._loader_iter = iter(loader)

    def setup_eval(self) -> None:
        """No evaluation split: a GAN is judged by distribution distances (see benchmarks/epigraf_cpu.py)."""

    def _views(self, indices: Tensor, flips: Tensor) -> tuple[Views, Tensor]:
        col = self.collection
        c2w, K = col.c2w[indices], col.intrinsics[indices]
        if bool(flips.any()):
            mc2w, mK = mirror_views(c2w[flips], K[flips], col.resolution)
            c2w, K = c2w.clone(), K.clone()
            c2w[flips], K[flips] = mc2w, mK
        views = Views(c2w=c2w.to(self.device), K=K.to(self.device), near=col.near[indices].to(self.device),
                      far=col.far[indices].to(self.device))
        return views, camera_angles(views.c2w)

    def _flips(self, n: int) -> Tensor:
        return torch.rand(n) < 0.5 if self.config.mirror else torch.zeros(n, dtype=torch.bool)

    def next_real(self, step: int) -> RealBatch:
        """A batch of whole real images (uint8 → ``[−1, 1]``), randomly flipped with their cameras."""
        self.train_count += 1
        batch = self.config.images_per_batch
        if self._cache is not None:
            indices = torch.randint(len(self.collection), (batch,))
            images = self._cache[indices]
        else:
            assert self._loader_iter is not None
            images, indices = next(self._loader_iter)
        flips = self._flips(batch)
        images = torch.where(flips[:, None, None, None], images.flip(-1), images)
        views, camera = self._views(indices, flips)
        images = images.to(self.device, torch.float32) / 127.5 - 1.0
        return RealBatch(images=images, labels=self.collection.labels[indices].to(self.device), views=views, camera=camera)

    def next_fake_conditions(self, batch: int) -> FakeConditions:
        """Labels and poses of random dataset images (mirrored like the reals) for a batch of fakes."""
        indices = torch.randint(len(self.collection), (batch,))
        views, camera = self._views(indices, self._flips(batch))
        return FakeConditions(labels=self.collection.labels[indices].to(self.device), views=views, camera=camera)

    def next_train(self, step: int) -> tuple[Cameras, dict]:
        raise NotImplementedError("EpiGRAF's pipeline draws batches with next_real / next_fake_conditions")

    def next_eval(self, step: int) -> tuple[Cameras, dict]:
        raise NotImplementedError("EpiGRAF has no evaluation split")

    def next_eval_image(self, step: int) -> tuple[Cameras, dict]:
        raise NotImplementedError("EpiGRAF has no evaluation split")

    def get_train_rays_per_batch(self) -> int:
        return self.config.images_per_batch * self.collection.resolution**2

    def get_eval_rays_per_batch(self) -> int:
        return 0

    def get_datapath(self) -> Path:
        return self.config.dataparser.data

    def get_param_groups(self) -> dict[str, list[Parameter]]:
        return {}
