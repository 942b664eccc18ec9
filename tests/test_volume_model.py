"""segment_volume, automask_volume and track with the bundled model on generated data."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_sam import Predictor, load_model
from napari_sam.training.evaluate import match_f1
from napari_sam.training.synthetic3d import nuclei_volume, timelapse
from napari_sam.volume import (Cancelled, SliceEmbeddings, StopRules, automask_volume,
                               segment_volume, track)
from napari_sam.volume.propagate import interior_points

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def predictor():
    return Predictor(load_model("bundled"), device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def vol():
    return nuclei_volume(5, shape=(16, 80, 80), n=4, radius=(8, 11))


@pytest.fixture(scope="module")
def emb(predictor, vol):
    return SliceEmbeddings(predictor, vol.image)


def click(vol, i):
    gt = vol.labels == i
    zs = np.flatnonzero(gt.any((1, 2)))
    z = int(zs[np.argmax(gt[zs].sum((1, 2)))])  # the largest cross-section
    return gt, z, interior_points(gt[z])


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_one_click_follows_each_nucleus_and_stops(vol, emb):
    ious = []
    for i in range(1, int(vol.labels.max()) + 1):
        gt, z, pts = click(vol, i)
        m, info = segment_volume(vol.image, embeddings=emb, z=z, points=pts, point_labels=[1],
                                 spacing=vol.spacing, return_info=True)
        assert m.shape == vol.labels.shape and m.dtype == bool
        ious.append(iou(m, gt))
        got = np.flatnonzero(m.any((1, 2)))
        assert np.all(np.diff(got) == 1)  # one run of slices
        assert set(info.stops.values()) <= {"vanished", "shrank", "grew", "jumped", "faded",
                                            "unsure", "max_slices", "edge"}
        assert np.isnan(info.scores[~m.any((1, 2))]).all()
    assert emb.embedded == len(emb._memory)  # each slice embedded once, then reused
    assert np.mean(ious) > 0.7, ious


def test_without_stop_rules_the_object_runs_through_the_volume(vol, emb):
    gt, z, pts = click(vol, 1)
    loose = StopRules(min_area=1, min_area_ratio=0, max_area_ratio=1e9, min_iou=0,
                      min_contrast=0)
    m = segment_volume(vol.image, embeddings=emb, z=z, points=pts, rules=loose, floor=None)
    ruled = segment_volume(vol.image, embeddings=emb, z=z, points=pts, floor=None)
    assert m.any((1, 2)).sum() > ruled.any((1, 2)).sum()
    assert iou(ruled, gt) > iou(m, gt)
    # the intensity floor (on by default) trims the halo past the object's ends as well
    floored = segment_volume(vol.image, embeddings=emb, z=z, points=pts, rules=loose)
    assert not (floored & ~m).any()
    assert floored.sum() < m.sum() and iou(floored, gt) > iou(m, gt)


def test_anchors_are_kept_and_pull_the_slices_between(vol, emb):
    gt, z, pts = click(vol, 2)
    zs = np.flatnonzero(gt.any((1, 2)))
    lo, hi = int(zs[1]), int(zs[-2])
    m = segment_volume(vol.image, embeddings=emb, z=lo, mask=gt[lo],
                       anchors={hi: {"mask": gt[hi]}})
    assert np.array_equal(m[lo], gt[lo]) and np.array_equal(m[hi], gt[hi])
    assert all(m[k].any() for k in range(lo, hi + 1))
    assert iou(m[lo:hi + 1], gt[lo:hi + 1]) > 0.7
    with pytest.raises(ValueError, match="outside the volume"):
        segment_volume(vol.image, embeddings=emb, z=lo, mask=gt[lo], anchors={99: {}})


def test_progress_and_cancel(vol, emb):
    gt, z, pts = click(vol, 3)
    calls = []
    segment_volume(vol.image, embeddings=emb, z=z, points=pts,
                   progress=lambda d, t, m: calls.append((d, t)))
    done = [d for d, _ in calls]
    assert done == sorted(done) and calls[-1][0] == calls[-1][1] == len(vol.image)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        segment_volume(vol.image, embeddings=emb, z=z, points=pts, cancel=stop)
    seen = []
    with pytest.raises(Cancelled):
        segment_volume(vol.image, embeddings=emb, z=z, points=pts,
                       progress=lambda d, t, m: seen.append(d), cancel=lambda: len(seen) > 2)
    assert len(seen) == 3  # stopped at the next slice after the request


def test_disk_cache_channels_and_bad_input(tmp_path, predictor, vol):
    small = vol.image[4:10]
    cache = tmp_path / "emb"
    a = SliceEmbeddings(predictor, small, cache=cache)
    m1 = segment_volume(small, embeddings=a, z=3, points=[[40, 40]])
    assert a.embedded > 0 and (cache / "signature.json").is_file()
    b = SliceEmbeddings(predictor, small, cache=cache)
    m2 = segment_volume(small, embeddings=b, z=3, points=[[40, 40]])
    assert b.embedded == 0 and np.array_equal(m1, m2)  # read back, not recomputed
    from napari_sam.tiled.cache import CacheMismatchError

    with pytest.raises(CacheMismatchError):
        SliceEmbeddings(predictor, small[::-1].copy(), cache=cache).embedding(0)
    rgb = np.repeat(small[..., None], 3, axis=-1)  # (Z, Y, X, C)
    m3 = segment_volume(rgb, predictor, z=3, points=[[40, 40]])
    assert m3.shape == small.shape and iou(m3, m1) > 0.8
    with pytest.raises(ValueError, match=r"\(Z, Y, X\)"):
        segment_volume(small[0], predictor, z=0, points=[[4, 4]])
    with pytest.raises(ValueError, match="outside the volume"):
        segment_volume(small, predictor, z=6, points=[[4, 4]])
    with pytest.raises(ValueError, match="empty prompt"):
        segment_volume(small, predictor, z=2)
    with pytest.raises(ValueError, match="spacing"):
        StopRules().for_spacing((0, 1, 1))
    r = StopRules().for_spacing((3, 1, 1))
    assert r.min_iou == pytest.approx(StopRules().min_iou / 3)


@pytest.mark.slow
def test_automask_volume_one_id_per_nucleus(vol, emb):
    labels = automask_volume(vol.image, embeddings=emb, spacing=vol.spacing,
                             points_per_side=8)
    assert labels.dtype == np.uint32 and labels.shape == vol.labels.shape
    assert match_f1(labels, vol.labels)["f1@0.5"] >= 0.75


@pytest.mark.slow
def test_track_with_the_model_keeps_isolated_cells():
    tl = timelapse(4, shape=(5, 80, 80), n=3, growth=0.0, speed=1.0)
    res = track(tl.image, Predictor(load_model("bundled"), device="cpu"), points_per_side=8)
    assert res.labels.shape == tl.labels.shape
    # every true cell is one track: its pixels carry one id in all frames
    for i in np.unique(tl.labels)[1:]:
        ids = np.unique(res.labels[(tl.labels == i) & (res.labels > 0)])
        assert len(ids) == 1, (i, ids)


def test_an_empty_anchor_gives_an_empty_object(vol, emb):
    empty = np.zeros(vol.labels.shape[1:], bool)
    empty[0, 0] = True  # below min_area: nothing to follow
    m, info = segment_volume(vol.image, embeddings=emb, z=3, mask=empty, return_info=True)
    assert m.sum() == 1 and info.stops == {"below": "vanished", "above": "vanished"}
