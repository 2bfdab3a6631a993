"""Writes rendered views, meshes and point clouds as a nerfstudio dataset (the format of ``README.md`` here).

Files are written with fixed encoder settings and no timestamps, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8

from scene3d.datasets.layouts import CameraRig
from scene3d.datasets.materials import evaluate_texture
from scene3d.datasets.raycast import SceneRaycaster, ViewRender, to_uint8
from scene3d.datasets.scene import Scene

DEPTH_SCALE = 1000.0
"""Depth PNG units per metre (millimetres)."""
MAX_DEPTH_M = 65.535
"""Largest depth a 16-bit millimetre PNG holds; deeper hits are clipped to it."""


def save_png(path: Path, array: np.ndarray) -> None:
    """Save an 8-bit (H, W), 8-bit (H, W, 3) or 16-bit (H, W) array as PNG, deterministically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == np.uint16:
        if array.ndim != 2:
            raise ValueError(f"16-bit PNGs must be single-channel, got shape {array.shape}")
        image = Image.fromarray(array)  # mode I;16
    elif array.dtype == np.uint8:
        image = Image.fromarray(array)
    else:
        raise ValueError(f"save_png takes uint8 or uint16 arrays, got {array.dtype}")
    image.save(path, format="PNG", compress_level=6)


def encode_depth(depth_m: Float[np.ndarray, "H W"]) -> np.ndarray:
    """Metres → 16-bit millimetres (0 stays 0 = no hit)."""
    return np.clip(np.round(depth_m * DEPTH_SCALE), 0, 65535).astype(np.uint16)


def encode_normals(normals: Float[np.ndarray, "H W 3"], valid: Bool[np.ndarray, "H W"]) -> UInt8[np.ndarray, "H W 3"]:
    """World-space unit normals → ``round((n + 1) / 2 · 255)``; pixels without a hit are (0, 0, 0)."""
    rgb = to_uint8(normals * 0.5 + 0.5)
    rgb[~valid] = 0
    return rgb


