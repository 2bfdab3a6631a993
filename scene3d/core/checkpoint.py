"""Checkpoint and file I/O: atomic writes, and loads that never unpickle code.

Every checkpoint scene3d writes holds only tensors and plain containers, so it loads with
``torch.load(..., weights_only=True)``, the default of current torch. Every write goes to a temporary file first
and is renamed into place, so a process killed at any moment leaves either the old file or the new one, never a
torn one; the temporary file it may leave behind carries its pid, and :func:`remove_stale_temporaries` removes it on
the next start.

Example:
    >>> import torch, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "step-000000001.ckpt"
    >>> atomic_torch_save({"step": 1, "w": torch.zeros(2)}, path)
    >>> load_checkpoint(path)["step"]
    1
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

from scene3d.core.errors import RunFolderError

_PLAIN_SCALARS = (bool, int, float, str, bytes, type(None))
TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+" + re.escape(TMP_SUFFIX) + "$")


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", *, tmp_dir: str | Path | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing, then rename it onto ``path`` once the block finishes without error.

    Args:
        path: the final file name.
        mode: ``"wb"`` or ``"w"``.
        tmp_dir: where the temporary file lives until the rename; it must be on the same file system as ``path``.
            Defaults to ``path``'s folder. Pass another folder when tools list ``path``'s folder and would trip
            over a half-written temporary file (nerfstudio parses every name in its checkpoint folder).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tmp_dir) if tmp_dir is not None else path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    # the writer's pid in the name: a later start can tell the leftovers of a killed writer from a live one's
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=tmp_dir)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            # mkstemp creates 0600; the file gets what a plain open() would give it (or keeps the replaced file's)
            os.fchmod(f.fileno(), _file_mode(path))
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_open` left in ``folder`` when its process was killed mid-write.

    Only files named like :func:`atomic_open`'s (``.<name>.<pid>.<random>.tmp``) whose writing process is gone are
    removed; a file of a process that is still running (another run writing into the same folder) is kept, and so is
    every other file. Returns the removed paths.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TMP_NAME.match(entry.name)
        if match is None or not entry.is_file() or _process_alive(int(match["pid"])):
            continue
        try:
            entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _file_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the existing file's, else ``0o666`` less the umask."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        pass
    try:  # Linux reports the umask without changing it (os.umask would, for every thread, for a moment)
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[Any]], None], *, binary: bool = True) -> None:
    """Write a file atomically through ``write(file_object)``."""
    with atomic_open(path, "wb" if binary else "w") as f:
        write(f)


def atomic_torch_save(obj: Any, path: str | Path, *, tmp_dir: str | Path | None = None) -> None:
    """``torch.save`` that leaves either the old file or the complete new one, never a torn file.

    Raises:
        TypeError: if ``obj`` holds anything ``torch.load(weights_only=True)`` would refuse (see
            :func:`check_weights_only`), so a checkpoint that cannot be reloaded is never written.
    """
    check_weights_only(obj)
    with atomic_open(path, "wb", tmp_dir=tmp_dir) as f:
        torch.save(obj, f)


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy scalars turned into Python numbers and numpy arrays into tensors, recursively.

    nerfstudio's own schedulers put ``numpy.float64`` learning rates into optimizer and scheduler states; those are
    ``float`` subclasses that pickle as numpy objects, which ``torch.load(weights_only=True)`` refuses.
    """
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, dict):  # dict or OrderedDict (a state_dict, whose version ``_metadata`` is kept)
        out = type(obj)((k, to_plain(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):
            out._metadata = obj._metadata  # type: ignore[attr-defined]
        return out
    if type(obj) in (list, tuple):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def check_weights_only(obj: Any, where: str = "checkpoint") -> None:
    """Raise ``TypeError`` naming the first entry of ``obj`` that is not a tensor, plain scalar or container.

    Scalars must be exactly ``bool``, ``int``, ``float``, ``str``, ``bytes`` or ``None`` (subclasses such as
    ``numpy.float64`` pickle as other objects; see :func:`to_plain`). Containers are ``dict`` (string or integer
    keys), ``list``, ``tuple`` and ``OrderedDict``; ``torch.Size``, ``torch.dtype`` and ``torch.device`` are accepted
    because the weights-only unpickler accepts them.
    """
    if type(obj) in _PLAIN_SCALARS or isinstance(obj, (torch.Tensor, torch.Size, torch.dtype, torch.device)):
        return
    if isinstance(obj, Mapping):
        if type(obj) is not dict and type(obj).__name__ != "OrderedDict":
            raise TypeError(f"{where} is a {type(obj).__name__}; use a plain dict so weights_only loading works")
        for key, value in obj.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{where} has a key of type {type(key).__name__}; use str or int keys")
            check_weights_only(value, f"{where}[{key!r}]")
        return
    if isinstance(obj, list | tuple):
        if type(obj) not in (list, tuple):
            raise TypeError(f"{where} is a {type(obj).__name__}; use a plain list or tuple")
        for i, value in enumerate(obj):
            check_weights_only(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} holds a {type(obj).__module__}.{type(obj).__name__}, which torch.load(weights_only=True) refuses; "
        "store tensors, numbers, strings and plain containers only"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        RunFolderError: if the file is missing, torn or holds pickled objects (with what to do about it).
    """
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(path, "checkpoint file does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError or EOFError depending on the damage
        raise RunFolderError(
            path, f"cannot be loaded with weights_only=True ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from err
    if not isinstance(state, dict):
        raise RunFolderError(path, f"holds a {type(state).__name__}, expected a dict")
    return state


def checkpoint_steps(checkpoint_dir: str | Path) -> list[int]:
    """Steps of the ``step-XXXXXXXXX.ckpt`` files in a nerfstudio checkpoint folder, sorted; other files ignored."""
    steps = []
    for name in os.listdir(checkpoint_dir):
        if name.startswith("step-") and name.endswith(".ckpt"):
            digits = name[len("step-") : -len(".ckpt")]
            if digits.isdigit():
                steps.append(int(digits))
    return sorted(steps)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path:
    """The newest ``step-*.ckpt`` in a nerfstudio checkpoint folder.

    Raises:
        RunFolderError: if the folder is missing or holds no checkpoint.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise RunFolderError(checkpoint_dir, "checkpoint folder does not exist")
    steps = checkpoint_steps(checkpoint_dir)
    if not steps:
        raise RunFolderError(checkpoint_dir, "holds no step-*.ckpt checkpoint")
    return checkpoint_dir / f"step-{steps[-1]:09d}.ckpt"
