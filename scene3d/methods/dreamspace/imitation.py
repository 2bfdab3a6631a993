"""The imitating network: a texture field on the room's surface, trained on the texels already coloured, that
fills every texel left (occluded and tiny areas).

The paper synthesises the texture of "occluded and tiny structure areas" with "an implicit imitating network"; its
architecture is not given. Here it is a coordinate MLP (:class:`TextureField`):

    c(p, n) = σ(MLP([γ(p̂), n])),   p̂ = 2 (p − p_min) / (p_max − p_min) − 1,

with ``γ`` NeRF's sinusoidal encoding (Mildenhall et al. 2020, Eq. 4) of the position normalised to the room's box
and the surface normal ``n`` as a second input (floor, walls and ceiling get their own styles). A sinusoidal MLP
rather than a hash grid: a hash grid's fine levels are untrained (near zero) exactly where the network has to
invent texture, whereas a low-frequency MLP continues what it learnt around a gap smoothly, which is what
"imitating" the surrounding texture asks for. The loss is the mean squared error to the coloured texels
(:func:`imitation_loss`), on random batches.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.fields.encodings import frequency_encoding
from scene3d.fields.mlp import MLP


class TextureField(nn.Module):
    """``(position, normal) → RGB`` on the room's surface (module docstring).

    Args:
        bounds: the room's box ``[min, max]`` (positions are normalised to [-1, 1] in it).
        n_frequencies: sinusoidal frequencies of the position encoding (``2^k π``, ``k < n``).
        hidden_dim: neurons per hidden layer.
        n_hidden_layers: hidden layers.
        use_normals: give the normal as an input.

    Example:
        >>> field = TextureField(torch.tensor([[0.0, 0, 0], [4, 3, 2.5]]), n_frequencies=4, hidden_dim=16)
        >>> field(torch.rand(5, 3), torch.rand(5, 3)).shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        bounds: Float[Tensor, "2 3"],
        *,
        n_frequencies: int = 8,
        hidden_dim: int = 128,
        n_hidden_layers: int = 4,
        use_normals: bool = True,
    ) -> None:
        super().__init__()
        if n_frequencies < 0:
            raise ValueError(f"n_frequencies must be >= 0, got {n_frequencies}")
        lo, hi = bounds[0].float(), bounds[1].float()
        self.register_buffer("lo", lo.clone())
        self.register_buffer("span", (hi - lo).clamp_min(1e-6).clone())
        self.n_frequencies = n_frequencies
        self.use_normals = use_normals
        in_dim = 3 + 6 * n_frequencies + (3 if use_normals else 0)
        self.mlp = MLP(in_dim, hidden_dim, n_hidden_layers, 3, out_activation="sigmoid")

    def forward(self, positions: Float[Tensor, "*batch 3"], normals: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
        """Colour in [0, 1] at surface points with their unit normals."""
        x = 2.0 * (positions - self.lo) / self.span - 1.0
        features = [frequency_encoding(x, self.n_frequencies)]
        if self.use_normals:
            features.append(normals)
        return self.mlp(torch.cat(features, dim=-1))

    @torch.no_grad()
    def predict(
        self, positions: Float[Tensor, "N 3"], normals: Float[Tensor, "N 3"], *, chunk: int = 1 << 16
    ) -> Float[Tensor, "N 3"]:
        """Colours of many points, in chunks, without gradients."""
        out = [self(positions[i : i + chunk], normals[i : i + chunk]) for i in range(0, positions.shape[0], chunk)]
        return torch.cat(out) if out else positions.new_zeros(0, 3)


def imitation_loss(
    field: TextureField,
    positions: Float[Tensor, "B 3"],
    normals: Float[Tensor, "B 3"],
    colors: Float[Tensor, "B 3"],
) -> Tensor:
    """Mean squared error of the field's colours at coloured texels (the imitation objective)."""
    return torch.mean((field(positions, normals) - colors) ** 2)


def sample_batch(count: int, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """``batch`` indices drawn uniformly (with replacement) from ``range(count)``."""
    if count < 1:
        raise ValueError("no coloured texel to imitate")
    return torch.randint(count, (batch,), generator=generator).to(device)
