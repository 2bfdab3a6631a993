"""Is a new scan in the same world frame and scale as the scans a run has already seen?

CLNeRF assumes every scan's cameras live in one world frame (WAT registers all capture times in one COLMAP model).
A scan reconstructed on its own (another COLMAP run, another ``ns-process-data``) has an arbitrary origin, rotation
and scale; training on it would silently overwrite the scene with a misplaced copy. The check compares summary
statistics of the new scan's training cameras with those of every stored pose (the run records them), and the
scene boxes when both datasets declare one:

* **scale**: the camera spread ``s = median_i |c_i − c̄|`` (distance of the camera centres to their centroid) must
  agree within a factor ``max_scale_ratio`` (default 2);
* **position**: the centroid offset ``|c̄_new − c̄_old|`` must be at most ``max_offset`` (default 1.0) times
  ``L = max(s_old, s_new, r_box)``, ``r_box`` being the half diagonal of the stored scene box;
* **orientation**: the mean camera up vector (the c2w ``+Y`` column) must turn by at most ``max_up_angle_deg``
  (default 60°): captures of one place are made upright, a re-registered world is not;
* **scene box**: when both scans come with a declared scene box, the boxes' centres must be within
  ``max_offset`` half diagonals of each other and their diagonals within ``max_scale_ratio``.

The thresholds are loose on purpose: scans of one place are taken along different paths (the ``changing`` synthetic
scenes vary radius, elevation band and azimuth per step), while a separately reconstructed scan is typically off by
a large factor in scale or by a rotation of tens of degrees. A scan that fails raises ``DataError`` with the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor


@dataclass(frozen=True)
class FrameStats:
    """Summary of a set of camera poses (and the declared scene box) that the frame check compares."""

    centroid: tuple[float, float, float]
    """Mean camera centre."""
    spread: float
    """Median distance of the camera centres to their centroid."""
    up: tuple[float, float, float]
    """Mean camera up vector (c2w ``+Y`` column, OpenGL axes), not normalised."""
    num_cameras: int
    scene_box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    """The declared scene box (min corner, max corner), when the data has one."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return {
            "centroid": list(self.centroid), "spread": self.spread, "up": list(self.up), "num_cameras": self.num_cameras,
            "scene_box": None if self.scene_box is None else [list(self.scene_box[0]), list(self.scene_box[1])],
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FrameStats:
        """Inverse of :meth:`to_json`."""
        box = data.get("scene_box")
        return cls(
            centroid=tuple(float(v) for v in data["centroid"]),  # type: ignore[arg-type]
            spread=float(data["spread"]),
            up=tuple(float(v) for v in data["up"]),  # type: ignore[arg-type]
            num_cameras=int(data["num_cameras"]),
            scene_box=None if box is None else (tuple(map(float, box[0])), tuple(map(float, box[1]))),  # type: ignore[arg-type]
        )


