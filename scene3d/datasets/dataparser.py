"""``scene3d-data``: nerfstudio dataparser for scene3d's datasets (and any nerfstudio dataset with split lists).

It validates the whole dataset first (:func:`scene3d.datasets.validate.validate_dataset`, one ``DataError`` naming
file and field), then returns nerfstudio ``DataparserOutputs``. Unlike ``nerfstudio-data`` it never re-orients
nor re-centres the world and never auto-scales it: cameras, depth, points and scene box stay in the dataset's own
frame, times ``scale_factor``. So several datasets of one scene (the time steps of a ``changing`` scene) stay in one
frame, as CLNeRF needs. Splits come from ``train_filenames`` / ``val_filenames`` / ``test_filenames``.

    ns-train s3d-nerf-tiny scene3d-data --data /tmp/scene
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from scene3d.core.errors import DataError
from scene3d.datasets.validate import DatasetSummary, load_json, validate_dataset


@dataclass
class Scene3DDataParserConfig(DataParserConfig):
    """scene3d's dataparser: validated nerfstudio datasets in their own world frame (no re-orienting).

    The foreground masks of a dataset are always listed in ``metadata["foreground_mask_filenames"]``. They become
    nerfstudio's ``mask_filenames`` only with ``load_masks=True``, because nerfstudio's pixel samplers then draw
    rays from mask pixels alone: a NeRF would never see the ground or the background.
    """

    _target: type = field(default_factory=lambda: Scene3DDataParser)
    """The dataparser class this config builds."""
    data: Path = Path()
    """Dataset folder or its transforms.json; for a changing scene, one step's folder (out/step_01)."""
    scale_factor: float = 1.0
    """Multiplies camera positions, depth, points and scene box; the world is never re-oriented or re-centred."""
    depth_unit_scale_factor: float = 1e-3
    """Depth PNG units to metres (scene3d writes millimetres)."""
    load_masks: bool = False
    """Pass mask_path as nerfstudio masks, which restricts training to foreground-object pixels (off by default)."""
    load_3D_points: bool = True
    """Load ply_file_path into metadata points3D_xyz / points3D_rgb (splat initialisation)."""


def read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions (float32) and colours (uint8, when present) of a PLY's vertex element (binary LE or ASCII)."""
    types = {"char": "i1", "uchar": "u1", "int8": "i1", "uint8": "u1", "short": "<i2", "ushort": "<u2",
             "int16": "<i2", "uint16": "<u2", "int": "<i4", "uint": "<u4", "int32": "<i4", "uint32": "<u4",
             "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8"}  # fmt: skip
    data = path.read_bytes()
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise DataError(path, "ply_file_path", "not a PLY file")
    header = data[:end].decode("ascii", errors="replace").splitlines()
    body = data[data.index(b"\n", end) + 1 :]
    fmt, count, props, in_vertex = None, 0, [], False
    for line in header:
        parts = line.split()
        if parts[:1] == ["format"]:
            fmt = parts[1]
        elif parts[:1] == ["element"]:
            if props and in_vertex:
                break
            in_vertex = parts[1] == "vertex"
            count = int(parts[2]) if in_vertex else count
        elif parts[:1] == ["property"] and in_vertex:
            if parts[1] == "list" or parts[1] not in types:
                raise DataError(path, "ply_file_path", f"unsupported vertex property {' '.join(parts[1:])!r}")
            props.append((parts[2], types[parts[1]]))
    names = [n for n, _ in props]
    if not {"x", "y", "z"} <= set(names):
        raise DataError(path, "ply_file_path", "vertex element needs x, y, z")
    if fmt == "binary_little_endian":
        rec = np.frombuffer(body, dtype=np.dtype(props), count=count)
        cols = {n: rec[n] for n in names}
    elif fmt == "ascii":
        table = np.loadtxt(body.decode("ascii").splitlines()[:count], ndmin=2)
        cols = {n: table[:, i] for i, n in enumerate(names)}
    else:
        raise DataError(path, "ply_file_path", f"unsupported PLY format {fmt!r} (binary_little_endian or ascii)")
    xyz = np.stack([cols["x"], cols["y"], cols["z"]], axis=-1).astype(np.float32)
    rgb = None
    if {"red", "green", "blue"} <= set(names):
        rgb = np.stack([cols["red"], cols["green"], cols["blue"]], axis=-1).astype(np.uint8)
    return xyz, rgb


_read_ply_points = read_ply_points  # the name tests of other pieces already import


