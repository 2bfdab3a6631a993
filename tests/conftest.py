"""Test configuration: markers (defined here only), offline settings, shared tiny fixtures.

Markers:
    gpu      needs a CUDA device; skipped without one. ``@pytest.mark.gpu(backends=("tinycudann",))`` names the CUDA
             libraries under test: on a machine with CUDA, a test whose library is missing fails (it never skips),
             so a GPU run cannot pass by testing nothing.
    slow     an end-to-end run (training through nerfstudio, a benchmark-sized case); still part of `make test`.
    browser  drives headless Chromium (Debian's /usr/bin/chromium through Python playwright).
    data     needs the synthetic scene generator's system libraries (open3d, which needs libusb-1.0).

Requirements that are missing make `browser` and `data` tests skip, except when ``SCENE3D_STRICT=1`` (set by
``make test`` and so by CI), where they fail: a CI run that silently skipped the browser test proves nothing.
"""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# OpenMP threads that spin while waiting stall torch by 10x and more when another process, or another torch thread
# in the same process (the viewer's render thread beside training), holds a core: 2 threads, 2 cores. Passive
# waiting costs nothing measurable otherwise. It must be set before torch loads libgomp.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

STRICT = os.environ.get("SCENE3D_STRICT", "") == "1"
CHROMIUM = os.environ.get("SCENE3D_CHROMIUM", "/usr/bin/chromium")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gpu(backends=()): needs a CUDA device (skipped without one); fails if CUDA is present and a backend is missing"
    )
    config.addinivalue_line("markers", "slow: end-to-end or benchmark-sized; part of the full suite")
    config.addinivalue_line("markers", "browser: drives headless Chromium through playwright")
    config.addinivalue_line("markers", "data: needs the synthetic scene generator's system libraries (open3d)")


def _browser_missing() -> str | None:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        return f"playwright is not installed ({err})"
    return None


def _data_missing() -> str | None:
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError) as err:  # OSError: libusb-1.0.so.0 missing
        return f"open3d cannot be imported ({err}); apt-get install libusb-1.0-0"
    return None


GPU_BACKEND_INSTALL = {
    "tinycudann": "pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch (README: CUDA)",
    "nerfacc": "pip install nerfacc==0.5.2 (a dependency of scene3d)",
    "gsplat": "pip install gsplat==1.4.0 (a dependency of scene3d)",
}


