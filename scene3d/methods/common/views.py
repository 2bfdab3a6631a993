"""Generated views written into the run folder as a nerfstudio dataset, as they are made, and read back on resume.

A generation method (Text2NeRF's inpainted views, DreamSpace's panorama crops, QNeRF's edited views, ...) appends
every view it makes to a :class:`GeneratedViewStore` in its run folder::

    <run>/generated_views/
        transforms.json              nerfstudio format (OpenGL camera-to-world, pixels, splits), rewritten per view
        images/view_00000.png        RGB, 8-bit
        depths/view_00000.png        16-bit z-depth in millimetres (nerfstudio's depth_file_path), if the view has one
        generated/view_00000.png     8-bit mask, 255 = pixels the method generated at this view (e.g. inpainted)

Every file is written atomically (temporary name, then rename) and ``transforms.json`` is rewritten last, so a view
is part of the store exactly when ``transforms.json`` lists it: a run killed at any moment leaves a readable store
holding every view that was finished. The folder is an ordinary dataset: ``ns-train s3d-splat-tiny scene3d-data
--data <run>/generated_views`` (or ``nerfstudio-data``, or any nerfstudio method) trains on the generated scene.
The generation mask is stored under its own key (``generated_mask_path``), not nerfstudio's ``mask_path``, because
nerfstudio would then train on the masked pixels only.

Resume: :meth:`GeneratedViewStore.open` reads the views already in a run folder; given the folder of the run being
resumed (``--load-dir`` of another timestamp) it first copies that run's views into the new run's folder (the old
folder is only read), so earlier views are never generated again.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> store = GeneratedViewStore.open(Path(tempfile.mkdtemp()) / "generated_views")
    >>> K = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]])
    >>> v = store.append(GeneratedView(rgb=torch.rand(16, 16, 3), c2w=torch.eye(4), K=K,
    ...                                depth=torch.full((16, 16), 2.0), stage="initial"))
    >>> len(GeneratedViewStore.open(store.folder)), v.index
    (1, 0)
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from scene3d.core.checkpoint import atomic_open
from scene3d.core.errors import DataError
from scene3d.datasets.writer import DEPTH_SCALE, encode_depth

FOLDER_NAME = "generated_views"
"""The store's folder inside a run folder."""
FORMAT = "scene3d.generated_views/1"


