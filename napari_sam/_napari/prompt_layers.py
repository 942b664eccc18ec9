"""The Points, Shapes and preview layers that the interactive widget owns for one image."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from ..prompts import Prompt
from . import layers as L


class PromptLayers:
    """Preview (Labels), boxes (Shapes) and points (Points) over `image`.

    Calls `on_change()` when a prompt is added, removed or moved; `negative()` says whether
    plain clicks are background clicks (Shift + click inverts it).
    """

    def __init__(self, viewer, image, on_change: Callable[[], None],
                 negative: Callable[[], bool]) -> None:
        self.viewer, self.image = viewer, image
        self._on_change, self._negative = on_change, negative
        self.preview, self.shapes, self.points = L.add_prompt_layers(viewer, image, "SAM")
        self.points.mouse_drag_callbacks.insert(0, self.on_press)  # before napari's "add"
        for layer in (self.points, self.shapes):
            layer.events.data.connect(self._on_data)
        viewer.layers.selection.active = self.points
        self.points.mode = "add"

    @property
    def layers(self) -> Tuple:
        return self.preview, self.shapes, self.points

    def alive(self) -> bool:
        return all(layer in self.viewer.layers for layer in self.layers)

    def on_press(self, layer, event) -> None:
        """Mouse press on the points layer: choose the sign of the point napari will add."""
        self.set_negative(self._negative() != ("Shift" in event.modifiers))

    def set_negative(self, negative: bool) -> None:
        self.points.feature_defaults = {"sign": L.NEGATIVE if negative else L.POSITIVE}

    def _on_data(self, event) -> None:
        action = getattr(event, "action", "changed")
        if action in ("added", "removed", "changed"):
            self._on_change()
        if action == "added" and event.source is self.shapes:
            # after a box, back to clicks: a later click must not draw an invisible box
            # (deferred: napari finishes the shapes layer's mouse event first)
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self.back_to_points)

    def back_to_points(self) -> None:
        """Make the points layer the active one, in "add" mode (the shapes layer pans)."""
        if not self.alive():
            return
        self.shapes.mode = "pan_zoom"
        self.viewer.layers.selection.active = self.points
        self.points.mode = "add"

    def read(self, index: Tuple[int, ...]) -> Tuple[Prompt, int]:
        """The prompt on slice `index` and the number of ignored points/shapes."""
        return L.read_prompt(self.points, self.shapes, self.image, index)

    def clear(self, index: Tuple[int, ...]) -> None:
        """Delete the prompts on slice `index`."""
        for layer in (self.shapes, self.points):
            L.remove_on_slice(layer, self.image, index)

    def show(self, mask: Optional[np.ndarray]) -> None:
        self.preview.data = (mask.astype(np.uint8) if mask is not None
                             else np.zeros_like(self.preview.data))

    def remove(self) -> None:
        for layer in self.layers:
            layer.events.data.disconnect(self._on_data)
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
