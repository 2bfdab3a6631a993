"""Validate a nerfstudio-format dataset before any training starts.

:func:`validate_dataset` reads ``transforms.json`` and the headers of every file it names, and raises one
:class:`~scene3d.core.errors.DataError` naming the file and the field of the first problem it finds: a missing or
malformed ``transforms.json``, a missing field, a missing or unreadable image / depth / mask / normal file, an image
whose size disagrees with ``w``/``h``, a depth map that is not 16-bit, a non-finite or non-rigid pose, distortion
that no scene3d method can honour (FULL_OPENCV's rational terms, a perspective ``k4``, fisheye tangential terms), a
split list that is empty or names unknown files. It imports neither nerfstudio nor open3d.

Datasets as ``ns-process-data`` writes them load as they are: without split lists they get nerfstudio's default
split (:func:`default_split`), distortion may be global or per frame, ``aabb_scale`` (Instant-NGP's far-field
extent) is read, and ``downscale_factor`` reads the ``images_N`` (``masks_N``, ``depths_N``) copies it makes.

Errors point at the file to fix: ``transforms.json`` for JSON-level problems (``field`` is a key path such as
``frames[3].transform_matrix``), the image itself for file-level problems (``field`` is the frame key that names it).

Example:
    >>> summary = validate_dataset("/data/scene")  # doctest: +SKIP
    >>> summary.num_train, summary.width  # doctest: +SKIP
    (90, 128)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scene3d.core.errors import DataError

SUPPORTED_CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV", "OPENCV_FISHEYE")
"""``camera_model`` values scene3d reads: pinhole with Brown–Conrady distortion (nerfstudio's
``CameraType.PERSPECTIVE``, ``k1 k2 k3 p1 p2``) and OpenCV's fisheye (``CameraType.FISHEYE``, ``k1 … k4``)."""
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
"""nerfstudio's six distortion parameters, in the order of its ``distortion_params``."""
UNSUPPORTED_DISTORTION_KEYS = ("k5", "k6", "s1", "s2", "s3", "s4")
"""Coefficients of camera models nerfstudio cannot undistort (FULL_OPENCV's rational terms, thin prism)."""
TRAIN_SPLIT_FRACTION = 0.9
"""nerfstudio's default ``train_split_fraction`` (``eval_mode="fraction"``) for datasets without split lists."""
INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
SPLITS = ("train", "val", "test")
_RIGID_TOL = 1e-3  # |RᵀR − I| and |det R − 1|: loose enough for poses stored as rounded decimals


@dataclass(frozen=True)
class DatasetSummary:
    """What :func:`validate_dataset` found (for a ``changing`` root: the totals, and each step in ``steps``)."""

    path: Path
    """The dataset folder."""
    kind: str | None
    """``scene3d.kind`` for scene3d's synthetic datasets, else ``None``."""
    num_frames: int
    width: int
    """Image width of the first frame."""
    height: int
    """Image height of the first frame."""
    num_train: int
    num_val: int
    num_test: int
    has_depth: bool
    has_normals: bool
    has_masks: bool
    has_stylized: bool
    num_points: int | None
    """Vertices in ``ply_file_path``; ``None`` without one."""
    scene_box: tuple[tuple[float, float, float], tuple[float, float, float]] | None
    background_color: tuple[float, float, float] | None
    steps: tuple[DatasetSummary, ...] = ()
    """Per-step summaries of a ``changing`` scene (empty otherwise)."""

    def describe(self) -> str:
        """A few lines for a terminal."""
        extras = [n for n, f in (("depth", self.has_depth), ("normals", self.has_normals), ("masks", self.has_masks),
                                 ("stylized", self.has_stylized)) if f]
        lines = [
            f"{self.path}: {self.kind or 'nerfstudio'} dataset, {self.num_frames} frames of {self.width}x{self.height}",
            f"  splits: train {self.num_train}, val {self.num_val}, test {self.num_test}",
            f"  extras: {', '.join(extras) or 'none'}; points: {self.num_points or 'none'}",
        ]
        if self.scene_box is not None:
            lines.append(f"  scene_box: {list(self.scene_box[0])} .. {list(self.scene_box[1])}")
        if self.steps:
            lines.append(f"  {len(self.steps)} time steps: " + ", ".join(s.path.name for s in self.steps))
        return "\n".join(lines)