def frame_stats(camera_to_worlds: Float[Tensor, "N 3 4"], scene_box: Float[Tensor, "2 3"] | None = None) -> FrameStats:
    """Summarise camera poses (c2w, OpenGL axes) for :func:`check_same_frame`."""
    if camera_to_worlds.ndim != 3 or camera_to_worlds.shape[1:] != (3, 4) or camera_to_worlds.shape[0] == 0:
        raise ValueError(f"camera_to_worlds must have shape (N, 3, 4) with N >= 1, got {tuple(camera_to_worlds.shape)}")
    c2w = camera_to_worlds.detach().double().cpu()
    centres = c2w[:, :, 3]
    centroid = centres.mean(0)
    spread = float((centres - centroid).norm(dim=-1).median())
    up = c2w[:, :, 1].mean(0)
    box = None
    if scene_box is not None:
        b = scene_box.detach().double().cpu()
        box = (tuple(float(v) for v in b[0]), tuple(float(v) for v in b[1]))
    return FrameStats(
        centroid=tuple(float(v) for v in centroid),  # type: ignore[arg-type]
        spread=spread, up=tuple(float(v) for v in up), num_cameras=int(c2w.shape[0]), scene_box=box,  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class FrameCheck:
    """The outcome of :func:`check_same_frame`: ``problems`` is empty when the frames agree."""

    problems: tuple[str, ...]
    scale_ratio: float
    offset: float
    """Centroid offset in units of the reference length (see :func:`check_same_frame`)."""
    up_angle_deg: float

    @property
    def ok(self) -> bool:
        """Whether no check failed."""
        return not self.problems


def _box_size(box: tuple[tuple[float, ...], tuple[float, ...]]) -> tuple[Tensor, float]:
    lo, hi = torch.tensor(box[0], dtype=torch.float64), torch.tensor(box[1], dtype=torch.float64)
    return (lo + hi) / 2, float((hi - lo).norm() / 2)


def check_same_frame(
    old: FrameStats,
    new: FrameStats,
    *,
    max_scale_ratio: float = 2.0,
    max_offset: float = 1.0,
    max_up_angle_deg: float = 60.0,
) -> FrameCheck:
    """Compare a new scan's cameras with the stored ones (module docstring).

    The centroid offset is measured in units of ``L = max(s_old, s_new, r_box)``, where ``s`` is the camera
    spread and ``r_box`` the half diagonal of the stored scene box (0 without one): a new path of cameras may
    circle the same place at another distance, but its centre should not move by more than the size of the scene.
    """
    if max_scale_ratio < 1.0 or max_offset <= 0.0 or not 0.0 < max_up_angle_deg <= 180.0:
        raise ValueError(
            f"need max_scale_ratio >= 1, max_offset > 0, 0 < max_up_angle_deg <= 180, got {max_scale_ratio}, "
            f"{max_offset}, {max_up_angle_deg}"
        )
    problems: list[str] = []
    eps = 1e-9
    if old.num_cameras >= 2 and new.num_cameras >= 2:
        scale_ratio = max(new.spread, eps) / max(old.spread, eps)
    else:  # one camera has no spread: compare distances to the stored box centre instead
        scale_ratio = 1.0
    if not 1.0 / max_scale_ratio <= scale_ratio <= max_scale_ratio:
        problems.append(
            f"camera spread (median distance to the cameras' centroid) is {new.spread:.4g}, the stored scans' is "
            f"{old.spread:.4g}: ratio {scale_ratio:.3g} outside [1/{max_scale_ratio:g}, {max_scale_ratio:g}] (another scale?)"
        )
    box_radius = 0.0 if old.scene_box is None else _box_size(old.scene_box)[1]
    length = max(old.spread, new.spread, box_radius, eps)
    offset = float((torch.tensor(new.centroid) - torch.tensor(old.centroid)).norm()) / length
    if offset > max_offset:
        problems.append(
            f"camera centroid moved by {offset:.3g} scene sizes (limit {max_offset:g}): "
            f"{_fmt(new.centroid)} vs stored {_fmt(old.centroid)} (another origin?)"
        )
    up_old, up_new = torch.tensor(old.up), torch.tensor(new.up)
    if float(up_old.norm()) > 1e-6 and float(up_new.norm()) > 1e-6:
        cos = float(torch.dot(up_old, up_new) / (up_old.norm() * up_new.norm()))
        up_angle = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    else:
        up_angle = 0.0
    if up_angle > max_up_angle_deg:
        problems.append(
            f"mean camera up vector turned by {up_angle:.1f} degrees (limit {max_up_angle_deg:g}): "
            f"{_fmt(new.up)} vs stored {_fmt(old.up)} (another orientation?)"
        )
    if old.scene_box is not None and new.scene_box is not None:
        c_old, r_old = _box_size(old.scene_box)
        c_new, r_new = _box_size(new.scene_box)
        ratio = max(r_new, eps) / max(r_old, eps)
        if not 1.0 / max_scale_ratio <= ratio <= max_scale_ratio:
            problems.append(f"scene box half diagonal is {r_new:.4g}, the stored one {r_old:.4g} (another scale?)")
        box_offset = float((c_new - c_old).norm()) / max(r_old, eps)
        if box_offset > max_offset:
            problems.append(
                f"scene box centre {_fmt(c_new.tolist())} is {box_offset:.3g} half diagonals from the stored "
                f"{_fmt(c_old.tolist())} (another origin?)"
            )
    return FrameCheck(problems=tuple(problems), scale_ratio=scale_ratio, offset=offset, up_angle_deg=up_angle)


def _fmt(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"


Box = tuple[tuple[float, float, float], tuple[float, float, float]]


def check_scan_sequence(
    stored: Float[Tensor, "N 3 4"],
    stored_box: Box | None,
    scans: list[tuple[Float[Tensor, "M 3 4"], Float[Tensor, "2 3"] | None]],
    **limits: float,
) -> tuple[int | None, FrameCheck | None, Box | None]:
    """Check new scans in order, each against every stored pose and the new scans before it.

    Args:
        stored: camera-to-worlds already in the run (may be empty).
        stored_box: the run's declared scene box, if any.
        scans: each new scan's camera-to-worlds and declared scene box (``None`` when the box is derived).
        limits: ``max_scale_ratio``, ``max_offset``, ``max_up_angle_deg`` of :func:`check_same_frame`.

    Returns:
        ``(index, check, box)``: the index of the first scan that fails and its check (``None, None`` when all
        pass), and the declared box the run has after these scans.
    """
    stored = stored.detach().cpu().float()
    box_so_far = stored_box
    for k, (c2w, box) in enumerate(scans):
        if len(stored) > 0:
            old = frame_stats(stored, None)
            old = FrameStats(old.centroid, old.spread, old.up, old.num_cameras, box_so_far)
            check = check_same_frame(old, frame_stats(c2w, box), **limits)
            if not check.ok:
                return k, check, box_so_far
        stored = torch.cat([stored, c2w.detach().cpu().float()])
        if box_so_far is None and box is not None:
            box_so_far = (tuple(float(v) for v in box[0]), tuple(float(v) for v in box[1]))  # type: ignore[assignment]
    return None, None, box_so_far
