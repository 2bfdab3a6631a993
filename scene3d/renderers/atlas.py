"""Texture atlases: xatlas unwrapping, the surface point under every texel, texture look-ups and gutter filling.

A texture atlas maps each triangle of a mesh to a region of one square texture image. :func:`unwrap` cuts the
mesh into charts and packs them with xatlas (Young, https://github.com/jpcy/xatlas, the unwrapper nerfstudio's
``ns-export`` and threestudio use); :func:`rasterize_atlas` finds, for every texel whose centre falls inside a chart
triangle, that triangle, the texel's barycentrics and so its 3D surface position and normal ("baking"), which is
what a texturing method colours; :func:`sample_texture` reads a texture at UVs (bilinear, as a renderer or a GLB
viewer does); :func:`fill_gutters` spreads chart colours into the empty texels around the charts, so bilinear
look-ups and mip-maps near chart borders do not pull in the background.

Conventions (OBJ and trimesh): UV ``(0, 0)`` is the bottom-left corner of the image, ``v`` grows upwards, and the
image is stored top row first. Texel ``(row, col)`` of an ``H × W`` texture covers ``u ∈ [col, col + 1) / W``,
``v ∈ [H − row − 1, H − row) / H``; its centre is at ``((col + ½) / W, 1 − (row + ½) / H)``. glTF counts ``v`` from
the top; the GLB writer (:mod:`scene3d.export.textured`) flips it.

xatlas runs in a child process: it is known to crash (a segmentation fault) on some meshes (jpcy/xatlas#151,
seen here on an 82k-face icosphere), which would otherwise take the whole training run down without a word; a
crash becomes one :class:`AtlasError` naming the mesh size and the remedy (fewer faces).

Texel rasterization casts one ray per texel at the charts laid flat in the plane (open3d's Embree, through
:class:`~scene3d.renderers.mesh.MeshRaycaster`), so it runs on the CPU; xatlas and open3d are imported on first use.

Example:
    >>> import torch
    >>> vertices = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    >>> faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    >>> atlas = unwrap(vertices, faces, resolution=32)
    >>> texels = rasterize_atlas(atlas)
    >>> bool((texels.positions[:, 2] == 0).all()), texels.count > 0.5 * atlas.height * atlas.width
    (True, True)
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from scene3d.renderers.mesh import MeshRaycaster, face_normals

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Atlas:
    """A mesh cut along its chart seams, with one UV per (split) vertex. Faces keep the input mesh's order."""

    vertices: Float[Tensor, "V 3"]
    """Positions of the atlas' vertices (input vertices duplicated along seams)."""
    faces: Int[Tensor, "F 3"]
    """The input triangles, in the input order, indexing :attr:`vertices`."""
    uvs: Float[Tensor, "V 2"]
    """Texture coordinates in [0, 1] (module docstring: ``v`` up)."""
    source_vertex: Int[Tensor, " V"]
    """The input vertex each atlas vertex copies."""
    height: int
    """Texture rows."""
    width: int
    """Texture columns."""

    @property
    def corner_uvs(self) -> Float[Tensor, "F 3 2"]:
        """UVs at the three corners of every face (for :func:`scene3d.renderers.mesh.interpolate`)."""
        return self.uvs[self.faces]