def validate_dataset(path: str | Path, *, downscale_factor: int = 1) -> DatasetSummary:
    """Check a dataset folder (or its ``transforms.json``, or a ``changing`` root with ``manifest.json``).

    Args:
        path: the folder or its ``transforms.json``.
        downscale_factor: check the ``1/downscale_factor`` copies of the frame files (``images_N/``) instead.

    Raises:
        DataError: the first problem found, naming the file and the field.
    """
    path = Path(path)
    if not isinstance(downscale_factor, int) or downscale_factor < 1:
        raise ValueError(f"downscale_factor must be a positive integer, got {downscale_factor!r}")
    if path.is_file():
        return _validate_transforms(path, downscale_factor)
    if path.suffix == ".json" and path.parent.is_dir():
        _missing_transforms(path)
    if not path.is_dir():
        raise DataError(path, None, "dataset folder does not exist")
    if (path / "manifest.json").is_file() and not (path / "transforms.json").exists():
        return _validate_changing(path / "manifest.json")
    if not (path / "transforms.json").is_file():
        _missing_transforms(path / "transforms.json")
    return _validate_transforms(path / "transforms.json", downscale_factor)


def default_split(file_paths: list[str], fraction: float = TRAIN_SPLIT_FRACTION) -> tuple[list[int], list[int]]:
    """nerfstudio's split for datasets without split lists: frames sorted by file name, ``⌈n · fraction⌉`` evenly
    spaced (first and last included) train, the rest eval (``get_train_eval_split_fraction``).

    Returns:
        Indices into ``file_paths`` of the train and of the eval frames (eval serves as ``val`` and ``test``).

    Example:
        >>> default_split([f"images/{i}.png" for i in range(10)])
        ([0, 1, 2, 3, 4, 5, 6, 7, 9], [8])
    """
    order = sorted(range(len(file_paths)), key=lambda i: str(file_paths[i]))
    n = len(order)
    n_train = math.ceil(n * fraction)
    picks = set(np.linspace(0, n - 1, n_train, dtype=int).tolist())
    train = sorted(order[i] for i in picks)
    evaluation = sorted(order[i] for i in range(n) if i not in picks)
    return train, evaluation


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".JPG", ".JPEG", ".PNG")