@dataclass
class Scene3DDataParser(DataParser):
    """Reads a validated dataset into nerfstudio's ``DataparserOutputs`` without moving the world."""

    config: Scene3DDataParserConfig

    def __init__(self, config: Scene3DDataParserConfig) -> None:
        super().__init__(config=config)
        self.config = config
        self._summary: DatasetSummary | None = None

    def _transforms_path(self) -> Path:
        data = Path(self.config.data)
        if data.suffix == ".json":
            return data
        if (data / "manifest.json").is_file() and not (data / "transforms.json").exists():
            raise DataError(
                data / "manifest.json",
                None,
                "a changing scene holds one dataset per time step: point --data at a step folder such as "
                f"{data / 'step_00'}",
            )
        return data / "transforms.json"

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs: Any) -> DataparserOutputs:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if self.config.scale_factor <= 0:
            raise ValueError(f"scale_factor must be positive, got {self.config.scale_factor}")
        tf = self._transforms_path()
        if self._summary is None:
            self._summary = validate_dataset(tf)
        meta = load_json(tf)
        root = tf.parent
        scale = float(self.config.scale_factor)

        frames = meta["frames"]
        wanted = {str(Path(name)) for name in meta[f"{split}_filenames"]}
        indices = [i for i, f in enumerate(frames) if str(Path(f["file_path"])) in wanted]
        if not indices:
            raise DataError(tf, f"{split}_filenames", f"the {split} split is empty")
        chosen = [frames[i] for i in indices]

        poses = torch.tensor(np.asarray([np.asarray(f["transform_matrix"], dtype=np.float64)[:3, :4] for f in chosen]))
        poses = poses.float()
        poses[:, :3, 3] *= scale

        def intrinsic(key: str) -> float | torch.Tensor:
            if all(key in f for f in chosen):
                return torch.tensor([float(f[key]) for f in chosen], dtype=torch.float32)[:, None]
            return float(meta[key])

        def per_frame_int(key: str) -> int | torch.Tensor:
            if all(key in f for f in chosen):
                return torch.tensor([int(f[key]) for f in chosen], dtype=torch.int32)[:, None]
            return int(meta[key])

        distortion = camera_utils.get_distortion_params(
            **{k: float(meta.get(k, 0.0)) for k in ("k1", "k2", "k3", "k4", "p1", "p2")}
        )
        cameras = Cameras(
            camera_to_worlds=poses,
            fx=intrinsic("fl_x"),
            fy=intrinsic("fl_y"),
            cx=intrinsic("cx"),
            cy=intrinsic("cy"),
            width=per_frame_int("w"),
            height=per_frame_int("h"),
            distortion_params=distortion,
            camera_type=CameraType.PERSPECTIVE,
        )

        if "scene_box" in meta:
            aabb = torch.tensor(meta["scene_box"], dtype=torch.float32) * scale
        else:  # the cameras' bounding box: object-centric captures look at what lies inside it
            centres = self._all_centres(frames) * scale  # every split, so train and eval share one box
            aabb = torch.stack([centres.min(dim=0).values, centres.max(dim=0).values])
            aabb = aabb + torch.tensor([[-1e-3], [1e-3]])

        def files(key: str) -> list[Path] | None:
            if not all(key in f for f in chosen):
                return None
            return [root / f[key] for f in chosen]

        background = meta.get("background_color")
        metadata: dict[str, Any] = {
            "depth_filenames": files("depth_file_path"),
            "depth_unit_scale_factor": self.config.depth_unit_scale_factor,
            "mask_color": None,
            "normal_filenames": files("normal_file_path"),
            "foreground_mask_filenames": files("mask_path"),
            "stylized_filenames": files("stylized_file_path"),
            "background_color": None if background is None else torch.tensor(background, dtype=torch.float32),
            "scene3d": meta.get("scene3d"),
        }
        for key, out_key in (("instance_id", "instance_ids"), ("time_step", "time_steps")):
            if all(key in f for f in chosen):
                metadata[out_key] = torch.tensor([int(f[key]) for f in chosen], dtype=torch.long)
        if "panorama" in meta:
            pano = dict(meta["panorama"])
            for key in ("file_path", "depth_file_path"):
                if key in pano:
                    pano[key] = root / pano[key]
            metadata["panorama"] = pano
        if self.config.load_3D_points and "ply_file_path" in meta:
            xyz, rgb = read_ply_points(root / meta["ply_file_path"])
            metadata["points3D_xyz"] = torch.from_numpy(xyz.copy()) * scale
            if rgb is not None:
                metadata["points3D_rgb"] = torch.from_numpy(rgb.copy())

        return DataparserOutputs(
            image_filenames=[root / f["file_path"] for f in chosen],
            cameras=cameras,
            alpha_color=metadata["background_color"],
            scene_box=SceneBox(aabb=aabb),
            mask_filenames=files("mask_path") if self.config.load_masks else None,
            metadata=metadata,
            dataparser_transform=torch.eye(4)[:3, :],
            dataparser_scale=scale,
        )

    @staticmethod
    def _all_centres(frames: list[dict[str, Any]]) -> torch.Tensor:
        centres = np.array([np.asarray(f["transform_matrix"], dtype=np.float64)[:3, 3] for f in frames]).reshape(-1, 3)
        return torch.from_numpy(centres).float()


scene3d_dataparser = DataParserSpecification(
    config=Scene3DDataParserConfig(),
    description="scene3d datasets (synthetic scenes from `s3d data synth`, any nerfstudio transforms.json with "
    "train/val/test_filenames): validated, kept in their own world frame",
)
