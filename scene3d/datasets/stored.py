"""Read a synthetic dataset's scene back: the :class:`~scene3d.datasets.scene.Scene` that ``s3d data synth`` rendered.

``transforms.json``'s ``scene3d`` block records every object (shape, parameters, pose, both looks), the light and
the background, so the scene can be rebuilt exactly and rendered from any camera (the ``groundtruth:`` priors do
this). Primitives are rebuilt from their parameters; a user's mesh (``--mesh``) from its normalised copy in
``meshes/``. Plain numpy / trimesh: no nerfstudio, and open3d only when something is rendered.

Example:
    >>> stored = read_scene("/tmp/scene")  # doctest: +SKIP
    >>> [o.name for o in stored.scene.objects]  # doctest: +SKIP
    ['ground', 'object_00', ...]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from scene3d.core.errors import DataError
from scene3d.datasets.materials import Light, Material, Texture
from scene3d.datasets.scene import Scene, SceneObject
from scene3d.datasets.shapes import SHAPES, read_mesh_file, smooth_mesh

SYNTH_HINT = "a dataset folder written by `s3d data synth` (its transforms.json has a 'scene3d' block)"


@dataclass(frozen=True, eq=False)
class StoredScene:
    """A synthetic dataset's scene and its recorded cameras.

    Attributes:
        folder: the dataset folder.
        kind: the generator's kind (``object``, ``forward``, ``room``, or a ``changing`` step).
        scene: the rebuilt scene.
        c2w: the stored views' camera-to-world matrices (OpenGL), in ``transforms.json`` order.
        K: the stored views' shared pinhole intrinsics.
        width: the stored views' width.
        height: the stored views' height.
        meta: the whole ``transforms.json``.
    """

    folder: Path
    kind: str
    scene: Scene
    c2w: Float[torch.Tensor, "N 4 4"]
    K: Float[torch.Tensor, "3 3"]
    width: int
    height: int
    meta: dict[str, Any]


def _field(data: dict[str, Any], key: str, path: Path, where: str) -> Any:
    if not isinstance(data, dict) or key not in data:
        raise DataError(path, f"{where}.{key}" if where else key, f"missing; expected {SYNTH_HINT}")
    return data[key]


def _object(entry: dict[str, Any], folder: Path, path: Path, where: str) -> SceneObject:
    shape = _field(entry, "shape", path, where)
    params = _field(entry, "params", path, where)
    try:
        mesh = None
        if shape == "mesh":
            vertices, faces = read_mesh_file(folder / str(params["file"]))
            mesh = smooth_mesh(vertices, faces)
        elif shape not in SHAPES:
            raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES} or 'mesh'")
        stylized = entry.get("stylized_texture")
        return SceneObject(
            name=str(_field(entry, "name", path, where)),
            shape=shape,
            params=params,
            rotation=np.asarray(_field(entry, "rotation", path, where), dtype=np.float64).reshape(3, 3),
            translation=np.asarray(_field(entry, "translation", path, where), dtype=np.float64).reshape(3),
            texture=Texture.from_json(_field(entry, "texture", path, where)),
            material=Material.from_json(_field(entry, "material", path, where)),
            stylized_texture=None if stylized is None else Texture.from_json(stylized),
            stylized_material=Material.from_json(_field(entry, "stylized_material", path, where)),
            foreground=bool(_field(entry, "foreground", path, where)),
            mesh=mesh,
        )
    except DataError:
        raise
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(path, where, f"malformed object entry: {type(err).__name__}: {err}") from err


def read_scene(path: str | Path) -> StoredScene:
    """Rebuild the scene of the synthetic dataset at ``path`` (its folder or its ``transforms.json``).

    Raises:
        DataError: naming the path and what is missing when ``path`` is not a scene3d synthetic dataset of one
            scene (a ``changing`` root names its step folders; a ``collection`` is many overlapping instances).
    """
    folder = Path(path)
    if folder.name == "transforms.json" and folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(folder, None, f"not found; expected {SYNTH_HINT}")
    transforms = folder / "transforms.json"
    if not transforms.is_file():
        if (folder / "manifest.json").is_file():
            steps = sorted(p.name for p in folder.glob("step_*") if p.is_dir())
            raise DataError(folder, None, f"is a 'changing' scene's root, not one scene; use one of its step folders "
                            f"({', '.join(steps[:3])}{', ...' if len(steps) > 3 else ''})")  # fmt: skip
        raise DataError(folder, "transforms.json", f"missing; expected {SYNTH_HINT}")
    try:
        meta = json.loads(transforms.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(transforms, None, f"not readable JSON ({err})") from err
    block = _field(meta, "scene3d", transforms, "")
    kind = str(_field(block, "kind", transforms, "scene3d"))
    if kind == "collection":
        raise DataError(transforms, "scene3d.kind", "a 'collection' holds many overlapping instances, not one scene; "
                        "a groundtruth prior needs an object, forward, room or changing-step dataset")  # fmt: skip
    entries = _field(block, "objects", transforms, "scene3d")
    if not isinstance(entries, list) or not entries:
        raise DataError(transforms, "scene3d.objects", "must be a non-empty list of objects")
    objects = tuple(_object(e, folder, transforms, f"scene3d.objects[{i}]") for i, e in enumerate(entries))
    try:
        light = Light.from_json(_field(block, "light", transforms, "scene3d"))
    except (KeyError, ValueError, TypeError) as err:
        raise DataError(transforms, "scene3d.light", f"malformed: {err}") from err
    if block.get("kind") == "unbounded" and "background_color" not in meta:
        background = (0.0, 0.0, 0.0)  # the environment sphere encloses every camera: no ray reaches a background
    else:
        background = _field(meta, "background_color", transforms, "")
    extra = {k: block[k] for k in ("room_size", "centre_viewpoint") if k in block}
    scene = Scene(objects=objects, light=light, background_color=tuple(float(c) for c in background), extra=extra)
    frames = _field(meta, "frames", transforms, "")
    c2w = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float32).reshape(-1, 4, 4)
    K = torch.tensor(
        [[meta["fl_x"], 0.0, meta["cx"]], [0.0, meta["fl_y"], meta["cy"]], [0.0, 0.0, 1.0]], dtype=torch.float32
    )
    return StoredScene(folder, kind, scene, c2w, K, int(meta["w"]), int(meta["h"]), meta)
