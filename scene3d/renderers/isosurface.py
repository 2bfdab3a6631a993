"""Iso-surfaces of scalar fields: sample a field on a regular grid, extract a level set by marching cubes.

Used to mesh a NeRF's density (``s3d export mesh``), to hand a density field over to an SDF (DreamPolish) and to
compare shapes. Marching cubes is scikit-image's (Lewiner et al. 2003), imported on first use.

Example:
    >>> import torch
    >>> lower, upper = torch.tensor([-1.0, -1, -1]), torch.tensor([1.0, 1, 1])
    >>> values = sample_grid(lambda x: x.norm(dim=-1), lower, upper, (24, 24, 24))
    >>> verts, faces = marching_cubes(values, lower, upper, 0.5, inside="low")
    >>> bool(abs(float(((verts ** 2).sum(1) ** 0.5).mean()) - 0.5) < 0.01)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


def grid_shape(lower: Float[Tensor, "3"], upper: Float[Tensor, "3"], resolution: int) -> tuple[int, int, int]:
    """Samples per axis: ``resolution`` along the longest side of the box, the same spacing on the others."""
    extent = (upper - lower).tolist()
    step = max(extent) / (resolution - 1)
    return tuple(max(2, int(round(e / step)) + 1) for e in extent)  # type: ignore[return-value]


@torch.no_grad()
def sample_grid(
    fn: Callable[[Tensor], Tensor],
    lower: Float[Tensor, "3"],
    upper: Float[Tensor, "3"],
    shape: tuple[int, int, int],
    *,
    skip_fn: Callable[[Tensor], Tensor] | None = None,
    fill: float = 0.0,
    chunk: int = 1 << 16,
) -> np.ndarray:
    """``fn`` on a regular ``shape`` grid spanning ``[lower, upper]`` (corners included), (x, y, z) order, float32.

    ``skip_fn`` (e.g. an occupancy grid's ``query``) returns ``True`` for points worth evaluating; the others get
    ``fill``.
    """
    device = lower.device
    axes = [torch.linspace(float(lower[i]), float(upper[i]), shape[i], device=device) for i in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    values = torch.full((points.shape[0],), fill, device=device)
    for start in range(0, points.shape[0], chunk):
        part = points[start : start + chunk]
        if skip_fn is None:
            values[start : start + chunk] = fn(part).reshape(-1).to(values)
        else:
            keep = skip_fn(part)
            if bool(keep.any()):
                values[start : start + chunk][keep] = fn(part[keep]).reshape(-1).to(values)
    return values.reshape(shape).cpu().numpy().astype(np.float32)


def marching_cubes(
    values: np.ndarray,
    lower: Float[Tensor, "3"],
    upper: Float[Tensor, "3"],
    level: float,
    *,
    inside: Literal["high", "low"] = "high",
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """World-space vertices (float32) and outward-wound faces (int64) of the ``level`` set of a :func:`sample_grid`.

    Args:
        values: the sampled field.
        lower, upper: the box the grid spans.
        level: the iso-value.
        inside: ``"high"`` when values above ``level`` are inside (a density), ``"low"`` when below (an SDF).
        mask: optional boolean array of ``values``' shape, scikit-image's ``mask``: the cube spanning indices
            ``[i, i + 1]`` (per axis) is marched only where ``mask[i + 1, j + 1, k + 1]`` holds (e.g.
            :func:`scene3d.renderers.tsdf.observed_cubes`).

    Raises:
        ValueError: ``level`` is outside the range of ``values`` (no surface).
    """
    from skimage.measure import marching_cubes as skimage_marching_cubes

    if not float(values.min()) < level < float(values.max()):
        raise ValueError(
            f"level {level:.4g} is outside the field's range [{values.min():.4g}, {values.max():.4g}]: no surface"
        )
    lo, hi = lower.cpu().numpy(), upper.cpu().numpy()
    spacing = tuple(float(s) for s in (hi - lo) / (np.asarray(values.shape) - 1))
    verts, faces, _, _ = skimage_marching_cubes(values, level=level, spacing=spacing, mask=mask)
    # on an (x, y, z) grid with increasing axes, scikit-image winds the faces of a "high inside" field inward
    if inside == "high":
        faces = faces[:, ::-1]
    return (verts + lo).astype(np.float32), faces.astype(np.int64).copy()
