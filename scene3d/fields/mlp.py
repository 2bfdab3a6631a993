"""Small fully connected networks (the density and colour heads of a radiance field).

These are plain torch on every device. tiny-cuda-nn's FullyFusedMLP is deliberately not used: its weights are
stored padded and in half precision, which would make checkpoints device-specific; on a GPU the MLPs are not the
bottleneck next to the encoding and sampling.
"""

from __future__ import annotations

from typing import Literal

from jaxtyping import Float
from torch import Tensor, nn

Activation = Literal["relu", "none", "sigmoid", "softplus"]


def _activation(name: Activation) -> nn.Module:
    return {"relu": nn.ReLU(), "none": nn.Identity(), "sigmoid": nn.Sigmoid(), "softplus": nn.Softplus()}[name]


class MLP(nn.Module):
    """``in_dim → [hidden_dim] × n_hidden_layers → out_dim`` with ReLU between layers.

    Args:
        in_dim: input features.
        hidden_dim: neurons per hidden layer.
        n_hidden_layers: hidden layers (tiny-cuda-nn's ``n_hidden_layers``); 0 is a single linear map.
        out_dim: outputs.
        out_activation: applied to the output.
        bias: whether layers have biases.

    Example:
        >>> import torch
        >>> MLP(16, 64, 1, 16)(torch.zeros(5, 16)).shape
        torch.Size([5, 16])
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        n_hidden_layers: int,
        out_dim: int,
        *,
        out_activation: Activation = "none",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if min(in_dim, hidden_dim, out_dim) < 1 or n_hidden_layers < 0:
            raise ValueError(
                f"MLP needs positive dims and n_hidden_layers >= 0, got in={in_dim}, hidden={hidden_dim}, "
                f"layers={n_hidden_layers}, out={out_dim}"
            )
        dims = [in_dim] + [hidden_dim] * n_hidden_layers + [out_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        layers.append(_activation(out_activation))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Float[Tensor, "*batch I"]) -> Float[Tensor, "*batch O"]:
        """Apply the network."""
        return self.net(x)
