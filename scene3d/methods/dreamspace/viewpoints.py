"""Interior viewpoints chosen automatically where surfaces are visible but were not from the centre.

DreamSpace propagates the panorama's texture to what the centre cannot see by "texture inpainting in confident
regions" from other viewpoints. The paper does not say how those viewpoints are found; here it is a greedy search
(one viewpoint per stage, each seeing what the previous ones left):

1. candidate eyes are drawn uniformly in the room's free space (:func:`free_positions`): inside the room (rays from
   the point hit front faces, none escapes) and at least ``clearance`` from every surface;
2. each eye looks at a few texels still needing colour, drawn at random (so the views aim at the gaps);
3. a candidate camera scores the number of needy texels it sees *confidently*: inside its frame, facing it with
   ``cos θ ≥ min_cos``, nothing in between (:func:`~scene3d.methods.dreamspace.texturing.confident_mask`);
4. the best candidate wins; a viewpoint that would add fewer than ``min_gain`` texels is not worth a diffusion call,
   and the search stops (the imitating network takes the rest).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from scene3d.core.cameras import fibonacci_sphere, look_at
from scene3d.renderers.atlas import AtlasTexels
from scene3d.renderers.mesh import MeshRaycaster

from scene3d.methods.dreamspace.room import ray_statistics
from scene3d.methods.dreamspace.texturing import confident_mask


@dataclass(frozen=True)
class Viewpoint:
    """A chosen interior camera and what it would texture."""

    c2w: Float[Tensor, "4 4"]
    gain: int
    """Needy texels it sees confidently."""
    seen: Bool[Tensor, " T"]
    """Those texels."""


def free_positions(
    raycaster: MeshRaycaster,
    bounds: Float[Tensor, "2 3"],
    count: int,
    generator: torch.Generator,
    *,
    clearance: float,
    max_rounds: int = 8,
) -> Float[Tensor, "N 3"]:
    """Up to ``count`` points of the room's free space (module docstring, step 1), uniform in ``bounds``."""
    lo, hi = bounds[0].float(), bounds[1].float()
    probe = fibonacci_sphere(26)
    found: list[Tensor] = []
    for _ in range(max_rounds):
        points = lo + (hi - lo) * torch.rand(4 * count, 3, generator=generator)
        hits = raycaster.cast(points[:, None, :].expand(-1, len(probe), 3), probe[None].expand(len(points), -1, 3))
        clear = (hits.mask.all(-1)) & (hits.front_facing.all(-1)) & (hits.distance.min(-1).values >= clearance)
        found.extend(points[clear])
        if len(found) >= count:
            break
    if not found:
        return torch.zeros(0, 3)
    points = torch.stack(found[:count])
    # the 26-ray probe can miss thin furniture: keep the points the finer statistics agree are free
    keep = [i for i, p in enumerate(points) if ray_statistics(raycaster, p, n_rays=128) == (0.0, 0.0)]
    return points[keep]


def confident_sight(
    raycaster: MeshRaycaster,
    texels: AtlasTexels,
    index: Tensor,
    c2w: Float[Tensor, "4 4"],
    K: Float[Tensor, "3 3"],
    size: int,
    *,
    min_cos: float,
) -> Bool[Tensor, " M"]:
    """Which of the texels ``index`` the ``size × size`` pinhole camera sees confidently."""
    seen, _ = confident_mask(raycaster, texels.positions[index], texels.normals[index], c2w, min_cos=min_cos,
                             frame=(K, size, size))  # fmt: skip
    return seen


def select_viewpoint(
    raycaster: MeshRaycaster,
    texels: AtlasTexels,
    needed: Bool[Tensor, " T"],
    eyes: Float[Tensor, "N 3"],
    K: Float[Tensor, "3 3"],
    size: int,
    generator: torch.Generator,
    *,
    min_cos: float,
    targets_per_eye: int = 2,
    max_scored: int = 20_000,
    min_gain: int = 1,
) -> Viewpoint | None:
    """The candidate camera that confidently sees the most texels still ``needed`` (module docstring), or ``None``
    when no candidate adds ``min_gain`` texels."""
    needy = torch.nonzero(needed).squeeze(-1)
    if needy.numel() == 0 or eyes.shape[0] == 0:
        return None
    scored = needy
    if needy.numel() > max_scored:  # score on a random subset; the winner's gain is then counted on all
        scored = needy[torch.randperm(needy.numel(), generator=generator)[:max_scored]]
    best: tuple[int, Tensor] | None = None
    for eye in eyes:
        picks = scored[torch.randint(scored.numel(), (targets_per_eye,), generator=generator)]
        for target in texels.positions[picks].float():
            try:
                c2w = look_at(eye.float(), target)
            except ValueError:  # looking straight up or down, or at the eye itself
                continue
            score = int(confident_sight(raycaster, texels, scored, c2w, K, size, min_cos=min_cos).sum())
            if best is None or score > best[0]:
                best = (score, c2w)
    if best is None:
        return None
    c2w = best[1]
    seen_needy = confident_sight(raycaster, texels, needy, c2w, K, size, min_cos=min_cos)
    gain = int(seen_needy.sum())
    if gain < min_gain:
        return None
    seen = torch.zeros_like(needed)
    seen[needy[seen_needy]] = True
    return Viewpoint(c2w=c2w, gain=gain, seen=seen)
