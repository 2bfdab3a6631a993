"""DreamPolish's losses as pure functions: reference view, surface polishing, mesh regularisers.

* Reference view (DreamCraft3D / Magic123, which DreamPolish builds on): ``L_rgb = ‖M ⊙ (I − Î)‖²`` over the
  foreground and ``L_mask = ‖M − Ô‖²`` between the reference mask ``M`` and the rendered opacity ``Ô``.
* Surface polishing, ``L^novel_normal`` (DreamPolish, Sec. on surface polishing): a pretrained normal estimator
  predicts the normal map ``N̂`` of a render from a novel viewpoint with a varying field of view; the rendered
  normals ``N`` (in the same camera frame) are pulled to it, ``L = mean_{p ∈ M} (1 − ⟨N_p, N̂_p⟩)``: zero exactly
  when the rendered normals are the estimator's (tested). The estimator's output is a target, never
  differentiated.
* Normal smoothing, the paper's ablation (Fig. 6: "normal smoothing alone is not enough"):
  ``L = mean_{(f, g) adjacent} (1 − ⟨n_f, n_g⟩)`` over pairs of faces sharing an edge (the normal-consistency term
  of Magic3D / threestudio's mesh stage). As the polishing loss it is the comparison setting
  ``polish_loss="smoothing"``.
* Laplacian smoothing of the mesh, ``‖v − mean(neighbours)‖²``, a light regulariser of the DMTet stages.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from scene3d.renderers.mesh import face_normals
from scene3d.renderers.mesh_raster import face_adjacency


def reference_rgb_loss(
    rgb: Float[Tensor, "H W 3"], target: Float[Tensor, "H W 3"], mask: Float[Tensor, "H W"]
) -> Float[Tensor, ""]:
    """``mean(M ⊙ (I − Î)²)`` over the image: the foreground colour error (renders and target share the backdrop)."""
    return (mask[..., None] * (rgb - target) ** 2).mean()


def reference_mask_loss(opacity: Float[Tensor, "H W 1"], mask: Float[Tensor, "H W"]) -> Float[Tensor, ""]:
    """``mean((M − Ô)²)``."""
    return ((opacity[..., 0] - mask) ** 2).mean()


def normal_polish_loss(
    rendered: Float[Tensor, "B H W 3"], predicted: Float[Tensor, "B H W 3"], mask: Float[Tensor, "B H W"]
) -> Float[Tensor, ""]:
    """``mean_{p ∈ M}(1 − ⟨N_p, N̂_p⟩)`` with both normal maps in one camera frame (module docstring).

    ``rendered`` is normalised here (antialiased edges shorten it); ``predicted`` is detached.
    """
    if rendered.shape != predicted.shape:
        raise ValueError(f"rendered and predicted normals must have one shape, got {tuple(rendered.shape)} and {tuple(predicted.shape)}")
    n = F.normalize(rendered, dim=-1, eps=1e-8)
    target = F.normalize(predicted.detach(), dim=-1, eps=1e-8)
    weight = mask.to(n.dtype)
    cos = (n * target).sum(-1)
    return ((1.0 - cos) * weight).sum() / weight.sum().clamp_min(1.0)


def normal_consistency_loss(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, ""]:
    """``mean (1 − ⟨n_f, n_g⟩)`` over faces sharing an edge (module docstring)."""
    adjacency = face_adjacency(faces)
    n = face_normals(vertices, faces)
    own = torch.arange(faces.shape[0], device=faces.device)[:, None].expand_as(adjacency)
    pair = adjacency >= 0
    a, b = own[pair], adjacency[pair]
    if a.numel() == 0:
        return vertices.sum() * 0.0
    return (1.0 - (n[a] * n[b]).sum(-1)).mean()


def laplacian_loss(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, ""]:
    """``mean ‖v − mean of its edge neighbours‖²`` (uniform weights)."""
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = torch.cat([edges, edges.flip(1)])
    total = torch.zeros_like(vertices).index_add(0, edges[:, 0], vertices[edges[:, 1]])
    count = torch.zeros(vertices.shape[0], device=vertices.device).index_add(
        0, edges[:, 0], torch.ones(edges.shape[0], device=vertices.device)
    )
    mean = total / count.clamp_min(1.0)[:, None]
    return ((vertices - mean) ** 2).sum(-1).mean()
