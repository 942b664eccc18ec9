"""The automask widget in a real viewer: run, live sliders without model calls, cancel,
stacks, errors.

`BlobSam` is the tiny `test_vit` network (its real encoder runs, so embedding is real work)
whose decoder answers a point with the bright blob under it: the blob, the blob grown by a
pixel, and all foreground, with predicted IoUs that depend on the blob's size (large blobs
0.95, small ones 0.75). So the expected objects are known, and a threshold between 0.75 and
0.95 keeps only the large ones. Its calibrated automask thresholds (what a checkpoint may
carry) are 0.7 / 0.9: every blob passes.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_sam import build_model
from napari_sam.automask import SAM_THRESHOLDS
from napari_sam._napari.automask_job import ALL, CHANNELS, CURRENT, FLOORS
from napari_sam._napari.automask_widget import AutomaskWidget
from napari_sam.model.sam import Sam

pytestmark = pytest.mark.gui

BIG, SMALL = 12, 6               # disc radii in image pixels
BIG_IOU, SMALL_IOU = 0.95, 0.75


class BlobSam(Sam):
    def encode(self, x):
        s, m = self.image_size, self.config.mask_size
        h, w = x.shape[-2:]
        fg = np.zeros((s, s), bool)
        fg[:h, :w] = x[0].float().mean(0).cpu().numpy() > 127
        centres = ((np.arange(m) + 0.5) * s / m).astype(int)
        self._low = torch.as_tensor(ndi.label(fg[centres][:, centres])[0])
        area = np.bincount(self._low.ravel().numpy())
        self._score = torch.as_tensor(np.where(area > 40, BIG_IOU, SMALL_IOU), dtype=torch.float32)
        return super().encode(x)

    def decode(self, embeddings, points=None, boxes=None, mask_input=None, multimask=True):
        m, s = self.config.mask_size, self.image_size
        xy = points[0][:, 0]                                   # (B, 2) x, y input pixels
        ij = (xy * m / s).long().clamp(0, m - 1)
        ids = self._low[ij[:, 1], ij[:, 0]]
        obj = (self._low[None] == ids[:, None, None]) & (ids[:, None, None] > 0)
        grown = torch.nn.functional.max_pool2d(obj[:, None].float(), 3, 1, 1)[:, 0] > 0
        allfg = (self._low > 0)[None].expand_as(obj)
        logits = torch.where(torch.stack([obj, grown, allfg], 1), 8.0, -8.0)
        iou = torch.stack([self._score[ids], torch.full_like(self._score[ids], 0.55),
                           torch.full_like(self._score[ids], 0.52)], 1)
        return logits, iou


def blob_model():
    tiny = build_model("test_vit")
    model = BlobSam(tiny.config)
    model.load_state_dict(tiny.state_dict())
    model.automask_defaults = {"pred_iou_thresh": 0.7, "stability_thresh": 0.9}
    return model.eval()


def count_calls(model):
    """Count calls of the model's encoder and decoder (wrapping the instance's methods)."""
    calls = {"encode": 0, "decode": 0}
    for name in calls:
        method = getattr(model, name)

        def wrapped(*a, _method=method, _name=name, **k):
            calls[_name] += 1
            return _method(*a, **k)
        object.__setattr__(model, name, wrapped)
    return calls


def blobs(shape=(128, 128), big=((24, 24), (88, 104)), small=((24, 104), (104, 24)), seed=0):
    """float32 image with large and small bright discs, and the truth labels. The default
    centres are points of the 8 x 8 prompt grid."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    truth = np.zeros(shape, np.uint32)
    for k, ((r, c), rad) in enumerate([(p, BIG) for p in big] + [(p, SMALL) for p in small]):
        truth[(rr - r) ** 2 + (cc - c) ** 2 <= rad ** 2] = k + 1
    noise = np.random.default_rng(seed).normal(0, 0.05, shape)
    return ((truth > 0) + noise).astype(np.float32), truth


def object_sizes(labels):
    return sorted(np.bincount(labels.ravel())[1:][np.bincount(labels.ravel())[1:] > 0])


def make_widget(viewer, model, **options):
    w = AutomaskWidget(viewer, model=model)
    viewer.window.add_dock_widget(w)
    w.points_per_side.value = options.pop("points_per_side", 8)
    w.diameter.value = options.pop("diameter", "off")  # the grid mechanics at SAM's scale
    for name, value in options.items():
        getattr(w, name).value = value
    return w


def run(qtbot, w, timeout=30_000):
    w.run()
    qtbot.waitUntil(lambda: not w.busy, timeout=timeout)


