"""The reference view: the image the object is built from, its foreground mask and its background colour.

DreamPolish, like DreamCraft3D and Magic123, starts from "a text prompt and its corresponding generated image"
(Fig. 2): the user gives an image (``--pipeline.image PATH``) or the text-to-image prior makes one at the
reference camera. The geometry stages fit that image at the reference view (RGB and mask losses) while score
distillation shapes the unseen sides.

The foreground mask is the image's alpha channel when it has one. Otherwise (a generated image, a photo on a plain
backdrop) it is the set of pixels whose colour differs from the background colour by more than a threshold, the
background colour being the median of the image's border pixels, followed by a small opening/closing to drop
speckle. DreamCraft3D and Magic123 segment with a pretrained matting model (rembg / carvekit); scene3d has no such
model offline, so this colour-key mask is a documented deviation: it fails for objects that touch the border or
share the backdrop's colour.

Renders composite over the same background colour, so the renders, the reference image and a text-to-image prior
that draws objects on a plain backdrop agree outside the object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from scene3d.core.errors import DataError


@dataclass
class ReferenceImage:
    """The reference view's target at the render size."""

    rgb: Float[Tensor, "H W 3"]
    """Colours in ``[0, 1]``, composited over ``background`` where the mask is 0."""
    mask: Float[Tensor, "H W"]
    """Foreground in ``[0, 1]`` (antialiased at the edges when it comes from alpha)."""
    background: Float[Tensor, "3"]
    """The background colour renders composite over."""


def read_image(path: str | Path) -> np.ndarray:
    """An image file as a float ``(H, W, 3 or 4)`` array in ``[0, 1]`` (8- or 16-bit, grey, RGB, RGBA).

    Raises:
        DataError: the file is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "the reference image does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(img, dtype=np.float32) / 65535.0
                arr = np.repeat(arr[..., None], 3, axis=-1)
            else:
                has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
                arr = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(path, None, f"unreadable reference image ({err})") from err
    if arr.ndim != 3 or arr.shape[0] < 4 or arr.shape[1] < 4:
        raise DataError(path, None, f"the reference image must be at least 4x4 pixels, got shape {arr.shape}")
    return arr


def border_color(rgb: Float[Tensor, "H W 3"], width: int = 2) -> Float[Tensor, "3"]:
    """Median colour of the ``width``-pixel border (the backdrop of an object-centred image)."""
    border = torch.cat([rgb[:width].reshape(-1, 3), rgb[-width:].reshape(-1, 3),
                        rgb[:, :width].reshape(-1, 3), rgb[:, -width:].reshape(-1, 3)])  # fmt: skip
    return border.median(dim=0).values


def color_key_mask(
    rgb: Float[Tensor, "H W 3"], background: Float[Tensor, "3"], threshold: float = 0.08
) -> Bool[Tensor, "H W"]:
    """Pixels farther than ``threshold`` (max over channels) from the background colour, opened then closed with
    a 3×3 window (module docstring)."""
    mask = (rgb - background).abs().amax(-1) > threshold
    m = mask.float()[None, None]
    return _close(_open(m))[0, 0] > 0.5


def _erode(m: Tensor) -> Tensor:
    return -F.max_pool2d(-m, 3, 1, 1)


def _dilate(m: Tensor) -> Tensor:
    return F.max_pool2d(m, 3, 1, 1)


def _open(m: Tensor) -> Tensor:
    return _dilate(_erode(m))


def _close(m: Tensor) -> Tensor:
    return _erode(_dilate(m))


def resize(image: Float[Tensor, "H W C"], width: int, height: int) -> Float[Tensor, "h w C"]:
    """Area-averaged (antialiased) resize of an ``(H, W, C)`` image."""
    x = image.permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).clamp(0.0, 1.0)


def reference_from_array(
    image: np.ndarray | Float[Tensor, "H W C"],
    width: int,
    height: int,
    *,
    background: Float[Tensor, "3"] | None = None,
    key_threshold: float = 0.08,
) -> ReferenceImage:
    """The reference target from an RGB or RGBA image (module docstring).

    Args:
        image: ``(H, W, 3)`` or ``(H, W, 4)`` in ``[0, 1]``; resized to ``width`` × ``height``.
        background: backdrop colour; default white for an RGBA image, the border median otherwise.
        key_threshold: colour-key threshold for images without alpha.

    Raises:
        ValueError: the mask is empty or covers the whole image (no object to build).
    """
    x = torch.as_tensor(np.asarray(image) if not isinstance(image, Tensor) else image, dtype=torch.float32)
    if x.ndim != 3 or x.shape[-1] not in (3, 4):
        raise ValueError(f"image must have shape (H, W, 3) or (H, W, 4), got {tuple(x.shape)}")
    x = resize(x, width, height)
    if x.shape[-1] == 4:
        alpha = x[..., 3]
        bg = torch.ones(3) if background is None else background.float()
        rgb = x[..., :3] * alpha[..., None] + bg * (1.0 - alpha[..., None])
        mask = alpha
    else:
        rgb = x
        bg = border_color(rgb) if background is None else background.float()
        mask = color_key_mask(rgb, bg, key_threshold).float()
    coverage = float(mask.mean())
    if coverage < 1.0 / (width * height) or coverage > 0.98:
        raise ValueError(
            f"the reference image's foreground mask covers {coverage:.1%} of the image: no separable object "
            "(give an RGBA image, or an object on a plain backdrop)"
        )
    return ReferenceImage(rgb=rgb, mask=mask, background=bg)
