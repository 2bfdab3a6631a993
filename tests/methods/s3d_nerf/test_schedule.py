from __future__ import annotations

import torch

from scene3d.core.checkpoint import check_weights_only
from scene3d.methods.s3d_nerf.schedule import StepDecaySchedulerConfig, step_decay_multiplier


def test_multiplier_warmup_and_steps():
    kw = dict(max_steps=100, gamma=0.5, milestones=(0.5, 0.75), warmup_steps=4)
    values = [step_decay_multiplier(s, **kw) for s in (0, 3, 49, 50, 74, 75, 99)]
    assert values == [0.25, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    assert all(type(v) is float for v in values)


def test_scheduler_state_is_weights_only_safe():
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([param], lr=1e-2)
    sched = StepDecaySchedulerConfig(max_steps=10, milestones=(0.5,)).setup().get_scheduler(opt, 1e-2)
    for _ in range(6):
        opt.step()
        sched.step()
    assert abs(opt.param_groups[0]["lr"] - 1e-2 * 0.33) < 1e-12
    check_weights_only({"s": sched.state_dict(), "o": opt.state_dict()})
    assert all(type(v) is float for v in sched.state_dict()["_last_lr"])
