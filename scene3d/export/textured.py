"""Textured meshes on disk: GLB (one file, texture inside) and OBJ + MTL + PNG, plus equirectangular panoramas.

A :class:`TexturedMesh` is a triangle mesh with one UV per vertex and one RGB texture image (a texture atlas from
:func:`scene3d.renderers.atlas.unwrap`; :meth:`TexturedMesh.from_atlas` builds it).

* **GLB** (glTF 2.0 binary), written here directly (no scene-graph library in between, so every field is
  deliberate): positions, UVs and 32-bit indices; the texture as an embedded PNG with linear filtering and
  mip-maps, clamped at the edges; a material with the texture as base colour, ``metallicFactor = 0``,
  ``roughnessFactor = 1``, ``doubleSided`` (scanned rooms are not reliably wound) and ``KHR_materials_unlit``: the
  texture already holds the room's lighting (it was painted from images), so a viewer should show it as is rather
  than light it again. glTF's +Y is up and scene3d's worlds are +Z up: the vertices are written in scene3d's frame
  under a root node rotated −90° about X, so any glTF viewer (and a VR headset's) stands the room upright, and a
  reader that applies node transforms (trimesh, Blender, three.js) gets ``(x, z, −y)``. UVs are flipped to glTF's
  top-left origin (``v_gltf = 1 − v``).
* **OBJ + MTL + PNG**: ``NAME.obj`` (``v``, ``vt``, ``f v/vt``; scene3d's frame, +Z up, as ``ns-export`` writes
  OBJ), ``NAME.mtl`` (``map_Kd NAME.png``), ``NAME.png``.

Nothing is overwritten unless asked (``overwrite=True``): the files are written atomically, all or none.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> mesh = TexturedMesh(
    ...     vertices=np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), faces=np.array([[0, 1, 2]]),
    ...     uvs=np.array([[0, 0], [1, 0], [0, 1]], np.float32), texture=np.full((4, 4, 3), 200, np.uint8))
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> [p.name for p in write_textured_mesh(mesh, out / "room.obj")]
    ['room.obj', 'room.mtl', 'room.png']
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from jaxtyping import Float, Int, UInt8

from scene3d.core.checkpoint import atomic_write

FORMATS = (".glb", ".obj")

_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UINT = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071
Z_UP_TO_Y_UP_QUATERNION = (-math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5))
"""The root node's rotation ``(x, y, z, w)``: −90° about X (:data:`scene3d.core.cameras.Z_UP_TO_Y_UP`), taking
scene3d's +Z up to glTF's +Y up."""


@dataclass(frozen=True)
class TexturedMesh:
    """A triangle mesh with per-vertex UVs (OBJ convention: ``v`` up) and one RGB texture."""

    vertices: Float[np.ndarray, "V 3"]
    faces: Int[np.ndarray, "F 3"]
    uvs: Float[np.ndarray, "V 2"]
    texture: UInt8[np.ndarray, "H W 3"]

    def __post_init__(self) -> None:
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"vertices must have shape (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or len(self.faces) == 0:
            raise ValueError(f"faces must have shape (F, 3) with F > 0, got {self.faces.shape}")
        if self.uvs.shape != (len(self.vertices), 2):
            raise ValueError(f"uvs must have shape ({len(self.vertices)}, 2), got {self.uvs.shape}")
        if self.texture.ndim != 3 or self.texture.shape[2] != 3 or self.texture.dtype != np.uint8:
            raise ValueError(f"texture must be a uint8 (H, W, 3) image, got {self.texture.dtype} {self.texture.shape}")
        if int(self.faces.min()) < 0 or int(self.faces.max()) >= len(self.vertices):
            raise ValueError("faces index vertices out of range")

    @classmethod
    def from_atlas(cls, atlas, texture) -> TexturedMesh:  # noqa: ANN001
        """From a :class:`scene3d.renderers.atlas.Atlas` and its ``(H, W, 3)`` texture (float in [0, 1] or uint8)."""
        import torch

        image = texture.detach().cpu() if isinstance(texture, torch.Tensor) else torch.as_tensor(texture)
        if image.dtype != torch.uint8:
            image = (image.float().clamp(0, 1) * 255.0).round().to(torch.uint8)
        return cls(
            vertices=atlas.vertices.detach().cpu().numpy().astype(np.float32),
            faces=atlas.faces.cpu().numpy().astype(np.int64),
            uvs=atlas.uvs.detach().cpu().numpy().astype(np.float32),
            texture=image.numpy(),
        )


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit image (``(H, W)`` or ``(H, W, 3)``) encoded as PNG, deterministically."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def glb_bytes(mesh: TexturedMesh) -> bytes:
    """The mesh as a glTF 2.0 binary (module docstring)."""
    positions = np.ascontiguousarray(mesh.vertices, dtype="<f4")
    texcoords = np.ascontiguousarray(np.stack([mesh.uvs[:, 0], 1.0 - mesh.uvs[:, 1]], -1), dtype="<f4")
    indices = np.ascontiguousarray(mesh.faces.reshape(-1), dtype="<u4")
    image = png_bytes(mesh.texture)
    blobs, views, offset = [], [], 0
    for data, target in ((positions.tobytes(), _ARRAY_BUFFER), (texcoords.tobytes(), _ARRAY_BUFFER),
                         (indices.tobytes(), _ELEMENT_ARRAY_BUFFER), (image, None)):  # fmt: skip
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        views.append(view)
        pad = (-len(data)) % 4
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    binary = b"".join(blobs)
    document = {
        "asset": {"version": "2.0", "generator": "scene3d"},
        "extensionsUsed": ["KHR_materials_unlit"],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": "scene3d (+Z up)", "rotation": list(Z_UP_TO_Y_UP_QUATERNION), "children": [1]}, {"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}]}],
        "materials": [{
            "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}, "metallicFactor": 0.0, "roughnessFactor": 1.0},
            "doubleSided": True,
            "extensions": {"KHR_materials_unlit": {}},
        }],  # fmt: skip
        "textures": [{"source": 0, "sampler": 0}],
        "samplers": [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR, "wrapS": _CLAMP_TO_EDGE,
                      "wrapT": _CLAMP_TO_EDGE}],  # fmt: skip
        "images": [{"bufferView": 3, "mimeType": "image/png"}],
        "accessors": [
            {"bufferView": 0, "componentType": _FLOAT, "count": len(positions), "type": "VEC3",
             "min": positions.min(0).tolist(), "max": positions.max(0).tolist()},
            {"bufferView": 1, "componentType": _FLOAT, "count": len(texcoords), "type": "VEC2"},
            {"bufferView": 2, "componentType": _UINT, "count": len(indices), "type": "SCALAR"},
        ],  # fmt: skip
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary)}],
    }
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    text += b" " * ((-len(text)) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join([
        struct.pack("<III", _GLB_MAGIC, 2, total),
        struct.pack("<II", len(text), _JSON_CHUNK), text,
        struct.pack("<II", len(binary), _BIN_CHUNK), binary,
    ])  # fmt: skip


def obj_files(mesh: TexturedMesh, stem: str) -> dict[str, bytes]:
    """``{STEM.obj, STEM.mtl, STEM.png: contents}`` (module docstring)."""
    lines = [f"# scene3d textured mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces (+Z up)",
             f"mtllib {stem}.mtl", "usemtl texture"]  # fmt: skip
    lines += [f"v {x:.6g} {y:.6g} {z:.6g}" for x, y, z in mesh.vertices.tolist()]
    lines += [f"vt {u:.6g} {v:.6g}" for u, v in mesh.uvs.tolist()]
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (mesh.faces + 1).tolist()]
    mtl = "\n".join(["newmtl texture", "Ka 1 1 1", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1", f"map_Kd {stem}.png", ""])
    return {
        f"{stem}.obj": ("\n".join(lines) + "\n").encode("utf-8"),
        f"{stem}.mtl": mtl.encode("utf-8"),
        f"{stem}.png": png_bytes(mesh.texture),
    }


def write_files(files: dict[Path, bytes], *, overwrite: bool = False) -> list[Path]:
    """Write every file atomically; with ``overwrite=False`` nothing is written if any of them exists.

    Raises:
        FileExistsError: naming the existing files (when not ``overwrite``).
    """
    existing = [p for p in files if p.exists()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise FileExistsError(f"{names} already exist(s); pass overwrite (--overwrite) to replace, or another path")
    for path, data in files.items():
        atomic_write(path, lambda f, data=data: f.write(data))
    return list(files)


def write_textured_mesh(mesh: TexturedMesh, path: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write ``mesh`` as ``.glb`` or as ``.obj`` with its ``.mtl`` and ``.png`` (by the suffix of ``path``);
    returns the files written."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"textured mesh file must end in one of {FORMATS}, got {path.name!r}")
    if suffix == ".glb":
        return write_files({path: glb_bytes(mesh)}, overwrite=overwrite)
    files = obj_files(mesh, path.stem)
    return write_files({path.with_name(name): data for name, data in files.items()}, overwrite=overwrite)


def write_panorama(image: UInt8[np.ndarray, "H W 3"], path: str | Path, *, overwrite: bool = False) -> Path:
    """Write an equirectangular panorama (``W = 2H``; :func:`scene3d.core.cameras.equirect_directions` layout) as
    PNG."""
    path = Path(path)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or image.shape[1] != 2 * image.shape[0]:
        raise ValueError(f"a panorama must be a uint8 (H, 2H, 3) image, got {image.dtype} {image.shape}")
    if path.suffix.lower() != ".png":
        raise ValueError(f"panorama file must end in .png, got {path.name!r}")
    return write_files({path: png_bytes(image)}, overwrite=overwrite)[0]
