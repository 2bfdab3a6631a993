"""Staged training schedules of the generation methods: typed stages, the stage of any global step, a status line.

A generation method trains in stages (Text2NeRF: the support set of view 0, then one stage per inpainted view,
then a final pass; DreamPolish: geometry, then texture; QNeRF: edit, then consolidate). Each stage has a fixed
number of trainer steps, so the stage of every global step is known in advance: a run resumed from a checkpoint
of step ``s`` (``ns-train ... --load-dir``) continues *inside* the stage that holds ``s`` (resume mid-stage), and
nerfstudio's ``--max-num-iterations`` is simply :attr:`StagedSchedule.total_steps`.

This module is pure Python (no nerfstudio): :class:`Stage`, :class:`StagedSchedule` and :class:`StagePosition`,
plus two helpers that stage-wise training usually needs, applied to plain ``torch.optim`` optimizers:

* :func:`stage_decay` — a learning-rate multiplier restarted at every stage and decayed geometrically to
  ``final_ratio`` at the stage's end (TensoRF's and Text2NeRF's ``lr_decay_target_ratio``);
* :func:`reset_optimizer_state` — forget Adam's moments (what re-creating the optimizer does; Text2NeRF does it
  at every new view).

The viewer's status line is :meth:`StagedSchedule.status` (``"view 3 of 9 — inpainting"``), shown by
:class:`scene3d.methods.common.viewer.GenerationViewer`.

Example:
    >>> schedule = StagedSchedule((
    ...     Stage("initial", 100, label="view 1 of 3", view=0),
    ...     Stage("view", 50, label="view 2 of 3", view=1),
    ...     Stage("view", 50, label="view 3 of 3", view=2),
    ...     Stage("final", 20, label="final pass"),
    ... ))
    >>> schedule.total_steps
    220
    >>> p = schedule.at(130)
    >>> p.index, p.step_in_stage, p.is_first_step
    (1, 30, False)
    >>> schedule.status(130, "training")
    'view 2 of 3 — training (step 31 of 50)'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stage:
    """One stage of a staged schedule."""

    kind: str
    """What the stage does, in the method's vocabulary (``"initial"``, ``"view"``, ``"final"``, ``"texture"``);
    methods branch on it."""
    steps: int
    """Trainer steps in the stage (≥ 1)."""
    label: str = ""
    """How the status line names the stage (``"view 3 of 9"``); defaults to ``kind``."""
    view: int | None = None
    """The generated view this stage adds (its index in the view store), if any."""

    def __post_init__(self) -> None:
        if not self.kind:
            raise ValueError("a stage needs a non-empty kind")
        if self.steps < 1:
            raise ValueError(f"stage {self.kind!r} must have at least 1 step, got {self.steps}")
        if self.view is not None and self.view < 0:
            raise ValueError(f"stage {self.kind!r}: view must be >= 0, got {self.view}")

    @property
    def name(self) -> str:
        """The label, or the kind when there is no label."""
        return self.label or self.kind


@dataclass(frozen=True)
class StagePosition:
    """Where a global step falls in a schedule."""

    index: int
    """Index of the stage in :attr:`StagedSchedule.stages`."""
    stage: Stage
    start: int
    """Global step of the stage's first step."""
    step_in_stage: int
    """``step − start``, in ``[0, stage.steps)`` (larger only past the schedule's end, see ``finished``)."""
    finished: bool = False
    """The step lies past the last stage (a resumed run asked for more steps than the schedule has)."""

    @property
    def is_first_step(self) -> bool:
        """The step starts its stage (where a method generates the stage's view, resets its optimizer, ...)."""
        return self.step_in_stage == 0

    @property
    def fraction(self) -> float:
        """Progress through the stage in ``[0, 1)`` (clamped to 1 past the end)."""
        return min(1.0, self.step_in_stage / self.stage.steps)


