"""The generated-view store: a nerfstudio dataset written view by view, atomically, and read back on resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from scene3d.core.errors import DataError
from scene3d.datasets.validate import validate_dataset
from scene3d.methods.common.views import GeneratedView, GeneratedViewStore

K = torch.tensor([[20.0, 0.0, 12.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]])


def _view(seed: int, *, depth: bool = True, mask: bool = True) -> GeneratedView:
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.rand(3, generator=g)
    return GeneratedView(
        rgb=torch.rand(16, 24, 3, generator=g),
        c2w=c2w,
        K=K,
        depth=(1.0 + 3.0 * torch.rand(16, 24, generator=g)) if depth else None,
        mask=(torch.rand(16, 24, generator=g) > 0.5) if mask else None,
        stage="inpainted",
        meta={"candidate": seed},
    )


def test_views_round_trip_at_file_precision(tmp_path: Path):
    store = GeneratedViewStore.open(tmp_path / "generated_views")
    written = [_view(0), _view(1, mask=False), _view(2, depth=False)]
    for v in written:
        store.append(v)
    back = GeneratedViewStore.open(tmp_path / "generated_views")
    assert len(back) == 3
    for i, (w, r) in enumerate(zip(written, back.views())):
        assert r.index == i and r.stage == "inpainted" and r.meta == {"candidate": i}
        assert torch.allclose(r.rgb, w.rgb, atol=0.5 / 255 + 1e-6)  # 8-bit colours
        assert torch.allclose(r.c2w, w.c2w) and torch.allclose(r.K, w.K)
        if w.depth is None:
            assert r.depth is None
        else:
            assert torch.allclose(r.depth, w.depth, atol=0.5e-3 + 1e-6)  # millimetres
        if w.mask is None:
            assert r.mask is None
        else:
            assert torch.equal(r.mask, w.mask)


def test_store_is_a_valid_nerfstudio_dataset(tmp_path: Path):
    store = GeneratedViewStore.open(tmp_path / "gv")
    store.append(_view(0))
    store.append(_view(1))
    store.set_scene(scene_box=torch.tensor([[-1.0, -1, -1], [1, 1, 1]]), background_color=(1.0, 1.0, 1.0))
    summary = validate_dataset(tmp_path / "gv")
    assert (summary.num_frames, summary.width, summary.height, summary.has_depth) == (2, 24, 16, True)
    meta = json.loads((tmp_path / "gv" / "transforms.json").read_text())
    assert meta["scene_box"] == [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]
    # the generation mask is not nerfstudio's mask_path (which would restrict training to the masked pixels)
    assert all("mask_path" not in f and "generated_mask_path" in f for f in meta["frames"])


def test_a_view_is_in_the_store_only_once_transforms_json_lists_it(tmp_path: Path, monkeypatch):
    store = GeneratedViewStore.open(tmp_path / "gv")
    store.append(_view(0))
    before = (tmp_path / "gv" / "transforms.json").read_bytes()

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt  # the process dies while listing view 1

    monkeypatch.setattr(GeneratedViewStore, "_write_transforms", killed)
    with pytest.raises(KeyboardInterrupt):
        store.append(_view(1))
    monkeypatch.undo()
    assert (tmp_path / "gv" / "transforms.json").read_bytes() == before
    assert not [p for p in (tmp_path / "gv").rglob("*.tmp")]
    back = GeneratedViewStore.open(tmp_path / "gv")
    assert len(back) == 1
    back.append(_view(1))  # resume: view 1 is written again (its file is replaced)
    assert len(GeneratedViewStore.open(tmp_path / "gv")) == 2


def test_resume_into_a_new_run_copies_views_and_leaves_the_old_run_untouched(tmp_path: Path):
    old = GeneratedViewStore.open(tmp_path / "run_a" / "generated_views")
    for seed in range(3):
        old.append(_view(seed))
    stamp = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "run_a").rglob("*") if p.is_file()}
    new = GeneratedViewStore.open(tmp_path / "run_b" / "generated_views", copy_from=tmp_path / "run_a" / "generated_views")
    assert len(new) == 3
    assert torch.equal(new.view(2).rgb, old.view(2).rgb) and torch.equal(new.view(1).depth, old.view(1).depth)
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "run_a").rglob("*") if p.is_file()}
    assert after == stamp
    # a store that already holds views is not overwritten by copy_from
    again = GeneratedViewStore.open(tmp_path / "run_b" / "generated_views", copy_from=tmp_path / "run_a" / "generated_views")
    assert len(again) == 3


def test_damaged_stores_raise_one_error_naming_the_file(tmp_path: Path):
    store = GeneratedViewStore.open(tmp_path / "gv")
    store.append(_view(0))
    os.remove(tmp_path / "gv" / "depths" / "view_00000.png")
    with pytest.raises(DataError, match=r"depths/view_00000.png.*frames\[0\].depth_file_path"):
        GeneratedViewStore.open(tmp_path / "gv")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "transforms.json").write_text(json.dumps({"frames": []}))
    with pytest.raises(DataError, match="not a scene3d generated-view store"):
        GeneratedViewStore.open(tmp_path / "other")


def test_bad_views_are_rejected():
    # (under the test suite's runtime shape checks jaxtyping rejects it first, with a TypeError)
    with pytest.raises((ValueError, TypeError), match="depth"):
        GeneratedView(rgb=torch.rand(4, 4, 3), c2w=torch.eye(4), K=K, depth=torch.ones(3, 4))
    bad = torch.eye(4)
    bad[0, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        GeneratedView(rgb=torch.rand(4, 4, 3), c2w=bad, K=K)
