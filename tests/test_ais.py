"""Instance head (bundled model) and AIS: maps, the seeded watershed, modes and tiles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam import AutoSegmenter, Predictor, automask, instance_maps
from napari_sam.automask.ais import watershed_from_maps
from napari_sam.model import build_model, load_model
from napari_sam.training.evaluate import match_f1
from napari_sam.training.instance_targets import instance_targets
from napari_sam.training.synthetic import nuclei_image

pytestmark = pytest.mark.usefixtures("one_thread")


def discs(shape=(96, 96), centres=((30, 30), (30, 52), (70, 60)), r=10):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint32)
    for i, (cy, cx) in enumerate(centres, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return labels


def test_targets_and_watershed_recover_touching_objects():
    """The targets' meaning (0 at centres, 1 at edges and outside) is what the watershed
    needs: fed the targets of touching discs, it gives the discs back."""
    labels = discs()
    t = instance_targets(labels)
    assert t.shape == (3,) + labels.shape and t.dtype == np.float32
    assert (t[0] == (labels > 0)).all() and (t[1:, labels == 0] == 1).all()
    assert t[1, 30, 30] == 0 and t[2, 30, 30] == 0 and t[2, 30, 20] > 0.85
    out = watershed_from_maps(t[0], t[1], t[2], distance_smoothing=1.0)
    assert out.dtype == np.uint32
    assert match_f1(out, labels)["f1@0.75"] == 1.0
    small = watershed_from_maps(t[0], t[1], t[2], min_size=10_000)
    assert small.max() == 0


def test_random_head_shapes_modes_and_tiles():
    torch.manual_seed(0)
    model = build_model("bundled")  # the bundled architecture, random weights, with a head
    assert model.has_instance_head
    image = (np.random.default_rng(0).random((200, 160)) * 4000).astype(np.uint16)
    maps = instance_maps(image, model, precision="fp32")
    assert set(maps) == {"foreground", "center_distances", "boundary_distances"}
    for m in maps.values():
        assert m.shape == image.shape and m.dtype == np.float32
        assert 0 <= m.min() and m.max() <= 1
    seg = AutoSegmenter(model, diameter="off", precision="fp32", foreground_threshold=0.0,
                        center_distance_threshold=1.1, boundary_distance_threshold=1.1)
    assert seg.mode == "ais"
    res = seg(image)
    assert res.labels.shape == image.shape and res.labels.max() == len(res.records)
    for r in res.records:
        assert {"id", "area", "bbox", "predicted_iou", "point"} <= set(r)
        assert r["area"] == (res.labels == r["id"]).sum()
    # tiles: a small diameter makes the image run tile by tile, labels on the image's grid
    tiled = AutoSegmenter(model, diameter=20, precision="fp32")
    out = tiled(image)
    assert tiled.last_plan.tiled and out.labels.shape == image.shape
    with pytest.raises(ValueError, match="instance decoder"):
        instance_maps(image, build_model("test_vit"))
    pred = Predictor(model, precision="fp32", diameter="off")
    pred.set_embedding(pred.set_image(image))
    with pytest.raises(RuntimeError, match="set_image"):
        pred.instance_maps()


def _shipped_head():
    model = load_model("bundled")
    if not model.has_instance_head:
        pytest.fail("bundled.pt should carry its instance head (docs/models.md)")
    return model


def test_bundled_head_segments_heldout_nuclei():
    """The shipped head on held-out fluorescence nuclei (seeds never trained on), at the
    default path (object size estimated): F1@0.5 > 0.85."""
    model = _shipped_head()
    f1 = []
    for i in range(2):
        image, truth = nuclei_image(10_000_019 + i, (256, 256))
        f1.append(match_f1(automask(image, model, mode="ais"), truth))
    assert np.mean([f["f1@0.5"] for f in f1]) > 0.85, f1


def test_instance_head_pool_scaled_share():
    """`train_instance --scaled 1`: every pool item is a nuclei or cells field whose objects
    have the sizes the default path shows the model (24-72 px), as uint8 model pixels with
    targets in 0..1."""
    from napari_sam.training.train_instance import SCALED_DIAMETERS, TargetPool

    rng = np.random.default_rng(0)
    pool = TargetPool(rng, 3, 128, scaled=1.0)
    for px, tg in pool.items:
        assert px.shape == (128, 128, 3) and px.dtype == np.uint8
        assert tg.shape == (3, 128, 128) and 0 <= tg.min() and tg.max() <= 1
        assert tg[0].any()
    x, t = pool.batch(2)
    assert tuple(x.shape) == (2, 3, 128, 128) and tuple(t.shape) == (2, 3, 128, 128)
    # the diameter drawn (log-uniform in the range) is the one the generator gets
    from unittest import mock

    from napari_sam.training import multiscale

    one = TargetPool(np.random.default_rng(1), 0, 128, scaled=1.0)
    with mock.patch.object(multiscale, "scaled_sample", wraps=multiscale.scaled_sample) as spy:
        for _ in range(4):
            one._scaled()
    diameters = [c.args[1] for c in spy.call_args_list]
    lo, hi = SCALED_DIAMETERS
    assert len(diameters) == 4 and all(lo <= d <= hi for d in diameters)
