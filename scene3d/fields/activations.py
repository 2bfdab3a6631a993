"""Activations for radiance fields."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """``exp(x)`` whose gradient uses ``exp(min(x, 15))`` (Instant-NGP's density activation, torch-ngp's name).

    Example:
        >>> import torch
        >>> x = torch.tensor([0.0, 20.0], requires_grad=True)
        >>> trunc_exp(x).sum().backward()
        >>> bool(x.grad[1] == torch.exp(torch.tensor(15.0)))
        True
    """
    return _TruncExp.apply(x)
