"""The staged schedule of the generation harness: stage of every step, resume mid-stage, status line, per-stage
learning-rate decay and optimizer reset."""

from __future__ import annotations

import pytest
import torch

from scene3d.methods.common.schedule import (
    Stage,
    StagedSchedule,
    reset_optimizer_state,
    set_learning_rates,
    stage_decay,
)


def _schedule() -> StagedSchedule:
    return StagedSchedule((
        Stage("initial", 4, label="view 1 of 3", view=0),
        Stage("view", 3, label="view 2 of 3", view=1),
        Stage("view", 3, label="view 3 of 3", view=2),
        Stage("final", 2, label="final pass"),
    ))  # fmt: skip


def test_every_step_falls_in_exactly_one_stage():
    s = _schedule()
    assert s.total_steps == 12
    assert s.starts == (0, 4, 7, 10)
    kinds = [s.at(step).stage.kind for step in range(12)]
    assert kinds == ["initial"] * 4 + ["view"] * 6 + ["final"] * 2
    firsts = [step for step in range(12) if s.at(step).is_first_step]
    assert firsts == [0, 4, 7, 10]
    assert [s.at(step).step_in_stage for step in range(4, 7)] == [0, 1, 2]


def test_resume_mid_stage_lands_in_the_same_stage_and_needs_only_earlier_views():
    s = _schedule()
    # a checkpoint of step 8 resumes at step 9: second step of the third stage; views 0..2 must exist
    position = s.at(9)
    assert (position.index, position.step_in_stage, position.is_first_step) == (2, 2, False)
    assert s.views_needed(9) == [0, 1, 2]
    assert s.views_needed(3) == [0]
    assert s.first_stage_of_view(2) == 2 and s.first_stage_of_view(7) is None


def test_steps_past_the_end_are_marked_finished():
    s = _schedule()
    assert not s.at(11).finished
    assert s.at(12).finished and s.at(12).stage.kind == "final"
    assert s.status(12) == "final pass — done"
    with pytest.raises(ValueError, match="step must be >= 0"):
        s.at(-1)


def test_status_line_names_stage_activity_and_progress():
    s = _schedule()
    assert s.status(5, "inpainting") == "view 2 of 3 — inpainting (step 2 of 3)"
    assert s.status(0) == "view 1 of 3 (step 1 of 4)"


def test_bad_stages_are_rejected():
    with pytest.raises(ValueError, match="at least 1 step"):
        Stage("view", 0)
    with pytest.raises(ValueError, match="at least one stage"):
        StagedSchedule(())


def test_stage_decay_restarts_every_stage():
    s = _schedule()
    values = [stage_decay(s.at(step), 0.1) for step in range(12)]
    for start in s.starts:
        assert values[start] == 1.0
    # geometric within a stage: 0.1 ** (i / n)
    assert abs(values[5] - 0.1 ** (1 / 3)) < 1e-12 and abs(values[6] - 0.1 ** (2 / 3)) < 1e-12
    assert all(v > 0.1 for v in values)


def test_learning_rates_and_optimizer_reset():
    p = torch.nn.Parameter(torch.ones(3))
    q = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.Adam([{"params": [p], "lr": 0.02}, {"params": [q], "lr": 1e-3}])
    (p.sum() + q.sum()).backward()
    opt.step()
    assert len(opt.state) == 2
    set_learning_rates(opt, [0.02, 1e-3], 0.5)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 5e-4]
    reset_optimizer_state(opt)
    assert len(opt.state) == 0
    opt.step()  # still usable: Adam starts from fresh moments
    assert opt.state[p]["step"] == 1
    with pytest.raises(ValueError, match="one base rate per parameter group"):
        set_learning_rates(opt, [0.02], 1.0)
