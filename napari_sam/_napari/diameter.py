"""The object-size control shared by the widgets: a diameter field, an Estimate button, and a
circle of that diameter on the canvas so the user can see whether it matches the cells.

The field takes "auto" (estimate when the model runs), a number of pixels, or "off" (the
whole image resized to the model input). *Estimate* runs `scale.estimate_diameter` on the
displayed slice in a worker, checks it with the model's instance decoder when a model that
has one is loaded (`scale.model_diameter`), and writes the result into the field; the
circle (a Shapes layer, "SAM diameter") is drawn at the centre of the view whenever the
field holds a number.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from magicgui.widgets import Container, LineEdit, PushButton

from ..scale import parse_diameter  # noqa: F401 (used here and re-exported)
from . import layers as L

CIRCLE_LAYER = "SAM diameter"


class DiameterControl:
    """Owns `field`, `estimate_button` and `row` (add `row` to a widget). image(): the
    Image layer in use; channels(): its channel choice; status(text): a message sink;
    model(): the loaded model or None (never loads one)."""

    def __init__(self, viewer, image: Callable, channels: Callable, status: Callable,
                 model: Callable = lambda: None) -> None:
        self.viewer, self._image, self._channels, self._status = viewer, image, channels, status
        self._model = model
        self.field = LineEdit(value="auto", tooltip=(
            "object diameter in pixels: auto (estimated when the model runs), a number, or "
            "off (no zoom: the whole image shrunk to the model's input). The model sees the "
            "image zoomed so objects have the size it segments best."))
        self.estimate_button = PushButton(text="Estimate", tooltip=(
            "estimate the diameter from the displayed slice (no prompts needed)"))
        self.row = Container(widgets=[self.field, self.estimate_button], layout="horizontal",
                             labels=False, label="diameter")
        self.estimate_button.changed.connect(self.estimate)
        self.field.changed.connect(lambda *_: self.show_circle())
        self.worker = None

    @property
    def value(self):
        """None (estimate), "off", or the diameter in pixels; "auto" for bad text (with a
        message), so a typo never stops the model."""
        try:
            return parse_diameter(self.field.value)
        except ValueError as err:
            self._status(str(err))
            return None

    # ---- estimate in a worker -------------------------------------------------------------
    def estimate(self, *_) -> None:
        image = self._image()
        if image is None or self.worker is not None:
            return
        from napari.qt.threading import create_worker

        from ..scale import estimate_diameter

        data = L.image_data(image)
        index = L.slice_index(self.viewer, image)
        channels = self._channels()
        model = self._model()

        def job():
            from dataclasses import replace

            from ..scale import MIN_CONFIDENCE, model_diameter
            from ..size_probe import can_probe
            from .embedding import _central_window

            window = _central_window(data, index, 2048)
            est = estimate_diameter(window, channels)
            if model is None or not can_probe(model) or est.confidence < MIN_CONFIDENCE:
                return est, False
            return replace(est, diameter=model_diameter(window, est, model, channels)), True

        self._status("estimating the object diameter ...")
        self.estimate_button.enabled = False
        self.worker = create_worker(job, _start_thread=False, _connect={
            "returned": self._estimated, "errored": lambda err: self._status(
                f"could not estimate the diameter: {err}"),
            "finished": self._finished})
        self.worker.start()

    def _estimated(self, result) -> None:
        est, checked = result
        try:
            self.field.value = f"{est.diameter:.0f}"
            how = "checked by the model" if checked else f"confidence {est.confidence:.2f}"
            self._status(f"estimated diameter {est.diameter:.0f} px ({how}); the circle "
                         "shows it")
        except RuntimeError:  # the widget was closed while the worker ran
            pass

    def _finished(self) -> None:
        self.worker = None
        try:
            self.estimate_button.enabled = True
        except RuntimeError:  # the widget was closed while the worker ran
            pass

    def quit(self) -> None:
        if self.worker is not None:
            self.worker.quit()

    def close(self) -> None:
        """The panel is closing: stop the estimate and remove the circle on the event loop's
        next turn (removing layers while napari tears the dock down crashes it)."""
        from qtpy.QtCore import QTimer

        self.quit()
        QTimer.singleShot(0, self.remove_circle)

    def remove_circle(self) -> None:
        """Remove the circle layer (call on the event loop's next turn when closing)."""
        layer = self.circle_layer()
        if layer is not None:
            self.viewer.layers.remove(layer)

    # ---- the circle ----------------------------------------------------------------------
    def circle_layer(self):
        for ly in self.viewer.layers:
            if ly.name == CIRCLE_LAYER:
                return ly
        return None

    def show_circle(self) -> None:
        """Draw a circle of the field's diameter (image pixels) at the centre of the view."""
        try:
            d = parse_diameter(self.field.value)
        except ValueError:
            return
        image = self._image()
        layer = self.circle_layer()
        if not isinstance(d, float) or image is None:
            if layer is not None:
                layer.data = []
            return
        t = L.transform(image, 2)
        scale = np.asarray(t["scale"], float)
        translate = np.asarray(t["translate"], float)
        centre_world = np.asarray(self.viewer.camera.center[-2:], float)
        centre = (centre_world - translate) / scale  # image pixels (row, col)
        r = d / 2
        ellipse = np.array([[centre[0] - r, centre[1] - r], [centre[0] - r, centre[1] + r],
                            [centre[0] + r, centre[1] + r], [centre[0] + r, centre[1] - r]])
        if layer is None:
            active = self.viewer.layers.selection.active  # clicks must still go there
            layer = self.viewer.add_shapes(
                [ellipse], shape_type="ellipse", name=CIRCLE_LAYER, edge_color="yellow",
                face_color="transparent", edge_width=max(1.0, d / 20), scale=tuple(scale),
                translate=tuple(translate), opacity=0.9)
            if active is not None:
                self.viewer.layers.selection.active = active
        else:
            layer.data = [ellipse]
            layer.shape_type = ["ellipse"]
            layer.edge_width = [max(1.0, d / 20)]
