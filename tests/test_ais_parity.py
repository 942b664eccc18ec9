"""AIS post-processing against micro-sam 1.8's `InstanceSegmentationWithDecoder` (and the
bioimage-cpp functions it calls) on the same decoder maps: identical labels up to
numbering."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sam.automask.ais import AIS_DEFAULTS, watershed_from_maps
from napari_sam.watershed import gaussian_smoothing, seeded_watershed


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal label images up to a permutation of the non-zero ids (0 stays 0)."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def blob_maps(seed: int, shape=(160, 192), noise=0.05):
    """Decoder-like maps of touching discs: foreground, normalised centre and (inverted)
    boundary distances, with smooth noise."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(1, 14):
        cy, cx, r = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10), rng.uniform(6, 16)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = i
    fg = (labels > 0).astype(np.float32)
    cd, bd = np.ones(shape, np.float32), np.ones(shape, np.float32)
    for i in range(1, 14):
        m = labels == i
        if not m.any():
            continue
        d = ndi.distance_transform_edt(m)
        bd[m] = 1 - d[m] / d[m].max()
        cy, cx = np.argwhere(m).mean(0)
        c = np.hypot(yy - cy, xx - cx)
        cd[m] = c[m] / max(c[m].max(), 1)

    def smooth_noise():
        return ndi.gaussian_filter(rng.normal(size=shape), 2).astype(np.float32) * noise * 5

    return {"foreground": np.clip(ndi.gaussian_filter(fg, 1) + smooth_noise(), 0, 1),
            "center_distances": np.clip(cd + smooth_noise(), 0, 1).astype(np.float32),
            "boundary_distances": np.clip(bd + smooth_noise(), 0, 1).astype(np.float32)}


def reference_labels(micro_sam, maps, **params):
    seg = micro_sam.InstanceSegmentationWithDecoder(None, None)
    seg.set_state(maps)
    return seg.generate(**params)


def test_defaults_are_micro_sams(micro_sam):
    import inspect

    sig = inspect.signature(micro_sam.InstanceSegmentationWithDecoder.generate).parameters
    for k, v in AIS_DEFAULTS.items():
        assert sig[k].default == v, k


@pytest.mark.parametrize("sigma", [1.0, 1.6, 0.4, 3.0])
def test_gaussian_matches_bioimage_cpp(micro_sam, sigma):
    import bioimage_cpp as bic

    rng = np.random.default_rng(3)
    for shape in ((97, 64), (5, 33), (1, 17)):
        x = rng.random(shape).astype(np.float32)
        ref, ours = bic.filters.gaussian_smoothing(x, sigma), gaussian_smoothing(x, sigma)
        ulp = np.spacing(np.abs(ref).astype(np.float32))
        assert np.all(np.abs(ours - ref) <= ulp), (shape, np.abs(ours - ref).max())
        if x.size > 1000:  # bit-identical almost everywhere (its vector-loop tails skip FMAs)
            assert np.mean(ours != ref) < 0.02, (shape, np.mean(ours != ref))


def test_watershed_matches_bioimage_cpp(micro_sam):
    import bioimage_cpp as bic

    rng = np.random.default_rng(4)
    for size, plateaus in ((64, False), (120, True)):
        h = ndi.gaussian_filter(rng.random((size, size + 7)), 3).astype(np.float32)
        if plateaus:  # ties everywhere: the queue order decides
            h = np.round(h * 40) / 40
        mask = ndi.gaussian_filter(rng.random(h.shape), 2) > 0.47
        markers = bic.segmentation.label(h < np.quantile(h, 0.08)).astype(np.uint32)
        ref = bic.segmentation.watershed(h, markers, mask=mask)
        ours = seeded_watershed(h, markers, mask)
        assert markers.max() > 3
        assert np.array_equal(ours, ref.astype(np.int64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_match_micro_sam(micro_sam, seed):
    maps = blob_maps(seed)
    ref = reference_labels(micro_sam, maps)
    ours = watershed_from_maps(**maps)
    assert ours.dtype == np.uint32 and ref.max() >= 5
    assert same_partition(ours, ref)


@pytest.mark.parametrize("params", [
    {"center_distance_threshold": 0.3, "boundary_distance_threshold": 0.6, "min_size": 40},
    {"foreground_threshold": 0.3, "foreground_smoothing": 0.0, "distance_smoothing": 0.0},
    {"foreground_smoothing": 2.0, "distance_smoothing": 1.0, "min_size": 200},
])
def test_labels_match_micro_sam_with_parameters(micro_sam, params):
    maps = blob_maps(5, noise=0.1)
    ref = reference_labels(micro_sam, maps, **params)
    ours = watershed_from_maps(**maps, **params)
    assert ref.max() >= 1
    assert same_partition(ours, ref)


def test_same_partition_detects_differences():
    a = np.array([[1, 1, 2], [0, 2, 2]])
    assert same_partition(a, np.where(a == 1, 7, np.where(a == 2, 3, 0)))
    assert not same_partition(a, np.where(a > 0, 1, 0))
    b = a.copy()
    b[0, 1] = 2
    assert not same_partition(a, b)


def test_ais_and_apg_run_on_the_held_embedding(one_thread):
    import torch

    from napari_sam import Predictor, build_model
    from napari_sam.automask.ais import ais
    from napari_sam.automask.apg import apg
    from napari_sam.model.config import TEST_VIT

    torch.manual_seed(0)
    model = build_model(TEST_VIT.with_(name="t", instance_decoder="unetr",
                                       instance_decoder_features=8))
    assert model.has_instance_head and model.instance_decoder_kind == "unetr"
    calls = []
    model.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    pred = Predictor(model, precision="fp32", diameter="off")
    img = (np.random.default_rng(1).random((96, 128, 3)) * 255).astype(np.uint8)
    pred.set_image(img)
    maps = pred.instance_maps()
    labels = ais(pred)
    assert labels.shape == (96, 128) and labels.dtype == np.uint32
    np.testing.assert_array_equal(labels, watershed_from_maps(**maps))
    np.testing.assert_array_equal(labels, ais(pred, maps=maps))
    assert apg(pred).shape == (96, 128)
    assert len(calls) == 1  # set_image only