@dataclass(frozen=True)
class AtlasTexels:
    """The texels of an atlas whose centre lies on a chart triangle, and the surface point under each."""

    height: int
    width: int
    rows: Int[Tensor, " T"]
    cols: Int[Tensor, " T"]
    triangle: Int[Tensor, " T"]
    """Index of the face under the texel centre."""
    barycentrics: Float[Tensor, "T 3"]
    positions: Float[Tensor, "T 3"]
    """World position of the texel centre on the surface."""
    normals: Float[Tensor, "T 3"]
    """Unit geometric normal of the face (as wound)."""

    @property
    def count(self) -> int:
        """Number of surface texels."""
        return int(self.rows.shape[0])

    @property
    def mask(self) -> Bool[Tensor, "H W"]:
        """True on surface texels."""
        out = torch.zeros(self.height, self.width, dtype=torch.bool, device=self.rows.device)
        out[self.rows, self.cols] = True
        return out

    def to_image(self, values: Float[Tensor, "T C"], fill: float = 0.0) -> Float[Tensor, "H W C"]:
        """Scatter per-texel ``values`` into an ``H × W × C`` image holding ``fill`` off the charts."""
        out = torch.full((self.height, self.width, values.shape[-1]), fill, dtype=values.dtype,
                         device=values.device)  # fmt: skip
        out[self.rows.to(values.device), self.cols.to(values.device)] = values
        return out

    def gather(self, image: Float[Tensor, "H W C"]) -> Float[Tensor, "T C"]:
        """Per-texel values read from an ``H × W × C`` image (inverse of :meth:`to_image`)."""
        return image[self.rows.to(image.device), self.cols.to(image.device)]


class AtlasError(ValueError):
    """xatlas could not unwrap the mesh (it crashed, or the charts did not fit one texture)."""


