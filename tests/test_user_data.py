"""Fine-tuning data: pairing files by name, checks with clear errors, stacks, COCO, splits."""

import numpy as np
import pytest
import tifffile

from napari_sam.io.coco import write_coco
from napari_sam.training.augment import inference_scale, random_view, sample_zoom
from napari_sam.training.user_data import (DataError, from_arrays, load_files, object_size,
                                           pair_files, split_validation, summary)


def _pair(seed=0, shape=(48, 64), n=3):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint32)
    for i in range(1, n + 1):
        r, c = rng.integers(4, shape[0] - 10), rng.integers(4, shape[1] - 10)
        lab[r:r + 6, c:c + 6] = i
    img = (lab > 0) * 1000 + rng.integers(90, 110, shape)
    return img.astype(np.uint16), lab


def test_files_are_paired_by_name_and_read(tmp_path):
    for name in ("b", "a"):
        img, lab = _pair(ord(name))
        tifffile.imwrite(tmp_path / f"{name}.tif", img)
        tifffile.imwrite(tmp_path / f"{name}_labels.tif", lab)
    imgs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    pairs = pair_files(imgs, [str(tmp_path / "*_labels.tif")])
    assert [(p.name, q.name) for p, q in pairs] == [("a.tif", "a_labels.tif"),
                                                    ("b.tif", "b_labels.tif")]
    samples = load_files(imgs, [tmp_path])
    assert [s.name for s in samples] == ["a.tif + a_labels.tif", "b.tif + b_labels.tif"]
    s = samples[0]
    assert s.pixels.shape == (48, 64, 3) and s.pixels.dtype == np.uint8
    np.testing.assert_array_equal(s.labels, _pair(ord("a"))[1])
    # the user's files are only read
    assert tifffile.imread(tmp_path / "a.tif").dtype == np.uint16


def test_missing_labels_and_mismatches_name_the_file(tmp_path):
    img, lab = _pair()
    tifffile.imwrite(tmp_path / "a.tif", img)
    tifffile.imwrite(tmp_path / "b.tif", img)
    tifffile.imwrite(tmp_path / "a_labels.tif", lab)
    with pytest.raises(DataError, match="no label file for b.tif"):
        pair_files([tmp_path / "a.tif", tmp_path / "b.tif"], [tmp_path / "a_labels.tif"])
    tifffile.imwrite(tmp_path / "a_labels.tif", lab[:, :32])
    with pytest.raises(DataError, match=r"a\.tif \+ a_labels\.tif: the image has shape"):
        load_files([tmp_path / "a.tif"], [tmp_path / "a_labels.tif"])
    tifffile.imwrite(tmp_path / "a_labels.tif", np.zeros_like(lab))
    with pytest.raises(DataError, match="a_labels.tif: the labels are empty"):
        load_files([tmp_path / "a.tif"], [tmp_path / "a_labels.tif"])
    with pytest.raises(DataError, match="does not exist"):
        pair_files([tmp_path / "nope.tif"], [tmp_path / "a_labels.tif"])


def test_unmatched_names_pair_in_order_when_counts_agree(tmp_path):
    img, lab = _pair()
    tifffile.imwrite(tmp_path / "img.tif", img)
    tifffile.imwrite(tmp_path / "ground_truth.tif", lab)
    pairs = pair_files([tmp_path / "img.tif"], [tmp_path / "ground_truth.tif"])
    assert pairs[0][1].name == "ground_truth.tif"


def test_channels_stacks_and_coco(tmp_path):
    img, lab = _pair()
    five = np.stack([img] * 5, -1)
    with pytest.raises(DataError, match="cells: the image has 5 channels.*channels="):
        from_arrays([(five, lab, "cells")])
    assert from_arrays([(five, lab, "cells")], channels=[0, 2])[0].pixels.shape == (48, 64, 3)
    stack_img = np.stack([img, img, img])
    stack_lab = np.stack([lab, np.zeros_like(lab), lab])
    samples = from_arrays([(stack_img, stack_lab, "st")])
    assert [s.name for s in samples] == ["st [z=0]", "st [z=2]"]  # the empty slice is left out
    tifffile.imwrite(tmp_path / "c.tif", img)
    write_coco(tmp_path / "c_coco.json", lab, "c.tif")
    (s,) = load_files([tmp_path / "c.tif"], [tmp_path / "c_coco.json"])
    assert s.n_objects == 3 and (s.labels > 0).sum() == (lab > 0).sum()