def test_run_scale_translate_and_live_sliders(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data, truth = blobs()
    viewer.add_image(data, name="blobs", scale=(0.5, 2.0), translate=(10.0, -5.0))
    model = blob_model()
    calls = count_calls(model)
    w = make_widget(viewer, model)
    assert w.pred_iou.min == FLOORS["pred_iou_thresh"] and w.model.value == "given model"
    assert (w.pred_iou.value, w.stability.value) == (0.7, 0.9)  # the model's defaults
    assert w.slices.native.isHidden()  # a 2D image: no stack choice
    run(qtbot, w)
    labels = viewer.layers["blobs automask"]
    assert labels is w.result_layer and labels.data.dtype == np.uint32
    assert labels.data.shape == data.shape
    assert tuple(labels.scale) == (0.5, 2.0) and tuple(labels.translate) == (10.0, -5.0)
    assert len(np.unique(labels.data)) == 5 and len(labels.metadata["records"]) == 4
    for k in range(1, 5):  # each true disc is one object (up to the low-res mask's edge)
        ids = np.unique(labels.data[truth == k])
        assert (labels.data[truth == k] == ids[-1]).mean() > 0.9
    assert calls["encode"] == 1 and calls["decode"] == 1  # 64 points: one decoder batch
    first = calls.copy()
    layers_before = len(viewer.layers)

    w.pred_iou.value = 0.9  # only the big discs pass
    assert len(np.unique(labels.data)) == 3 and len(viewer.layers) == layers_before
    assert min(object_sizes(labels.data)) > np.pi * (BIG - 2) ** 2
    w.pred_iou.value = 0.7
    assert len(np.unique(labels.data)) == 5
    w.min_area.value = int(np.pi * BIG ** 2 * 0.7)  # between the small and big areas
    assert len(np.unique(labels.data)) == 3
    w.min_area.value = 0
    w.stability.value = 0.99  # the blob logits are +-8: every mask is perfectly stable
    assert len(np.unique(labels.data)) == 5 and "4 objects" in w.status.value
    assert calls == first  # sliders never called the model

    viewer.layers.remove(labels)  # the sliders make a new layer when the old one is gone
    w.pred_iou.value = 0.9
    again = viewer.layers["blobs automask"]
    assert again is not labels and len(np.unique(again.data)) == 3
    assert tuple(again.scale) == (0.5, 2.0) and calls == first


def test_cancel(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data, _ = blobs()
    viewer.add_image(data, name="blobs")
    model = blob_model()
    calls = count_calls(model)
    started, release = threading.Event(), threading.Event()
    decode = model.decode

    def slow_decode(*a, **k):
        started.set()
        release.wait(10)
        return decode(*a, **k)
    object.__setattr__(model, "decode", slow_decode)
    w = make_widget(viewer, model, points_per_side=24)  # 576 points: 9 decoder batches
    w.run()
    assert w.busy and w.cancel_button.enabled and not w.run_button.enabled
    qtbot.waitUntil(started.is_set, timeout=20_000)
    w.cancel()
    release.set()
    qtbot.waitUntil(lambda: not w.busy, timeout=20_000)
    assert calls["decode"] == 1  # stopped at the next progress report
    assert "cancelled" in w.status.value and w.session is None
    assert [ly.name for ly in viewer.layers] == ["blobs"]
    assert w.run_button.enabled and not w.cancel_button.enabled
    run(qtbot, w)  # a new run after a cancel works
    assert w.session is not None and "automask" in w.result_layer.name


def test_stack_all_slices_unique_ids_and_current_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    parts = [blobs(seed=k, big=((24, 24 + 3 * k), (88, 104)), small=((24, 104),))
             for k in range(3)]
    stack = np.stack([p[0] for p in parts])
    image = viewer.add_image(stack, name="stack", scale=(3.0, 1.0, 1.0))
    model = blob_model()
    calls = count_calls(model)
    w = make_widget(viewer, model, pred_iou=0.7, stability=0.9)
    assert not w.slices.native.isHidden()  # the stack choice is offered for stacks
    w.slices.value = ALL
    run(qtbot, w)
    labels = w.result_layer
    assert labels.data.shape == stack.shape and tuple(labels.scale) == (3.0, 1.0, 1.0)
    per_slice = [set(np.unique(s[s > 0]).tolist()) for s in labels.data]
    assert [len(s) for s in per_slice] == [3, 3, 3]
    assert not (per_slice[0] & per_slice[1]) and not (per_slice[1] & per_slice[2])
    assert set().union(*per_slice) == set(range(1, 10))
    assert [r["slice"] for r in labels.metadata["records"]] == [0] * 3 + [1] * 3 + [2] * 3
    assert calls == {"encode": 3, "decode": 3}
    w.pred_iou.value = 0.9  # re-filter every slice, still unique ids, no model call
    per_slice = [set(np.unique(s[s > 0]).tolist()) for s in labels.data]
    assert [len(s) for s in per_slice] == [2, 2, 2] and set().union(*per_slice) == set(range(1, 7))
    assert calls == {"encode": 3, "decode": 3}

    viewer.dims.set_current_step(0, 1)
    w.slices.value = CURRENT
    run(qtbot, w)
    one = w.result_layer
    assert one is not labels and one.data.shape == stack.shape
    assert not one.data[[0, 2]].any() and set(np.unique(one.data[1])) == {0, 1, 2}
    assert calls == {"encode": 4, "decode": 4}
    assert image.data is stack  # the layer's data was not changed


def test_channels_and_errors(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data, _ = blobs(shape=(64, 64), big=((28, 28),), small=())
    five = np.stack([np.zeros_like(data)] * 4 + [data])
    viewer.add_image(five, name="five channels")
    w = make_widget(viewer, blob_model(), pred_iou=0.7)
    w.slices.value = CHANNELS
    w.run()
    assert not w.busy and "5 channels" in w.status.value and "'channels'" in w.status.value
    w.channels.value = "7"
    w.run()
    assert not w.busy and "do not exist" in w.status.value
    w.channels.value = "0,1,2,3"
    w.run()
    assert not w.busy and "1 to 3 channels" in w.status.value
    w.channels.value = "4"
    run(qtbot, w)
    assert w.result_layer.data.shape == (64, 64) and w.result_layer.data.max() == 1
    viewer.add_image(np.zeros((2, 2, 32, 32), np.float32), name="4d")
    w.image.value = viewer.layers["4d"]
    w.slices.value = CHANNELS
    w.run()
    assert not w.busy and "dimensions" in w.status.value


def test_model_errors_are_messages(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(blobs(shape=(64, 64))[0], name="img")
    w = AutomaskWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.model.value == "bundled"
    assert w.pred_iou.value != SAM_THRESHOLDS["pred_iou_thresh"]  # the bundled model's own
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    w.model_file.value = bad
    w.model.value = "file..."
    run(qtbot, w)
    assert w.status.value.startswith("could not load the model") and w.result_layer is None


def test_thresholds_follow_the_loaded_model(make_napari_viewer, qtbot, tmp_path):
    """A checkpoint's calibrated thresholds are the sliders' values as soon as it is chosen;
    candidate floors are lowered to reach them; a moved slider is kept."""
    from napari_sam.model import save_checkpoint

    path = tmp_path / "calibrated.pt"
    save_checkpoint(path, build_model("test_vit"),
                    {"automask": {"pred_iou_thresh": 0.3, "stability_thresh": 0.6}})
    viewer = make_napari_viewer()
    viewer.add_image(blobs(shape=(64, 64))[0], name="img")
    w = make_widget(viewer, str(path), points_per_side=4)
    assert w.model.value == "file..."
    # shown from the start (no jump from SAM's 0.88 / 0.95 at the first run)
    assert (w.pred_iou.value, w.stability.value) == (0.3, 0.6) and w.pred_iou.min == 0.3
    run(qtbot, w)
    assert w.session is not None, w.status.value
    assert (w.pred_iou.value, w.stability.value) == (0.3, 0.6) and w.pred_iou.min == 0.3
    assert w.session.generator.min_candidate_iou == 0.3
    assert all(r["predicted_iou"] >= 0.3 for r in w.result_layer.metadata["records"])
    w.pred_iou.value = 0.45  # the user's choice is kept for the next run
    run(qtbot, w)
    assert w.pred_iou.value == 0.45
    assert all(r["predicted_iou"] >= 0.45 for r in w.result_layer.metadata["records"])


def test_closing_the_panel_removes_its_diameter_circle(make_napari_viewer, qtbot):
    """A typed diameter draws the 'SAM diameter' circle; closing the automask panel removes
    it with the panel (as the interactive widget's close does)."""
    from napari_sam._napari.diameter import CIRCLE_LAYER

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="img")
    w = AutomaskWidget(viewer, model=build_model("test_vit"))
    viewer.window.add_dock_widget(w, name="Automatic segmentation")
    w.diameter.value = "20"
    qtbot.waitUntil(lambda: CIRCLE_LAYER in [ly.name for ly in viewer.layers], timeout=5_000)
    viewer.window.remove_dock_widget(w.native)  # as the dock's close button does
    qtbot.waitUntil(lambda: CIRCLE_LAYER not in [ly.name for ly in viewer.layers],
                    timeout=5_000)


def test_min_area_follows_the_object_size_until_moved(make_napari_viewer, qtbot):
    """Untouched, the min area slider is the core's (`auto_min_area` of the diameter), so the
    panel and `automask()` keep the same objects; once moved it is the user's."""
    from napari_sam.automask.segmenter import auto_min_area

    viewer = make_napari_viewer()
    data, _ = blobs()
    viewer.add_image(data, name="blobs")
    w = make_widget(viewer, blob_model(), diameter=24.0)
    run(qtbot, w)
    assert "objects" in w.status.value
    want = auto_min_area(24.0)
    assert want > 0 and w.min_area.value == want
    sizes = object_sizes(w.result_layer.data)
    assert sizes and min(sizes) >= want
    w.min_area.value = 0  # the user's choice from now on
    run(qtbot, w)
    assert w.min_area.value == 0 and w._area_follow is False
