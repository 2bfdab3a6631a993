"""EpiGRAF's datasets: a collection of posed images of one kind of thing, read and checked before training.

Two layouts are read, and both become an :class:`ImageCollection` in one normalised world (cameras orbit the
origin at a mean distance of 1, world up +Z, OpenGL camera axes):

* **official** (universome/epigraf, StyleGAN's ``dataset_tool`` format): a folder or ``.zip`` of images plus one
  ``dataset.json`` with ``"camera_angles": {name: [yaw, pitch, roll]}`` and optional ``"labels": {name: label}``
  (either field may also be a list of ``[name, value]`` pairs). Names are image paths relative to the root, with or
  without extension. The camera sits at ``radius`` 1 looking at the origin (official ``compute_cam2world_matrix``,
  rotated from its +Y-up world to scene3d's +Z-up one); ``dataset.json`` holds no field of view, so
  ``fov_deg`` comes from the config (12° for FFHQ, 30° for Megascans in the official configs). Integer labels are
  one-hot encoded; lists of numbers are used as they are.
* **nerfstudio** (scene3d's synthetic ``collection`` kind, or any ``transforms.json``): ``frames[i].file_path``,
  ``transform_matrix`` (camera-to-world, OpenGL) and pinhole intrinsics at the top level or per frame; an optional
  ``scene_box`` gives the object's centre and bounding sphere (``scene3d.object_radius``, when present, a tighter
  sphere), and ``background_color`` a constant background. ``train_filenames``, when
  present, selects the frames (the rest are left for evaluation).

Ray bounds follow the official configs' geometry: every camera ``i`` at distance ``d_i`` renders between
``d_i − ρ`` and ``d_i + ρ`` where ``ρ`` is the object's bounding radius (from ``scene_box``, else the largest sphere
every camera sees whole, ``d sin(fov/2)``), and the tri-plane cube is the smallest one holding every camera's
frustum between those bounds (the official ``validate_frustum`` check, made constructive).

Every problem raises :class:`~scene3d.core.errors.DataError` naming the file (and field) before training starts.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int, UInt8
from torch import Tensor

from scene3d.core.cameras import intrinsics_from_fov
from scene3d.core.errors import DataError
from scene3d.core.cameras import orbit_c2w

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass
class ImageCollection:
    """Posed square images of one size, in a normalised world (see the module docstring)."""

    root: Path
    """The image folder or ``.zip``."""
    description: Path
    """``dataset.json`` or ``transforms.json``: the file that errors about the collection name."""
    layout: Literal["official", "nerfstudio"]
    names: list[str]
    """Image paths relative to ``root`` (zip member names for a zip)."""
    resolution: int
    """``R``: every image is ``R × R``."""
    c2w: Float[Tensor, "N 4 4"]
    intrinsics: Float[Tensor, "N 3 3"]
    """Pinhole ``K`` in pixels of the ``R × R`` images."""
    near: Float[Tensor, " N"]
    far: Float[Tensor, " N"]
    labels: Float[Tensor, "N L"]
    """Class labels (``L = 0`` when the dataset has none)."""
    cube_scale: float
    """Half the side of the cube the tri-plane spans."""
    background: tuple[float, float, float] | None
    """Constant background colour in ``[0, 1]`` when the dataset declares one (``background_color``)."""
    world_center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    world_scale: float = 1.0
    """Normalised = (original − world_center) · world_scale."""
    instance_ids: Int[Tensor, " N"] | None = None
    _zip: zipfile.ZipFile | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict[str, Any]:  # data-loader workers reopen the zip themselves
        return {**self.__dict__, "_zip": None}

    def read_bytes(self, index: int) -> bytes:
        """The encoded bytes of image ``index``."""
        if self.root.suffix.lower() == ".zip":
            if self._zip is None:
                self._zip = zipfile.ZipFile(self.root)
            return self._zip.read(self.names[index])
        return (self.root / self.names[index]).read_bytes()

    def load_image(self, index: int) -> UInt8[Tensor, "3 H W"]:
        """Image ``index`` as ``uint8 (3, R, R)``; transparency is composited over the background (white if none)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.read_bytes(index))) as img:
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                bg = tuple(int(round(255 * c)) for c in (self.background or (1.0, 1.0, 1.0)))
                canvas = Image.new("RGBA", rgba.size, bg + (255,))
                canvas.alpha_composite(rgba)
                img_rgb = canvas.convert("RGB")
            else:
                img_rgb = img.convert("RGB")
            arr = np.asarray(img_rgb, dtype=np.uint8)
        if arr.shape[:2] != (self.resolution, self.resolution):
            raise DataError(self.root / self.names[index], None, f"is {arr.shape[1]}x{arr.shape[0]}, expected {self.resolution}x{self.resolution}")
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def read_collection(
    path: str | Path,
    *,
    fov_deg: float = 12.0,
    object_radius: float | None = None,
    cube_scale: float | None = None,
) -> ImageCollection:
    """Read and check a collection in either layout (see the module docstring).

    Args:
        path: a folder holding ``transforms.json`` or ``dataset.json`` (anywhere below it), one of those files,
            or a ``.zip`` of images with a ``dataset.json``.
        fov_deg: field of view of official-layout datasets (``dataset.json`` has none).
        object_radius: ``ρ`` in normalised units (camera distance 1); ``None`` derives it (module docstring).
        cube_scale: half-side of the tri-plane cube; ``None`` derives it from the camera frustums.

    Raises:
        DataError: naming the file (and field) of the first problem found.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "dataset path does not exist")
    if path.is_file() and path.name == "transforms.json":
        return _read_nerfstudio(path, object_radius, cube_scale)
    if path.is_dir() and (path / "transforms.json").is_file():
        return _read_nerfstudio(path / "transforms.json", object_radius, cube_scale)
    if path.is_file() and path.name == "dataset.json":
        path = path.parent
    if path.is_dir() or path.suffix.lower() == ".zip":
        return _read_official(path, fov_deg, object_radius, cube_scale)
    raise DataError(path, None, "expected a dataset folder, a .zip, a transforms.json or a dataset.json")


# ----------------------------------------------------------------------------------------------------- official layout


def _list_files(root: Path) -> tuple[list[str], zipfile.ZipFile | None]:
    if root.is_dir():
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()), None
    try:
        archive = zipfile.ZipFile(root)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(root, None, f"not a readable zip archive ({err})") from err
    return sorted(n for n in archive.namelist() if not n.endswith("/")), archive


def _pairs(value: Any, desc: Path, key: str) -> dict[str, Any]:
    """A ``{name: value}`` dict from a dict or a list of ``[name, value]`` pairs (both occur in the wild)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) for p in value):
        return {p[0]: p[1] for p in value}
    raise DataError(desc, key, "must map image names to values (an object, or a list of [name, value] pairs)")


