import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scene3d.core.checkpoint import (
    remove_stale_temporaries,
    atomic_open,
    atomic_torch_save,
    check_weights_only,
    checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
)
from scene3d.core.errors import RunFolderError


def test_roundtrip_weights_only(tmp_path: Path):
    state = {"step": 3, "pipeline": {"w": torch.arange(4.0)}, "opt": [{"lr": 1e-2, "betas": (0.9, 0.99)}]}
    atomic_torch_save(state, tmp_path / "step-000000003.ckpt")
    loaded = load_checkpoint(tmp_path / "step-000000003.ckpt")
    assert loaded["step"] == 3 and torch.equal(loaded["pipeline"]["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["step-000000003.ckpt"]  # no temporary file left behind


def test_refuses_objects_that_weights_only_cannot_load(tmp_path: Path):
    class Thing:
        pass

    with pytest.raises(TypeError, match=r"checkpoint\['x'\]\[0\]"):
        check_weights_only({"x": [Thing()]})
    with pytest.raises(TypeError):
        atomic_torch_save({"x": Path("a")}, tmp_path / "a.ckpt")
    assert not (tmp_path / "a.ckpt").exists()


def test_latest_checkpoint_ignores_stray_files(tmp_path: Path):
    for step in (5, 40):
        atomic_torch_save({"step": step}, tmp_path / f"step-{step:09d}.ckpt")
    (tmp_path / ".step-000000041.ckpt.abc.tmp").write_bytes(b"torn")
    (tmp_path / "notes.txt").write_text("x")
    assert checkpoint_steps(tmp_path) == [5, 40]
    assert latest_checkpoint(tmp_path).name == "step-000000040.ckpt"
    with pytest.raises(RunFolderError, match="holds no step"):
        latest_checkpoint(tmp_path / "..")
    with pytest.raises(RunFolderError, match="does not exist"):
        latest_checkpoint(tmp_path / "missing")


def test_torn_file_gives_clear_error(tmp_path: Path):
    (tmp_path / "step-000000001.ckpt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(RunFolderError, match="weights_only=True"):
        load_checkpoint(tmp_path / "step-000000001.ckpt")


def test_killed_writer_leaves_previous_file_intact(tmp_path: Path):
    """SIGKILL a process while it rewrites a large checkpoint: the old complete file is still there and loads."""
    target = tmp_path / "step-000000001.ckpt"
    atomic_torch_save({"step": 1, "w": torch.zeros(10)}, target)
    script = (
        "import torch, sys\n"
        "from scene3d.core.checkpoint import atomic_torch_save\n"
        "while True:\n"
        f"    atomic_torch_save({{'step': 2, 'w': torch.zeros(20_000_000)}}, {str(target)!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        # wait until the writer has started a temporary file (importing torch takes seconds on a busy machine), then
        # kill it mid-write
        import time

        deadline = time.monotonic() + 180
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never started a temporary file"
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    state = load_checkpoint(target)
    assert state["step"] in (1, 2)
    assert os.path.getsize(target) > 0

    # the next start removes what the killed writer left, and nothing else
    orphans = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert orphans and all(f".{proc.pid}." in p.name for p in orphans)
    live = tmp_path / f".step-000000003.ckpt.{os.getpid()}.abcd1234.tmp"  # a writer that is still running
    live.write_bytes(b"x")
    mine = tmp_path / "notes.tmp"
    mine.write_text("a user's file")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(orphans)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, mine.name])


def test_numpy_scalars_are_refused_then_made_plain(tmp_path: Path):
    import numpy as np

    state = {"optimizers": {"lr": np.float64(0.01), "betas": (np.float32(0.9), 0.99)}, "grid": np.zeros(3)}
    with pytest.raises(TypeError, match="numpy"):
        check_weights_only(state)
    from scene3d.core.checkpoint import to_plain

    plain = to_plain(state)
    assert type(plain["optimizers"]["lr"]) is float and isinstance(plain["grid"], torch.Tensor)
    atomic_torch_save(plain, tmp_path / "a.ckpt")
    assert load_checkpoint(tmp_path / "a.ckpt")["optimizers"]["betas"][1] == 0.99


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path: Path):
    old = os.umask(0o027)
    try:
        with atomic_open(tmp_path / "new.bin") as f:
            f.write(b"x")
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
        (tmp_path / "kept.bin").write_bytes(b"old")
        (tmp_path / "kept.bin").chmod(0o604)
        with atomic_open(tmp_path / "kept.bin") as f:
            f.write(b"new")
        assert (tmp_path / "kept.bin").stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(old)
