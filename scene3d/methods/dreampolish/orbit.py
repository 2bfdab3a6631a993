"""Cameras around the object: the reference view, random novel views, zoomed polishing views, view-dependent prompts.

Object-centric text/image-to-3D (DreamFusion, Magic123, DreamCraft3D, DreamPolish) looks at the object from cameras
on a sphere around it. scene3d's conventions apply: world up +Z, OpenGL camera-to-world. A camera at azimuth φ and
elevation θ, distance ``d`` from the object centre ``o`` sits at

    eye = o + d · (cos θ sin φ, −cos θ cos φ, sin θ),

looking at ``o``: azimuth 0 is the *front* (the reference view's side, looking along +Y), azimuth ±180° the back.

View-dependent prompts (DreamFusion Sec. 3.2, threestudio's thresholds): ``"<prompt>, overhead view"`` above 60°
elevation, else ``front`` within ±45° of azimuth 0, ``back`` within 45° of 180°, ``side`` between. They are the
documented stand-in for a view-conditioned prior (Zero-1-to-3 in DreamCraft3D; DreamPolish's exact model is not
named in what could be read of the paper), which diffusers does not ship.

Surface polishing renders from viewpoints with *varying field of view* (DreamPolish, Sec. "surface polishing"): a
narrow field of view brought closer shows a part of the object at higher resolution, a wide one the whole object.
:func:`sample_polish_cameras` draws the field of view, then the distance that frames the object's bounding sphere
at a random zoom, and aims at a random point near the centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import intrinsics_from_fov, look_at

OVERHEAD_ELEVATION_DEG = 60.0
"""Above this elevation a view is ``overhead`` (threestudio's ``overhead_threshold``)."""
FRONT_HALF_WIDTH_DEG = 45.0
"""Azimuths within this of 0° are ``front`` (threestudio's ``front_threshold``)."""
BACK_HALF_WIDTH_DEG = 45.0
"""Azimuths within this of 180° are ``back`` (threestudio's ``back_threshold``)."""


def orbit_eye(
    azimuth_deg: Float[Tensor, " B"], elevation_deg: Float[Tensor, " B"], distance: Float[Tensor, " B"], center: Float[Tensor, "3"]
) -> Float[Tensor, "B 3"]:
    """Camera positions on the orbit (module docstring)."""
    az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    direction = torch.stack([torch.cos(el) * torch.sin(az), -torch.cos(el) * torch.cos(az), torch.sin(el)], dim=-1)
    return center + distance[:, None] * direction


def orbit_c2w(
    azimuth_deg: Float[Tensor, " B"],
    elevation_deg: Float[Tensor, " B"],
    distance: Float[Tensor, " B"],
    center: Float[Tensor, "3"],
    target: Float[Tensor, "B 3"] | None = None,
) -> Float[Tensor, "B 4 4"]:
    """Camera-to-world matrices of orbit cameras looking at ``target`` (default: the centre).

    Elevations are kept within ±89.9° so the roll stays defined (``look_at`` with world up +Z).
    """
    elevation_deg = elevation_deg.clamp(-89.9, 89.9)
    eye = orbit_eye(azimuth_deg, elevation_deg, distance, center)
    aim = center.expand_as(eye) if target is None else target
    return look_at(eye, aim)


def view_prompt(prompt: str, azimuth_deg: float, elevation_deg: float) -> str:
    """DreamFusion's view-dependent prompt: ``"<prompt>, front view"`` / ``side`` / ``back`` / ``overhead``."""
    if elevation_deg > OVERHEAD_ELEVATION_DEG:
        return f"{prompt}, overhead view"
    az = (azimuth_deg + 180.0) % 360.0 - 180.0
    if abs(az) <= FRONT_HALF_WIDTH_DEG:
        return f"{prompt}, front view"
    if abs(az) >= 180.0 - BACK_HALF_WIDTH_DEG:
        return f"{prompt}, back view"
    return f"{prompt}, side view"


@dataclass(frozen=True)
class OrbitCameras:
    """A batch of orbit cameras and how they were drawn."""

    c2w: Float[Tensor, "B 4 4"]
    K: Float[Tensor, "B 3 3"]
    width: int
    height: int
    azimuth_deg: Float[Tensor, " B"]
    elevation_deg: Float[Tensor, " B"]
    fov_deg: Float[Tensor, " B"]

    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    def prompts(self, prompt: str) -> list[str]:
        """One view-dependent prompt per camera."""
        return [view_prompt(prompt, float(a), float(e)) for a, e in zip(self.azimuth_deg, self.elevation_deg)]


def _intrinsics(fov_deg: Tensor, width: int, height: int) -> Tensor:
    return torch.stack([intrinsics_from_fov(float(f), width, height) for f in fov_deg])


def _uniform(lo: float, hi: float, n: int, generator: torch.Generator | None) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def reference_camera(
    center: Float[Tensor, "3"], distance: float, elevation_deg: float, fov_deg: float, width: int, height: int
) -> OrbitCameras:
    """The reference view: azimuth 0 (the front), the given elevation, distance and field of view."""
    one = torch.ones(1)
    c2w = orbit_c2w(0.0 * one, elevation_deg * one, distance * one, center)
    return OrbitCameras(c2w, _intrinsics(fov_deg * one, width, height), width, height, 0.0 * one,
                        elevation_deg * one, fov_deg * one)  # fmt: skip


def sample_orbit_cameras(
    n: int,
    center: Float[Tensor, "3"],
    width: int,
    height: int,
    *,
    distance_range: tuple[float, float],
    elevation_range_deg: tuple[float, float],
    fov_range_deg: tuple[float, float],
    azimuth_range_deg: tuple[float, float] = (-180.0, 180.0),
    generator: torch.Generator | None = None,
) -> OrbitCameras:
    """``n`` novel views: azimuth, elevation, distance and field of view uniform in their ranges.

    Elevation is drawn uniformly in degrees (DreamFusion draws it uniformly too; threestudio optionally samples
    uniformly on the sphere instead).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    az = _uniform(*azimuth_range_deg, n, generator)
    el = _uniform(*elevation_range_deg, n, generator)
    dist = _uniform(*distance_range, n, generator)
    fov = _uniform(*fov_range_deg, n, generator)
    c2w = orbit_c2w(az, el, dist, center.cpu())
    return OrbitCameras(c2w, _intrinsics(fov, width, height), width, height, az, el, fov)


def sample_polish_cameras(
    n: int,
    center: Float[Tensor, "3"],
    radius: float,
    width: int,
    height: int,
    *,
    fov_range_deg: tuple[float, float],
    zoom_range: tuple[float, float],
    elevation_range_deg: tuple[float, float],
    aim_jitter: float = 0.3,
    generator: torch.Generator | None = None,
) -> OrbitCameras:
    """``n`` views with varying field of view for surface polishing (module docstring).

    The distance frames the bounding sphere of ``radius`` (``d = r / sin(fov/2)``) scaled by a zoom factor drawn
    from ``zoom_range`` (below 1: closer than framing, a part of the object fills the view); the camera aims at the
    centre moved by up to ``aim_jitter · radius`` on each axis. Distances stay outside the sphere.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    az = _uniform(-180.0, 180.0, n, generator)
    el = _uniform(*elevation_range_deg, n, generator)
    fov = _uniform(*fov_range_deg, n, generator)
    zoom = _uniform(*zoom_range, n, generator)
    framing = radius / torch.sin(torch.deg2rad(fov) / 2.0)
    dist = torch.maximum(framing * zoom, torch.full_like(framing, 1.05 * radius))
    aim = center.cpu() + aim_jitter * radius * (2.0 * torch.rand(n, 3, generator=generator) - 1.0)
    c2w = orbit_c2w(az, el, dist, center.cpu(), target=aim)
    return OrbitCameras(c2w, _intrinsics(fov, width, height), width, height, az, el, fov)


def fov_for_radius(radius: float, distance: float, margin: float = 1.1) -> float:
    """Vertical field of view (degrees) at which a sphere of ``radius`` at ``distance`` fills the view with a margin."""
    if distance <= radius:
        raise ValueError(f"distance {distance} must exceed the radius {radius}")
    return math.degrees(2.0 * math.asin(min(1.0, margin * radius / distance)))