def _missing_transforms(tf: Path) -> None:
    """Raise the error for a dataset folder without its ``transforms.json``, with what to do about it."""
    folder = tf.parent
    images = [p for p in folder.iterdir() if p.suffix in _IMAGE_SUFFIXES] if folder.is_dir() else []
    images += [p for p in (folder / "images").glob("*") if p.suffix in _IMAGE_SUFFIXES] if (folder / "images").is_dir() else []
    hint = (
        f"the folder holds {len(images)} image(s) but no camera poses: compute them with "
        f"`ns-process-data images --data {folder} --output-dir DATASET` (COLMAP) and train on DATASET"
        if images
        else "a dataset is a folder with a nerfstudio transforms.json (cameras and image paths) and its images"
    )
    raise DataError(tf, None, f"file does not exist; {hint}")


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, raising :class:`DataError` when the file is missing, malformed or not an object."""
    if not path.is_file():
        raise DataError(path, None, "file does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, None, f"not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DataError(path, None, f"must hold a JSON object, got {type(data).__name__}")
    return data


def _number(meta: dict[str, Any], key: str, tf: Path, where: str, *, positive: bool = False) -> float:
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(tf, f"{where}{key}", f"must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise DataError(tf, f"{where}{key}", f"must be positive, got {value!r}")
    return float(value)


def check_pose(value: Any, tf: Path, field: str) -> np.ndarray:
    """A 4×4 (or 3×4) finite rigid camera-to-world matrix, as a 4×4 float64 array."""
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(tf, field, f"must be a 4x4 matrix of numbers ({err})") from err
    if m.shape not in ((4, 4), (3, 4)):
        raise DataError(tf, field, f"must be a 4x4 matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise DataError(tf, field, "holds non-finite values (nan or inf)")
    if m.shape == (4, 4) and not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise DataError(tf, field, f"last row must be [0, 0, 0, 1], got {m[3].tolist()}")
    rot = m[:3, :3]
    ortho = float(np.abs(rot.T @ rot - np.eye(3)).max())
    det = float(np.linalg.det(rot))
    if ortho > _RIGID_TOL or abs(det - 1.0) > _RIGID_TOL:
        problem = f"rotation part is not rigid (max |RᵀR − I| = {ortho:.2e}, det = {det:.4f}; expected a rotation)"
        raise DataError(tf, field, problem)
    out = np.eye(4)
    out[:3] = m[:3]
    return out


def downscaled_path(root: Path, value: str, downscale_factor: int) -> Path:
    """Where ``ns-process-data`` keeps a frame file at ``1/downscale_factor`` resolution: ``images/x.png`` →
    ``images_4/x.png`` (the folder of the file, suffixed, as nerfstudio's dataparser reads it)."""
    path = Path(value)
    if downscale_factor == 1:
        return root / path
    return root / path.parent.parent / f"{path.parent.name}_{downscale_factor}" / path.name


def _file(tf: Path, frame: dict[str, Any], key: str, index: int, downscale_factor: int = 1) -> Path:
    value = frame[key]
    field = f"frames[{index}].{key}"
    if not isinstance(value, str) or not value:
        raise DataError(tf, field, f"must be a relative file path, got {value!r}")
    file = downscaled_path(tf.parent, value, downscale_factor)
    if not file.is_file():
        extra = f" at 1/{downscale_factor} resolution (downscale_factor)" if downscale_factor != 1 else ""
        raise DataError(file, field, f"file does not exist{extra} (named in {tf})")
    return file


def _image_info(file: Path, field: str) -> tuple[tuple[int, int], str, str | None]:
    """(width, height), PIL mode and format of an image, from its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            return img.size, img.mode, img.format
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(file, field, f"unreadable image ({err})") from err


def _check_depth(file: Path, field: str, size: tuple[int, int]) -> None:
    if file.suffix == ".npy":
        try:
            arr = np.load(file, mmap_mode="r")
        except (OSError, ValueError) as err:
            raise DataError(file, field, f"unreadable depth array ({err})") from err
        shape = tuple(arr.shape[:2])
        if shape != (size[1], size[0]) or arr.ndim not in (2, 3):
            raise DataError(file, field, f"depth array has shape {arr.shape}, expected ({size[1]}, {size[0]})")
        return
    got, mode, fmt = _image_info(file, field)
    if fmt != "PNG" or not mode.startswith("I;16"):
        raise DataError(
            file, field, f"depth must be a 16-bit single-channel PNG (millimetres), got {fmt} with mode {mode}"
        )
    if got != size:
        raise DataError(file, field, f"depth is {got[0]}x{got[1]}, its image is {size[0]}x{size[1]}")


def _check_distortion(tf: Path, meta: dict[str, Any], frames: list[Any], model: str) -> None:
    """Distortion given at the top level or per frame, as coefficients or ``distortion_params``: finite numbers,
    and only what nerfstudio's cameras (rays) and its image undistortion (splats) can honour."""
    fisheye = model == "OPENCV_FISHEYE"
    for where, source in [("", meta), *((f"frames[{i}].", f) for i, f in enumerate(frames))]:
        for key in UNSUPPORTED_DISTORTION_KEYS:
            if key in source and source[key] != 0:
                raise DataError(tf, where + key, f"distortion coefficient {key} is not supported (models with k1 k2 "
                                "k3 p1 p2 or fisheye k1..k4 are); undistort the images first (COLMAP image_undistorter)")  # fmt: skip
        values = {k: source[k] for k in DISTORTION_KEYS if k in source}
        if "distortion_params" in source:
            params = source["distortion_params"]
            if not isinstance(params, list) or len(params) != 6:
                raise DataError(tf, where + "distortion_params", f"must be a list of 6 numbers (k1 k2 k3 k4 p1 p2), got {params!r}")
            values = dict(zip(DISTORTION_KEYS, params, strict=True))
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DataError(tf, where + key, f"must be a finite number, got {value!r}")
        if not fisheye and values.get("k4", 0) != 0:
            raise DataError(tf, where + "k4", f"k4 is only read for OPENCV_FISHEYE cameras, camera_model is {model}")
        if fisheye and (values.get("p1", 0) != 0 or values.get("p2", 0) != 0):
            raise DataError(tf, where + "p1", "OPENCV_FISHEYE cameras have no tangential distortion (p1, p2)")


def _validate_transforms(tf: Path, downscale_factor: int = 1) -> DatasetSummary:
    meta = load_json(tf)
    frames = meta.get("frames")
    if "frames" not in meta:
        raise DataError(tf, "frames", "missing")
    if not isinstance(frames, list) or not frames:
        raise DataError(tf, "frames", "must be a non-empty list of frames")
    model = meta.get("camera_model", "OPENCV")
    if model not in SUPPORTED_CAMERA_MODELS:
        raise DataError(tf, "camera_model", f"must be one of {SUPPORTED_CAMERA_MODELS}, got {model!r}")
    _check_distortion(tf, meta, frames, model)

    optional_files = ("depth_file_path", "normal_file_path", "mask_path", "stylized_file_path")
    present = {k: 0 for k in optional_files}
    seen: dict[str, int] = {}
    first_size: tuple[int, int] | None = None
    for i, frame in enumerate(frames):
        where = f"frames[{i}]."
        if not isinstance(frame, dict):
            raise DataError(tf, f"frames[{i}]", f"must be an object, got {type(frame).__name__}")
        for key in ("file_path", "transform_matrix"):
            if key not in frame:
                raise DataError(tf, where + key, "missing")
        for key in INTRINSIC_KEYS:
            source, prefix = (frame, where) if key in frame else (meta, "")
            if key not in source:
                raise DataError(tf, key, "missing (needed at the top level or in every frame)")
            _number(source, key, tf, prefix, positive=key in ("fl_x", "fl_y", "w", "h"))
        w = int((frame if "w" in frame else meta)["w"])
        h = int((frame if "h" in frame else meta)["h"])
        check_pose(frame["transform_matrix"], tf, where + "transform_matrix")
        image = _file(tf, frame, "file_path", i, downscale_factor)
        if frame["file_path"] in seen:
            raise DataError(tf, where + "file_path", f"same file as frames[{seen[frame['file_path']]}]")
        seen[frame["file_path"]] = i
        size, _, _ = _image_info(image, where + "file_path")
        if downscale_factor == 1 and size != (w, h):
            raise DataError(image, where + "file_path", f"image is {size[0]}x{size[1]}, but w x h is {w}x{h}")
        if downscale_factor > 1 and (abs(size[0] - w / downscale_factor) > 1 or abs(size[1] - h / downscale_factor) > 1):
            problem = f"image is {size[0]}x{size[1]}, but w x h / {downscale_factor} is {w / downscale_factor:g}x{h / downscale_factor:g}"
            raise DataError(image, where + "file_path", problem)
        first_size = first_size or size
        for key in optional_files:
            if key not in frame:
                continue
            present[key] += 1
            file = _file(tf, frame, key, i, downscale_factor)
            if key == "depth_file_path":
                _check_depth(file, where + key, size)
                continue
            got, mode, _ = _image_info(file, where + key)
            if got != size:
                raise DataError(file, where + key, f"is {got[0]}x{got[1]}, its image is {size[0]}x{size[1]}")
            if key == "mask_path" and mode not in ("L", "1"):
                raise DataError(file, where + key, f"mask must be a single-channel 8-bit image, got mode {mode}")
    for key, count in present.items():
        if 0 < count < len(frames):
            missing = next(i for i, f in enumerate(frames) if key not in f)
            raise DataError(tf, f"frames[{missing}].{key}", f"missing here but given for {count} other frames")

    counts = _check_splits(tf, meta, seen)
    num_points = _check_ply(tf, meta) if "ply_file_path" in meta else None
    box = _check_box(tf, meta) if "scene_box" in meta else None
    if "aabb_scale" in meta:
        _number(meta, "aabb_scale", tf, "", positive=True)
    background = _check_background(tf, meta) if "background_color" in meta else None
    block = meta.get("scene3d")
    assert first_size is not None
    return DatasetSummary(
        path=tf.parent,
        kind=block.get("kind") if isinstance(block, dict) else None,
        num_frames=len(frames),
        width=first_size[0],
        height=first_size[1],
        num_train=counts["train"],
        num_val=counts["val"],
        num_test=counts["test"],
        has_depth=present["depth_file_path"] > 0,
        has_normals=present["normal_file_path"] > 0,
        has_masks=present["mask_path"] > 0,
        has_stylized=present["stylized_file_path"] > 0,
        num_points=num_points,
        scene_box=box,
        background_color=background,
    )


def _check_splits(tf: Path, meta: dict[str, Any], files: dict[str, int]) -> dict[str, int]:
    known = {str(Path(f)) for f in files}
    if not any(f"{split}_filenames" in meta for split in SPLITS):
        if len(files) < 2:
            raise DataError(tf, "frames", "a dataset without split lists needs at least 2 frames (train and eval)")
        train, evaluation = default_split(list(files))
        return {"train": len(train), "val": len(evaluation), "test": len(evaluation)}
    counts = {}
    for split in SPLITS:
        key = f"{split}_filenames"
        if key not in meta:
            raise DataError(tf, key, "missing: give train_filenames, val_filenames and test_filenames, or none of "
                            "them (nerfstudio's default split)")  # fmt: skip
        names = meta[key]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DataError(tf, key, "must be a list of file paths")
        if not names:
            raise DataError(tf, key, f"the {split} split is empty")
        for j, name in enumerate(names):
            if str(Path(name)) not in known:
                raise DataError(tf, f"{key}[{j}]", f"{name!r} is not the file_path of any frame")
        counts[split] = len(names)
    return counts


def _check_ply(tf: Path, meta: dict[str, Any]) -> int:
    value = meta["ply_file_path"]
    if not isinstance(value, str) or not value:
        raise DataError(tf, "ply_file_path", f"must be a relative file path, got {value!r}")
    ply = tf.parent / value
    if not ply.is_file():
        raise DataError(ply, "ply_file_path", f"file does not exist (named in {tf})")
    with ply.open("rb") as f:
        head = f.read(4096)
    if not head.startswith(b"ply"):
        raise DataError(ply, "ply_file_path", "not a PLY file (no 'ply' magic)")
    text = head.split(b"end_header")[0].decode("ascii", errors="replace")
    for line in text.splitlines():
        parts = line.split()
        if parts[:2] == ["element", "vertex"] and len(parts) == 3 and parts[2].isdigit():
            if int(parts[2]) == 0:
                raise DataError(ply, "ply_file_path", "point cloud holds no points")
            return int(parts[2])
    raise DataError(ply, "ply_file_path", "PLY header has no 'element vertex N' line")


def _check_box(tf: Path, meta: dict[str, Any]) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    try:
        box = np.asarray(meta["scene_box"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(tf, "scene_box", f"must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] ({err})") from err
    if box.shape != (2, 3) or not np.isfinite(box).all():
        problem = f"must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] of finite numbers, got shape {box.shape}"
        raise DataError(tf, "scene_box", problem)
    if not (box[0] < box[1]).all():
        raise DataError(tf, "scene_box", f"minimum {box[0].tolist()} must be below maximum {box[1].tolist()}")
    lo, hi = box.tolist()
    return (lo[0], lo[1], lo[2]), (hi[0], hi[1], hi[2])


def _check_background(tf: Path, meta: dict[str, Any]) -> tuple[float, float, float]:
    value = meta["background_color"]
    try:
        c = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(tf, "background_color", f"must be [r, g, b] in [0, 1] ({err})") from err
    if c.shape != (3,) or not np.isfinite(c).all() or c.min() < 0 or c.max() > 1:
        raise DataError(tf, "background_color", f"must be [r, g, b] with values in [0, 1], got {value!r}")
    return (float(c[0]), float(c[1]), float(c[2]))


def _validate_changing(manifest_path: Path) -> DatasetSummary:
    manifest = load_json(manifest_path)
    steps = manifest.get("steps")
    if not isinstance(steps, list) or not steps:
        raise DataError(manifest_path, "steps", "must be a non-empty list of time steps")
    summaries = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("folder"), str):
            raise DataError(manifest_path, f"steps[{i}].folder", "missing (the step's dataset folder)")
        folder = manifest_path.parent / step["folder"]
        if not (folder / "transforms.json").is_file():
            raise DataError(folder / "transforms.json", None, f"file does not exist (steps[{i}] of {manifest_path})")
        summaries.append(_validate_transforms(folder / "transforms.json"))
    boxes = {s.scene_box for s in summaries}
    if len(boxes) > 1:
        raise DataError(manifest_path, "steps", "the steps' scene_box values differ: they must share one world frame")
    first = summaries[0]
    return DatasetSummary(
        path=manifest_path.parent,
        kind=manifest.get("kind") if isinstance(manifest.get("kind"), str) else None,
        num_frames=sum(s.num_frames for s in summaries),
        width=first.width,
        height=first.height,
        num_train=sum(s.num_train for s in summaries),
        num_val=sum(s.num_val for s in summaries),
        num_test=sum(s.num_test for s in summaries),
        has_depth=all(s.has_depth for s in summaries),
        has_normals=all(s.has_normals for s in summaries),
        has_masks=all(s.has_masks for s in summaries),
        has_stylized=all(s.has_stylized for s in summaries),
        num_points=first.num_points,
        scene_box=first.scene_box,
        background_color=first.background_color,
        steps=tuple(summaries),
    )
