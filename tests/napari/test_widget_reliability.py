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
    w = SamWidget(viewer, model=model, diameter="off")
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
    w = SamWidget(viewer, model=slow_model(disk_model), diameter="off")
    viewer.window.add_dock_widget(w)
    qtbot.waitUntil(lambda: w._embedder.busy, timeout=5000)
    worker = w._embedder.worker
    done = []
    worker.finished.connect(lambda: done.append(1))
    viewer.close()
    assert w._closed
    qtbot.waitUntil(lambda: bool(done), timeout=20_000)
    qtbot.wait(100)


def test_after_a_box_clicks_add_points_again(make_napari_viewer, qtbot, wait, disk_model):
    viewer = make_napari_viewer()
    image = add_sample(viewer)
    w, _ = docked(viewer, qtbot, wait, disk_model)
    viewer.layers.selection.active = w.shapes_layer
    w.shapes_layer.mode = "add_rectangle"
    w.shapes_layer.add_rectangles(np.array([[100, 100], [160, 170]]))
    qtbot.waitUntil(lambda: viewer.layers.selection.active is w.points_layer, timeout=2000)
    assert w.points_layer.mode == "add" and w.shapes_layer.mode == "pan_zoom"
    assert w.preview_layer.data[130, 130] and not w.preview_layer.data[300, 300]
    click(w, image, (130, 135))  # refines the box instead of replacing it
    assert len(w.shapes_layer.data) == 1 and len(w.points_layer.data) == 1


def test_point_markers_are_capped_on_large_numpy_layers(make_napari_viewer, qtbot,
                                                        disk_model):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4000, 4000), np.uint8), name="big")
    w = SamWidget(viewer, model=disk_model, tiling="off", diameter="off")
    qtbot.waitUntil(lambda: w.points_layer is not None, timeout=5000)
    assert w.points_layer.current_size <= 12 and w.shapes_layer.current_edge_width <= 3
    small = viewer.add_image(np.zeros((96, 96), np.uint8), name="small")
    w.image.value = small
    assert w.points_layer.current_size >= 4
    w.release()


def test_commits_over_objects_say_what_happened(make_napari_viewer, qtbot, wait, disk_model,
                                                monkeypatch):
    errors = []
    monkeypatch.setattr(widget_module, "show_error", errors.append)
    viewer = make_napari_viewer()
    image = add_sample(viewer)
    w, _ = docked(viewer, qtbot, wait, disk_model)
    click(w, image, (200, 150))
    w.commit()
    labels = viewer.layers["nuclei labels"]
    # the new labels layer goes under the preview, boxes and points layers
    names = [ly.name for ly in viewer.layers]
    assert names.index("nuclei labels") < names.index("SAM preview")
    assert w.status.value.startswith("committed object 1")
    click(w, image, (200, 154))  # almost all of it on object 1: refused, no sliver
    assert "mostly on existing objects" in w.status.value  # said before Shift-C
    w.commit()
    assert set(np.unique(labels.data)) == {0, 1}
    assert "mostly on existing objects" in w.status.value and errors
    w.clear()
    click(w, image, (200, 150))  # wholly covered: the status says so too
    w.commit()
    assert "only on existing objects" in w.status.value
    w.clear()
    click(w, image, (200, 170))  # partly covered: committed, the status says how much
    w.commit()
    assert set(np.unique(labels.data)) == {0, 1, 2}
    assert "committed object 2" in w.status.value and "on existing objects" in w.status.value


def test_preview_colour_differs_from_the_first_labels(make_napari_viewer, qtbot, wait,
                                                      disk_model):
    from napari.utils.colormaps.standardize_color import transform_color

    viewer = make_napari_viewer()
    add_sample(viewer)
    w, _ = docked(viewer, qtbot, wait, disk_model)
    preview = np.asarray(w.preview_layer.colormap.map(np.array([1])))[0, :3]
    labels = viewer.add_labels(np.zeros((4, 4), np.uint32))
    colours = np.asarray(labels.colormap.map(np.arange(1, 21)))[:, :3]
    assert np.sqrt(((colours - preview) ** 2).sum(1)).min() > 0.5
    assert np.abs(preview - transform_color("lime")[0][:3]).max() > 0.5  # positive points


