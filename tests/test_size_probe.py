"""The model-checked diameter (`size_probe`): the bundled model corrects the pixel
estimate on touching cells, leaves nuclei alone, and other models are not probed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_sam.model import build_model, load_model
from napari_sam.scale import estimate_diameter, resolve_diameter
from napari_sam.size_probe import (can_probe, median_object_diameter, object_areas,
                                   probe_once, refine_diameter)
from napari_sam.training.multiscale import median_diameter, scaled_sample

from bundled_status import needs_bundled


def _disc_labels(shape, centres, radius):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, 1):
        labels[(rr - y) ** 2 + (cc - x) ** 2 <= radius ** 2] = i
    return labels


def test_object_areas_leave_out_objects_cut_by_the_edge():
    centres = [(30, 30), (30, 80), (80, 30), (80, 80)]
    labels = _disc_labels((110, 110), centres, 10)
    labels[_disc_labels((110, 110), [(0, 55), (55, 0)], 6) > 0] = 9  # two cut half-discs
    areas = object_areas(labels)
    assert len(areas) == 4
    assert median_object_diameter(areas) == pytest.approx(20.0, rel=0.05)
    assert median_object_diameter([]) is None


def test_models_without_an_instance_decoder_keep_the_estimate():
    model = build_model("test_vit")
    assert not can_probe(model)
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    assert refine_diameter(image, model, 12.5) == 12.5


@needs_bundled
def test_refined_diameter_on_touching_cells_beats_the_pixel_estimate(one_thread):
    """Touching, textured cells where the pixel estimate errs (seeds not used to design the
    probe): the refined diameter's median error is within 20 % and below the estimate's."""
    model = load_model("bundled")
    assert can_probe(model)
    est_err, ref_err = [], []
    for d in (16, 32, 64):
        side = 384 if d < 40 else 768
        for seed in (7100, 7101):
            image, labels = scaled_sample("cells", d, (side, side), seed)
            true = median_diameter(labels)
            est = estimate_diameter(image).diameter
            est_err.append(abs(est / true - 1))
            ref_err.append(abs(resolve_diameter(image, None, None, model) / true - 1))
    assert np.median(ref_err) <= 0.2, ref_err
    assert np.median(ref_err) < np.median(est_err), (est_err, ref_err)


@needs_bundled
def test_refined_diameter_on_nuclei_and_empty_images(one_thread):
    model = load_model("bundled")
    image, labels = scaled_sample("nuclei", 24, (384, 384), 7100)
    true = median_diameter(labels)
    assert abs(resolve_diameter(image, None, None, model) / true - 1) < 0.2
    found, n = probe_once(image, model, true)
    assert n >= 3 and abs(found / true - 1) < 0.2, (found, true)
    # nothing to find: the pixel estimate stands
    flat = np.full((128, 128), 100, np.uint16)
    assert refine_diameter(flat, model, 10.0) == 10.0


@needs_bundled
def test_sample_image_with_a_noise_patch_in_its_centre(one_thread):
    """The shipped sample `nuclei.tif` has a patch of noise specks across its centre: the
    check looks at windows spread over the image, on the whole image's intensity range,
    so the patch cannot make it read specks (it once read 5.6 px, true 24 px), and automask
    with nothing given finds the nuclei."""
    import tifffile

    from napari_sam import AutoSegmenter
    from napari_sam.training.evaluate import match_f1

    root = Path(__file__).resolve().parents[1] / "sample_data"
    image = tifffile.imread(root / "nuclei.tif")
    truth = tifffile.imread(root / "nuclei_truth.tif")
    model = load_model("bundled")
    d = resolve_diameter(image, None, None, model)
    assert abs(d / median_diameter(truth) - 1) < 0.2, d
    f1 = match_f1(AutoSegmenter(model)(image).labels, truth)
    assert f1["f1@0.5"] > 0.9 and f1["f1@0.75"] > 0.8, f1


def test_windows_spread_over_the_image():
    from napari_sam.size_probe import windows

    assert windows((100, 80), 200) == [(0, 0, 100, 80)]
    four = windows((1000, 800), 100)
    assert len(four) == 4 and all(h == w == 100 for _, _, h, w in four)
    assert {(y, x) for y, x, _, _ in four} == {(200, 150), (200, 550), (700, 150), (700, 550)}


@needs_bundled
def test_checked_diameter_cannot_spiral_below_half_the_estimate(one_thread):
    """A fluorescence field (held-out seed 10,000,021) where the model, shown the nuclei
    zoomed, finds specks inside them: unbounded, the check went 77 -> 22 -> 7 -> 4 px (true
    19.9); it stays at or above half the pixel estimate."""
    from napari_sam.training.synthetic import nuclei_image

    image, labels = nuclei_image(10_000_021, (512, 512))
    model = load_model("bundled")
    est = estimate_diameter(image).diameter
    d = resolve_diameter(image, None, None, model)
    assert d >= 0.5 * est - 1e-6
    assert abs(d / median_diameter(labels) - 1) < 0.25, (d, est)
