"""``clnerf-data``: scans of a changing scene, one after another, all in one world frame.

``--data`` may point at:

* **one nerfstudio dataset** (a folder with ``transforms.json``): one scan, for incremental runs
  (``ns-train clnerf --data scan_03 --pipeline.previous-run outputs/.../scan_02_run``). With
  ``train_filenames``/``test_filenames`` lists it is read by ``scene3d-data`` (validated, own frame); without them
  by nerfstudio's parser with every normalisation off, holding out the first image and every 8th (the official
  CLNeRF split);
* **a ``changing`` synthetic scene** (``manifest.json``, ``step_XX/`` folders): every step is a scan;
* **a folder of nerfstudio datasets**, one sub-folder per scan time, in name order;
* **a WAT scene** (the official CLNeRF layout): ``images/<capture>/<frame>`` with one COLMAP model
  ``sparse/0/{cameras,images,points3D}.bin`` registering every capture; each capture folder is a scan, in name
  order, with the official normalisation (centre on the average pose and the point cloud, scale so the farthest
  point depth is 8) and the official split (a capture's first image and every 8th are held out).

``--pipeline.datamanager.dataparser.scans 2 3`` keeps only some scans of a multi-scan dataset (dataset order).
Outputs are in the dataset's own frame (times ``scale_factor``); ``metadata["clnerf_scan_index"]`` gives each
image's scan (its position among the selected scans), ``metadata["clnerf_scans"]`` describes the scans,
``metadata["clnerf_scene_boxes"]`` holds each scan's box and ``metadata["clnerf_declared_boxes"]`` whether the
dataset declared it (``scene_box`` in ``transforms.json``) rather than it being derived from the cameras.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from scene3d.core.errors import DataError
from scene3d.datasets.dataparser import Scene3DDataParserConfig

Layout = Literal["nerfstudio", "changing", "folders", "wat"]


@dataclass(frozen=True)
class ScanSource:
    """One scan of a dataset: its position among the selected scans, name and folder."""

    index: int
    name: str
    source: str


@dataclass
class CLNeRFDataParserConfig(DataParserConfig):
    """Scans of a changing scene in one world frame (module docstring)."""

    _target: type = field(default_factory=lambda: CLNeRFDataParser)
    """The dataparser class this config builds."""
    data: Path = Path()
    """A nerfstudio dataset (one scan), a changing scene root, a folder of per-scan datasets, or a WAT scene."""
    scans: tuple[int, ...] | None = None
    """Keep only these scans of a multi-scan dataset (0-based, dataset order); None keeps all."""
    scale_factor: float = 1.0
    """Multiplies camera positions and the scene box (nerfstudio datasets; WAT is normalised as the official code)."""
    wat_scale: float = 8.0
    """WAT: half side of the scene cube after normalisation (official --scale: 8 breville/kitchen, 16 car/grill,
    32 community)."""


def detect_layout(data: Path) -> Layout:
    """Which of the supported layouts ``data`` is (module docstring).

    Raises:
        DataError: if ``data`` is missing or none of them.
    """
    data = Path(data)
    if not data.exists():
        raise DataError(data, None, "does not exist")
    if data.is_file():
        if data.name == "transforms.json":
            return "nerfstudio"
        if data.name == "manifest.json":
            return "changing"
        raise DataError(data, None, "expected a dataset folder, transforms.json or manifest.json")
    if (data / "transforms.json").is_file():
        return "nerfstudio"
    if (data / "manifest.json").is_file():
        return "changing"
    if (data / "sparse" / "0" / "images.bin").is_file() and (data / "images").is_dir():
        return "wat"
    if any((sub / "transforms.json").is_file() for sub in sorted(data.iterdir()) if sub.is_dir()):
        return "folders"
    raise DataError(
        data, None,
        "holds no scan: expected transforms.json (one scan), manifest.json (changing scene), sub-folders with "
        "transforms.json (one per scan), or a WAT scene (images/<capture>/ and sparse/0/images.bin)",
    )  # fmt: skip


def _cat_cameras(parts: list[Cameras]) -> Cameras:
    """Concatenate flat camera batches (each ``(n,)``)."""
    return Cameras(
        camera_to_worlds=torch.cat([c.camera_to_worlds for c in parts]),
        fx=torch.cat([c.fx for c in parts]), fy=torch.cat([c.fy for c in parts]),
        cx=torch.cat([c.cx for c in parts]), cy=torch.cat([c.cy for c in parts]),
        width=torch.cat([c.width for c in parts]), height=torch.cat([c.height for c in parts]),
        distortion_params=torch.cat([
            c.distortion_params if c.distortion_params is not None else torch.zeros(c.shape[0], 6) for c in parts
        ]),
        camera_type=torch.cat([c.camera_type for c in parts]),
    )  # fmt: skip


def _flat(cameras: Cameras) -> Cameras:
    """nerfstudio cameras with every field broadcast to ``(n, ·)``."""
    n = cameras.shape[0]

    def col(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, 1).expand(n, 1).clone() if x.numel() in (1, n) else x

    dist = cameras.distortion_params
    return Cameras(
        camera_to_worlds=cameras.camera_to_worlds.reshape(n, 3, 4).float(),
        fx=col(cameras.fx).float(), fy=col(cameras.fy).float(), cx=col(cameras.cx).float(), cy=col(cameras.cy).float(),
        width=col(cameras.width), height=col(cameras.height),
        distortion_params=torch.zeros(n, 6) if dist is None else dist.reshape(-1, 6).expand(n, 6).float().clone(),
        camera_type=col(cameras.camera_type),
    )  # fmt: skip


class CLNeRFDataParser(DataParser):
    """Reads every selected scan of the dataset into one ``DataparserOutputs`` (module docstring)."""

    config: CLNeRFDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs: Any) -> DataparserOutputs:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if self.config.scale_factor <= 0:
            raise ValueError(f"scale_factor must be positive, got {self.config.scale_factor}")
        data = Path(self.config.data)
        layout = detect_layout(data)
        if layout == "wat":
            from scene3d.methods.clnerf.wat import read_wat

            wat = read_wat(data, scale=self.config.wat_scale)
            selected = self._select([s.name for s in wat.scans], data)
            return wat.outputs(split, selected)
        if layout == "nerfstudio":
            folder = data.parent if data.is_file() else data
            folders = [(folder.name, folder)]
        elif layout == "changing":
            root = data.parent if data.is_file() else data
            manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
            try:
                folders = [(str(s["folder"]), root / s["folder"]) for s in manifest["steps"]]
            except (KeyError, TypeError) as err:
                raise DataError(root / "manifest.json", "steps", f"malformed ({err})") from err
        else:
            folders = [(sub.name, sub) for sub in sorted(data.iterdir()) if (sub / "transforms.json").is_file()]
        selected = self._select([name for name, _ in folders], data)
        parts = [read_nerfstudio_scan(folders[i][1], split, self.config.scale_factor) for i in selected]
        return _merge(parts, [ScanSource(k, folders[i][0], str(folders[i][1].resolve())) for k, i in enumerate(selected)])

    def _select(self, names: list[str], data: Path) -> list[int]:
        if self.config.scans is None:
            return list(range(len(names)))
        bad = [s for s in self.config.scans if not 0 <= s < len(names)]
        if bad or len(set(self.config.scans)) != len(self.config.scans):
            wanted = list(self.config.scans)
            raise DataError(data, "scans", f"must be distinct indices in [0, {len(names)}) of {names}, got {wanted}")
        return sorted(self.config.scans)


def read_nerfstudio_scan(folder: Path, split: str, scale_factor: float) -> DataparserOutputs:
    """One scan stored as a nerfstudio dataset (scene3d-data when it lists its splits, else nerfstudio's parser).

    Raises:
        DataError: a missing or invalid dataset, or a split without images.
    """
    tf = folder / "transforms.json"
    if not tf.is_file():
        raise DataError(folder, None, "holds no transforms.json")
    try:
        meta = json.loads(tf.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(tf, None, f"is not valid JSON ({err})") from err
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(tf, "frames", "the scan has no images")
    if "train_filenames" in meta:
        outputs = Scene3DDataParserConfig(data=folder, scale_factor=scale_factor, load_3D_points=False).setup()
        out = outputs.get_dataparser_outputs(split=split)
    else:
        from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

        parser = NerfstudioDataParserConfig(
            data=folder, scale_factor=scale_factor, orientation_method="none", center_method="none",
            auto_scale_poses=False, eval_mode="interval", eval_interval=8, load_3D_points=False,
        ).setup()  # fmt: skip
        out = parser.get_dataparser_outputs(split="val" if split == "test" else split)
        centres = out.cameras.camera_to_worlds[:, :3, 3]
        lo, hi = centres.min(0).values, centres.max(0).values
        pad = (hi - lo).max().clamp_min(1e-3)  # object-centric captures look at what lies inside the camera hull
        out = _with(out, scene_box=SceneBox(aabb=torch.stack([lo - 0.25 * pad, hi + 0.25 * pad])))
    if len(out.image_filenames) == 0:
        raise DataError(tf, f"{split}_filenames", "the scan has no images in this split")
    return _with(out, metadata={**out.metadata, "clnerf_declared_box": "scene_box" in meta})


def _with(out: DataparserOutputs, **changes: Any) -> DataparserOutputs:
    fields = dict(out.as_dict())
    fields.update(changes)
    return DataparserOutputs(**fields)


def _merge(parts: list[DataparserOutputs], scans: list[ScanSource]) -> DataparserOutputs:
    """Concatenate per-scan outputs; the scene box is their union, the background the first scan's."""
    cameras = _cat_cameras([_flat(p.cameras) for p in parts])
    scan_index = torch.cat([torch.full((len(p.image_filenames),), k, dtype=torch.long) for k, p in enumerate(parts)])
    boxes = torch.stack([p.scene_box.aabb for p in parts])
    aabb = torch.stack([boxes[:, 0].min(0).values, boxes[:, 1].max(0).values])
    first = parts[0]
    return DataparserOutputs(
        image_filenames=[f for p in parts for f in p.image_filenames],
        cameras=cameras,
        alpha_color=first.alpha_color,
        scene_box=SceneBox(aabb=aabb),
        metadata={
            "clnerf_scan_index": scan_index,
            "clnerf_scans": scans,
            "clnerf_scene_boxes": boxes,
            "clnerf_declared_boxes": torch.tensor([bool(p.metadata.get("clnerf_declared_box", False)) for p in parts]),
            "background_color": first.metadata.get("background_color", first.alpha_color),
        },
        dataparser_transform=first.dataparser_transform,
        dataparser_scale=first.dataparser_scale,
    )


def merge_outputs(parts: list[DataparserOutputs], scans: list[ScanSource]) -> DataparserOutputs:
    """Public name of :func:`_merge` (used by the WAT reader)."""
    return _merge(parts, scans)


clnerf_dataparser = DataParserSpecification(
    config=CLNeRFDataParserConfig(),
    description="CLNeRF scans in one world frame: a nerfstudio dataset per scan, a changing scene, or a WAT scene",
)
