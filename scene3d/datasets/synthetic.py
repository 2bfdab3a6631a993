"""Synthetic scenes with exact ground truth, written as nerfstudio datasets.

Procedural scenes built from primitive meshes (boxes, spheres, cylinders, cones, tori, capsules, superquadrics) with
solid procedural textures, rendered on the CPU with open3d's ``RaycastingScene``: RGB, z-depth, normals,
foreground masks, a coloured surface point cloud, the meshes themselves and, with ``stylized=True``, a second
rendering of every view with a different look on the same geometry. The on-disk format is documented in
``scene3d/datasets/README.md``.

Kinds:
    ``object``      an object group on a finite ground, cameras 360° around from an upper-hemisphere band
    ``forward``     forward-facing captures (LLFF-like) of objects before a back wall
    ``changing``    ``steps`` time steps of a changing object scene, one dataset per step, one world frame
    ``room``        a furnished box room: centre views, interior views, an equirectangular panorama
    ``collection``  many instances of one parametric shape family (superquadrics), each from random poses
    ``unbounded``   an object group on a ground running out to a far environment (≥ 20× its radius), filmed
                    along a handheld-style path; no background colour, ``scene_box`` is the region of interest

This module imports neither nerfstudio nor open3d at import time (open3d and trimesh load on first render).

Example:
    >>> from scene3d.datasets.synthetic import generate_scene
    >>> path = generate_scene("object", "/tmp/s3d-object", size=32, views=8)  # doctest: +SKIP
    >>> (path / "transforms.json").exists()  # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

KINDS = ("object", "forward", "changing", "room", "collection", "unbounded")
"""The scene kinds :func:`generate_scene` builds."""
GENERATOR_VERSION = "1.0"
"""Written into every dataset's ``scene3d.generator_version``; bumped whenever outputs for the same arguments change."""
DEFAULT_SIZE = {"object": 128, "forward": 128, "changing": 128, "room": 128, "collection": 64, "unbounded": 128}
"""Image side in pixels when ``size`` is not given."""
DEFAULT_VIEWS = {"object": 100, "forward": 40, "changing": 40, "room": 60, "collection": 4, "unbounded": 100}
"""Views when ``views`` is not given (per time step for ``changing``, per instance for ``collection``)."""
DEFAULT_INSTANCES = 200
"""Instances of a ``collection`` when ``instances`` is not given."""
POINTS = {"object": 20000, "forward": 30000, "changing": 20000, "room": 50000, "unbounded": 30000}
"""Points written into ``points3d.ply`` per kind (``collection`` writes none: its instances overlap)."""
MIN_SIZE, MAX_SIZE = 32, 800


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent deterministic streams per purpose, so e.g. changing ``views`` never changes the layout."""
    return np.random.default_rng([seed, stream])


def _check_args(
    kind: str, size: int | None, views: int | None, seed: int, steps: int, instances: int | None
) -> tuple[int, int]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    size = DEFAULT_SIZE[kind] if size is None else size
    views = DEFAULT_VIEWS[kind] if views is None else views
    if not isinstance(size, int) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size!r}")
    min_views = 1 if kind == "collection" else 2
    if not isinstance(views, int) or views < min_views:
        raise ValueError(f"views must be an integer >= {min_views} for kind {kind!r}, got {views!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2 (a change needs two time steps), got {steps!r}")
    if instances is not None and (not isinstance(instances, int) or instances < 2):
        raise ValueError(f"instances must be an integer >= 2, got {instances!r}")
    if instances is not None and kind != "collection":
        raise ValueError(f"instances only applies to kind 'collection', got kind {kind!r}")
    return size, views


def scene3d_block(kind: str, seed: int, size: int, views: int, stylized: bool, **extra: Any) -> dict[str, Any]:
    """The ``scene3d`` block of ``transforms.json``: what generated the dataset and how to read its extras."""
    return {
        "kind": kind,
        "seed": seed,
        "size": size,
        "views": views,
        "stylized": stylized,
        "generator_version": GENERATOR_VERSION,
        "depth_encoding": "uint16 PNG, z-depth in millimetres (metres = value * 0.001), 0 = no surface",
        "normal_encoding": "uint8 RGB PNG, world-frame unit normal n = rgb / 255 * 2 - 1, (0, 0, 0) = no surface",
        "mask_encoding": "uint8 L PNG, 255 = foreground object, 0 = ground, walls, ceiling or background",
        **extra,
    }


def generate_scene(
    kind: str,
    out: str | Path,
    *,
    size: int | None = None,
    views: int | None = None,
    seed: int = 0,
    stylized: bool = False,
    steps: int = 4,
    instances: int | None = None,
    mesh: str | Path | None = None,
    mesh_up: str = "auto",
) -> Path:
    """Build and render a synthetic scene into ``out`` as a nerfstudio dataset (``scene3d-data`` reads it).

    Args:
        kind: one of :data:`KINDS`.
        out: output folder: created, or empty, or an earlier scene3d dataset (whose files, and only those, are
            replaced).
        size: image side in pixels, 32 to 800 (default 128; 64 for ``collection``). Images are square.
        views: number of views (default :data:`DEFAULT_VIEWS`): per time step for ``changing``, per instance for
            ``collection``. About 10 % are held out for evaluation (every 8th for ``forward``).
        seed: layout, textures and cameras are a deterministic function of ``(kind, size, views, seed, stylized,
            steps, instances)``: the same arguments give byte-identical files.
        stylized: also render every view with a second, clearly different look on the same geometry
            (``images_stylized/``, frames' ``stylized_file_path``).
        steps: time steps of a ``changing`` scene (>= 2).
        instances: instances of a ``collection`` (default 200).
        mesh: a user's mesh file (OBJ, PLY, GLB/glTF, OFF, STL) that replaces the foreground objects of an
            ``object`` or ``forward`` scene: normalised to the scene's scale (longest side
            :data:`~scene3d.datasets.layouts.USER_MESH_SIZE` m), resting on the ground at the scene's centre, with a
            seeded solid texture. Its normalised copy is written to ``meshes/user_mesh_source.ply``.
        mesh_up: the mesh file's up axis, ``y`` or ``z``; ``auto`` is ``y`` for glTF/GLB (their specification's up)
            and OBJ (the common convention), ``z`` (scene3d's) for the others.

    Returns:
        ``out`` as a ``Path``: the dataset folder (for ``changing``, the folder holding ``manifest.json`` and
        ``step_00/``, ``step_01/``, ...).

    Raises:
        ValueError: for an unknown kind or an out-of-range argument.
        OutputFolderError: ``out`` holds files scene3d did not write (nothing is removed).
        DataError: for a mesh file that cannot be read (naming the file).
    """
    size, views = _check_args(kind, size, views, seed, steps, instances)
    user_mesh = None
    if mesh is not None:
        user_mesh = _read_user_mesh(kind, Path(mesh), mesh_up)
    out = Path(out)
    _prepare_out(out)
    start = time.perf_counter()
    with _torch_single_thread():
        _generate(kind, out, size, views, seed, stylized, steps, instances, user_mesh)
    logger.info("generated %s scene in %s in %.2f s", kind, out, time.perf_counter() - start)
    return out


def _prepare_out(out: Path) -> None:
    """Create ``out``, or remove the files of the earlier scene3d dataset in it (so no stale frame of a larger earlier
    run survives); refuse any other non-empty folder, and any file in it scene3d did not write
    (:func:`scene3d.datasets.ownership.clear_generated`)."""
    from scene3d.datasets.ownership import clear_generated

    clear_generated(out)


@contextmanager
def _torch_single_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block, then restore the caller's setting.

    The generator only calls torch for small ray batches (the rays of a few views); on a busy machine torch's
    intra-op thread pool makes each such call 20-30x slower than one thread does (measured: 8 ms vs 200 ms).
    Embree (open3d) keeps its own threads for the ray casting itself.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _read_user_mesh(kind: str, path: Path, up: str) -> tuple[Any, Any, str, float]:
    """Read and normalise a ``--mesh`` file before anything is written: (vertices, faces, source sha256, scale)."""
    import hashlib

    from scene3d.datasets.layouts import normalise_mesh
    from scene3d.datasets.shapes import read_mesh_file

    if kind not in ("object", "forward"):
        raise ValueError(f"mesh applies to kinds 'object' and 'forward', got kind {kind!r}")
    if up == "auto":
        up = "y" if path.suffix.lower() in (".glb", ".gltf", ".obj") else "z"
    vertices, faces = read_mesh_file(path)
    local, scale = normalise_mesh(vertices, up=up)
    return local, faces, hashlib.sha256(path.read_bytes()).hexdigest(), scale


def _generate(
    kind: str,
    out: Path,
    size: int,
    views: int,
    seed: int,
    stylized: bool,
    steps: int,
    instances: int | None,
    user_mesh: tuple[Any, Any, str, float] | None = None,
) -> None:
    if kind in ("object", "forward"):
        _generate_single(kind, out, size, views, seed, stylized, user_mesh)
    elif kind == "changing":
        from scene3d.datasets.changing import generate_changing

        generate_changing(out, size=size, views=views, seed=seed, stylized=stylized, steps=steps)
    elif kind == "unbounded":
        from scene3d.datasets.unbounded import generate_unbounded

        generate_unbounded(out, size=size, views=views, seed=seed, stylized=stylized)
    elif kind == "room":
        from scene3d.datasets.room import generate_room

        generate_room(out, size=size, views=views, seed=seed, stylized=stylized)
    else:
        from scene3d.datasets.collection import generate_collection

        generate_collection(
            out, size=size, views=views, seed=seed, stylized=stylized, instances=instances or DEFAULT_INSTANCES
        )


def _generate_single(
    kind: str, out: Path, size: int, views: int, seed: int, stylized: bool, user_mesh: tuple[Any, Any, str, float] | None
) -> None:
    from scene3d.datasets import layouts
    from scene3d.datasets.raycast import SceneRaycaster
    from scene3d.datasets.shapes import smooth_mesh
    from scene3d.datasets.writer import DatasetWriter, box_json, write_mesh_ply, write_meshes

    if kind == "object":
        scene = layouts.object_scene(_rng(seed, 0))
        rig = layouts.orbit_cameras(views, size, _rng(seed, 1))
        held = layouts.held_out_indices(views, 0.1)
        pad = 0.05
    else:
        scene = layouts.forward_scene(_rng(seed, 0))
        rig = layouts.forward_cameras(views, size, _rng(seed, 1))
        held = layouts.held_out_indices(views, every=8)
        pad = 0.05
    if user_mesh is not None:
        local, faces, source, scale = user_mesh
        mesh = smooth_mesh(local, faces)
        xy = (0.0, 0.0) if kind == "object" else (0.0, 0.7)
        obj = layouts.user_mesh_object(mesh, _rng(seed, 3), xy=xy, source_sha256=source, scale=scale)
        scene = layouts.with_user_mesh(scene, obj)
        # the normalised source (before crease splitting) is what a reader rebuilds the object from
        import trimesh

        normals = np.asarray(trimesh.Trimesh(vertices=local, faces=faces, process=False).vertex_normals)
        write_mesh_ply(out / obj.params["file"], local, faces, normals, np.zeros((len(local), 3), np.uint8))
    raycaster = SceneRaycaster(scene)
    writer = DatasetWriter(out, rig.width, rig.height, rig.K, stylized=stylized)
    writer.add_rig(raycaster, rig)
    meshes = write_meshes(out / "meshes", scene)
    ply = writer.write_points(raycaster, POINTS[kind], _rng(seed, 2))
    writer.finish(
        held,
        {
            "ply_file_path": ply,
            "scene_box": box_json(scene.bounds(), pad),
            "background_color": list(scene.background_color),
            "scene3d": scene3d_block(
                kind,
                seed,
                size,
                views,
                stylized,
                light=scene.light.to_json(),
                meshes=meshes,
                objects=[o.to_json() for o in scene.objects],
            ),
        },
    )
