"""Object size: diameter estimation, the zoom plan, and scale-aware default paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
import torch

from napari_sam import AutoSegmenter, Predictor, automask, estimate_diameter
from napari_sam.model import build_model, load_model
from napari_sam.scale import (FIT_TOLERANCE, ZoomPlan, plan_zoom, preferred_diameter,
                              resolve_diameter, zoom_for)
from napari_sam.training.evaluate import match_f1
from napari_sam.training.multiscale import median_diameter, scaled_sample


@pytest.mark.parametrize("kind,bound", [("nuclei", 0.2), ("cells", 0.45)])
def test_estimate_diameter_median_error(kind, bound, one_thread):
    """Nuclei (separate and touching): median error within 20 %. Touching cells with
    textured cytoplasm and visible nuclei are the documented weak case (the estimate often
    follows the nuclei or the texture): within 45 %."""
    errors = []
    for d in (5, 8, 12, 20, 32, 48, 80):
        size = (384, 384) if d < 40 else (768, 768)
        for seed in range(2):
            image, labels = scaled_sample(kind, d, size, seed)
            est = estimate_diameter(image)
            errors.append(abs(est.diameter / median_diameter(labels) - 1))
            assert 0 <= est.confidence <= 1
    assert np.median(errors) <= bound, errors


def test_estimate_diameter_large_nuclei(one_thread):
    image, labels = scaled_sample("nuclei", 150, (1536, 1536), 0)
    est = estimate_diameter(image)
    assert abs(est.diameter / median_diameter(labels) - 1) < 0.35


def test_estimate_diameter_ignores_background_ramp_and_offset(one_thread):
    image, labels = scaled_sample("nuclei", 20, (384, 384), 1)
    yy = np.linspace(0, 1, image.shape[0])[:, None]
    ramped = (image.astype(np.float64) + 3000 + 2000 * yy).astype(np.uint16)
    a, b = estimate_diameter(image).diameter, estimate_diameter(ramped).diameter
    assert abs(b / a - 1) < 0.15
    assert abs(b / median_diameter(labels) - 1) < 0.25


def test_estimate_diameter_dark_objects_and_bad_input():
    image, labels = scaled_sample("nuclei", 16, (256, 256), 2, dtype="float32")
    est = estimate_diameter(1.0 - image)
    assert est.polarity == -1
    assert abs(est.diameter / median_diameter(labels) - 1) < 0.3
    with pytest.raises(ValueError, match="at least 8 x 8"):
        estimate_diameter(np.zeros((4, 100)))
    flat = estimate_diameter(np.zeros((64, 64), np.float32))
    assert flat.confidence == 0.0


def test_resolve_diameter_values():
    image = np.zeros((32, 32), np.uint8)
    assert resolve_diameter(image, "off") is None
    assert resolve_diameter(image, 12) == 12.0
    assert resolve_diameter(image, "12.5") == 12.5
    for bad in ("big", -3, 0, float("nan")):
        with pytest.raises(ValueError, match="diameter"):
            resolve_diameter(image, bad)


def test_plan_zoom_single_and_tiled():
    model = build_model("test_tiny_vit")  # 256 input, SAM's default preferred size
    pref, _ = preferred_diameter(model)
    assert plan_zoom((100, 100), model, None) == ZoomPlan(None)
    small = plan_zoom((100, 120), model, pref)  # objects already at the preferred size
    assert small.zoom == pytest.approx(1.0) and not small.tiled
    near = plan_zoom((300, 300), model, pref)  # fits at 256/300 = 0.85 of the zoom it needs
    assert not near.tiled and near.zoom == pytest.approx(256 / 300)
    assert 256 / 300 >= FIT_TOLERANCE
    big = plan_zoom((2000, 1000), model, pref / 2)  # needs x2: tiles of 128 image pixels
    assert big.tiled and big.tile == 128 and big.zoom == pytest.approx(2.0)
    assert pref / 2 <= big.overlap < big.tile
    assert zoom_for(model, pref / 2) == pytest.approx(2.0)


def test_bundled_model_carries_object_size():
    model = load_model("bundled")
    d, (lo, hi) = preferred_diameter(model)
    assert lo <= d <= hi
    assert getattr(model, "object_size", None), "bundled.pt should store its measured size"


def _zoomed(image, labels, f):
    t = torch.from_numpy(image.astype(np.float32))[None, None]
    h, w = int(image.shape[0] * f), int(image.shape[1] * f)
    img = F.interpolate(t, (h, w), mode="bilinear", align_corners=False, antialias=True)
    lab = F.interpolate(torch.from_numpy(labels.astype(np.float32))[None, None], (h, w),
                        mode="nearest")
    return img[0, 0].numpy().astype(image.dtype), lab[0, 0].numpy().astype(np.uint32)


def test_automask_same_objects_at_half_and_double_size(one_thread):
    """The default path is scale-aware: an image and its x0.5 / x2 versions give the same
    objects (F1 of each against its own truth within 0.1), where the unzoomed path does
    not."""
    image, labels = scaled_sample("nuclei", 24, (256, 256), 3)
    model = load_model("bundled")
    f1 = {}
    for f in (0.5, 1.0, 2.0):
        img, lab = _zoomed(image, labels, f) if f != 1 else (image, labels)
        f1[f] = match_f1(automask(img, model), lab)["f1@0.5"]
    assert min(f1.values()) >= 0.75, f1
    assert max(f1.values()) - min(f1.values()) <= 0.1, f1


def test_predictor_estimating_is_scale_aware_and_in_image_grid(one_thread):
    image, labels = scaled_sample("nuclei", 12, (384, 384), 4)
    model = load_model("bundled")
    pred = Predictor(model, diameter=None)  # estimate (the Predictor's default is "off")
    pred.set_image(image)
    assert pred.plan.diameter is not None and pred.plan.zoom > 1
    ids = np.unique(labels)[1:6]
    from napari_sam.training.prompts import interior_point

    ious = []
    for i in ids:
        truth = labels == i
        masks, scores, logits = pred.predict(points=[interior_point(truth)], point_labels=[1])
        assert masks.shape[1:] == image.shape
        best = masks[int(np.argmax(scores))]
        ious.append((best & truth).sum() / (best | truth).sum())
    off = Predictor(model, diameter="off")
    off.set_image(image)
    ious_off = []
    for i in ids:
        truth = labels == i
        masks, scores, _ = off.predict(points=[interior_point(truth)], point_labels=[1])
        best = masks[int(np.argmax(scores))]
        ious_off.append((best & truth).sum() / (best | truth).sum())
    assert np.mean(ious) > np.mean(ious_off) + 0.1, (ious, ious_off)
    if pred.plan.tiled:
        assert logits is None
        with pytest.raises(ValueError, match="tile by tile"):
            pred.predict(points=[[10, 10]], mask_input=np.zeros((128, 128)))
        with pytest.raises(RuntimeError, match="tile by tile"):
            pred.get_embedding()


def test_segmenter_plan_and_defaults():
    model = load_model("bundled")
    seg = AutoSegmenter(model, diameter=10, mode="amg")
    plan = seg.plan(np.zeros((1000, 1000), np.uint16))
    assert plan.tiled and plan.diameter == 10
    ts = seg.tile_segmenter(plan, (1000, 1000))
    assert ts.gen_kw["min_area"] == int(0.1 * np.pi / 4 * 100)
    with pytest.raises(ValueError, match="mode"):
        AutoSegmenter(model, mode="magic")
    with pytest.raises(ValueError, match="instance decoder"):
        AutoSegmenter(build_model("test_tiny_vit"), mode="ais")