def test_another_image_size_gets_a_new_labels_layer(make_napari_viewer, qtbot, wait,
                                                    disk_model):
    viewer = make_napari_viewer()
    image = add_sample(viewer)
    w, _ = docked(viewer, qtbot, wait, disk_model)
    click(w, image, (200, 150))
    w.commit()
    assert w.labels_layer.value is viewer.layers["nuclei labels"]
    other = viewer.add_image(np.random.default_rng(0).random((300, 200)), name="other")
    w.image.value = other
    wait(qtbot, w)
    assert w.labels_layer.value is None  # "new layer": the old one does not fit
    click(w, other, (150, 100))
    w.commit()
    assert viewer.layers["other labels"].data.shape == (300, 200)
    assert w.status.value.startswith("committed object 1")


def test_deleted_layers(make_napari_viewer, qtbot, wait, disk_model):
    viewer = make_napari_viewer()
    image = add_sample(viewer)
    w, _ = docked(viewer, qtbot, wait, disk_model)
    viewer.layers.remove(w.points_layer)  # the prompt layers come back, clicks work
    qtbot.waitUntil(lambda: w.points_layer is not None and w.ready, timeout=5000)
    assert "SAM points was deleted" in w.status.value
    assert [ly.name for ly in viewer.layers].count("SAM points") == 1
    click(w, image, (200, 150))
    assert w.preview_layer.data.any()
    viewer.layers.remove(image)  # no orphan SAM layers, no "ready" status
    qtbot.wait(50)
    assert [ly.name for ly in viewer.layers] == []
    assert "no image layer" in w.status.value and not w.ready


def test_awkward_prompts_say_what_to_do(make_napari_viewer, qtbot, wait, disk_model):
    from napari_sam._napari import hints

    viewer = make_napari_viewer()
    image = add_sample(viewer)
    w, _ = docked(viewer, qtbot, wait, disk_model)
    click(w, image, (200, 150), negative=True)  # a background click alone
    assert not w.preview_layer.data.any() and w.status.value == hints.NEGATIVE_ONLY
    w.clear()
    assert w.status.value.startswith("ready")
    click(w, image, (100, 100))
    click(w, image, (400, 400))  # a second object far away: one merged mask
    assert w.status.value == hints.SEPARATE
    w.clear()
    assert w.status.value.startswith("ready")
    click(w, image, (200, 150))
    click(w, image, (202, 153))  # two clicks on one object: no hint
    assert w.status.value.startswith("ready") and w.preview_layer.data.any()


def test_awkward_prompts_on_a_tiled_image(make_napari_viewer, qtbot, wait, disk_model):
    from napari_sam._napari import hints

    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((1024, 1024)), name="big")
    w, _ = docked(viewer, qtbot, wait, disk_model)
    assert w.tiled.active
    click(w, image, (300, 300), negative=True)
    qtbot.wait(100)
    assert w.status.value == hints.NEGATIVE_ONLY and not w.tiled.busy
    w.clear()
    assert w.status.value.startswith("ready")
    click(w, image, (100, 100))
    click(w, image, (900, 900))
    qtbot.waitUntil(lambda: not w.tiled.busy, timeout=60_000)
    qtbot.wait(100)
    assert w.status.value == hints.SEPARATE
    w.clear()
    assert w.status.value.startswith("ready")


def test_closing_the_window_while_automask_runs(make_napari_viewer, qtbot, disk_model):
    from napari_sam._napari.automask_widget import AutomaskWidget

    viewer = make_napari_viewer(show=True)
    add_sample(viewer)
    w = AutomaskWidget(viewer, model=slow_model(disk_model))
    viewer.window.add_dock_widget(w)
    w.points_per_side.value = 4
    w.run()
    assert w.busy
    worker = w._worker
    done = []
    worker.finished.connect(lambda: done.append(1))
    viewer.close()
    qtbot.waitUntil(lambda: bool(done), timeout=30_000)
    qtbot.wait(100)


def test_commit_while_a_tile_is_embedded_says_wait(make_napari_viewer, qtbot, wait,
                                                   disk_model):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random((1024, 1024)), name="big")
    w = SamWidget(viewer, model=slow_model(disk_model, 1.0), diameter="off")
    viewer.window.add_dock_widget(w)
    wait(qtbot, w)
    assert w.tiled.active
    click(w, image, (300, 300))
    assert w.tiled.busy
    w.commit()  # too early: not "nothing to commit", and nothing written
    assert "still being computed" in w.status.value and "big labels" not in viewer.layers
    qtbot.waitUntil(lambda: not w.tiled.busy and w.tiled.answer is not None, timeout=60_000)
    w.commit()
    assert w.status.value.startswith("committed object 1")
    click(w, image, (300, 300))  # the same object again: said before Shift-C
    qtbot.waitUntil(lambda: not w.tiled.busy and w.tiled.answer is not None, timeout=60_000)
    assert "Shift-C would refuse this" in w.status.value
