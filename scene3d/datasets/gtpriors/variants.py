"""Scene variants the ``groundtruth:`` priors answer from, and the keyword rules that map a prompt onto them.

* **look** (plain or stylized texture set): :func:`look_for_prompt`;
* **an extra object in a box** (Blended-NeRF's edit): :func:`insert_object`, its shape by :func:`shape_for_prompt`;
* **a lone object** (DreamPolish): :func:`lone_object`;
* a panorama from any centre needs no variant: an equirectangular :class:`~scene3d.core.cameras.CameraBatch`.

Every function returns a new :class:`~scene3d.datasets.scene.Scene`; the stored one is never changed.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from scene3d.datasets.materials import MATTE, random_texture, stylize_texture
from scene3d.datasets.scene import Scene, SceneObject

STYLE_WORDS = (
    "stylized", "stylised", "style", "styled", "cartoon", "toon", "cel-shaded", "anime", "comic", "painting",
    "painted", "watercolor", "watercolour", "sketch", "illustration", "pop-art", "psychedelic", "van gogh",
)  # fmt: skip
"""A prompt containing one of these (whole words, any case) asks for the stylized texture set."""

SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "sphere": ("sphere", "ball", "globe", "orb"),
    "box": ("box", "cube", "crate", "block", "chest"),
    "cylinder": ("cylinder", "can", "barrel", "pillar", "column", "vase"),
    "cone": ("cone", "pyramid", "spire"),
    "torus": ("torus", "donut", "doughnut", "ring", "tire", "tyre"),
    "capsule": ("capsule", "pill"),
}
"""Words (and their plurals) that name each insertable primitive; the one named first in the prompt wins."""
INSERT_SHAPES = tuple(SHAPE_WORDS)
INSERTED_NAME = "inserted"
"""Name of the object :func:`insert_object` adds."""


def _words(prompt: str) -> str:
    return " " + re.sub(r"[^a-z0-9\-]+", " ", prompt.lower()) + " "


def look_for_prompt(prompt: str) -> bool:
    """The keyword rule: ``True`` (stylized set) when the prompt names a style (:data:`STYLE_WORDS`), else plain."""
    text = _words(prompt)
    return any(f" {w} " in text for w in STYLE_WORDS)


def shape_for_prompt(prompt: str, default: str = "sphere") -> str:
    """The primitive a prompt names first (:data:`SHAPE_WORDS`, plurals too), else ``default``."""
    text = _words(prompt)
    best: tuple[int, str] | None = None
    for shape, words in SHAPE_WORDS.items():
        for word in words:
            for form in (word, word + "s", word + "es"):
                at = text.find(f" {form} ")
                if at >= 0 and (best is None or at < best[0]):
                    best = (at, shape)
    return default if best is None else best[1]


def _fit_params(shape: str, extent: np.ndarray) -> dict[str, object]:
    """Parameters of ``shape`` that fit inside a box of ``extent`` (x, y, z), filling it as far as the shape can."""
    ex, ey, ez = (float(e) for e in extent)
    r_xy = min(ex, ey) / 2.0
    if shape == "box":
        return {"extents": [ex, ey, ez]}
    if shape == "sphere":
        return {"radius": min(r_xy, ez / 2.0)}
    if shape in ("cylinder", "cone"):
        return {"radius": r_xy, "height": ez}
    if shape == "capsule":
        r = min(r_xy, ez / 2.0)
        return {"radius": r, "height": max(ez - 2.0 * r, 1e-3)}  # trimesh: height between the cap centres
    if shape == "torus":
        minor = min(ez / 2.0, r_xy / 3.0)
        return {"major": r_xy - minor, "minor": minor}
    raise ValueError(f"insert_shape must be one of {INSERT_SHAPES}, got {shape!r}")


def insert_object(
    scene: Scene, box: tuple[tuple[float, float, float], tuple[float, float, float]], shape: str, seed: int = 0
) -> Scene:
    """``scene`` with one extra foreground object of ``shape`` filling the world-space ``box`` (centred in x, y,
    resting on the box's floor), with a seeded texture and its stylized counterpart.

    Raises:
        ValueError: for an empty box or an unknown shape.
    """
    lo, hi = np.asarray(box[0], dtype=np.float64), np.asarray(box[1], dtype=np.float64)
    extent = hi - lo
    if lo.shape != (3,) or hi.shape != (3,) or bool((extent <= 0).any()):
        raise ValueError(f"insert_box must be ((xmin, ymin, zmin), (xmax, ymax, zmax)) with min < max, got {box}")
    rng = np.random.default_rng([seed, 11])
    texture = random_texture(rng)
    obj = SceneObject(
        name=INSERTED_NAME,
        shape=shape,
        params=_fit_params(shape, extent),
        rotation=np.eye(3),
        translation=np.zeros(3),
        texture=texture,
        material=MATTE,
        stylized_texture=stylize_texture(texture, rng),
    )
    local = obj.local_mesh.vertices
    centre = (lo + hi) / 2.0
    translation = np.array([centre[0], centre[1], lo[2] - local[:, 2].min()])
    return scene.with_object(replace(obj, translation=translation))


def lone_object(scene: Scene, name: str) -> tuple[Scene, np.ndarray]:
    """The object ``name`` alone (no ground, walls or other objects), its bounding-box centre moved to the origin.

    ``name="auto"`` picks the foreground object nearest (in x, y) the centre of the foreground objects' bounds.
    Returns the scene and the translation applied: a point ``p`` of the original scene is at ``p + offset`` in the
    lone one.

    Raises:
        ValueError: naming the scene's objects when ``name`` is not one of them.
    """
    foreground = [o for o in scene.objects if o.foreground]
    if name == "auto":
        if not foreground:
            raise ValueError("lone_object='auto' needs a foreground object; the scene has none")
        verts = np.concatenate([o.world_mesh.vertices for o in foreground])
        middle = (verts.min(0) + verts.max(0)) / 2.0
        obj = min(foreground, key=lambda o: float(np.linalg.norm(o.world_mesh.vertices.mean(0)[:2] - middle[:2])))
    else:
        matches = [o for o in scene.objects if o.name == name]
        if not matches:
            raise ValueError(f"lone_object {name!r} is not in the scene; its objects are {[o.name for o in scene.objects]}")
        obj = matches[0]
    verts = obj.world_mesh.vertices
    offset = -(verts.min(0) + verts.max(0)) / 2.0
    moved = obj.moved(obj.rotation, obj.translation + offset)
    return replace(scene, objects=(moved,)), offset
