"""s3d-nerf's learning-rate schedule: a short linear warm-up, then ×γ at fixed fractions of training.

This is nerfacc's Instant-NGP schedule (×0.33 at 1/2, 3/4 and 9/10 of the steps). It is written as a
``LambdaLR`` with a Python-float multiplier because torch's ``MultiStepLR`` (nerfstudio's multi-step schedule)
keeps a ``collections.Counter`` of milestones in its state, which ``torch.load(weights_only=True)`` refuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from nerfstudio.engine.schedulers import Scheduler, SchedulerConfig


def step_decay_multiplier(
    step: int, *, max_steps: int, gamma: float, milestones: tuple[float, ...], warmup_steps: int
) -> float:
    """Learning-rate multiplier at ``step``: ``min(1, (step + 1) / warmup) · γ^(#milestones passed)``.

    ``milestones`` are fractions of ``max_steps``.

    Example:
        >>> [step_decay_multiplier(s, max_steps=100, gamma=0.5, milestones=(0.5,), warmup_steps=0) for s in (49, 50)]
        [1.0, 0.5]
    """
    warm = 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)
    passed = sum(1 for m in milestones if step >= int(m * max_steps))
    return float(warm * gamma**passed)


@dataclass
class StepDecaySchedulerConfig(SchedulerConfig):
    """Warm-up, then step decay (see the module docstring)."""

    _target: type = field(default_factory=lambda: StepDecayScheduler)
    max_steps: int = 30_000
    """Steps the milestones are fractions of."""
    gamma: float = 0.33
    """Decay factor at each milestone."""
    milestones: tuple[float, ...] = (0.5, 0.75, 0.9)
    """Fractions of ``max_steps`` where the rate is multiplied by ``gamma``."""
    warmup_steps: int = 0
    """Linear warm-up from ``1/warmup_steps`` of the rate."""


class StepDecayScheduler(Scheduler):
    """``LambdaLR`` over :func:`step_decay_multiplier`."""

    config: StepDecaySchedulerConfig

    def get_scheduler(self, optimizer: torch.optim.Optimizer, lr_init: float) -> torch.optim.lr_scheduler.LRScheduler:
        c = self.config

        def multiplier(step: int) -> float:
            return step_decay_multiplier(
                step, max_steps=c.max_steps, gamma=c.gamma, milestones=c.milestones, warmup_steps=c.warmup_steps
            )

        return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=multiplier)
