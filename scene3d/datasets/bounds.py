"""Where a capture's scene lies: a scene box for datasets that give none, and how far the far field reaches.

A dataset without ``scene_box`` (what ``ns-process-data`` writes) gets the box of its *region of interest*: the
camera centres, the points its cameras look at (the least-squares point nearest to every optical axis, nerfstudio's
``focus`` centre) and, when the dataset has a point cloud, the points seen inside the cameras' frusta that lie near
that region. Two things it never does: return a degenerate box (a forward-facing capture's camera centres lie on a
plane; the box then reaches out to what the cameras look at), or guess silently when the cameras neither converge
nor come with points (:class:`~scene3d.core.errors.DataError`, naming ``scene_box``).

:func:`far_field_scale` says how far beyond the box the scene goes, as the ratio of the outer to the inner box:
Instant-NGP's ``aabb_scale`` when the dataset gives it, else the distance of the far points of its point cloud.

Everything here is numpy on camera-to-world matrices (OpenGL axes: a camera looks along its −Z) and imports
neither torch nor nerfstudio.

Example:
    >>> import numpy as np
    >>> from scene3d.datasets.bounds import focus_point
    >>> c2w = np.stack([np.eye(4)] * 2); c2w[0, :3, 3] = [0, 0, 2]; c2w[1, :3, :3] = [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]
    >>> c2w[1, :3, 3] = [2, 0, 0]; focus_point(c2w).round(6).tolist()
    [0.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from jaxtyping import Float

from scene3d.core.errors import DataError

MIN_FAR_FIELD_SCALE = 4.0
"""Smallest outer/inner box ratio derived from points (surfaces without features, like the sky, have no points)."""
DEFAULT_FAR_FIELD_SCALE = 16.0
"""Outer/inner box ratio when a dataset says nothing about its far field (Instant-NGP's ``aabb_scale`` of 16)."""
MAX_FAR_FIELD_SCALE = 128.0
"""Largest ratio (Instant-NGP's largest ``aabb_scale``)."""


def focus_point(c2w: Float[np.ndarray, "C 4 4"]) -> Float[np.ndarray, "3"]:
    """The point nearest (least squares) to every camera's optical axis: ``argmin_p Σ ‖(I − d dᵀ)(p − o)‖²``."""
    origins = c2w[:, :3, 3]
    dirs = -c2w[:, :3, 2]
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    a = proj.sum(0)
    b = (proj @ origins[:, :, None]).sum(0)[:, 0]
    return np.linalg.lstsq(a, b, rcond=None)[0]


def _axes_converge(c2w: np.ndarray) -> bool:
    """Whether the optical axes span enough directions for :func:`focus_point` to be well defined."""
    dirs = -c2w[:, :3, 2]
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    a = (np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]).sum(0) / len(dirs)
    eig = np.linalg.eigvalsh(a)
    # all directions equal: the smallest eigenvalue is 0; a forward-facing capture spanning ±10° has ~0.03
    return bool(eig[0] > 1e-3)


def in_frusta(
    points: Float[np.ndarray, "N 3"], c2w: Float[np.ndarray, "C 4 4"], K: Float[np.ndarray, "C 3 3"],
    width: np.ndarray, height: np.ndarray, *, chunk: int = 64,
) -> np.ndarray:  # fmt: skip
    """How many cameras see each point (in front of the camera, inside its image)."""
    seen = np.zeros(len(points), dtype=np.int64)
    for start in range(0, len(c2w), chunk):
        m = c2w[start : start + chunk]
        rot, t = m[:, :3, :3], m[:, :3, 3]
        cam = np.einsum("cji,cnj->cni", rot, points[None] - t[:, None])  # world -> camera (OpenGL axes)
        z = -cam[..., 2]
        k = K[start : start + chunk]
        u = k[:, None, 0, 0] * cam[..., 0] / np.maximum(z, 1e-9) + k[:, None, 0, 2]
        v = -k[:, None, 1, 1] * cam[..., 1] / np.maximum(z, 1e-9) + k[:, None, 1, 2]
        w = np.asarray(width[start : start + chunk], dtype=np.float64).reshape(-1, 1)
        h = np.asarray(height[start : start + chunk], dtype=np.float64).reshape(-1, 1)
        seen += ((z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)).sum(0)
    return seen


