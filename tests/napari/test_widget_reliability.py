"""The interactive widget under the actions of a first-contact user (issue 19): closing the
panel, boxes then clicks, large images, awkward prompts, commits over objects, deleted
layers, closing the window while a worker runs."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QPushButton

from napari_sam._napari import widget as widget_module
from napari_sam._napari.sample_data import nuclei
from napari_sam._napari.widget import SamWidget

pytestmark = pytest.mark.gui


def add_sample(viewer, sample=nuclei):
    data, kwargs, _ = sample()[0]
    return viewer.add_image(data, **kwargs)


def click(widget, image, pixel, negative=False):
    points = widget.points_layer
    widget.negative.value = negative
    points.add(points.world_to_data(image.data_to_world(pixel)))


def docked(viewer, qtbot, wait, model):
    w = SamWidget(viewer, model=model)
    dock = viewer.window.add_dock_widget(w, name="Interactive segmentation")
    wait(qtbot, w)
    return w, dock


def close_button(dock):
    buttons = dock.titleBarWidget().findChildren(QPushButton)
    return next(b for b in buttons if "close" in (b.toolTip() or "").lower())


def still_works(viewer, qtbot):
    """napari survives: events run, a layer can be added and the window drawn."""
    qtbot.wait(50)
    viewer.add_points([[10, 10]], name="after")
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.ndim == 3 and shot.shape[0] > 100


@pytest.mark.parametrize("how", ["button", "remove_dock_widget"])
def test_closing_the_panel_keeps_napari_alive(make_napari_viewer, qtbot, wait, disk_model,
                                              how):
    viewer = make_napari_viewer(show=True)
    add_sample(viewer)
    w, dock = docked(viewer, qtbot, wait, disk_model)
    assert len(viewer.layers) == 4
    if how == "button":
        close_button(dock).click()
    else:
        viewer.window.remove_dock_widget(dock)
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=5000)  # SAM layers gone
    assert w._closed
    still_works(viewer, qtbot)


def slow_model(model, seconds=1.5):
    """`model` whose image encoder takes `seconds` longer: a worker that is still running."""
    import copy
    import time

    slow = copy.deepcopy(model)
    forward = slow.image_encoder.forward

    def sleepy(x):
        time.sleep(seconds)
        return forward(x)

    slow.image_encoder.forward = sleepy
    return slow


def test_closing_the_window_while_an_embedding_runs(make_napari_viewer, qtbot, disk_model):
    """The worker's last signals reach a closed widget: nothing touches its deleted Qt
    controls (pytest-qt fails the test on an exception in a slot)."""
    viewer = make_napari_viewer(show=True)
    add_sample(viewer)
    w = SamWidget(viewer, model=slow_model(disk_model))
    viewer.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: w._embedder.busy, timeout=5000)
    worker = w._embedder.worker
    done = []
    worker.finished.connect(lambda: done.append(1))
    viewer.close()
    assert w._closed
    qtbot.waitUntil(lambda: bool(done), timeout=20_000)
    qtbot.wait(100)
