"""Procedural solid textures and the shading model of the synthetic scenes.

Textures are *solid* textures: functions of the object-local 3D hit point, so they need no UV map, move with their
object, and look the same from every view. Shading is deterministic and simple on purpose, so that a small NeRF
can learn it: a hemispherical ambient term, a Lambertian key light with hard shadows and, for ``glossy``
materials only, a mild Blinn-Phong highlight (the one view-dependent effect):

    c = clip(albedo · (a · (0.75 + 0.25 n_z) + k_d · max(0, n·l) · v) + k_s · max(0, n·h)^s · v, 0, 1)

with ``a`` the ambient strength, ``k_d = 1 - a``, ``v`` ∈ {0, 1} the shadow-ray visibility, ``h`` the half vector
between the light and the viewer. Toon materials (used by the stylized renders) quantise ``max(0, n·l)·v`` into
a few flat bands instead.

Example:
    >>> import numpy as np
    >>> tex = Texture("checker", (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), scale=0.5)
    >>> evaluate_texture(tex, np.array([[0.1, 0.1, 0.1], [0.6, 0.1, 0.1]])).tolist()
    [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
"""

from __future__ import annotations

import colorsys
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from jaxtyping import Bool, Float

Pattern = Literal["solid", "checker", "stripes", "waves", "dots", "gradient"]
PATTERNS: tuple[str, ...] = ("solid", "checker", "stripes", "waves", "dots", "gradient")

Color = tuple[float, float, float]


