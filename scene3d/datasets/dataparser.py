"""``scene3d-data``: nerfstudio dataparser for scene3d's datasets and any nerfstudio dataset (``ns-process-data``).

It validates the whole dataset first (:func:`scene3d.datasets.validate.validate_dataset`, one ``DataError`` naming
file and field), then returns nerfstudio ``DataparserOutputs``. Unlike ``nerfstudio-data`` it never re-orients
nor re-centres the world and never auto-scales it: cameras, depth, points and scene box stay in the dataset's own
frame, times ``scale_factor``. So several datasets of one scene (the time steps of a ``changing`` scene) stay in one
frame, as CLNeRF needs.

What ``ns-process-data`` writes loads as it is:

* splits come from ``train_filenames`` / ``val_filenames`` / ``test_filenames``, or, without them, nerfstudio's
  default split (:func:`~scene3d.datasets.validate.default_split`: 90 % train, evenly spaced);
* distortion, global or per frame (``k1 k2 k3 p1 p2``, ``OPENCV_FISHEYE``'s ``k1 … k4``, or ``distortion_params``),
  goes to nerfstudio's cameras, whose rays undistort (s3d-nerf) and whose full-image datamanager undistorts the
  images (s3d-splat); coefficients nothing can honour are refused by the validator;
* the point cloud (``ply_file_path``, COLMAP's ``sparse_pc.ply``) goes to ``points3D_xyz`` / ``points3D_rgb``;
* without ``scene_box`` the box is derived from the cameras' frusta and the points
  (:func:`~scene3d.datasets.bounds.scene_box_from_cameras`), never degenerate, or refused clearly;
* ``metadata["far_field_scale"]`` says how far beyond the box the scene goes (``aabb_scale`` or the points);
* ``downscale_factor`` reads the ``images_N/`` (``masks_N/``, ``depths_N/``) copies, intrinsics scaled to them.

    ns-train s3d-nerf-tiny scene3d-data --data /tmp/scene
    ns-train s3d-nerf-tiny scene3d-data --data my_capture --downscale-factor 4     # ns-process-data output
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
from scene3d.datasets.bounds import far_field_scale, scene_box_from_cameras
from scene3d.datasets.validate import (
    DISTORTION_KEYS,
    INTRINSIC_KEYS,
    DatasetSummary,
    default_split,
    downscaled_path,
    load_json,
    validate_dataset,
)


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
    downscale_factor: int = 1
    """Read the frame files at 1/N resolution from ns-process-data's images_N/ (masks_N/, depths_N/) folders."""
    train_split_fraction: float = 0.9
    """Share of the frames used for training when the dataset has no split lists (nerfstudio's default split)."""


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
        if not 0.0 < self.config.train_split_fraction < 1.0:
            raise ValueError(f"train_split_fraction must be in (0, 1), got {self.config.train_split_fraction}")
        tf = self._transforms_path()
        downscale = int(self.config.downscale_factor)
        if self._summary is None:
            self._summary = validate_dataset(tf, downscale_factor=downscale)
        meta = load_json(tf)
        root = tf.parent
        scale = float(self.config.scale_factor)

        frames = meta["frames"]
        if any(f"{name}_filenames" in meta for name in ("train", "val", "test")):
            wanted = {str(Path(name)) for name in meta[f"{split}_filenames"]}
            indices = [i for i, f in enumerate(frames) if str(Path(f["file_path"])) in wanted]
        else:  # what ns-process-data writes: nerfstudio's default split
            train, evaluation = default_split([f["file_path"] for f in frames], self.config.train_split_fraction)
            indices = train if split == "train" else evaluation
        if not indices:
            raise DataError(tf, f"{split}_filenames", f"the {split} split is empty")
        chosen = [frames[i] for i in indices]

        poses = torch.tensor(np.asarray([np.asarray(f["transform_matrix"], dtype=np.float64)[:3, :4] for f in chosen]))
        poses = poses.float()
        poses[:, :3, 3] *= scale

        def per_frame(key: str, frame: dict[str, Any]) -> float:
            return float(frame[key] if key in frame else meta[key])

        fx, fy, cx, cy, width, height = (
            torch.tensor([[per_frame(k, f)] for f in chosen], dtype=torch.float32) for k in INTRINSIC_KEYS
        )
        if downscale > 1:  # the images_N copies, at their actual size (rounding differs between tools)
            sizes = torch.tensor([_image_size(downscaled_path(root, f["file_path"], downscale)) for f in chosen])
            sx, sy = sizes[:, :1] / width, sizes[:, 1:] / height
            fx, cx, fy, cy = fx * sx, cx * sx, fy * sy, cy * sy
            width, height = sizes[:, :1].float(), sizes[:, 1:].float()
        model = meta.get("camera_model", "OPENCV")
        cameras = Cameras(
            camera_to_worlds=poses,
            fx=fx,
            fy=fy,
            cx=cx,
            cy=cy,
            width=width.to(torch.int32),
            height=height.to(torch.int32),
            distortion_params=torch.stack([distortion_params(meta, f) for f in chosen]),
            camera_type=CameraType.FISHEYE if model == "OPENCV_FISHEYE" else CameraType.PERSPECTIVE,
        )

        points: np.ndarray | None = None
        colours: np.ndarray | None = None
        if "ply_file_path" in meta:
            points, colours = read_ply_points(root / meta["ply_file_path"])
            points = points * scale
        if "scene_box" in meta:
            aabb = torch.tensor(meta["scene_box"], dtype=torch.float32) * scale
        else:  # every split's cameras, so train and eval share one box
            aabb = torch.from_numpy(self._derived_box(tf, meta, scale, points)).float()

        def files(key: str) -> list[Path] | None:
            if not all(key in f for f in chosen):
                return None
            return [downscaled_path(root, f[key], downscale) for f in chosen]

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
        if self.config.load_3D_points and points is not None:
            metadata["points3D_xyz"] = torch.from_numpy(points.copy())
            if colours is not None:
                metadata["points3D_rgb"] = torch.from_numpy(colours.copy())
        aabb_scale = meta.get("aabb_scale")
        metadata["far_field_scale"] = far_field_scale(aabb.double().numpy(), points, aabb_scale)

        return DataparserOutputs(
            image_filenames=[downscaled_path(root, f["file_path"], downscale) for f in chosen],
            cameras=cameras,
            alpha_color=metadata["background_color"],
            scene_box=SceneBox(aabb=aabb),
            mask_filenames=files("mask_path") if self.config.load_masks else None,
            metadata=metadata,
            dataparser_transform=torch.eye(4)[:3, :],
            dataparser_scale=scale,
        )

    @staticmethod
    def _derived_box(tf: Path, meta: dict[str, Any], scale: float, points: np.ndarray | None) -> np.ndarray:
        """The region-of-interest box from every frame's camera (and the points), in the scaled frame."""
        frames = meta["frames"]
        c2w = np.stack([np.asarray(f["transform_matrix"], dtype=np.float64).reshape(-1, 4)[:3] for f in frames])
        c2w = np.concatenate([c2w, np.tile([[[0.0, 0.0, 0.0, 1.0]]], (len(frames), 1, 1))], axis=1)
        c2w[:, :3, 3] *= scale

        def value(key: str, f: dict[str, Any]) -> float:
            return float(f[key] if key in f else meta[key])

        K = np.zeros((len(frames), 3, 3))
        K[:, 0, 0] = [value("fl_x", f) for f in frames]
        K[:, 1, 1] = [value("fl_y", f) for f in frames]
        K[:, 0, 2] = [value("cx", f) for f in frames]
        K[:, 1, 2] = [value("cy", f) for f in frames]
        K[:, 2, 2] = 1.0
        width = np.array([value("w", f) for f in frames])
        height = np.array([value("h", f) for f in frames])
        return scene_box_from_cameras(c2w, K, width, height, points, source=tf)


def distortion_params(meta: dict[str, Any], frame: dict[str, Any]) -> torch.Tensor:
    """nerfstudio's six ``(k1, k2, k3, k4, p1, p2)`` of a frame: its own, else the top level's, else zero.

    A frame's own coefficients (``distortion_params`` or any ``k*`` / ``p*``) replace the top level's whole.
    """
    for source in (frame, meta):
        if "distortion_params" in source:
            return torch.tensor([float(v) for v in source["distortion_params"]], dtype=torch.float32)
        if any(k in source for k in DISTORTION_KEYS):
            return camera_utils.get_distortion_params(**{k: float(source.get(k, 0.0)) for k in DISTORTION_KEYS})
    return torch.zeros(6)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        return img.size


scene3d_dataparser = DataParserSpecification(
    config=Scene3DDataParserConfig(),
    description="scene3d datasets and any nerfstudio transforms.json (synthetic scenes from `s3d data synth`, "
    "ns-process-data output): validated, kept in their own world frame",
)
