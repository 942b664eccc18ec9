"""Tests for the synthetic training-data generator (fast, CPU only)."""

import numpy as np
import pytest

from napari_sam.training.synthetic import (
    KINDS,
    generate_sample,
    make_dataset,
    nuclei_image,
    to_dtype,
)


def _check_labels(labels, shape):
    assert labels.dtype == np.uint32
    assert labels.shape == shape
    n = int(labels.max())
    assert np.array_equal(np.unique(labels[labels > 0]), np.arange(1, n + 1))  # consecutive
    if n:
        assert np.bincount(labels.ravel())[1:].min() >= 10


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind(kind):
    rng = np.random.default_rng(1)
    for _ in range(3):
        image, labels = generate_sample(rng, size=(96, 128), kind=kind)
        assert image.dtype == np.float32
        assert image.shape == ((96, 128, 3) if kind == "shapes" else (96, 128))
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert np.isfinite(image).all()
        _check_labels(labels, (96, 128))


def test_random_kind_and_objects_present():
    rng = np.random.default_rng(2)
    counts = [generate_sample(rng, size=(128, 128))[1].max() for _ in range(8)]
    assert sum(c > 0 for c in counts) >= 6


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_dtypes(dtype):
    image, labels = generate_sample(np.random.default_rng(3), size=(64, 64), kind="nuclei",
                                    dtype=dtype)
    assert image.dtype == np.dtype(dtype)
    _check_labels(labels, (64, 64))


def test_to_dtype_ranges():
    ramp = np.linspace(0, 1, 1000, dtype=np.float32).reshape(10, 100)
    u8 = to_dtype(ramp, "uint8")
    assert u8.min() == 0 and u8.max() == 255
    u16 = to_dtype(ramp, "uint16")
    assert u16.min() == 100 and u16.max() == 4095
    rng = np.random.default_rng(0)
    for _ in range(20):
        u16 = to_dtype(ramp, "uint16", rng)
        assert u16.dtype == np.uint16 and u16.min() <= 1000 and u16.max() > u16.min() + 200
    with pytest.raises(ValueError):
        to_dtype(ramp, "int8")


def test_determinism_and_prefix_stability():
    a = make_dataset(7, 3, size=(64, 64))
    b = make_dataset(7, 5, size=(64, 64))
    for (ia, la), (ib, lb) in zip(a, b[:3]):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(la, lb)
    c = make_dataset(8, 1, size=(64, 64))
    assert not np.array_equal(a[0][0], c[0][0]) or a[0][0].shape != c[0][0].shape
    i1, l1 = generate_sample(np.random.default_rng(5), size=(64, 64))
    i2, l2 = generate_sample(np.random.default_rng(5), size=(64, 64))
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(l1, l2)


def test_nuclei_brighter_than_background():
    rng = np.random.default_rng(4)
    for _ in range(6):
        image, labels = generate_sample(rng, size=(128, 128), kind="nuclei", invert=False)
        if labels.max() == 0:
            continue
        assert image[labels > 0].mean() > image[labels == 0].mean()
    image, labels = generate_sample(np.random.default_rng(4), size=(128, 128), kind="nuclei",
                                    invert=True)
    if labels.max():
        assert image[labels > 0].mean() < image[labels == 0].mean()


def test_nuclei_size_range():
    rng = np.random.default_rng(6)
    for _ in range(6):
        _, labels = generate_sample(rng, size=(160, 160), kind="nuclei")
        areas = np.bincount(labels.ravel())[1:]
        if areas.size:
            assert 2 * np.sqrt(areas.max() / np.pi) <= 82  # equivalent diameter <= ~80 px


def test_nuclei_image():
    image, labels = nuclei_image(0)
    assert image.shape == (512, 512) and image.dtype == np.uint16
    assert 100 <= image.min() and image.max() <= 4095
    _check_labels(labels, (512, 512))
    assert 20 <= labels.max() <= 80
    # objects not cut by the border have diameters of 10-40 px
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    areas = np.bincount(labels.ravel())[1:]
    inner = np.setdiff1d(np.arange(1, labels.max() + 1), border)
    diam = 2 * np.sqrt(areas[inner - 1] / np.pi)
    assert diam.min() >= 8 and diam.max() <= 44
    assert image[labels > 0].mean() > 1.5 * image[labels == 0].mean()
    image2, labels2 = nuclei_image(0)
    np.testing.assert_array_equal(image, image2)
    np.testing.assert_array_equal(labels, labels2)
    f, _ = nuclei_image(1, size=(128, 160), dtype="float32")
    assert f.shape == (128, 160) and f.dtype == np.float32
