"""The automask widget in AIS mode: the decoder sliders re-threshold the kept maps without
calling the model; a second Run on the same layer reuses them; APG needs a decoder.

`MapSam` is the tiny `test_vit` network with a stand-in instance decoder whose maps come
from the image: bright discs are foreground (probability 0.9 for large discs, 0.7 for small
ones), with distances 0 at each disc's centre rising to 1 at its edge. So AIS finds every
disc, and a foreground threshold between 0.7 and 0.9 keeps only the large ones.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_sam import build_model
from napari_sam.model.config import TEST_VIT
from napari_sam.model.sam import Sam

from test_automask_widget import blobs, count_calls, make_widget, run

pytestmark = pytest.mark.gui


class MapSam(Sam):
    def instance_logits(self, embeddings, x):
        s = self.image_size
        img = x[0].float().mean(0).cpu().numpy() > 127
        lab, n = ndi.label(img)
        fg = np.full(img.shape, 0.02)
        dist = np.ones(img.shape)
        areas = np.bincount(lab.ravel())[1:]
        for k in range(1, n + 1):
            m = lab == k
            fg[m] = 0.9 if areas[k - 1] > 0.5 * areas.max() else 0.7
            d = ndi.distance_transform_edt(m)
            dist[m] = 1 - d[m] / d[m].max()
        p = np.stack([fg, dist, dist]).clip(0.01, 0.99)
        full = np.full((3, s, s), 0.01)
        full[0, ...] = 0.02
        full[:, : img.shape[0], : img.shape[1]] = p
        return torch.as_tensor(np.log(full / (1 - full)), dtype=torch.float32)[None]


def map_model():
    cfg = TEST_VIT.with_(name="map_vit", instance_decoder="unetr", instance_decoder_features=8)
    tiny = build_model(cfg)
    model = MapSam(cfg)
    model.load_state_dict(tiny.state_dict())
    return model.eval()


def test_ais_sliders_rethreshold_without_the_model(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data, truth = blobs()
    viewer.add_image(data, name="blobs")
    model = map_model()
    calls = count_calls(model)
    calls.update(instance_logits=0)
    inner = model.instance_logits

    def counted(*a, **k):
        calls["instance_logits"] += 1
        return inner(*a, **k)
    object.__setattr__(model, "instance_logits", counted)
    w = make_widget(viewer, model)
    w.method.value = "ais"
    assert not w.center.native.isHidden() and w.pred_iou.native.isHidden()
    run(qtbot, w)
    labels = viewer.layers["blobs automask"]
    assert labels.data.dtype == np.uint32 and len(np.unique(labels.data)) == 5
    for k in range(1, 5):
        assert (labels.data[truth == k] > 0).mean() > 0.9
    assert calls["encode"] == 1 and calls["instance_logits"] == 1 and calls["decode"] == 0
    first = dict(calls)
    layers_before = len(viewer.layers)

    w.foreground.value = 0.8  # only the large discs stay foreground
    assert len(np.unique(labels.data)) == 3 and len(viewer.layers) == layers_before
    assert "2 objects" in w.status.value
    w.foreground.value = 0.5
    assert len(np.unique(labels.data)) == 5
    w.min_area.value = int(np.pi * 12 ** 2 * 0.7)
    assert len(np.unique(labels.data)) == 3
    w.min_area.value = 0
    w.center.value = 0.0  # no seeds at all
    assert labels.data.max() == 0
    w.center.value = 0.5
    assert len(np.unique(labels.data)) == 5
    assert calls == first  # the sliders never called the model

    run(qtbot, w)  # the same layer, model and size: the kept maps, no encoder pass
    assert calls == first and len(np.unique(viewer.layers[-1].data)) == 5


def test_apg_mode_and_decoder_errors(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data, _ = blobs()
    viewer.add_image(data, name="blobs")
    from test_automask_widget import blob_model

    w = make_widget(viewer, blob_model())  # no instance decoder
    w.method.value = "apg"
    run(qtbot, w)
    assert "instance decoder" in w.status.value and "test_vit" in w.status.value
    w.method.value = "amg"
    assert not w.pred_iou.native.isHidden() and w.center.native.isHidden()


def test_ais_on_tiles_when_objects_are_small_for_the_input(make_napari_viewer, qtbot):
    """A typed diameter that needs more zoom than the image fits runs the decoder tile by
    tile into one map of the whole image; the sliders still re-threshold it alone."""
    viewer = make_napari_viewer()
    data, truth = blobs()
    viewer.add_image(data, name="blobs")
    model = map_model()
    calls = count_calls(model)
    w = make_widget(viewer, model, diameter="12")  # zoom 4: tiles of 64 image px
    w.method.value = "ais"
    run(qtbot, w)
    labels = viewer.layers["blobs automask"]
    assert calls["encode"] >= 4                      # several tiles, each encoded once
    session = w.session
    assert session.zoom == pytest.approx(model.image_size / 64, rel=0.1)
    assert session.maps["foreground"].shape == data.shape
    for k in range(1, 5):                              # every disc is found
        assert (labels.data[truth == k] > 0).mean() > 0.8
    first = dict(calls)
    w.center.value = 0.0                               # no seeds: nothing, no model call
    assert labels.data.max() == 0 and calls == first