def scene_box_from_cameras(
    c2w: Float[np.ndarray, "C 4 4"],
    K: Float[np.ndarray, "C 3 3"],
    width: np.ndarray,
    height: np.ndarray,
    points: Float[np.ndarray, "N 3"] | None = None,
    *,
    source: Path | None = None,
) -> Float[np.ndarray, "2 3"]:
    """The region-of-interest box of a capture without ``scene_box`` (see the module docstring).

    Args:
        c2w: camera-to-world matrices (OpenGL axes).
        K: pinhole intrinsics per camera.
        width, height: image size per camera.
        points: the dataset's point cloud, when it has one.
        source: the ``transforms.json`` named in errors.

    Raises:
        DataError: the cameras neither converge on a region nor come with points seen in their frusta.
    """
    centres = c2w[:, :3, 3]
    parts = [centres]
    reach = None
    if _axes_converge(c2w):
        focus = focus_point(c2w)
        dist = np.linalg.norm(centres - focus, axis=-1)
        reach = float(np.median(dist))
        if np.isfinite(focus).all() and reach > 0:
            # what the cameras look at: a cube about the focus point, half the typical camera distance wide
            parts.append(focus[None] + 0.5 * reach * np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    if points is not None and len(points):
        seen = points[in_frusta(points, c2w, K, width, height) > 0]
        if len(seen):
            depth = np.linalg.norm(seen[:, None, :] - centres[None, :: max(1, len(centres) // 16)], axis=-1).min(1)
            # the points as near as most of what the cameras see: the far field goes to the cascades
            near = seen[depth <= np.quantile(depth, 0.5)] if reach is None else seen[depth <= 1.5 * reach]
            if len(near):
                parts.append(np.quantile(near, [0.02, 0.98], axis=0))
    if len(parts) == 1:
        raise DataError(
            source or Path("transforms.json"), "scene_box",
            "missing, and it cannot be derived: the cameras do not look at a common region and the dataset has no "
            "points seen by them (give scene_box [[xmin, ymin, zmin], [xmax, ymax, zmax]] or a ply_file_path)",
        )  # fmt: skip
    allp = np.concatenate(parts, axis=0)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    pad = 0.05 * float((hi - lo).max())
    lo, hi = lo - pad, hi + pad
    # never degenerate: every side at least a tenth of the longest
    side = np.maximum(hi - lo, 0.1 * float((hi - lo).max()))
    mid = (lo + hi) / 2
    return np.stack([mid - side / 2, mid + side / 2])


def far_field_scale(
    box: Float[np.ndarray, "2 3"], points: Float[np.ndarray, "N 3"] | None = None, aabb_scale: float | int | None = None
) -> float:
    """Ratio of the far field's outer box to ``box`` (both about the centre of ``box``'s bounding cube).

    ``aabb_scale`` (Instant-NGP's key) when given; else the 99th percentile of the points' ``L∞`` distance from the
    box centre in units of the cube's half side, at least :data:`MIN_FAR_FIELD_SCALE`; else
    :data:`DEFAULT_FAR_FIELD_SCALE`. Clamped to ``[1, MAX_FAR_FIELD_SCALE]``.
    """
    if aabb_scale is not None:
        return float(min(max(float(aabb_scale), 1.0), MAX_FAR_FIELD_SCALE))
    if points is None or not len(points):
        return DEFAULT_FAR_FIELD_SCALE
    centre = (box[0] + box[1]) / 2
    half = float((box[1] - box[0]).max()) / 2
    reach = float(np.quantile(np.abs(points - centre).max(axis=-1) / half, 0.99))
    return float(min(max(reach * 1.05, MIN_FAR_FIELD_SCALE), MAX_FAR_FIELD_SCALE))


def cascade_levels(scale: float | int) -> int:
    """Occupancy cascade levels whose outer box (×2 per level) reaches ``scale`` times the inner one."""
    if not scale >= 1.0 or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number >= 1, got {scale!r}")
    return 1 + max(0, math.ceil(math.log2(scale) - 1e-9))
