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


def test_segment_in_volume_with_sam2_uses_the_memory(make_napari_viewer, qtbot, wait, vol,
                                                     monkeypatch):
    """A SAM 2.1 model: Shift-V follows the object with SAM 2's memory (volume.memory), and
    the answer is committed as one id that Undo removes."""
    import torch
    from testing_utils import randomize_

    import napari_sam.volume.memory as memory
    from napari_sam.model import build_model

    model = randomize_(build_model("test_sam2"), seed=2)
    with torch.no_grad():  # random weights: say the object is present
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(4.0)
    calls = []
    real = memory.segment_memory

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append(out[0].copy())
        return out
    monkeypatch.setattr(memory, "segment_memory", spy)
    viewer, image, w, gt, z = setup(make_napari_viewer, qtbot, wait, model, vol)
    r, c = interior_points(gt[z])[0]
    click(w, image, (z, r, c))
    assert w.volume.start() is None
    assert "SAM 2.1's memory" in w.status.value
    qtbot.waitUntil(lambda: not w.volume.busy, timeout=60_000)
    assert len(calls) == 1 and calls[0][z].any()  # the memory path ran, from slice z
    labels = viewer.layers["vol labels"]
    assert set(np.unique(labels.data)) == {0, 1}  # one id through the slices
    assert not ((labels.data == 1) & ~calls[0]).any()  # within the memory path's answer
    w.undo()
    assert not labels.data.any()


def test_segment_in_volume_needs_a_click(make_napari_viewer, qtbot, wait, bundled, vol):
    viewer, image, w, gt, z = setup(make_napari_viewer, qtbot, wait, bundled, vol)
    assert "click on the object" in w.volume.start()
    assert not w.volume.busy


def _discs(shape, discs, seed):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    img = np.zeros(shape, np.float32)
    for (r, c), rad in discs:
        img[(rr - r) ** 2 + (cc - c) ** 2 <= rad ** 2] = 1
    return img + np.random.default_rng(seed).normal(0, 0.05, shape).astype(np.float32)


def test_automatic_widget_links_3d_objects_and_tracks_divisions(make_napari_viewer, qtbot):
    from test_automask_widget import blob_model, make_widget, run

    from napari_sam._napari.automask_job import LINK3D, TRACKS

    viewer = make_napari_viewer()
    moving = np.stack([_discs((128, 128), [((24 + 2 * k, 24), 12), ((88, 104 - k), 12)], k)
                       for k in range(4)])
    viewer.add_image(moving, name="vol", scale=(2.0, 1.0, 1.0))
    w = make_widget(viewer, blob_model(), pred_iou=0.7, stability=0.9)
    w.slices.value = LINK3D
    run(qtbot, w)
    labels = w.result_layer.data
    assert set(np.unique(labels)) == {0, 1, 2}  # one id per object through the slices
    assert all(set(np.unique(s)) == {0, 1, 2} for s in labels)
    assert "2 objects" in w.status.value

    # a time-lapse: a large cell divides into two after frame 1; another stays
    frames = [[((56, 56), 16)]] * 2 + [[((56, 40), 9), ((56, 72), 9)]] * 2
    movie = np.stack([_discs((128, 128), f + [((104, 104), 10)], k)
                      for k, f in enumerate(frames)])
    viewer.add_image(movie, name="movie")
    w.image.value = viewer.layers["movie"]
    w.slices.value = TRACKS
    run(qtbot, w)
    lineage = w.result_layer.metadata["lineage"]
    assert len(lineage) == 4
    mother = next(t for t, (a, b, p) in lineage.items() if b == 1 and not p)
    kids = sorted(t for t, (a, b, p) in lineage.items() if p)
    assert len(kids) == 2 and all(lineage[k][2] == mother for k in kids)
    tracks = viewer.layers["movie tracks"]
    assert tracks.graph == {k: [mother] for k in kids}
    assert len(tracks.data) == sum(len(np.unique(f)) - 1 for f in w.result_layer.data)