@dataclass
class GeneratedView:
    """One generated view: an image, its pinhole camera, and optionally its depth and generation mask."""

    rgb: Float[Tensor, "H W 3"]
    """Colours in ``[0, 1]``."""
    c2w: Float[Tensor, "4 4"]
    """Camera-to-world, OpenGL axes (nerfstudio's ``transform_matrix``)."""
    K: Float[Tensor, "3 3"]
    """Pinhole intrinsics in pixels."""
    depth: Float[Tensor, "H W"] | None = None
    """z-depth in metres (0 = unknown), stored with 1 mm resolution."""
    mask: Bool[Tensor, "H W"] | None = None
    """Pixels the method generated at this view (Text2NeRF: the inpainted region)."""
    stage: str = ""
    """What made the view (``"initial"``, ``"inpainted"``, ...); stored per frame."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Extra JSON-serialisable facts stored with the frame (``{"candidate": 3, "clip_score": 0.91}``)."""
    index: int = -1
    """Position in the store (set by :meth:`GeneratedViewStore.append`)."""

    def __post_init__(self) -> None:
        h, w = self.rgb.shape[:2]
        if self.rgb.ndim != 3 or self.rgb.shape[-1] != 3:
            raise ValueError(f"rgb must have shape (H, W, 3), got {tuple(self.rgb.shape)}")
        if tuple(self.c2w.shape) != (4, 4) or tuple(self.K.shape) != (3, 3):
            raise ValueError(f"c2w must be 4x4 and K 3x3, got {tuple(self.c2w.shape)} and {tuple(self.K.shape)}")
        for name in ("depth", "mask"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (h, w):
                raise ValueError(f"{name} must have shape ({h}, {w}) like rgb, got {tuple(value.shape)}")
        if not bool(torch.isfinite(self.c2w).all()):
            raise ValueError("c2w holds non-finite values")

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def _png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _read_png(path: Path, field_name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataError(path, field_name, "file does not exist (named in transforms.json)")
    try:
        with Image.open(path) as img:
            return np.array(img)
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(path, field_name, f"unreadable image ({err})") from err


def _to_uint8(rgb: Tensor) -> np.ndarray:
    return (rgb.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy()


class GeneratedViewStore:
    """The generated views of one run, on disk (see the module docstring). Use :meth:`open`."""

    def __init__(self, folder: Path, frames: list[dict[str, Any]], top_level: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self._frames = frames
        self._top_level = top_level
        self._cache: dict[int, GeneratedView] = {}

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, folder: str | Path, *, copy_from: str | Path | None = None) -> GeneratedViewStore:
        """The store in ``folder`` (created empty if absent), its views read back from ``transforms.json``.

        Args:
            folder: the store folder (``<run>/generated_views``).
            copy_from: another run's store folder (the run being resumed). When ``folder`` holds no views yet,
                that store's views are copied into ``folder``; the other folder is only read.

        Raises:
            DataError: a ``transforms.json`` that is not a generated-view store, or names missing files.
        """
        folder = Path(folder)
        store = cls._read(folder) if (folder / "transforms.json").is_file() else cls(folder, [], {})
        if copy_from is not None and Path(copy_from).resolve() != folder.resolve() and len(store) == 0:
            source_folder = Path(copy_from)
            if (source_folder / "transforms.json").is_file():
                source = cls._read(source_folder)
                store._top_level = dict(source._top_level)
                for i in range(len(source)):
                    store.append(source.view(i))
        return store

    @classmethod
    def _read(cls, folder: Path) -> GeneratedViewStore:
        tf = folder / "transforms.json"
        try:
            meta = json.loads(tf.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DataError(tf, None, f"not valid JSON ({err})") from err
        if not isinstance(meta, dict) or meta.get("scene3d", {}).get("format") != FORMAT:
            raise DataError(tf, "scene3d.format", f"not a scene3d generated-view store (expected {FORMAT!r})")
        frames = meta.get("frames")
        if not isinstance(frames, list):
            raise DataError(tf, "frames", "must be a list")
        for i, frame in enumerate(frames):
            for key in ("file_path", "transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h"):
                if key not in frame:
                    raise DataError(tf, f"frames[{i}].{key}", "missing")
            for key in ("file_path", "depth_file_path", "generated_mask_path"):
                if key in frame and not (folder / frame[key]).is_file():
                    raise DataError(folder / frame[key], f"frames[{i}].{key}", "file does not exist (named in transforms.json)")
        top = {k: v for k, v in meta.items() if k in ("scene_box", "background_color")}
        return cls(folder, frames, top)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def frames(self) -> list[dict[str, Any]]:
        """The frames of ``transforms.json`` (a copy)."""
        return [dict(f) for f in self._frames]

    def view(self, index: int) -> GeneratedView:
        """View ``index``, decoded from its files (cached)."""
        if not 0 <= index < len(self):
            raise IndexError(f"view index {index} out of range: the store holds {len(self)} views")
        if index in self._cache:
            return self._cache[index]
        f = self._frames[index]
        rgb = _read_png(self.folder / f["file_path"], f"frames[{index}].file_path")[..., :3]
        depth = mask = None
        if "depth_file_path" in f:
            raw = _read_png(self.folder / f["depth_file_path"], f"frames[{index}].depth_file_path")
            depth = torch.from_numpy(raw.astype(np.float32) / DEPTH_SCALE)
        if "generated_mask_path" in f:
            raw = _read_png(self.folder / f["generated_mask_path"], f"frames[{index}].generated_mask_path")
            mask = torch.from_numpy(raw > 127)
        K = torch.tensor([[f["fl_x"], 0.0, f["cx"]], [0.0, f["fl_y"], f["cy"]], [0.0, 0.0, 1.0]], dtype=torch.float32)
        view = GeneratedView(
            rgb=torch.from_numpy(rgb.astype(np.float32) / 255.0),
            c2w=torch.tensor(f["transform_matrix"], dtype=torch.float32),
            K=K, depth=depth, mask=mask, stage=str(f.get("stage", "")), meta=dict(f.get("meta", {})), index=index,
        )  # fmt: skip
        self._cache[index] = view
        return view

    def views(self) -> list[GeneratedView]:
        """Every view, in order."""
        return [self.view(i) for i in range(len(self))]

    # ------------------------------------------------------------------ writing

    def set_scene(self, *, scene_box: Float[Tensor, "2 3"] | None = None, background_color: tuple[float, ...] | None = None) -> None:
        """Record the scene box and background colour in ``transforms.json`` (read by the ``scene3d-data`` parser)."""
        if scene_box is not None:
            self._top_level["scene_box"] = torch.as_tensor(scene_box, dtype=torch.float64).reshape(2, 3).tolist()
        if background_color is not None:
            self._top_level["background_color"] = [float(c) for c in background_color]
        if self._frames:
            self._write_transforms()

    def append(self, view: GeneratedView) -> GeneratedView:
        """Write ``view``'s files, then list it in ``transforms.json``; returns it with its ``index`` set.

        The stored view is what a reader gets back: colours rounded to 8 bits, depth to millimetres.
        """
        index = len(self._frames)
        name = f"view_{index:05d}.png"
        frame: dict[str, Any] = {
            "file_path": f"images/{name}",
            "transform_matrix": view.c2w.detach().double().cpu().tolist(),
            "fl_x": float(view.K[0, 0]), "fl_y": float(view.K[1, 1]), "cx": float(view.K[0, 2]), "cy": float(view.K[1, 2]),
            "w": view.width, "h": view.height,
            "stage": view.stage,
        }  # fmt: skip
        self._write_file(frame["file_path"], _png_bytes(_to_uint8(view.rgb)))
        if view.depth is not None:
            frame["depth_file_path"] = f"depths/{name}"
            self._write_file(frame["depth_file_path"], _png_bytes(encode_depth(view.depth.detach().double().cpu().numpy())))
        if view.mask is not None:
            frame["generated_mask_path"] = f"generated/{name}"
            self._write_file(frame["generated_mask_path"], _png_bytes(view.mask.detach().cpu().numpy().astype(np.uint8) * 255))
        if view.meta:
            json.dumps(view.meta)  # fail before anything is listed if the meta is not JSON
            frame["meta"] = dict(view.meta)
        self._frames.append(frame)
        try:
            self._write_transforms()
        except BaseException:
            self._frames.pop()
            raise
        self._cache.pop(index, None)
        return self.view(index)

    def _write_file(self, relative: str, data: bytes) -> None:
        with atomic_open(self.folder / relative, "wb") as f:
            f.write(data)

    def _write_transforms(self) -> None:
        first = self._frames[0]
        files = [f["file_path"] for f in self._frames]
        meta: dict[str, Any] = {
            "camera_model": "OPENCV",
            **{k: first[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")},
            "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
            "frames": self._frames,
            # every generated view is training data; evaluation renders them back (there are no held-out views)
            "train_filenames": files, "val_filenames": files, "test_filenames": files,
            **self._top_level,
            "scene3d": {
                "format": FORMAT,
                "depth_encoding": "16-bit PNG, z-depth in millimetres, 0 = unknown",
                "generated_mask_encoding": "8-bit PNG, 255 = generated at this view",
            },
        }  # fmt: skip
        with atomic_open(self.folder / "transforms.json", "w") as f:
            f.write(json.dumps(meta, indent=2) + "\n")