@dataclass(frozen=True)
class Texture:
    """A two-colour solid texture evaluated at object-local points.

    Attributes:
        pattern: ``solid`` (``color_a`` only), ``checker`` (3D checkerboard of cubes of side ``scale``),
            ``stripes`` (hard bands of width ``scale`` along ``axis``), ``waves`` (a smooth sinusoidal blend with
            period ``2·scale`` along ``axis``), ``dots`` (spheres of radius ``0.3·scale`` on a lattice of spacing
            ``scale``), ``gradient`` (a smooth blend ``0.5 + 0.5·tanh(x_axis / scale)``).
        color_a: first colour, RGB in [0, 1].
        color_b: second colour, RGB in [0, 1].
        scale: the pattern's length scale, in object-local units (metres).
        axis: the local axis (0, 1, 2 = x, y, z) of ``stripes``, ``waves`` and ``gradient``.
    """

    pattern: Pattern
    color_a: Color
    color_b: Color
    scale: float = 0.25
    axis: int = 2

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (as written into ``transforms.json``)."""
        d = asdict(self)
        d["color_a"], d["color_b"] = list(self.color_a), list(self.color_b)
        return d

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Texture:
        """Inverse of :meth:`to_json` (``KeyError`` / ``ValueError`` on a malformed entry)."""
        if data["pattern"] not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {data['pattern']!r}")
        a, b = (tuple(float(c) for c in data[k]) for k in ("color_a", "color_b"))
        if len(a) != 3 or len(b) != 3:
            raise ValueError(f"colours must be RGB triples, got {data['color_a']!r} and {data['color_b']!r}")
        return cls(data["pattern"], a, b, float(data.get("scale", 0.25)), int(data.get("axis", 2)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Material:
    """How a surface reflects light.

    Attributes:
        name: ``matte`` (Lambertian), ``glossy`` (Lambertian plus a mild Blinn-Phong highlight) or ``toon``
            (Lambertian quantised into flat bands; the stylized renders use it).
        specular: highlight strength ``k_s`` (0 for matte).
        shininess: Blinn-Phong exponent ``s``.
        toon_levels: number of flat diffuse bands (0 = smooth shading).
    """

    name: Literal["matte", "glossy", "toon"]
    specular: float = 0.0
    shininess: float = 32.0
    toon_levels: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (as written into ``transforms.json``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Material:
        """Inverse of :meth:`to_json`."""
        if data["name"] not in ("matte", "glossy", "toon"):
            raise ValueError(f"material name must be matte, glossy or toon, got {data['name']!r}")
        return cls(data["name"], float(data["specular"]), float(data["shininess"]), int(data["toon_levels"]))


MATTE = Material("matte")
GLOSSY = Material("glossy", specular=0.25, shininess=40.0)
TOON = Material("toon", toon_levels=3)


@dataclass(frozen=True)
class Light:
    """The scene's key light and ambient level.

    Attributes:
        kind: ``directional`` (``vector`` is the unit direction *towards* the light) or ``point`` (``vector`` is
            the light's position).
        vector: direction or position, world coordinates.
        ambient: ambient strength ``a`` in [0, 1]; the key light contributes ``1 - a``.
    """

    kind: Literal["directional", "point"]
    vector: tuple[float, float, float]
    ambient: float = 0.35

    def to_json(self) -> dict[str, Any]:
        """Plain-JSON form (as written into ``transforms.json``)."""
        return {"kind": self.kind, "vector": list(self.vector), "ambient": self.ambient}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Light:
        """Inverse of :meth:`to_json`."""
        if data["kind"] not in ("directional", "point"):
            raise ValueError(f"light kind must be directional or point, got {data['kind']!r}")
        vector = tuple(float(c) for c in data["vector"])
        if len(vector) != 3:
            raise ValueError(f"light vector must have 3 numbers, got {data['vector']!r}")
        return cls(data["kind"], vector, float(data["ambient"]))  # type: ignore[arg-type]


def evaluate_texture(texture: Texture, points: Float[np.ndarray, "N 3"]) -> Float[np.ndarray, "N 3"]:
    """Albedo of ``texture`` at object-local ``points``."""
    a = np.asarray(texture.color_a, dtype=np.float64)
    b = np.asarray(texture.color_b, dtype=np.float64)
    s = float(texture.scale)
    if texture.pattern == "solid":
        return np.broadcast_to(a, points.shape).copy()
    if texture.pattern == "checker":
        # The half-cell offset keeps the cube faces of the checkerboard off the planes z = 0, x = 0, y = 0 where
        # ground planes and symmetric objects would otherwise sit exactly on a colour edge.
        cells = np.floor(points / s + 0.5 + 1e-6).astype(np.int64).sum(axis=-1)
        t = (cells % 2).astype(np.float64)
    elif texture.pattern == "stripes":
        t = (np.floor(points[:, texture.axis] / s + 0.5 + 1e-6).astype(np.int64) % 2).astype(np.float64)
    elif texture.pattern == "waves":
        t = 0.5 + 0.5 * np.sin(np.pi * points[:, texture.axis] / s)
    elif texture.pattern == "dots":
        nearest = np.round(points / s) * s
        t = (np.linalg.norm(points - nearest, axis=-1) < 0.3 * s).astype(np.float64)
    elif texture.pattern == "gradient":
        t = 0.5 + 0.5 * np.tanh(points[:, texture.axis] / s)
    else:
        raise ValueError(f"texture.pattern must be one of {PATTERNS}, got {texture.pattern!r}")
    return a[None] * (1.0 - t[:, None]) + b[None] * t[:, None]


def shade(
    albedo: Float[np.ndarray, "N 3"],
    normals: Float[np.ndarray, "N 3"],
    to_light: Float[np.ndarray, "N 3"],
    to_viewer: Float[np.ndarray, "N 3"],
    visible: Bool[np.ndarray, " N"],
    ambient: float,
    specular: Float[np.ndarray, " N"],
    shininess: Float[np.ndarray, " N"],
    toon_levels: Float[np.ndarray, " N"],
) -> Float[np.ndarray, "N 3"]:
    """Shaded colour (module docstring's equation); all direction arguments are unit vectors."""
    n_dot_l = np.clip((normals * to_light).sum(-1), 0.0, None) * visible
    toon = toon_levels > 0
    if toon.any():
        levels = toon_levels[toon]
        n_dot_l[toon] = np.minimum(np.floor(n_dot_l[toon] * levels + 0.35), levels - 1) / np.maximum(levels - 1, 1)
    ambient_term = ambient * (0.75 + 0.25 * normals[:, 2])
    color = albedo * (ambient_term + (1.0 - ambient) * n_dot_l)[:, None]
    glossy = specular > 0
    if glossy.any():
        half = to_light[glossy] + to_viewer[glossy]
        half /= np.linalg.norm(half, axis=-1, keepdims=True).clip(1e-9)
        n_dot_h = np.clip((normals[glossy] * half).sum(-1), 0.0, None)
        spec = specular[glossy] * n_dot_h ** shininess[glossy] * visible[glossy]
        color[glossy] += spec[:, None]
    return np.clip(color, 0.0, 1.0)


def hsv_color(h: float, s: float, v: float) -> Color:
    """An RGB colour from hue (turns, wraps), saturation and value in [0, 1], rounded to 4 decimals."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (round(r, 4), round(g, 4), round(b, 4))


def random_texture(
    rng: np.random.Generator, *, patterns: tuple[str, ...] = PATTERNS, scale_range: tuple[float, float] = (0.12, 0.3)
) -> Texture:
    """A random two-colour texture with clearly distinct, moderately saturated colours."""
    pattern = str(patterns[int(rng.integers(len(patterns)))])
    hue = float(rng.random())
    color_a = hsv_color(hue, float(rng.uniform(0.45, 0.8)), float(rng.uniform(0.65, 0.95)))
    hue_b = hue + float(rng.uniform(0.25, 0.75))
    color_b = hsv_color(hue_b, float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.45, 0.9)))
    return Texture(
        pattern=pattern,  # type: ignore[arg-type]
        color_a=color_a,
        color_b=color_b,
        scale=round(float(rng.uniform(*scale_range)), 4),
        axis=int(rng.integers(3)),
    )


def stylize_texture(texture: Texture, rng: np.random.Generator) -> Texture:
    """The "stylized" counterpart of ``texture``: a bold, saturated palette and a different pattern.

    The stylized set is a clearly different look on the same geometry (ReGS's reference stylization): hues are
    rotated by a random half turn ± 0.1, colours pushed to full saturation, and the pattern swapped for one of
    stripes / dots / checker at a new scale.
    """
    shift = 0.5 + float(rng.uniform(-0.1, 0.1))
    ha, _, _ = colorsys.rgb_to_hsv(*texture.color_a)
    hb, _, _ = colorsys.rgb_to_hsv(*texture.color_b)
    choices = [p for p in ("stripes", "dots", "checker") if p != texture.pattern]
    pattern = choices[int(rng.integers(len(choices)))]
    return Texture(
        pattern=pattern,  # type: ignore[arg-type]
        color_a=hsv_color(ha + shift, 0.95, 0.95),
        color_b=hsv_color(hb + shift + 0.33, 0.9, 0.35),
        scale=round(float(texture.scale) * float(rng.uniform(0.8, 1.4)), 4),
        axis=(texture.axis + 1) % 3,
    )
