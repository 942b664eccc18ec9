"""Prompt conversion and label-commit rules of `napari_sam.prompts` (no Qt, no napari)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sam import Predictor, build_model
from napari_sam.prompts import (Prompt, Segmenter, commit_mask, ellipse_polygon, inside,
                                mask_to_logits, on_slice, rectangle_to_box, region_mask,
                                scale_translate, to_image_coords, undo_commit)
from napari_sam.transforms import rc_to_xy


# ---- coordinates ---------------------------------------------------------------------------
def test_world_to_data_scale_translate():
    to_data = scale_translate(scale=(2.0, 0.5), translate=(10.0, -20.0))
    world = np.array([[10.0, -20.0], [30.0, 30.0]])
    np.testing.assert_allclose(to_image_coords(world, to_data), [[0, 0], [10, 100]])
    assert to_image_coords(np.zeros((0, 2)), to_data).shape == (0, 2)


def test_points_of_a_slice_and_inside():
    pts = np.array([[2.2, 5, 6], [3.0, 7, 8], [1.6, 9, 9]])
    np.testing.assert_array_equal(on_slice(pts, (2,)), [True, False, True])
    assert on_slice(pts[:, 1:], ()).all()
    np.testing.assert_array_equal(inside([[0, 0], [-0.6, 3], [9.4, 9.4], [9.5, 0]], (10, 10)),
                                  [True, False, True, False])


def test_points_reach_the_model_as_xy():
    model = build_model("test_vit")
    pred = Predictor(model, "cpu", "fp32", diameter="off")
    pred.set_image(np.zeros((128, 64), np.uint8))  # resized x2 into the 256 input
    xy = pred.points_to_input([[10.0, 3.0]])
    np.testing.assert_allclose(xy.numpy(), [[6.0, 20.0]])
    np.testing.assert_allclose(rc_to_xy([[10.0, 3.0]]), [[3.0, 10.0]])


def test_rectangle_to_box_any_corner_order():
    corners = [[40, 90], [70, 90], [70, 50], [40, 50]]
    np.testing.assert_array_equal(rectangle_to_box(corners), [40, 50, 70, 90])


def test_polygon_and_ellipse_masks():
    tri = region_mask("polygon", [[10, 10], [10, 30], [30, 10]], (40, 40))
    assert tri[12, 12] and not tri[28, 28] and 150 < tri.sum() < 250
    ell = region_mask("ellipse", [[10, 10], [10, 30], [20, 30], [20, 10]], (40, 40))
    assert ell[15, 20] and not ell[10, 10] and abs(ell.sum() - np.pi * 5 * 10) < 20
    poly = ellipse_polygon([[0, 0], [0, 4], [2, 4], [2, 0]], n=4)
    np.testing.assert_allclose(poly, [[1, 4], [2, 2], [1, 0], [0, 2]], atol=1e-9)
    with pytest.raises(ValueError, match="polygons and ellipses"):
        region_mask("line", [[0, 0], [3, 3]], (5, 5))


def test_mask_to_logits_lands_in_the_padded_frame():
    mask = np.zeros((100, 200), bool)
    mask[:, :100] = True  # left half of a wide image
    logits = mask_to_logits(mask, input_size=(128, 256), image_size=256, mask_size=64)
    assert logits.shape == (64, 64)
    assert (logits[:30, :30] > 0).all() and (logits[:30, 34:] < 0).all()
    assert (logits[34:] < 0).all()  # the padding below the image is background


# ---- the segmenter -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor():
    pred = Predictor(build_model("test_vit"), "cpu", "fp32", diameter="off")
    pred.set_image(np.random.default_rng(0).integers(0, 255, (96, 128), np.uint8))
    return pred


def test_segmenter_multimask_cycle_and_refinement(predictor, monkeypatch):
    seg = Segmenter(predictor)
    calls = []
    real = predictor.predict_lowres
    monkeypatch.setattr(predictor, "predict_lowres",
                        lambda *a: calls.append(a) or real(*a))
    one = Prompt(np.array([[40.0, 50.0]]), np.array([1]))
    res = seg.update(one)
    assert len(res.scores) == 3 and res.index == int(np.argmax(res.scores))
    assert calls[-1][3] is None and calls[-1][4] is True  # no mask_input, multimask
    assert seg.mask().shape == (96, 128)
    first = res.index
    seg.cycle()
    assert seg.result.index == (first + 1) % 3
    two = Prompt(np.array([[40.0, 50.0], [45.0, 60.0]]), np.array([1, 0]))
    res2 = seg.update(two)
    assert len(res2.scores) == 1 and calls[-1][4] is False
    torch.testing.assert_close(calls[-1][3], res.logits[:, (first + 1) % 3:(first + 1) % 3 + 1])
    seg.update(Prompt(np.array([[45.0, 60.0]]), np.array([1])))  # a point removed: start over
    assert calls[-1][3] is None
    assert seg.update(Prompt.empty()) is None and seg.mask() is None


def test_segmenter_region_prompt(predictor, monkeypatch):
    seg = Segmenter(predictor)
    region = region_mask("polygon", [[20, 20], [20, 60], [60, 60], [60, 20]], (96, 128))
    points, labels, box, mask_input = seg.model_inputs(Prompt(np.zeros((0, 2)), np.zeros(0, int),
                                                              region=region))
    np.testing.assert_array_equal(box, [20, 20, 60, 60])
    assert labels.tolist() == [1] and region[tuple(points[0].astype(int))]
    assert mask_input.shape == (64, 64) and mask_input.max() > 0
    assert seg.update(Prompt(np.zeros((0, 2)), np.zeros(0, int), region=region)) is not None


# ---- commit rules --------------------------------------------------------------------------
def test_commit_new_ids_no_overwrite_and_undo():
    labels = np.zeros((20, 20), np.uint32)
    labels[0, 0] = 7  # an existing object elsewhere
    a = np.zeros((20, 20), bool)
    a[2:10, 2:10] = True
    b = np.zeros((20, 20), bool)
    b[5:15, 5:15] = True
    r1 = commit_mask(labels, a)
    assert r1.label_id == 8 and (labels[a] == 8).all()
    before = labels.copy()
    r2 = commit_mask(labels, b)
    assert r2.label_id == 9
    assert (labels[a] == 8).all()  # the first object is intact
    assert (labels == 9).sum() == (b & ~a).sum()
    undo_commit(labels, r2)
    np.testing.assert_array_equal(labels, before)
    r3 = commit_mask(labels, b, overwrite=True)
    assert (labels[b] == 9).all() and (labels == 8).sum() == (a & ~b).sum()
    undo_commit(labels, r3)
    np.testing.assert_array_equal(labels, before)  # exact pixels back, 8s included
    assert commit_mask(labels, a) is None  # nothing free to write


def test_commit_into_a_stack_slice():
    stack = np.zeros((3, 8, 8), np.uint32)
    stack[0, 0, 0] = 4
    m = np.zeros((8, 8), bool)
    m[2:4, 2:4] = True
    rec = commit_mask(stack, m, where=(2,))
    assert rec.label_id == 5 and (stack[2][m] == 5).all() and not stack[1].any()
    undo_commit(stack, rec)
    assert not stack[2].any() and stack[0, 0, 0] == 4
    with pytest.raises(ValueError, match="does not fit"):
        commit_mask(stack, np.ones((4, 4), bool), where=(0,))


def test_commit_refuses_an_id_the_dtype_cannot_hold():
    labels = np.full((4, 4), 0, np.uint8)
    labels[0, 0] = 255
    with pytest.raises(ValueError, match="uint32"):
        commit_mask(labels, np.ones((4, 4), bool))
