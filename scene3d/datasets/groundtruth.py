"""Read a scene3d dataset's per-frame ground truth back as arrays, and move points between its views.

Plain numpy and PIL (no nerfstudio, no open3d): for methods that use depth / normals / masks as supervision or
for warping (ReGS's reference-view back-projection), and for tests of the generator.

Example:
    >>> gt = read_frame("/tmp/scene", 0)  # doctest: +SKIP
    >>> points = backproject_depth(gt.depth, gt.c2w, gt.K)  # world points of every pixel centre  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Bool, Float, UInt8

from scene3d.core.errors import DataError


@dataclass(frozen=True)
class FrameGroundTruth:
    """One frame of a dataset, decoded.

    Attributes:
        rgb: the image.
        depth: z-depth in metres, 0 where no surface.
        normals: world-space unit normals, zero vectors where no surface.
        mask: foreground objects.
        stylized: the stylized image, when the dataset has one.
        c2w: camera-to-world, OpenGL axes.
        K: pinhole intrinsics.
    """

    rgb: UInt8[np.ndarray, "H W 3"]
    depth: Float[np.ndarray, "H W"]
    normals: Float[np.ndarray, "H W 3"]
    mask: Bool[np.ndarray, "H W"]
    stylized: UInt8[np.ndarray, "H W 3"] | None
    c2w: Float[np.ndarray, "4 4"]
    K: Float[np.ndarray, "3 3"]


def _read(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.array(img)


def decode_normals(rgb: UInt8[np.ndarray, "H W 3"]) -> Float[np.ndarray, "H W 3"]:
    """``n = rgb / 255 · 2 − 1`` renormalised; (0, 0, 0) pixels (no surface) decode to zero vectors."""
    n = rgb.astype(np.float64) / 255.0 * 2.0 - 1.0
    valid = rgb.any(axis=-1, keepdims=True)
    return np.where(valid, n / np.clip(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9, None), 0.0)


def read_frame(folder: str | Path, index: int, *, depth_unit: float = 1e-3) -> FrameGroundTruth:
    """Decode frame ``index`` of the dataset in ``folder`` (``transforms.json`` order)."""
    folder = Path(folder)
    meta = json.loads((folder / "transforms.json").read_text(encoding="utf-8"))
    frames = meta["frames"]
    if not 0 <= index < len(frames):
        raise ValueError(f"index must be in [0, {len(frames)}), got {index}")
    f = frames[index]
    for key in ("depth_file_path", "normal_file_path", "mask_path"):
        if key not in f:
            raise DataError(folder / "transforms.json", f"frames[{index}].{key}", "missing")
    K = np.array([[meta["fl_x"], 0.0, meta["cx"]], [0.0, meta["fl_y"], meta["cy"]], [0.0, 0.0, 1.0]])
    return FrameGroundTruth(
        rgb=_read(folder / f["file_path"])[..., :3],
        depth=_read(folder / f["depth_file_path"]).astype(np.float64) * depth_unit,
        normals=decode_normals(_read(folder / f["normal_file_path"])),
        mask=_read(folder / f["mask_path"]) > 127,
        stylized=_read(folder / f["stylized_file_path"]) if "stylized_file_path" in f else None,
        c2w=np.asarray(f["transform_matrix"], dtype=np.float64),
        K=K,
    )


def backproject_depth(
    depth: Float[np.ndarray, "H W"], c2w: Float[np.ndarray, "4 4"], K: Float[np.ndarray, "3 3"]
) -> Float[np.ndarray, "H W 3"]:
    """World positions of every pixel centre at its z-depth (OpenGL camera: looks along −Z, +Y up)."""
    h, w = depth.shape
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    x = (u - K[0, 2]) / K[0, 0] * depth
    y = -(v - K[1, 2]) / K[1, 1] * depth
    cam = np.stack([x, y, -depth], axis=-1)
    return cam @ c2w[:3, :3].T + c2w[:3, 3]


def project_points(
    points: Float[np.ndarray, "N 3"], c2w: Float[np.ndarray, "4 4"], K: Float[np.ndarray, "3 3"]
) -> tuple[Float[np.ndarray, " N"], Float[np.ndarray, " N"], Float[np.ndarray, " N"]]:
    """Image coordinates ``u`` (right), ``v`` (down) of world points and their z-depth in that camera.

    Pixel ``(row, col)`` covers ``[col, col + 1) × [row, row + 1)``, its centre is at ``+0.5``: the pixel holding a
    point is ``(floor(v), floor(u))``.
    """
    cam = (points - c2w[:3, 3]) @ c2w[:3, :3]
    z = -cam[:, 2]
    safe = np.where(np.abs(z) < 1e-12, 1e-12, z)
    u = K[0, 0] * cam[:, 0] / safe + K[0, 2]
    v = -K[1, 1] * cam[:, 1] / safe + K[1, 2]
    return u, v, z


def visible_surface(
    folder: str | Path, *, split: str = "train", depth_unit: float = 1e-3
) -> tuple[Float[np.ndarray, "N 3"], Float[np.ndarray, "N 3"]]:
    """The true surface the frames of ``split`` see: every pixel with a surface back-projected to its world point
    (at the pixel centre's z-depth), with that pixel's colour in ``[0, 1]``.

    ``split`` is ``"train"``, ``"val"``, ``"test"`` (the ``<split>_filenames`` list of ``transforms.json``) or
    ``"all"``. Surfaces no frame of the split sees (under objects, back faces) are not in it: it is the part of the
    truth a reconstruction from those frames can be held to.
    """
    folder = Path(folder)
    meta = json.loads((folder / "transforms.json").read_text(encoding="utf-8"))
    if split == "all":
        wanted = None
    elif f"{split}_filenames" in meta:
        wanted = set(meta[f"{split}_filenames"])
    else:
        raise ValueError(f"split must be 'all' or one with a '<split>_filenames' list in transforms.json, got {split!r}")
    points, colors = [], []
    for i, frame in enumerate(meta["frames"]):
        if wanted is not None and frame["file_path"] not in wanted:
            continue
        gt = read_frame(folder, i, depth_unit=depth_unit)
        hit = gt.depth > 0
        points.append(backproject_depth(gt.depth, gt.c2w, gt.K)[hit])
        colors.append(gt.rgb[hit].astype(np.float64) / 255.0)
    if not points:
        raise ValueError(f"no frame of split {split!r} in {folder / 'transforms.json'}")
    return np.concatenate(points), np.concatenate(colors)