def gpu_backend_problem(module: str) -> str | None:
    """Why the CUDA library ``module`` cannot be tested here (it does not import), or ``None``."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as err:
        return f"{module} does not import ({err}); install: {GPU_BACKEND_INSTALL.get(module, module)}"
    return None


def _check_gpu(item: pytest.Item) -> None:
    marker = item.get_closest_marker("gpu")
    if marker is None:
        return
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    problems = [p for m in marker.kwargs.get("backends", ()) if (p := gpu_backend_problem(m)) is not None]
    if problems:
        pytest.fail("[gpu] CUDA is present but a backend under test is missing: " + "; ".join(problems), pytrace=False)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _check_gpu(item)
    for marker, check in (("browser", _browser_missing), ("data", _data_missing)):
        if item.get_closest_marker(marker):
            reason = check()
            if reason is not None:
                if STRICT:
                    pytest.fail(f"[{marker}] requirement missing under SCENE3D_STRICT=1: {reason}", pytrace=False)
                pytest.skip(reason)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = os.environ.get("SCENE3D_TEST_ARTIFACTS", os.path.join(os.path.dirname(__file__), "..", "test-artifacts"))


def scene_visible(
    png: "object", *, region: tuple[float, float, float, float] = (0.0, 0.0, 0.55, 1.0), colourful: float = 0.0
) -> tuple[bool, str]:
    """Whether a screenshot shows a rendered scene in ``region`` (fractions x0, y0, x1, y1 of the image).

    A scene is visible when the region is neither blank nor one uniform colour: enough pixels differ from the
    region's most common colour, and the colours vary. With ``colourful > 0``, at least that fraction of the region
    must also be saturated colour (HSV saturation >= 0.3, value >= 0.2): the synthetic scenes' objects are coloured
    while an untrained radiance field renders grey noise. Returns the verdict and a short description.
    """
    import numpy as np

    img = np.asarray(png)[..., :3].astype(np.int16)
    h, w = img.shape[:2]
    x0, y0, x1, y1 = region
    crop = img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)]
    flat = crop.reshape(-1, 3)
    colours, counts = np.unique(flat // 8, axis=0, return_counts=True)
    mode = colours[counts.argmax()] * 8
    differs = (np.abs(flat - mode).max(axis=1) > 24).mean()
    std = float(flat.std(axis=0).mean())
    hi, lo = flat.max(axis=1), flat.min(axis=1)
    saturated = float((((hi - lo) >= 0.3 * np.maximum(hi, 1)) & (hi >= 51)).mean())
    ok = differs > 0.02 and std > 4.0 and len(colours) > 20 and saturated >= colourful
    return ok, (
        f"{differs:.1%} of pixels differ from the dominant colour, std {std:.1f}, {len(colours)} colour bins, "
        f"{saturated:.1%} saturated"
    )


class BrowserPage:
    """A headless Chromium page, the servers it opens, and a way to wait until it shows a rendered scene."""

    def __init__(self, page) -> None:
        self.page = page

    @staticmethod
    def free_port() -> int:
        """A TCP port on 127.0.0.1 that nothing listens on now."""
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @staticmethod
    def listening_hosts(pid: int, port: int) -> set[str]:
        """The addresses on which process ``pid`` or one of its children listens on ``port`` (empty: none yet)."""
        import psutil

        hosts = set()
        for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
            try:
                for conn in proc.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                        hosts.add(conn.laddr.ip)
            except psutil.Error:
                pass
        return hosts

    def wait_until_listening(self, proc, port: int, *, timeout_s: float, log_path=None) -> set[str]:
        """Wait until the subprocess ``proc`` (a viewer server) listens on ``port``; returns the addresses.

        Raises AssertionError when the process exits first (with the end of ``log_path``) or after ``timeout_s``.
        """
        import time

        deadline = time.monotonic() + timeout_s
        while not (hosts := self.listening_hosts(proc.pid, port)):
            if proc.poll() is not None:
                log = open(log_path).read()[-3000:] if log_path is not None else ""
                raise AssertionError(f"the server process exited before listening on port {port}:\n{log}")
            assert time.monotonic() < deadline, f"nothing listened on port {port} within {timeout_s:.0f} s"
            time.sleep(0.5)
        return hosts

    def open(self, port: int) -> None:
        """Load the viewer page served on 127.0.0.1:``port``."""
        self.page.goto(f"http://127.0.0.1:{port}")

    def wait_for_scene(
        self, name: str, *, timeout_s: float = 120.0, region=(0.0, 0.0, 0.55, 1.0), colourful: float = 0.0
    ) -> str:
        """Screenshot every second until :func:`scene_visible` holds; the last one is kept in ``ARTIFACTS/name``.

        Returns the verdict; raises AssertionError with the last verdict when nothing shows within ``timeout_s``.
        """
        import io
        import time

        from PIL import Image

        path = os.path.join(ARTIFACTS, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        deadline = time.monotonic() + timeout_s
        verdict = "no screenshot taken"
        while time.monotonic() < deadline:
            png = self.page.screenshot(path=path)
            ok, verdict = scene_visible(Image.open(io.BytesIO(png)), region=region, colourful=colourful)
            if ok:
                return verdict
            self.page.wait_for_timeout(1000)
        raise AssertionError(f"no rendered scene within {timeout_s:.0f} s ({verdict}); last screenshot: {path}")


@pytest.fixture
def browser():
    """A :class:`BrowserPage` on Debian's Chromium through playwright (tests using it are marked ``browser``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield BrowserPage(chromium.new_page(viewport={"width": 1000, "height": 700}))
        finally:
            chromium.close()


@pytest.fixture
def scene_visible_check():
    """:func:`scene_visible`, for tests that judge a screenshot themselves."""
    return scene_visible