@dataclass(frozen=True)
class StagedSchedule:
    """An ordered tuple of stages; global steps ``0 … total_steps − 1`` run through them in order."""

    stages: tuple[Stage, ...]

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a staged schedule needs at least one stage")
        object.__setattr__(self, "stages", tuple(self.stages))
        for stage in self.stages:
            if not isinstance(stage, Stage):
                raise ValueError(f"stages must be Stage objects, got {type(stage).__name__}")

    @classmethod
    def of(cls, stages: Iterable[Stage]) -> StagedSchedule:
        """A schedule from any iterable of stages."""
        return cls(tuple(stages))

    @property
    def total_steps(self) -> int:
        """Steps of all stages together (what ``--max-num-iterations`` should be)."""
        return sum(s.steps for s in self.stages)

    @property
    def starts(self) -> tuple[int, ...]:
        """Global step at which each stage starts."""
        out, at = [], 0
        for stage in self.stages:
            out.append(at)
            at += stage.steps
        return tuple(out)

    def at(self, step: int) -> StagePosition:
        """The stage holding global ``step`` (steps past the end belong to the last stage, ``finished=True``).

        Raises:
            ValueError: for a negative step.
        """
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        for index, (stage, start) in enumerate(zip(self.stages, self.starts)):
            if step < start + stage.steps:
                return StagePosition(index, stage, start, step - start)
        index = len(self.stages) - 1
        start = self.starts[-1]
        return StagePosition(index, self.stages[-1], start, step - start, finished=True)

    def first_stage_of_view(self, view: int) -> int | None:
        """Index of the first stage that adds generated view ``view`` (``None`` if no stage does)."""
        for index, stage in enumerate(self.stages):
            if stage.view == view:
                return index
        return None

    def views_needed(self, step: int) -> list[int]:
        """Generated views that must exist when global ``step`` trains: those of its stage and every earlier one."""
        position = self.at(step)
        return [s.view for s in self.stages[: position.index + 1] if s.view is not None]

    def status(self, step: int, activity: str | None = None) -> str:
        """The viewer's status line at ``step``: ``"<stage label> — <activity> (step i of n)"``."""
        position = self.at(step)
        if position.finished:
            return f"{position.stage.name} — done"
        head = position.stage.name if not activity else f"{position.stage.name} — {activity}"
        return f"{head} (step {position.step_in_stage + 1} of {position.stage.steps})"


def stage_decay(position: StagePosition, final_ratio: float) -> float:
    """Learning-rate multiplier ``final_ratio ** (step_in_stage / steps)``: 1 at each stage's start, decaying
    geometrically towards ``final_ratio`` at its end (TensoRF's ``lr_factor = ratio ** (1 / n_iters)`` applied once
    per step, restarted per stage as Text2NeRF does at every new view).

    Example:
        >>> p = StagedSchedule((Stage("a", 10),)).at(5)
        >>> round(stage_decay(p, 0.01), 6)
        0.1
    """
    if not 0.0 < final_ratio <= 1.0:
        raise ValueError(f"final_ratio must be in (0, 1], got {final_ratio}")
    return float(final_ratio ** position.fraction)


def set_learning_rates(optimizer: torch.optim.Optimizer, base_lrs: list[float], multiplier: float) -> None:
    """Set every parameter group's ``lr`` to ``base_lr · multiplier`` (one base rate per group, in order)."""
    if len(base_lrs) != len(optimizer.param_groups):
        raise ValueError(f"need one base rate per parameter group ({len(optimizer.param_groups)}), got {len(base_lrs)}")
    for group, base in zip(optimizer.param_groups, base_lrs):
        group["lr"] = float(base) * float(multiplier)


def reset_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Forget the optimizer's per-parameter state (Adam's moments and step counts), keeping its parameter groups:
    the same as re-creating it, without rebuilding what holds it (nerfstudio's ``Optimizers``)."""
    optimizer.state.clear()