def _ply_header(kind: str, count: int, props: list[tuple[str, str]], faces: int | None = None) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", "comment scene3d synthetic", f"element {kind} {count}"]
    lines += [f"property {t} {n}" for n, t in props]
    if faces is not None:
        lines += [f"element face {faces}", "property list uchar int vertex_indices"]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def _vertex_records(
    xyz: Float[np.ndarray, "N 3"], normals: Float[np.ndarray, "N 3"], rgb: UInt8[np.ndarray, "N 3"]
) -> bytes:
    dtype = np.dtype(
        [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
        + [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    rec = np.empty(len(xyz), dtype=dtype)
    for i, key in enumerate("xyz"):
        rec[key] = xyz[:, i]
        rec["n" + key] = normals[:, i]
    for i, key in enumerate(("red", "green", "blue")):
        rec[key] = rgb[:, i]
    return rec.tobytes()


_VERTEX_PROPS = [("x", "float"), ("y", "float"), ("z", "float"), ("nx", "float"), ("ny", "float"), ("nz", "float")]
_VERTEX_PROPS += [("red", "uchar"), ("green", "uchar"), ("blue", "uchar")]


def write_point_ply(
    path: Path, xyz: Float[np.ndarray, "N 3"], normals: Float[np.ndarray, "N 3"], rgb: UInt8[np.ndarray, "N 3"]
) -> None:
    """A binary PLY point cloud (float32 x y z nx ny nz, uchar red green blue), as nerfstudio and open3d read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_ply_header("vertex", len(xyz), _VERTEX_PROPS) + _vertex_records(xyz, normals, rgb))


def write_mesh_ply(
    path: Path,
    vertices: Float[np.ndarray, "V 3"],
    faces: np.ndarray,
    normals: Float[np.ndarray, "V 3"],
    rgb: UInt8[np.ndarray, "V 3"],
) -> None:
    """A binary PLY triangle mesh with per-vertex normals and colours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    face_rec = np.empty(len(faces), dtype=np.dtype([("n", "u1"), ("v", "<i4", (3,))]))
    face_rec["n"] = 3
    face_rec["v"] = faces
    header = _ply_header("vertex", len(vertices), _VERTEX_PROPS, faces=len(faces))
    path.write_bytes(header + _vertex_records(vertices, normals, rgb) + face_rec.tobytes())


def write_meshes(folder: Path, scene: Scene, *, merged: bool = True) -> list[dict[str, Any]]:
    """Each object's world-space mesh as ``folder/<name>.ply`` plus, with ``merged``, all of them merged as
    ``folder/scene.ply``.

    Vertex colours are the (unshaded) albedo of the normal look at each vertex.
    """
    merged_v, merged_f, merged_n, merged_c, offset, entries = [], [], [], [], 0, []
    for obj in scene.objects:
        mesh = obj.world_mesh
        albedo = evaluate_texture(obj.texture, obj.local_mesh.vertices)
        colors = to_uint8(albedo)
        write_mesh_ply(folder / f"{obj.name}.ply", mesh.vertices, mesh.faces, mesh.normals, colors)
        merged_v.append(mesh.vertices)
        merged_f.append(mesh.faces + offset)
        merged_n.append(mesh.normals)
        merged_c.append(colors)
        offset += len(mesh.vertices)
        entries.append({"name": obj.name, "file": f"{folder.name}/{obj.name}.ply", "foreground": obj.foreground})
    if not merged:
        return entries
    write_mesh_ply(
        folder / "scene.ply",
        np.concatenate(merged_v),
        np.concatenate(merged_f),
        np.concatenate(merged_n),
        np.concatenate(merged_c),
    )
    return entries


class DatasetWriter:
    """Renders views into ``out`` and assembles ``transforms.json``.

    Args:
        out: the dataset folder (created).
        width: image width in pixels.
        height: image height in pixels.
        K: pinhole intrinsics shared by every view.
        stylized: also render and write the stylized look of every view.
    """

    def __init__(self, out: Path, width: int, height: int, K: Float[torch.Tensor, "3 3"], *, stylized: bool) -> None:
        self.out = Path(out)
        self.width, self.height, self.K = width, height, K
        self.stylized = stylized
        self.frames: list[dict[str, Any]] = []
        self.out.mkdir(parents=True, exist_ok=True)

    def add_view(
        self, raycaster: SceneRaycaster, c2w: Float[torch.Tensor, "4 4"], extra: dict[str, Any] | None = None
    ) -> ViewRender:
        """Render one view, write its images and record its frame."""
        return self.add_views(raycaster, c2w[None], None if extra is None else [extra])[0]

    def add_views(
        self,
        raycaster: SceneRaycaster,
        c2w: Float[torch.Tensor, "C 4 4"],
        extra: list[dict[str, Any]] | None = None,
    ) -> list[ViewRender]:
        """Render views in batches of about 2^18 pixels, write their images and record their frames."""
        per_batch = max(1, (1 << 18) // (self.width * self.height))
        renders = []
        for start in range(0, c2w.shape[0], per_batch):
            views = raycaster.render_pinhole_batch(
                c2w[start : start + per_batch], self.K, self.width, self.height, stylized=self.stylized
            )
            for k, view in enumerate(views):
                self._write_frame(view, c2w[start + k], None if extra is None else extra[start + k])
            renders += views
        return renders

    def _write_frame(self, view: ViewRender, c2w: Float[torch.Tensor, "4 4"], extra: dict[str, Any] | None) -> None:
        name = f"frame_{len(self.frames):05d}.png"
        frame: dict[str, Any] = {
            "file_path": f"images/{name}",
            "transform_matrix": c2w.tolist(),
            "depth_file_path": f"depths/{name}",
            "normal_file_path": f"normals/{name}",
            "mask_path": f"masks/{name}",
        }
        save_png(self.out / frame["file_path"], view.rgb)
        save_png(self.out / frame["depth_file_path"], encode_depth(view.depth))
        save_png(self.out / frame["normal_file_path"], encode_normals(view.normals, view.object_ids >= 0))
        save_png(self.out / frame["mask_path"], (view.mask * 255).astype(np.uint8))
        if self.stylized:
            if view.rgb_stylized is None:
                raise RuntimeError("a stylized dataset needs stylized renders")
            frame["stylized_file_path"] = f"images_stylized/{name}"
            save_png(self.out / frame["stylized_file_path"], view.rgb_stylized)
        frame.update(extra or {})
        self.frames.append(frame)

    def add_rig(self, raycaster: SceneRaycaster, rig: CameraRig, extra: list[dict[str, Any]] | None = None) -> None:
        """Render every view of ``rig``."""
        self.add_views(raycaster, rig.c2w, extra)

    def write_points(self, raycaster: SceneRaycaster, count: int, rng: np.random.Generator) -> str:
        """Sample ``count`` coloured surface points into ``points3d.ply``; returns its relative path."""
        xyz, normals, rgb = raycaster.sample_surface_points(count, rng)
        write_point_ply(self.out / "points3d.ply", xyz, normals, rgb)
        return "points3d.ply"

    def finish(self, eval_indices: list[int], top_level: dict[str, Any]) -> Path:
        """Write ``transforms.json`` (intrinsics, frames, splits, then ``top_level``); returns its path."""
        n = len(self.frames)
        held = sorted(set(eval_indices))
        if not held or held[-1] >= n or len(held) >= n:
            raise ValueError(f"eval_indices must pick 1..{n - 1} of the {n} frames, got {eval_indices}")
        held_set = set(held)
        files = [f["file_path"] for f in self.frames]
        transforms: dict[str, Any] = {
            "camera_model": "OPENCV",
            "fl_x": float(self.K[0, 0]),
            "fl_y": float(self.K[1, 1]),
            "cx": float(self.K[0, 2]),
            "cy": float(self.K[1, 2]),
            "w": self.width,
            "h": self.height,
            "k1": 0.0,
            "k2": 0.0,
            "p1": 0.0,
            "p2": 0.0,
            "frames": self.frames,
            "train_filenames": [f for i, f in enumerate(files) if i not in held_set],
            "val_filenames": [files[i] for i in held],
            "test_filenames": [files[i] for i in held],
        }
        transforms.update(top_level)
        path = self.out / "transforms.json"
        path.write_text(json.dumps(transforms, indent=2) + "\n", encoding="utf-8")
        return path


def box_json(bounds: Float[np.ndarray, "2 3"], pad: float) -> list[list[float]]:
    """``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` grown by ``pad`` on every side, rounded to 1 mm."""
    return [np.round(bounds[0] - pad, 3).tolist(), np.round(bounds[1] + pad, 3).tolist()]
