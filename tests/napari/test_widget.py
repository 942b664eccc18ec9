"""The interactive widget in a real viewer: click, preview, commit, undo (2D, stack, scaled)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_sam._napari import widget as widget_module
from napari_sam._napari.sample_data import nuclei, nuclei_stack, rgb_shapes
from napari_sam._napari.widget import SamWidget

pytestmark = pytest.mark.gui


def disk_centre(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    return np.array([rows.mean(), cols.mean()])


def add_sample(viewer, sample):
    data, kwargs, _ = sample()[0]
    return viewer.add_image(data, **kwargs)


def click(widget, image, pixel, negative=False):
    """A click on image pixel `pixel` ((z,) row, col) through world coordinates."""
    points = widget.points_layer
    widget.negative.value = negative
    points.add(points.world_to_data(image.data_to_world(pixel)))


def make_widget(viewer, qtbot, wait, model):
    w = SamWidget(viewer, model=model, diameter="off")  # the prompt mechanics at SAM's scale
    viewer.window.add_dock_widget(w)
    wait(qtbot, w)
    return w


def test_click_commit_undo_2d(make_napari_viewer, qtbot, wait, disk_model):
    viewer = make_napari_viewer()
    image = add_sample(viewer, nuclei)
    w = make_widget(viewer, qtbot, wait, disk_model)
    click(w, image, (200, 150))
    preview = w.preview_layer.data.astype(bool)
    np.testing.assert_allclose(disk_centre(preview), (200, 150), atol=1.5)
    assert w.candidate.value.startswith("1/3")
    w.commit()
    labels = viewer.layers["nuclei labels"]
    assert labels.data.dtype == np.uint32 and tuple(labels.scale) == tuple(image.scale)
    first = labels.data == 1
    np.testing.assert_array_equal(first, preview)
    click(w, image, (200, 170))  # overlaps the first object
    second_preview = w.preview_layer.data.astype(bool)
    w.commit()
    assert set(np.unique(labels.data)) == {0, 1, 2}
    np.testing.assert_array_equal(labels.data == 1, first)  # first object intact
    np.testing.assert_array_equal(labels.data == 2, second_preview & ~first)
    w.undo()
    np.testing.assert_array_equal(labels.data, first.astype(np.uint32))
    w.overwrite.value = True
    click(w, image, (200, 170))
    w.commit()
    assert (labels.data == 2).sum() == second_preview.sum()  # overwrite: whole object
    w.undo()
    np.testing.assert_array_equal(labels.data, first.astype(np.uint32))  # exact pixels back


def test_stack_slice(make_napari_viewer, qtbot, wait, disk_model):
    viewer = make_napari_viewer()
    image = add_sample(viewer, nuclei_stack)
    viewer.dims.set_current_step(0, 3)
    w = make_widget(viewer, qtbot, wait, disk_model)
    assert w._key[1] == (3,)
    click(w, image, (3, 100, 120))
    w.commit()
    labels = viewer.layers["nuclei stack labels"]
    assert labels.data.shape == image.data.shape
    assert set(np.unique(labels.data[3])) == {0, 1} and not labels.data[[0, 1, 2, 4]].any()
    first = labels.data == 1
    viewer.dims.set_current_step(0, 1)
    wait(qtbot, w)
    assert not w.preview_layer.data.any()
    click(w, image, (1, 100, 120))
    w.commit()
    assert (labels.data[1] == 2).sum() == first.sum() and (labels.data == 1).sum() == first.sum()
    w.undo()
    np.testing.assert_array_equal(labels.data, first.astype(np.uint32))
    viewer.dims.set_current_step(0, 3)  # embedding cached: no worker
    assert w.ready
    click(w, image, (3, 50, 60))  # a prompt left on slice 3 stays on slice 3
    viewer.dims.set_current_step(0, 1)
    assert w.ready and not w.preview_layer.data.any()
    viewer.dims.set_current_step(0, 3)
    assert w.preview_layer.data.any()


def test_scaled_translated_image(make_napari_viewer, qtbot, wait, disk_model):
    viewer = make_napari_viewer()
    data = nuclei()[0][0][:256, :384]
    image = viewer.add_image(data, scale=(2.0, 0.5), translate=(10.0, -20.0))
    w = make_widget(viewer, qtbot, wait, disk_model)
    for layer in (w.points_layer, w.shapes_layer):
        assert tuple(layer.scale) == (2.0, 0.5) and tuple(layer.translate) == (10.0, -20.0)
    click(w, image, (100, 200))
    np.testing.assert_allclose(disk_centre(w.preview_layer.data > 0), (100, 200), atol=1.5)
    w.clear()
    # a Points layer with another transform still lands on the right image pixel
    w.points_layer.scale, w.points_layer.translate = (1.0, 1.0), (0.0, 0.0)
    w.points_layer.add([10.0 + 2 * 60, -20.0 + 0.5 * 300])  # world coordinates
    np.testing.assert_allclose(disk_centre(w.preview_layer.data > 0), (60, 300), atol=1.5)
    w.commit()
    labels = viewer.layers[f"{image.name} labels"]
    assert tuple(labels.scale) == (2.0, 0.5) and tuple(labels.translate) == (10.0, -20.0)
    np.testing.assert_allclose(disk_centre(labels.data == 1), (60, 300), atol=1.5)
    first = labels.data == 1
    click(w, image, (60, 320))  # overlaps the first object
    w.commit()
    assert set(np.unique(labels.data)) == {0, 1, 2}
    np.testing.assert_array_equal(labels.data == 1, first)
    w.undo()
    np.testing.assert_array_equal(labels.data, first.astype(np.uint32))


def test_multimask_negative_refine_box(make_napari_viewer, qtbot, wait, disk_model):
    viewer = make_napari_viewer()
    image = add_sample(viewer, rgb_shapes)
    w = make_widget(viewer, qtbot, wait, disk_model)
    click(w, image, (128, 128))
    sizes = [w.preview_layer.data.sum()]
    for _ in range(3):
        w.next_mask()
        sizes.append(w.preview_layer.data.sum())
    assert sizes[1] > sizes[0] and sizes[2] > sizes[1] and sizes[3] == sizes[0]
    assert w.candidate.value.startswith("1/3") and "0.90" in w.candidate.value
    click(w, image, (128, 134), negative=True)
    assert list(w.points_layer.features["sign"]) == ["positive", "negative"]
    inputs = disk_model.last_inputs
    assert inputs["mask_input"] is not None and not inputs["multimask"]  # refinement
    assert not w.preview_layer.data[128, 134]
    w.clear()
    assert not len(w.points_layer.data) and not w.preview_layer.data.any()
    w.shapes_layer.add_rectangles(np.array([[40, 50], [40, 90], [70, 90], [70, 50]]))
    prev = w.preview_layer.data.astype(bool)
    rows, cols = np.nonzero(prev)
    np.testing.assert_allclose([rows.min(), rows.max(), cols.min(), cols.max()],
                               [40, 70, 50, 90], atol=2)  # low-res mask: 4 image px a pixel
    w.shapes_layer.data = []
    w.shapes_layer.add_polygons(np.array([[150, 150], [150, 200], [200, 175]]))
    assert disk_model.last_inputs["mask_input"] is not None
    assert w.preview_layer.data[170, 175] and not w.preview_layer.data[100, 100]


def test_real_tiny_decoder(make_napari_viewer, qtbot, wait, tiny_model):
    viewer = make_napari_viewer()
    image = add_sample(viewer, nuclei)
    w = make_widget(viewer, qtbot, wait, tiny_model)
    click(w, image, (256, 256))
    assert w.preview_layer.data.shape == (512, 512) and w.decode_ms
    click(w, image, (100, 100))
    assert w.preview_layer.data.shape == (512, 512)


def test_errors_are_notifications(make_napari_viewer, qtbot, wait, disk_model, tmp_path,
                                  monkeypatch):
    errors = []
    monkeypatch.setattr(widget_module, "show_error", errors.append)
    viewer = make_napari_viewer()
    w = SamWidget(viewer, model=disk_model)  # no image layer: no crash, a status line
    assert "no image layer" in w.status.value
    w.commit()
    viewer.add_image(np.zeros((2, 3, 32, 32)), name="4d")
    assert any("4 dimensions" in e for e in errors)
    image = add_sample(viewer, nuclei)
    w.image.value = image
    wait(qtbot, w)
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    w.model_file.value = bad
    w.model.value = "file..."
    qtbot.waitUntil(lambda: not w._embedder.busy and errors[-1].startswith("napari-sam could not"),
                    timeout=20_000)
    assert not w.ready and "load the model" in errors[-1]


def test_key_bindings_released(make_napari_viewer, qtbot, wait, disk_model):
    viewer = make_napari_viewer()
    add_sample(viewer, nuclei)
    mine = []
    viewer.bind_key("U", lambda v: mine.append(1))
    w = make_widget(viewer, qtbot, wait, disk_model)
    toggle = viewer.bind_key("N", None)  # the widget's binding, taken out to call it
    toggle(viewer)
    assert w.negative.value
    viewer.bind_key("N", toggle)
    # Shift+click gives a negative point: our press callback runs before napari's "add"
    w.points_layer.mode = "select"
    w.points_layer.mode = "add"
    assert w.points_layer.mouse_drag_callbacks[0] == w.prompt_layers.on_press
    w.negative.value = False
    w.prompt_layers.on_press(w.points_layer, SimpleNamespace(modifiers=("Shift",)))
    w.points_layer.add([10, 10])
    assert list(w.points_layer.features["sign"]) == ["negative"]
    n = len(viewer.layers)
    viewer.window.remove_dock_widget(w.native)  # as the dock's close button does
    # the prompt layers go with the widget, on the next turn of the event loop
    qtbot.waitUntil(lambda: len(viewer.layers) == n - 3, timeout=5000)
    assert w._closed and viewer.bind_key("Shift-C", None) is None  # nothing left bound
    assert viewer.bind_key("U", None) is not None  # the user's own binding came back


def test_diameter_field_estimate_circle_and_zoom(make_napari_viewer, qtbot, wait):
    """The object-size control: Estimate fills the field from the slice (in a worker), a
    circle of that diameter is drawn, and the embedding is made at the zoom it implies."""
    from napari_sam._napari.diameter import CIRCLE_LAYER
    from napari_sam.training.multiscale import median_diameter, scaled_sample

    viewer = make_napari_viewer()
    image, labels = scaled_sample("nuclei", 56, (256, 256), 0)
    layer = viewer.add_image(image, name="big nuclei")
    w = SamWidget(viewer, model="bundled")
    viewer.window.add_dock_widget(w)
    wait(qtbot, w)
    w.size.estimate()
    qtbot.waitUntil(lambda: w.size.worker is None, timeout=30_000)
    d = float(w.diameter.value)
    assert abs(d / median_diameter(labels) - 1) < 0.25
    assert "checked by the model" in w.status.value  # the bundled model was loaded
    circle = viewer.layers[CIRCLE_LAYER]
    (ellipse,) = circle.data
    assert np.ptp(ellipse[:, 0]) == pytest.approx(d)
    wait(qtbot, w)
    plan_zoom = w._embedder.predictor  # the Predictor holding the zoomed embedding
    emb = plan_zoom.get_embedding()
    assert emb.original_size == layer.data.shape
    assert emb.input_size[0] < 250  # big objects: the image is shrunk to the preferred size
    w.diameter.value = "off"
    wait(qtbot, w)
    assert w._embedder.predictor.get_embedding().input_size == (256, 256)


def test_auto_diameter_is_estimated_once_per_stack(make_napari_viewer, qtbot, wait,
                                                   monkeypatch):
    """Diameter "auto" on a stack: the first slice estimates it (checked by the model, up to
    a second), the next slices reuse it; a new model estimates again."""
    from napari_sam import load_model, size_probe

    calls = []
    real = size_probe.refine_diameter

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(size_probe, "refine_diameter", counted)
    viewer = make_napari_viewer()
    add_sample(viewer, nuclei_stack)
    viewer.dims.set_current_step(0, 2)
    w = SamWidget(viewer, model=load_model("bundled"))  # diameter auto
    viewer.window.add_dock_widget(w)
    wait(qtbot, w)
    assert w.size.value is None and len(calls) == 1
    found = dict(w._embedder.diameters)
    assert len(found) == 1 and 10 < next(iter(found.values())) < 60  # nuclei, ~24 px
    for z in (3, 4):
        viewer.dims.set_current_step(0, z)
        wait(qtbot, w)
        assert w.ready and w._key[1] == (z,)
    assert len(calls) == 1  # reused on slices 3 and 4
    w._embedder.set_model(w._embedder.model, "bundled", "auto")
    assert w._embedder.diameters == {}
