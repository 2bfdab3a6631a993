"""Which files in a folder an earlier run of scene3d's scene generator wrote, so a new run replaces only those.

Nothing scene3d runs deletes a file it did not write. A generated dataset names its files in its own JSON
(``transforms.json``; ``manifest.json`` and ``step_XX/transforms.json`` for a ``changing`` scene): every frame's
image, depth, normal, mask and stylized image, the point cloud, each object's mesh, the panoramas. The one file it
writes without naming it is ``meshes/scene.ply``, the merged mesh beside the meshes it lists. Those files, and
nothing else, are the earlier dataset's.

:func:`clear_generated` removes them before a new scene is written into the same folder. It refuses (and removes
nothing) when the folder is not an earlier scene3d dataset, or when one of the folders the generator writes into
(``images/``, ``meshes/``, ``step_00/`` ...) holds a file the dataset does not name: a file a user put there.
Other files beside the dataset (``notes.txt`` in the dataset folder itself) are left alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scene3d.core.errors import OutputFolderError

GENERATED_NAMES = frozenset({
    "images", "images_stylized", "depths", "normals", "masks", "meshes", "points3d.ply", "transforms.json",
    "panorama.png", "panorama_depth.png", "panorama_stylized.png", "manifest.json",
})  # fmt: skip
"""Top-level names the generator writes (plus ``step_XX/`` folders of a ``changing`` scene)."""

MERGED_MESH = "meshes/scene.ply"
"""The merged mesh :func:`scene3d.datasets.writer.write_meshes` writes beside the per-object meshes it lists."""


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_generated_name(rel: Path) -> bool:
    top = rel.parts[0]
    return top in GENERATED_NAMES or top.startswith("step_")


def generated_files(folder: str | Path) -> set[Path] | None:
    """The files of the scene3d dataset in ``folder`` (absolute paths), or ``None`` when it holds none."""
    folder = Path(folder).resolve()
    markers: list[Path] = []
    meta = _read_json(folder / "transforms.json")
    if isinstance(meta, dict) and "scene3d" in meta:
        markers.append(folder / "transforms.json")
    manifest = _read_json(folder / "manifest.json")
    if isinstance(manifest, dict) and manifest.get("kind") == "changing":
        markers.append(folder / "manifest.json")
        for step in sorted(folder.glob("step_*/transforms.json")):
            step_meta = _read_json(step)
            if isinstance(step_meta, dict) and "scene3d" in step_meta:
                markers.append(step)
    if not markers:
        return None
    owned: set[Path] = set()
    for marker in markers:
        owned.add(marker)
        base = marker.parent
        for text in _strings(_read_json(marker)):
            if not text or len(text) > 4096 or "\n" in text:
                continue
            candidate = (base / text).resolve()
            if candidate.is_file() and candidate.is_relative_to(folder):
                owned.add(candidate)
        merged = base / MERGED_MESH
        if merged.is_file() and any(p.parent == merged.parent for p in owned):
            owned.add(merged.resolve())
    return owned


def clear_generated(folder: str | Path) -> None:
    """Make ``folder`` ready for a new generated dataset: create it, or remove the earlier dataset's files.

    Raises:
        OutputFolderError: ``folder`` is a file; or it is non-empty and holds no scene3d dataset; or a folder the
            generator writes into holds files the earlier dataset does not name (nothing is removed then).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(folder, "is a file; give a folder for the dataset")
    if not folder.is_dir() or not any(folder.iterdir()):
        folder.mkdir(parents=True, exist_ok=True)
        return
    root = folder.resolve()
    owned = generated_files(root)
    if owned is None:
        raise OutputFolderError(
            folder, "is not empty and holds no scene3d dataset; give an empty folder or a new one (nothing was removed)"
        )
    foreign = sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if (p.is_file() or p.is_symlink()) and _is_generated_name(p.relative_to(root)) and p.resolve() not in owned
    )
    if foreign:
        shown = ", ".join(str(p) for p in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise OutputFolderError(
            folder,
            f"holds files scene3d did not write among its earlier dataset ({shown}); move them or give another "
            "folder (nothing was removed)",
        )
    for path in sorted(owned, key=lambda p: len(p.parts), reverse=True):
        path.unlink()
    # folders the generator made, deepest first, once nothing is left in them
    dirs = [p for p in root.rglob("*") if p.is_dir() and _is_generated_name(p.relative_to(root))]
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
