"""The stylized reference: reading the image, naming its view, and Ref-NPR-style reference folders.

A reference is one image of the scene restyled (painted over, edited), content-aligned with one view. That view is
given either as a training view (``--pipeline.reference-view frame_00003`` or ``3``), or by a reference folder:

* **Ref-NPR** (``data/ref_case/<case>/``, which ReGS's README points at): ``data_config.json`` with ``style_img``
  (the reference image; a path that does not exist as written is looked up by its file name in the folder) and
  ``tmpl_idx_train`` or ``tmpl_idx_test`` (the index of the view in this dataset's train or test split; the
  other is ``null``). Multi-reference lists are refused: ReGS uses one reference.
* **image + camera**: ``style.png`` (or ``style_img``) with ``camera.json`` (or a ``camera`` block in
  ``data_config.json``) holding one nerfstudio frame: ``transform_matrix`` (4×4 camera-to-world, OpenGL axes, in the
  dataset's frame), ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``. The view need not be a training view.
* ReGS's own ``ref_view.pth`` is a pickled graphdeco ``Camera`` object, which cannot be read safely (it needs
  a full, code-running unpickle and graphdeco's classes); its folder is refused with a message naming ``camera.json``.

Image conversions (documented, never silent about what they do):

* 8-bit or 16-bit PNG/JPEG/…: scaled to ``[0, 1]`` by 255 or 65535 (16-bit is read at full precision);
* an alpha channel: composited over the dataset's background colour (what the renders show where nothing is);
* grey images: repeated to RGB;
* a size different from the view's: refused (ReGS's matching, warping and the reconstruction loss are per pixel;
  resize the reference to the view's size first).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.core.errors import DataError, SettingsError

CONFIG_FILE = "data_config.json"
CAMERA_FILE = "camera.json"
STYLE_FILE = "style.png"


@dataclass(frozen=True)
class ReferenceCamera:
    """A pinhole camera given with the reference (not necessarily a training view)."""

    c2w: Float[Tensor, "4 4"]
    """Camera-to-world, OpenGL axes (nerfstudio's ``transform_matrix``)."""
    K: Float[Tensor, "3 3"]
    width: int
    height: int


@dataclass(frozen=True)
class ReferenceSpec:
    """What a reference folder says: the image, and which view it restyles (exactly one of the three)."""

    image: Path
    train_index: int | None = None
    test_index: int | None = None
    camera: ReferenceCamera | None = None


def read_image(path: str | Path, background: Sequence[float] = (0.0, 0.0, 0.0)) -> Float[Tensor, "H W 3"]:
    """An image as float RGB in ``[0, 1]`` (8- or 16-bit; alpha composited over ``background``; grey repeated).

    Raises:
        DataError: if the file is missing or unreadable, or its type is not 8/16-bit integer.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "reference image does not exist")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(path, None, "cannot be read as an image")
    if raw.dtype == np.uint8:
        img = raw.astype(np.float32) / 255.0
    elif raw.dtype == np.uint16:
        img = raw.astype(np.float32) / 65535.0
    else:
        raise DataError(path, None, f"has {raw.dtype} pixels; expected an 8- or 16-bit image")
    if img.ndim == 2:
        img = img[..., None]
    channels = img.shape[-1]
    if channels in (3, 4):
        img = np.concatenate([img[..., 2::-1], img[..., 3:]], axis=-1)  # BGR(A) -> RGB(A)
    if channels in (1, 2):
        img = np.concatenate([np.repeat(img[..., :1], 3, axis=-1), img[..., 1:]], axis=-1)
    if img.shape[-1] == 4:
        alpha = img[..., 3:]
        bg = np.asarray(background, dtype=np.float32).reshape(1, 1, 3)
        img = img[..., :3] * alpha + bg * (1.0 - alpha)
    if img.shape[-1] != 3:
        raise DataError(path, None, f"has {channels} channels; expected grey, RGB or RGBA")
    return torch.from_numpy(np.ascontiguousarray(img))


def load_reference_image(
    path: str | Path, width: int, height: int, view: str, background: Sequence[float] = (0.0, 0.0, 0.0)
) -> Float[Tensor, "H W 3"]:
    """The reference image, checked against its view's size ``width × height`` (see :func:`read_image`).

    Raises:
        DataError: naming the image when it cannot be read or its size differs from the view's.
    """
    img = read_image(path, background)
    if tuple(img.shape[:2]) != (height, width):
        raise DataError(
            path,
            None,
            f"is {img.shape[1]}x{img.shape[0]} px but the reference view {view} is {width}x{height} px; "
            "the reference must be content-aligned with that view at its size (resize it first)",
        )
    return img


def _view_names(filenames: Sequence[str | Path]) -> list[tuple[str, ...]]:
    return [(str(f), Path(f).name, Path(f).stem) for f in filenames]


def resolve_view(view: str | int, filenames: Sequence[str | Path]) -> int:
    """Index of a view given by index (``3``, ``"3"``) or image name (``frame_00003``, ``frame_00003.png``, or a
    path ending in it).

    Raises:
        ValueError: naming a few of the views that exist when none matches (or the name is ambiguous).
    """
    names = _view_names(filenames)
    text = str(view).strip()
    if isinstance(view, int) or text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(names):
            raise SettingsError("--pipeline.reference-view", f"reference view index must be in [0, {len(names)}), got {i}")
        return i
    hits = [i for i, (full, name, stem) in enumerate(names) if text in (name, stem) or full.endswith("/" + text) or full == text]
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(n[1] for n in names[:4]) + (", ..." if len(names) > 4 else "")
    if not hits:
        raise SettingsError("--pipeline.reference-view", f"reference view '{text}' is not a training view (there are {len(names)}: {shown})")
    raise SettingsError("--pipeline.reference-view", f"reference view '{text}' names {len(hits)} training views; give the index or a longer path")


def _camera(block: object, path: Path, field: str) -> ReferenceCamera:
    if not isinstance(block, dict):
        raise DataError(path, field, "must be an object with transform_matrix, fl_x, fl_y, cx, cy, w, h")
    for key in ("transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h"):
        if key not in block:
            raise DataError(path, f"{field}.{key}" if field else key, "missing")
    c2w = torch.as_tensor(block["transform_matrix"], dtype=torch.float32)
    if c2w.shape != (4, 4) or not bool(torch.isfinite(c2w).all()):
        raise DataError(path, f"{field}.transform_matrix" if field else "transform_matrix", "must be a finite 4x4 matrix")
    K = torch.tensor([[block["fl_x"], 0.0, block["cx"]], [0.0, block["fl_y"], block["cy"]], [0.0, 0.0, 1.0]], dtype=torch.float32)
    return ReferenceCamera(c2w=c2w, K=K, width=int(block["w"]), height=int(block["h"]))


def read_reference_folder(folder: str | Path) -> ReferenceSpec:
    """Read a Ref-NPR-style reference folder (see the module docstring).

    Raises:
        DataError: naming the file and field that is missing or malformed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, None, "reference folder does not exist")
    config_path = folder / CONFIG_FILE
    config: dict = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(config_path, None, f"is not valid JSON ({err})") from err
        if not isinstance(config, dict):
            raise DataError(config_path, None, "must hold a JSON object")
    image = folder / STYLE_FILE
    if "style_img" in config:
        style = config["style_img"]
        if isinstance(style, list):
            raise DataError(config_path, "style_img", f"lists {len(style)} references; ReGS uses exactly one")
        image = Path(str(style))
        if not image.is_absolute():
            image = folder / image if (folder / image).is_file() else folder / image.name
    if not image.is_file():
        raise DataError(image, None, "reference image does not exist (data_config.json 'style_img', or style.png)")

    camera = None
    camera_path = folder / CAMERA_FILE
    if "camera" in config:
        camera = _camera(config["camera"], config_path, "camera")
    elif camera_path.is_file():
        try:
            block = json.loads(camera_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(camera_path, None, f"is not valid JSON ({err})") from err
        camera = _camera(block, camera_path, "")
    if camera is not None:
        return ReferenceSpec(image=image, camera=camera)

    train, test = config.get("tmpl_idx_train"), config.get("tmpl_idx_test")
    for key, value in (("tmpl_idx_train", train), ("tmpl_idx_test", test)):
        if isinstance(value, list):
            raise DataError(config_path, key, f"lists {len(value)} views; ReGS uses exactly one reference")
        if value is not None and not isinstance(value, int):
            raise DataError(config_path, key, f"must be an integer view index or null, got {value!r}")
    if train is not None and test is not None:
        raise DataError(config_path, "tmpl_idx_train", "and tmpl_idx_test are both set; set exactly one (the other null)")
    if train is None and test is None:
        if (folder / "ref_view.pth").is_file():
            raise DataError(
                folder / "ref_view.pth",
                None,
                "is a pickled graphdeco Camera, which scene3d does not unpickle (unsafe, and it needs graphdeco's "
                f"code); write the reference camera as {CAMERA_FILE} (transform_matrix, fl_x, fl_y, cx, cy, w, h) instead",
            )
        raise DataError(
            config_path if config_path.is_file() else folder,
            "tmpl_idx_train" if config_path.is_file() else None,
            f"names no reference view: set tmpl_idx_train or tmpl_idx_test in {CONFIG_FILE}, or add {CAMERA_FILE}",
        )
    return ReferenceSpec(image=image, train_index=train, test_index=test)