def _key(name: str) -> str:
    """Match key: path without extension, ``/`` separators, no leading ``./`` or ``/``."""
    p = PurePosixPath(name.replace("\\", "/").lstrip("/"))
    if p.parts and p.parts[0] == ".":
        p = PurePosixPath(*p.parts[1:])
    return str(p.with_suffix("")) if p.suffix.lower() in IMAGE_EXTENSIONS else str(p)


def _lookup(table: dict[str, Any], name: str, prefixes: tuple[str, ...]) -> Any:
    """An image's entry, keyed by its path relative to the root, to ``dataset.json``'s folder, or under the root's
    name (the official ``remove_root``)."""
    k = _key(name)
    candidates = [k] + [k[len(p) + 1 :] for p in prefixes if p and k.startswith(p + "/")] + [f"{p}/{k}" for p in prefixes if p]
    for cand in candidates:
        if cand in table:
            return table[cand]
    return None


def _read_official(
    root: Path, fov_deg: float, object_radius: float | None, cube_scale: float | None
) -> ImageCollection:
    files, archive = _list_files(root)
    try:
        return _read_official_files(root, files, archive, fov_deg, object_radius, cube_scale)
    finally:
        if archive is not None:
            archive.close()


def _read_official_files(
    root: Path, files: list[str], archive: zipfile.ZipFile | None, fov_deg: float, object_radius: float | None,
    cube_scale: float | None,
) -> ImageCollection:
    descs = [f for f in files if PurePosixPath(f).name == "dataset.json"]
    if not descs:
        raise DataError(root, None, "holds neither transforms.json nor dataset.json: EpiGRAF needs camera poses "
                                    "(dataset.json with camera_angles, or a nerfstudio transforms.json)")
    if len(descs) > 1:
        raise DataError(root, None, f"holds {len(descs)} dataset.json files ({descs[:3]}); expected exactly one")
    desc = root / descs[0]
    try:
        raw = archive.read(descs[0]) if archive is not None else desc.read_bytes()
        meta = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(desc, None, f"not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise DataError(desc, None, f"must hold a JSON object, got {type(meta).__name__}")
    names = [f for f in files if PurePosixPath(f).suffix.lower() in IMAGE_EXTENSIONS]
    if not names:
        raise DataError(root, None, f"holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if meta.get("camera_angles") is None:
        raise DataError(desc, "camera_angles", "missing: EpiGRAF needs a camera pose [yaw, pitch, roll] for every image")
    angles_table = {_key(k): v for k, v in _pairs(meta["camera_angles"], desc, "camera_angles").items()}
    prefixes = (root.stem, str(PurePosixPath(descs[0]).parent) if "/" in descs[0] else "")
    angles = []
    for name in names:
        value = _lookup(angles_table, name, prefixes)
        where = f"camera_angles[{_key(name)!r}]"
        if value is None:
            raise DataError(desc, where, f"missing: no camera pose for image {name}")
        try:
            a = [float(v) for v in value]
        except (TypeError, ValueError) as err:
            raise DataError(desc, where, f"must be [yaw, pitch, roll] numbers, got {value!r}") from err
        if len(a) != 3 or not all(math.isfinite(v) for v in a):
            raise DataError(desc, where, f"must be 3 finite numbers [yaw, pitch, roll], got {value!r}")
        if not (-math.pi - 1e-6 <= a[0] <= math.pi + 1e-6 and -1e-6 <= a[1] <= math.pi + 1e-6):
            raise DataError(desc, where, f"yaw must be in [-pi, pi] and pitch in [0, pi] (radians), got {a[:2]}")
        angles.append(a)

    labels = torch.zeros(len(names), 0)
    if meta.get("labels") is not None:
        table = {_key(k): v for k, v in _pairs(meta["labels"], desc, "labels").items()}
        if len(table) != len(names):
            raise DataError(desc, "labels", f"has {len(table)} entries but {root} holds {len(names)} images")
        values = []
        for name in names:
            value = _lookup(table, name, prefixes)
            if value is None:
                raise DataError(desc, f"labels[{_key(name)!r}]", f"missing: no label for image {name}")
            values.append(value)
        labels = _encode_labels(values, desc)

    resolution = _check_sizes([root / n for n in names], [_opener(root, archive, n) for n in names])
    yaw = torch.tensor([a[0] for a in angles])
    pitch = torch.tensor([a[1] for a in angles])
    c2w = orbit_c2w(yaw, pitch, 1.0)
    K = intrinsics_from_fov(fov_deg, resolution, resolution).expand(len(names), 3, 3).clone()
    return _finish(
        root, desc, "official", names, resolution, c2w, K, labels, None, object_radius, cube_scale, None,
        (0.0, 0.0, 0.0), 1.0,
    )


def _encode_labels(values: list[Any], desc: Path) -> Float[Tensor, "N L"]:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if min(values) < 0:
            raise DataError(desc, "labels", f"class labels must be >= 0, got {min(values)}")
        return torch.nn.functional.one_hot(torch.tensor(values), max(values) + 1).float()
    try:
        arr = torch.tensor(values, dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise DataError(desc, "labels", f"must be all integers (classes) or all equal-length number lists ({err})") from err
    if arr.ndim != 2 or not torch.isfinite(arr).all():
        raise DataError(desc, "labels", f"must be all integers or all equal-length lists of finite numbers, got shape {tuple(arr.shape)}")
    return arr


def _opener(root: Path, archive: zipfile.ZipFile | None, name: str):  # noqa: ANN202
    return (lambda: io.BytesIO(archive.read(name))) if archive is not None else (lambda: open(root / name, "rb"))


def _check_sizes(paths: list[Path], openers: list[Any]) -> int:
    """The common side ``R`` of square images, from their headers; ``DataError`` naming the first odd one."""
    from PIL import Image, UnidentifiedImageError

    first: tuple[Path, tuple[int, int]] | None = None
    for path, opener in zip(paths, openers):
        try:
            with opener() as f, Image.open(f) as img:
                size = img.size
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(path, None, f"unreadable image ({err})") from err
        if first is None:
            if size[0] != size[1]:
                raise DataError(path, None, f"is {size[0]}x{size[1]}: EpiGRAF needs square images")
            first = (path, size)
        elif size != first[1]:
            raise DataError(
                path, None, f"is {size[0]}x{size[1]} but {first[0].name} is {first[1][0]}x{first[1][1]}: "
                "all images of a collection must have the same size (resize them first)"
            )
    assert first is not None
    return first[1][0]


# --------------------------------------------------------------------------------------------------- nerfstudio layout


def _read_nerfstudio(tf: Path, object_radius: float | None, cube_scale: float | None) -> ImageCollection:
    from scene3d.datasets.validate import check_pose, load_json

    meta = load_json(tf)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(tf, "frames", "missing or empty: expected a list of frames")
    chosen = set(meta["train_filenames"]) if isinstance(meta.get("train_filenames"), list) else None
    names, poses, Ks, ids = [], [], [], []
    for i, frame in enumerate(frames):
        where = f"frames[{i}]"
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise DataError(tf, where, "needs file_path and transform_matrix")
        if chosen is not None and frame["file_path"] not in chosen:
            continue
        if not isinstance(frame["file_path"], str) or not (tf.parent / frame["file_path"]).is_file():
            raise DataError(tf, f"{where}.file_path", f"file does not exist: {frame['file_path']!r}")
        poses.append(torch.from_numpy(check_pose(frame["transform_matrix"], tf, f"{where}.transform_matrix")).float())
        k = {}
        for key in ("fl_x", "fl_y", "cx", "cy"):
            value = frame.get(key, meta.get(key))
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DataError(tf, f"{where}.{key}" if key in frame else key, f"missing or not a finite number: {value!r}")
            k[key] = float(value)
        Ks.append(torch.tensor([[k["fl_x"], 0.0, k["cx"]], [0.0, k["fl_y"], k["cy"]], [0.0, 0.0, 1.0]]))
        names.append(frame["file_path"])
        ids.append(int(frame.get("instance_id", -1)))
    if not names:
        raise DataError(tf, "train_filenames", "selects no frames")
    resolution = _check_sizes([tf.parent / n for n in names], [_opener(tf.parent, None, n) for n in names])
    c2w = torch.stack(poses)
    box = meta.get("scene_box")
    center = (0.0, 0.0, 0.0)
    radius_world = None
    if box is not None:
        b = np.asarray(box, dtype=np.float64)
        if b.shape != (2, 3) or not np.isfinite(b).all() or not (b[0] < b[1]).all():
            raise DataError(tf, "scene_box", "must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] with min < max")
        center = tuple(float(v) for v in (b[0] + b[1]) / 2)
        radius_world = float(np.linalg.norm(b[1] - b[0]) / 2)
    declared = meta.get("scene3d", {}).get("object_radius") if isinstance(meta.get("scene3d"), dict) else None
    if isinstance(declared, (int, float)) and not isinstance(declared, bool) and declared > 0:
        radius_world = float(declared)  # scene3d's collection declares its bounding sphere (tighter than the box's)
    background = None
    if meta.get("background_color") is not None:
        bg = meta["background_color"]
        if not (isinstance(bg, list) and len(bg) == 3 and all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in bg)):
            raise DataError(tf, "background_color", f"must be [r, g, b] in [0, 1], got {bg!r}")
        background = (float(bg[0]), float(bg[1]), float(bg[2]))
    c2w[:, :3, 3] -= torch.tensor(center)
    dist = c2w[:, :3, 3].norm(dim=-1)
    if bool((dist < 1e-6).any()):
        raise DataError(tf, "frames", "a camera sits at the scene centre; EpiGRAF needs cameras around the object")
    scale = float(1.0 / dist.mean())
    c2w[:, :3, 3] *= scale
    K = torch.stack(Ks)
    if object_radius is None and radius_world is not None:
        object_radius = radius_world * scale
    ids_t = torch.tensor(ids) if any(i >= 0 for i in ids) else None
    return _finish(
        tf.parent, tf, "nerfstudio", names, resolution, c2w, K, torch.zeros(len(names), 0), background,
        object_radius, cube_scale, ids_t, center, scale,
    )


# ------------------------------------------------------------------------------------------------------------ shared


def _finish(
    root: Path, desc: Path, layout: Literal["official", "nerfstudio"], names: list[str], resolution: int,
    c2w: Tensor, K: Tensor, labels: Tensor, background: tuple[float, float, float] | None,
    object_radius: float | None, cube_scale: float | None, instance_ids: Tensor | None,
    center: tuple[float, float, float], scale: float,
) -> ImageCollection:
    dist = c2w[:, :3, 3].norm(dim=-1)
    if object_radius is None:
        # the largest origin-centred sphere every camera sees whole: d · sin(half of the narrower field of view)
        half_fov = torch.atan(0.5 * resolution / torch.maximum(K[:, 0, 0], K[:, 1, 1]))
        object_radius = float((dist * torch.sin(half_fov)).min())
    if not object_radius > 0:
        raise DataError(desc, None, f"object radius must be positive, got {object_radius}")
    near = (dist - object_radius).clamp_min(0.05 * dist)
    far = dist + object_radius
    if cube_scale is None:
        cube_scale = frustum_cube(c2w, K, resolution, near, far)
    return ImageCollection(
        root=root, description=desc, layout=layout, names=names, resolution=resolution, c2w=c2w.float(),
        intrinsics=K.float(), near=near.float(), far=far.float(), labels=labels.float(), cube_scale=float(cube_scale),
        background=background, world_center=center, world_scale=scale, instance_ids=instance_ids,
    )


def frustum_cube(
    c2w: Float[Tensor, "N 4 4"], K: Float[Tensor, "N 3 3"], resolution: int, near: Float[Tensor, " N"],
    far: Float[Tensor, " N"],
) -> float:
    """Half-side of the smallest origin-centred cube holding every camera's view frustum between near and far."""
    # rays through the image corners (pixel centres of the corner pixels are inside; use the corners themselves)
    corners = torch.tensor([[0.0, 0.0], [resolution, 0.0], [0.0, resolution], [resolution, resolution]])
    x = (corners[None, :, 0] - K[:, 0, 2:3]) / K[:, 0, 0:1]
    y = -(corners[None, :, 1] - K[:, 1, 2:3]) / K[:, 1, 1:2]
    d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # (N, 4, 3)
    d = torch.einsum("nij,nkj->nki", c2w[:, :3, :3], d_cam)
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[:, None, :3, 3]
    pts = torch.cat([o + d * near[:, None, None], o + d * far[:, None, None]], dim=1)
    return float(pts.abs().max()) * 1.01
