"""Tetrahedral grids and marching tetrahedra: the surface extraction of DMTet, differentiable in the SDF and positions.

DMTet (Shen et al., NeurIPS 2021, Sec. 3.1–3.2) represents a shape by a signed distance ``s`` at the vertices of a
deformable tetrahedral grid and extracts the triangle mesh of its zero level set with *marching tetrahedra*
(Doi & Koide 1991). Inside is ``s < 0``. On every edge ``(a, b)`` of a tetrahedron whose end points have different
signs, the surface vertex is the linear zero crossing (DMTet Eq. 2)::

    v_ab = (v_a · s_b − v_b · s_a) / (s_b − s_a),

which is differentiable in the SDF values and in the (deformed) grid positions, so losses on the mesh reach both.
A tetrahedron with one or three inside corners yields one triangle, one with two inside corners a quad (two
triangles), one with zero or four nothing. Crossing vertices are shared between tetrahedra through a unique edge
key, so the mesh of a closed level set is watertight.

The grid is the Kuhn (Freudenthal) subdivision of a regular cube lattice: each cube splits into the six
tetrahedra ``(c, c + e_i, c + e_i + e_j, c + 1)`` for the permutations ``(i, j, k)`` of the axes. The split is the
same in every cube, so the faces of neighbouring tetrahedra match and the grid is conforming. (DMTet ships
precomputed quartet meshes; a Kuhn grid needs no file and has the same conformity.)

Triangles are wound counter-clockwise seen from outside: each triangle's winding is chosen so its normal points
from the tetrahedron's inside corners to its outside corners (decided on detached positions, so winding never
carries a gradient).

Example:
    >>> grid = kuhn_grid(8, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    >>> sdf = grid.vertices.norm(dim=-1) - 0.6
    >>> mesh = marching_tetrahedra(grid.vertices, grid.tets, sdf)
    >>> mesh.faces.shape[1], bool((mesh.vertices.norm(dim=-1) - 0.6).abs().max() < 0.05)
    (3, True)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import no_type_check

import torch
from jaxtyping import Float, Int
from torch import Tensor

TET_EDGES: tuple[tuple[int, int], ...] = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
"""The six edges of a tetrahedron as pairs of its corner indices."""


@dataclass(frozen=True)
class TetGrid:
    """A conforming tetrahedral grid over a box."""

    vertices: Float[Tensor, "V 3"]
    """Grid vertex positions (undeformed)."""
    tets: Int[Tensor, "T 4"]
    """Corner vertex indices of each tetrahedron (positive orientation)."""
    resolution: int
    """Cubes along each side of the box."""
    cell_size: Float[Tensor, "3"]
    """Edge lengths of one cube."""


def kuhn_grid(
    resolution: int,
    lower: tuple[float, float, float] | Float[Tensor, "3"],
    upper: tuple[float, float, float] | Float[Tensor, "3"],
) -> TetGrid:
    """``resolution³`` cubes over the box ``[lower, upper]``, six Kuhn tetrahedra each (module docstring).

    Args:
        resolution: cubes per side (``(resolution + 1)³`` vertices, ``6 · resolution³`` tetrahedra).
        lower, upper: opposite corners of the box.
    """
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    lo = torch.as_tensor(lower, dtype=torch.float32).reshape(3)
    hi = torch.as_tensor(upper, dtype=torch.float32).reshape(3)
    if not bool((hi > lo).all()):
        raise ValueError(f"upper must exceed lower on every axis, got {lo.tolist()} and {hi.tolist()}")
    n = resolution + 1
    axis = torch.arange(n)
    ijk = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
    vertices = lo + (hi - lo) * ijk.float() / resolution

    def index(c: Tensor) -> Tensor:
        return (c[..., 0] * n + c[..., 1]) * n + c[..., 2]

    cells = torch.stack(torch.meshgrid(*(torch.arange(resolution),) * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    eye = torch.eye(3, dtype=torch.long)
    tets = []
    for perm in itertools.permutations(range(3)):
        c1 = cells + eye[perm[0]]
        c2 = c1 + eye[perm[1]]
        corners = [cells, c1, c2, cells + 1]
        tet = torch.stack([index(c) for c in corners], dim=-1)
        # odd permutations give negatively oriented tetrahedra: swap two corners to make all positive
        if _parity(perm):
            tet = tet[:, [0, 2, 1, 3]]
        tets.append(tet)
    return TetGrid(vertices, torch.cat(tets), resolution, (hi - lo) / resolution)


def _parity(perm: tuple[int, ...]) -> int:
    inversions = sum(1 for i in range(len(perm)) for j in range(i + 1, len(perm)) if perm[i] > perm[j])
    return inversions % 2


def _case_table() -> tuple[Tensor, Tensor]:
    """For each of the 16 inside/outside codes of a tetrahedron (bit i set: corner i inside), up to two triangles
    as triples of local edge indices into :data:`TET_EDGES` (−1 pads), and how many there are.

    One inside (or outside) corner ``a``: the triangle of its three edges. Two inside corners ``a, b`` and two
    outside ``A, B``: the quad ``(aA, aB, bB, bA)`` in cyclic order, split into two triangles. The winding here is
    arbitrary; :func:`marching_tetrahedra` orients each triangle geometrically.
    """
    edge_index = {frozenset(e): k for k, e in enumerate(TET_EDGES)}
    table = torch.full((16, 2, 3), -1, dtype=torch.long)
    counts = torch.zeros(16, dtype=torch.long)
    for code in range(16):
        inside = [i for i in range(4) if code >> i & 1]
        outside = [i for i in range(4) if not code >> i & 1]
        if len(inside) in (1, 3):
            lone, others = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            table[code, 0] = torch.tensor([edge_index[frozenset((lone, o))] for o in others])
            counts[code] = 1
        elif len(inside) == 2:
            (a, b), (p, q) = inside, outside
            quad = [edge_index[frozenset(e)] for e in ((a, p), (a, q), (b, q), (b, p))]
            table[code, 0] = torch.tensor([quad[0], quad[1], quad[2]])
            table[code, 1] = torch.tensor([quad[0], quad[2], quad[3]])
            counts[code] = 2
    return table, counts


_TABLE, _COUNTS = _case_table()


@dataclass
class TetMesh:
    """The extracted surface."""

    vertices: Float[Tensor, "V 3"]
    """Zero crossings, differentiable in the SDF and the grid positions."""
    faces: Int[Tensor, "F 3"]
    """Triangles, counter-clockwise seen from outside."""
    edges: Int[Tensor, "V 2"]
    """The grid edge (two grid vertex indices) each surface vertex lies on."""


# This boundary checks its inputs itself and says what is wrong in a ValueError (the test suite's runtime checker is
# told to skip it, as for the other validating boundaries).
@no_type_check
def marching_tetrahedra(
    positions: Float[Tensor, "N 3"],
    tets: Int[Tensor, "T 4"],
    sdf: Float[Tensor, " N"],
) -> TetMesh:
    """The zero level set of ``sdf`` on a tetrahedral grid as a triangle mesh (module docstring, DMTet Eq. 2).

    Args:
        positions: grid vertex positions (possibly deformed).
        tets: corner indices of each tetrahedron.
        sdf: signed distance at each grid vertex; inside is ``sdf < 0``.

    Returns:
        A :class:`TetMesh`; empty (zero vertices and faces) when the SDF has no sign change.
    """
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {tuple(positions.shape)}")
    if sdf.shape != positions.shape[:1]:
        raise ValueError(f"sdf must have shape ({positions.shape[0]},), got {tuple(sdf.shape)}")
    if tets.ndim != 2 or tets.shape[1] != 4:
        raise ValueError(f"tets must have shape (T, 4), got {tuple(tets.shape)}")
    device = positions.device
    with torch.no_grad():
        inside = sdf < 0
        corner_inside = inside[tets]  # (T, 4)
        codes = (corner_inside.long() * (2 ** torch.arange(4, device=device))).sum(-1)
        active = (codes > 0) & (codes < 15)
        tets_a, codes_a = tets[active], codes[active]
        # every edge of the active tetrahedra with a sign change, deduplicated by its sorted end points
        local = torch.tensor(TET_EDGES, device=device)  # (6, 2)
        ends = tets_a[:, local]  # (Ta, 6, 2)
        ends = torch.sort(ends, dim=-1).values
        crossing = inside[ends[..., 0]] != inside[ends[..., 1]]  # (Ta, 6)
        n_grid = positions.shape[0]
        keys = ends[..., 0] * n_grid + ends[..., 1]
        unique_keys, inverse = torch.unique(keys[crossing], return_inverse=True)
        edge_vertex = torch.full(keys.shape, -1, dtype=torch.long, device=device)
        edge_vertex[crossing] = inverse
        edges = torch.stack([unique_keys // n_grid, unique_keys % n_grid], dim=-1)
        table, counts = _TABLE.to(device)[codes_a], _COUNTS.to(device)[codes_a]  # (Ta, 2, 3), (Ta,)
        tri_valid = torch.arange(2, device=device)[None, :] < counts[:, None]  # (Ta, 2)
        tet_of_tri = torch.arange(len(tets_a), device=device)[:, None].expand(-1, 2)[tri_valid]
        local_tris = table[tri_valid]  # (F, 3) local edge indices
        faces = edge_vertex[tet_of_tri[:, None], local_tris]  # (F, 3)

    s_a, s_b = sdf[edges[:, 0]], sdf[edges[:, 1]]
    p_a, p_b = positions[edges[:, 0]], positions[edges[:, 1]]
    vertices = (p_a * s_b[:, None] - p_b * s_a[:, None]) / (s_b - s_a)[:, None]

    with torch.no_grad():
        # orient: the normal points from the tetrahedron's inside corners towards its outside corners
        corners = positions.detach()[tets_a[tet_of_tri]]  # (F, 4, 3)
        flags = corner_inside[active][tet_of_tri].float()[..., None]  # (F, 4, 1)
        inside_mean = (corners * flags).sum(1) / flags.sum(1)
        outside_mean = (corners * (1 - flags)).sum(1) / (1 - flags).sum(1)
        tri = vertices.detach()[faces]
        normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
        flip = (normal * (outside_mean - inside_mean)).sum(-1) < 0
        faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    return TetMesh(vertices=vertices, faces=faces, edges=edges)


def sdf_sign_regularizer(sdf: Float[Tensor, " N"], edges: Int[Tensor, "E 2"]) -> Float[Tensor, ""]:
    """Binary cross-entropy between the SDF signs at the two ends of every grid edge with a sign change.

    Fantasia3D's and threestudio's DMTet regulariser (after DMTet's): it pushes the SDF away from zero on both
    sides of the surface, which removes the floaters and tiny islands that sign flips on isolated vertices make::

        L = mean_{(a,b) crossing} [ BCE(σ(s_a), 1[s_b > 0]) + BCE(σ(s_b), 1[s_a > 0]) ] / 2
    """
    s_a, s_b = sdf[edges[:, 0]], sdf[edges[:, 1]]
    crossing = (s_a > 0) != (s_b > 0)
    if not bool(crossing.any()):
        return sdf.sum() * 0.0
    s_a, s_b = s_a[crossing], s_b[crossing]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return 0.5 * (bce(s_a, (s_b > 0).float()) + bce(s_b, (s_a > 0).float()))


def grid_edges(tets: Int[Tensor, "T 4"]) -> Int[Tensor, "E 2"]:
    """The unique edges of a tetrahedral grid (sorted vertex pairs)."""
    local = torch.tensor(TET_EDGES, device=tets.device)
    ends = torch.sort(tets[:, local].reshape(-1, 2), dim=-1).values
    return torch.unique(ends, dim=0)
