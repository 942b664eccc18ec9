"""Segment in volume / Track in the interactive widget, and the automatic widget's 3D modes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam import load_model
from napari_sam._napari.volume_actions import TIME
from napari_sam._napari.widget import SamWidget
from napari_sam.training.synthetic3d import nuclei_volume
from napari_sam.volume.propagate import interior_points

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def bundled():
    return load_model("bundled")


@pytest.fixture(scope="module")
def vol():
    return nuclei_volume(5, shape=(12, 80, 80), n=3, radius=(8, 11))


def setup(make_napari_viewer, qtbot, wait, model, vol, scale=(2.0, 1.0, 1.0)):
    viewer = make_napari_viewer()
    image = viewer.add_image(vol.image, name="vol", scale=scale)
    gt = vol.labels == 1
    z = int(np.argmax(gt.sum((1, 2))))
    viewer.dims.set_current_step(0, z)
    w = SamWidget(viewer, model=model)
    viewer.window.add_dock_widget(w)
    wait(qtbot, w)
    return viewer, image, w, gt, z


def click(w, image, pixel):
    points = w.points_layer
    points.add(points.world_to_data(image.data_to_world(pixel)))


def test_segment_in_volume_commits_one_id_and_undoes(make_napari_viewer, qtbot, wait,
                                                     bundled, vol):
    viewer, image, w, gt, z = setup(make_napari_viewer, qtbot, wait, bundled, vol)
    r, c = interior_points(gt[z])[0]
    click(w, image, (z, r, c))
    assert w.preview_layer.data.any()
    assert w.volume.start() is None
    qtbot.waitUntil(lambda: not w.volume.busy, timeout=60_000)
    labels = viewer.layers["vol labels"]
    assert set(np.unique(labels.data)) == {0, 1}  # ONE id through the slices
    on = np.flatnonzero(labels.data.any((1, 2)))
    assert len(on) >= 3 and z in on
    obj = labels.data == 1
    assert (obj & gt).sum() / (obj | gt).sum() > 0.6
    assert tuple(labels.scale) == tuple(image.scale)
    assert len(w.points_layer.data) == 0  # prompts used up
    # a second object does not overwrite the first
    gt2 = vol.labels == 2
    z2 = int(np.argmax(gt2.sum((1, 2))))
    viewer.dims.set_current_step(0, z2)
    wait(qtbot, w)
    r2, c2 = interior_points(gt2[z2])[0]
    click(w, image, (z2, r2, c2))
    w.volume.toggle()  # the button / Shift-V
    qtbot.waitUntil(lambda: not w.volume.busy, timeout=60_000)
    assert set(np.unique(labels.data)) == {0, 1, 2}
    np.testing.assert_array_equal(labels.data == 1, obj)
    w.undo()
    assert set(np.unique(labels.data)) == {0, 1}
    w.undo()
    assert not labels.data.any()  # every slice of the object is gone


def test_track_adds_a_tracks_layer_that_follows_undo(make_napari_viewer, qtbot, wait,
                                                      bundled, vol):
    viewer, image, w, gt, z = setup(make_napari_viewer, qtbot, wait, bundled, vol,
                                    scale=(1.0, 1.0, 1.0))
    w.volume.kind.value = TIME
    r, c = interior_points(gt[z])[0]
    click(w, image, (z, r, c))
    w.volume.toggle()
    qtbot.waitUntil(lambda: not w.volume.busy, timeout=60_000)
    tracks = viewer.layers["vol tracks"]
    frames = np.flatnonzero(viewer.layers["vol labels"].data.any((1, 2)))
    assert len(tracks.data) == len(frames) and set(tracks.data[:, 0]) == {1}
    w.undo()
    assert "vol tracks" not in viewer.layers


def test_segment_in_volume_needs_a_click(make_napari_viewer, qtbot, wait, bundled, vol):
    viewer, image, w, gt, z = setup(make_napari_viewer, qtbot, wait, bundled, vol)
    assert "click on the object" in w.volume.start()
    assert not w.volume.busy
