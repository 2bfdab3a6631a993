"""CLNeRF's viewer control: a slider choosing which scan (capture time) the viewer renders.

The slider lives on the model (nerfstudio's viewer installs every ``ViewerElement`` it finds on the pipeline) and
spans the scans the model can render; renders without a scan id of their own (the viewer, ``ns-render``) use it.
During a run the slider already spans every scan the run will train; a scan not trained yet renders as the
latest trained one.
"""

from __future__ import annotations

from nerfstudio.viewer.viewer_elements import ViewerSlider

SLIDER_NAME = "CLNeRF scan (time)"


def make_scan_slider(num_scans: int, default: int | None = None) -> ViewerSlider:
    """A slider over scan ids ``0 … num_scans − 1`` (defaults to the latest scan)."""
    if num_scans < 1:
        raise ValueError(f"num_scans must be >= 1, got {num_scans}")
    value = num_scans - 1 if default is None else min(max(int(default), 0), num_scans - 1)
    # viser draws a slider with min == max badly: a one-scan model gets 0..1 and 1 renders scan 0
    return ViewerSlider(
        SLIDER_NAME, default_value=value, min_value=0, max_value=max(num_scans - 1, 1), step=1,
        hint="Which scan (capture time) to render, with that scan's appearance and geometry embeddings",
    )  # fmt: skip


def slider_scan_id(slider: ViewerSlider, num_scans: int) -> int:
    """The slider's scan id, clamped to the scans the model holds now."""
    return min(max(int(round(float(slider.value))), 0), num_scans - 1)


class ScanSlider:
    """Holds the model's slider and replaces it (while not yet shown) when the number of scans changes."""

    def __init__(self, num_scans: int) -> None:
        self.slider = make_scan_slider(num_scans)

    def rebuild(self, num_scans: int, default: int | None = None) -> None:
        """Span ``num_scans`` scans (only before the viewer has installed the slider; a shown slider keeps its range)."""
        if self.slider.gui_handle is None:
            self.slider = make_scan_slider(num_scans, default)

    def scan_id(self, num_scans: int) -> int:
        """The chosen scan id, clamped to ``[0, num_scans)``."""
        return slider_scan_id(self.slider, num_scans)