def test_split_by_image_and_by_region():
    samples = from_arrays([_pair(i) for i in range(4)])
    train, val = split_validation(samples, 0.25)
    assert len(train) == 3 and len(val) == 1
    assert {s.name for s in train} | {s.name for s in val} == {s.name for s in samples}
    img, lab = _pair(0, (64, 200), n=8)
    (one,) = from_arrays([(img, lab, "wide")])
    (tr,), (va,) = split_validation([one], 0.25)
    assert tr.labels.shape == (64, 150) and va.labels.shape == (64, 50)
    np.testing.assert_array_equal(np.concatenate([tr.labels, va.labels], 1), lab)
    assert "validation columns 150-200" in va.name
    info = summary([tr], [va])
    assert info["train"]["objects"] == tr.n_objects and info["object_size_px"] > 0
    assert object_size([one]) == pytest.approx(np.sqrt(4 * 36 / np.pi))


def test_views_match_the_inference_scale_and_keep_objects():
    assert inference_scale((512, 512), 256) == 0.5
    assert inference_scale((2000, 900), 256) == 1.0  # tiled at 1:1
    assert inference_scale((64, 32), 256) == 4.0
    rng = np.random.default_rng(0)
    img, lab = _pair(0, (64, 64), n=4)
    (s,) = from_arrays([(img, lab)])
    for _ in range(10):
        px, lab_v = random_view(rng, s.pixels, s.labels, 256, (1.0, 2.0, 3.0))
        assert px.shape == (256, 256, 3) and lab_v.shape == (256, 256)
        assert lab_v.any() and set(np.unique(lab_v)) <= set(np.unique(lab))
        # objects of 36 px zoomed by about 4 (jittered by up to 1.35 either way)
        areas = np.bincount(lab_v.ravel())[1:]
        assert areas.max() > 36 * 4 and areas.max() < 36 * 16 * 1.35 ** 2 * 1.2
        assert (px[lab_v > 0] > 0).all()


def _discs(seed=0, n=128, r=6.0, count=12):
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, n), np.uint32)
    yy, xx = np.mgrid[:n, :n]
    k = 0
    for _ in range(200):
        cy, cx = rng.uniform(r + 2, n - r - 2, 2)
        d = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if not lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 3) ** 2].any():
            k += 1
            lab[d] = k
        if k == count:
            break
    img = np.where(lab > 0, 200.0, 40.0) + rng.normal(0, 5, lab.shape)
    return img.astype(np.float32), lab


def test_views_use_the_zoom_of_the_scale_aware_inference():
    import torch

    from napari_sam.model import build_model
    from napari_sam.model.config import TEST_VIT
    from napari_sam.predictor import Predictor
    from napari_sam.training.finetune import trained_object_size

    torch.manual_seed(0)
    model = build_model(TEST_VIT.with_(image_size=64))
    model.object_size = {"diameter": 24.0, "range": [16.0, 32.0]}
    (s,) = from_arrays([_discs()])
    zoom, d, est = sample_zoom(model, s.pixels, s.labels)
    assert d == pytest.approx(object_size([s])) and 11 < d < 13  # discs of radius 6
    assert zoom == pytest.approx(24.0 / d, rel=0.02)  # objects at the preferred diameter
    # the Predictor zooms alike when given the annotated diameter...
    pred = Predictor(model, device="cpu", diameter=d)
    pred.set_image(s.pixels)
    assert pred.plan.zoom == pytest.approx(zoom) and pred.plan.tiled  # 128 px x 2 > 64
    # ... and by default (diameter estimated) once the model carries the object size that
    # fine-tuning stores: the estimator's bias on these images (estimate_ratio)
    assert est is not None and est != pytest.approx(d, rel=1e-3)
    model.object_size = trained_object_size(model, [(zoom, d, est)])
    assert model.object_size["estimate_ratio"] == pytest.approx(est / d, abs=1e-4)
    pred = Predictor(model, device="cpu", diameter=None)
    pred.set_image(s.pixels)
    assert pred.plan.zoom == pytest.approx(zoom, rel=2e-3)
    # a typed (true) diameter still means what it says: the same zoom
    assert model.object_size["diameter"] == 24.0
    pred = Predictor(model, device="cpu", diameter=d)
    pred.set_image(s.pixels)
    assert pred.plan.zoom == pytest.approx(zoom)
    # views: objects at the preferred diameter (24 px), jittered by up to 1.35 either way
    rng = np.random.default_rng(1)
    sizes = []
    for _ in range(12):
        px, lab_v = random_view(rng, s.pixels, s.labels, 64, (0.0, 0.0, 0.0), zoom=zoom)
        assert px.shape == (64, 64, 3)
        areas = np.bincount(lab_v.ravel())[1:]
        sizes.append(np.sqrt(4 * areas.max() / np.pi))
    # (an object cut by the crop's border can be smaller)
    assert 24 / 1.35 / 1.1 < np.median(sizes) < 24 * 1.35 and max(sizes) < 24 * 1.35 * 1.2
    assert max(sizes) / min(sizes) > 1.1  # the jitter varies the zoom
    # no confident estimate (a flat image): None, as inference would not zoom
    flat = from_arrays([(np.full((64, 64), 100, np.uint16), s.labels[:64, :64])])[0]
    assert sample_zoom(model, flat.pixels, flat.labels)[2] is None