def unwrap(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    *,
    resolution: int = 1024,
    padding: int = 2,
) -> Atlas:
    """Cut a mesh into charts and pack them into one texture of about ``resolution`` texels a side, with xatlas
    (charts ``padding`` texels apart, packed for bilinear filtering).

    xatlas picks the texel density so that the charts fill about ``resolution²`` texels; the texture takes the
    size of the packed charts (``atlas.height × atlas.width``, each within a few percent of ``resolution``), so
    no second, slow chart computation is needed to hit an exact size.

    Raises:
        ValueError: for an empty mesh or a resolution below 8.
        AtlasError: if xatlas crashes on the mesh or spills the charts onto a second page.
    """
    if faces.dim() != 2 or faces.shape[0] == 0:
        raise ValueError(f"faces must be a non-empty (F, 3) tensor, got shape {tuple(faces.shape)}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    v = vertices.detach().cpu().numpy().astype(np.float32)
    f = faces.detach().cpu().numpy().astype(np.uint32)
    with tempfile.TemporaryDirectory(prefix="scene3d-xatlas-") as tmp:
        src, dst = Path(tmp) / "mesh.npz", Path(tmp) / "atlas.npz"
        np.savez(src, vertices=v, faces=f, resolution=resolution, padding=padding)
        run = subprocess.run(
            [sys.executable, "-m", "scene3d.renderers._xatlas_child", str(src), str(dst)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if run.returncode != 0 or not dst.exists():
            how = f"signal {-run.returncode}" if run.returncode < 0 else f"exit status {run.returncode}"
            raise AtlasError(
                f"xatlas failed to unwrap the mesh ({len(f)} faces, {len(v)} vertices; {how}): "
                f"{run.stderr.strip()[-400:] or 'no message'}. xatlas is known to crash on some meshes; "
                "decimate the mesh (fewer faces) or clean it (merge duplicate vertices, drop degenerate faces)"
            )
        out = np.load(dst)
        vmapping, indices, uvs = out["vmapping"], out["indices"], out["uvs"]
        width, height, pages, charts = (int(x) for x in out["info"])
    if pages != 1:
        raise AtlasError(f"xatlas packed the charts onto {pages} textures; expected 1")
    logger.info("atlas: %d charts on a %dx%d texture", charts, width, height)
    device = vertices.device
    source = torch.from_numpy(vmapping.astype(np.int64)).to(device)
    return Atlas(
        vertices=vertices.detach().float()[source],
        faces=torch.from_numpy(indices.astype(np.int64)).to(device),
        uvs=torch.from_numpy(uvs.astype(np.float32)).to(device),
        source_vertex=source,
        height=height,
        width=width,
    )


def texel_centres(height: int, width: int, device: torch.device | str = "cpu") -> Float[Tensor, "H W 2"]:
    """UV of every texel centre, ``[row, col] → ((col + ½) / W, 1 − (row + ½) / H)``."""
    r = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    c = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    row, col = torch.meshgrid(r, c, indexing="ij")
    return torch.stack([col, 1.0 - row], dim=-1)


def rasterize_atlas(atlas: Atlas) -> AtlasTexels:
    """The surface texels of ``atlas``: for each texel centre inside a chart triangle, the triangle, barycentrics,
    surface position and normal. Triangles smaller than a texel may own no texel; their look-ups read neighbours'
    (filled into the gutter by :func:`fill_gutters` where needed)."""
    h, w = atlas.height, atlas.width
    flat = torch.cat([atlas.uvs.cpu(), torch.zeros(atlas.uvs.shape[0], 1)], dim=-1)
    raster = MeshRaycaster(flat, atlas.faces.cpu(), backend="open3d")
    centres = texel_centres(h, w).reshape(-1, 2)
    origins = torch.cat([centres, torch.ones(centres.shape[0], 1)], dim=-1)
    down = torch.tensor([0.0, 0.0, -1.0]).expand_as(origins)
    hits = raster.cast(origins, down)
    index = torch.nonzero(hits.mask).squeeze(-1)
    triangle = hits.triangle[index]
    bary = hits.barycentrics[index]
    verts = atlas.vertices.cpu()
    positions = (bary[:, :, None] * verts[atlas.faces.cpu()[triangle]]).sum(1)
    normals = face_normals(verts, atlas.faces.cpu())[triangle]
    device = atlas.vertices.device
    return AtlasTexels(
        height=h,
        width=w,
        rows=(index // w).to(device),
        cols=(index % w).to(device),
        triangle=triangle.to(device),
        barycentrics=bary.to(device),
        positions=positions.to(device),
        normals=normals.to(device),
    )


def sample_texture(texture: Float[Tensor, "H W C"], uv: Float[Tensor, "*batch 2"]) -> Float[Tensor, "*batch C"]:
    """Bilinear look-up of ``texture`` at UVs (module conventions; edge texels clamp), differentiable in both."""
    h, w, c = texture.shape
    batch = uv.shape[:-1]
    grid = torch.stack([uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0], dim=-1).reshape(1, 1, -1, 2)
    image = texture.permute(2, 0, 1)[None]
    out = F.grid_sample(image, grid.to(texture.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T.reshape(*batch, c)


def fill_gutters(
    image: Float[Tensor, "H W C"], filled: Bool[Tensor, "H W"], *, iterations: int | None = None
) -> Float[Tensor, "H W C"]:
    """Spread filled texels into the empty ones next to them, one ring per iteration (the mean of the filled
    8-neighbours), like texture bakers' edge padding. ``iterations=None`` repeats until every texel is filled;
    texels not reached keep their input value."""
    if image.shape[:2] != filled.shape:
        raise ValueError(f"filled must have the image's shape {tuple(image.shape[:2])}, got {tuple(filled.shape)}")
    if not bool(filled.any()):
        raise ValueError("no texel is filled: nothing to spread")
    img = image.permute(2, 0, 1)[None]
    done = filled[None, None].to(image.dtype)
    kernel = torch.ones(1, 1, 3, 3, dtype=image.dtype, device=image.device)
    steps = 0
    while (iterations is None or steps < iterations) and not bool((done > 0).all()):
        weight = F.conv2d(done, kernel, padding=1)
        total = F.conv2d(img * done, kernel.expand(img.shape[1], 1, 3, 3), padding=1, groups=img.shape[1])
        grow = (done == 0) & (weight > 0)
        img = torch.where(grow, total / weight.clamp_min(1e-12), img)
        done = torch.where(grow, torch.ones_like(done), done)
        steps += 1
    return img[0].permute(1, 2, 0)
