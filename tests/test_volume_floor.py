"""The intensity floor of `segment_volume` (`napari_sam.volume.floor`) on hand-made slices, and
where the volume functions estimate the object size (their default, diameter=None)."""

from __future__ import annotations

import numpy as np

from napari_sam.volume.floor import Floor, apply_floor, measure


def disc(shape, r, value, background=20.0, halo=0.0, noise=2.0, seed=0):
    """(Y, X) float32: a disc of radius r at `value` on `background`, with a halo ring (r..r+4
    px) at `halo` of the way from the background to the disc, and Gaussian noise."""
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(rr - shape[0] / 2, cc - shape[1] / 2)
    img = np.full(shape, background, np.float32)
    img[d <= r + 4] = background + halo * (value - background)
    img[d <= r] = value
    img += np.random.default_rng(seed).normal(0, noise, shape).astype(np.float32)
    return img, d <= r, d <= r + 4


def test_floor_keeps_the_object_and_drops_its_halo():
    img, obj, wide = disc((64, 64), 10, 200.0, halo=0.2)
    f = measure(img, obj)
    assert isinstance(f, Floor) and f.inside > f.ring
    kept = f.keep(img, wide, 0.3)  # an answer that outlined the halo too
    assert (kept & obj).sum() >= 0.97 * obj.sum()
    assert (kept & ~obj).sum() <= 0.1 * (wide & ~obj).sum()


def test_floor_mirrors_for_dark_objects_and_skips_weak_contrast():
    img, obj, wide = disc((64, 64), 10, 20.0, background=200.0, halo=0.2)
    f = measure(img, obj)
    assert f.inside < f.ring
    kept = f.keep(img, wide, 0.3)
    assert (kept & obj).sum() >= 0.97 * obj.sum() and (kept & ~obj).sum() < (wide & ~obj).sum() / 5
    faint, fobj, _ = disc((64, 64), 10, 22.0, noise=5.0)
    assert measure(faint, fobj) is None  # contrast below the ring's noise: not trusted
    assert measure(img, np.zeros_like(obj)) is None


def test_apply_floor_uses_the_nearest_anchor():
    bright, obj, wide = disc((48, 48), 8, 200.0, halo=0.2)
    dim, _, _ = disc((48, 48), 8, 60.0, halo=0.2, seed=1)
    pixels = {0: bright, 1: bright, 2: dim, 3: dim}
    out = np.stack([wide] * 4)
    floors = {0: measure(bright, obj), 3: measure(dim, obj)}
    apply_floor(out, floors, pixels.__getitem__, 0.3)
    for k in range(4):  # slice 1 uses anchor 0's measure, slice 2 anchor 3's
        assert (out[k] & obj).sum() >= 0.95 * obj.sum()
        assert (out[k] & ~obj).sum() < (wide & ~obj).sum() / 5
    before = np.stack([wide] * 4)
    np.testing.assert_array_equal(apply_floor(before.copy(), floors, pixels.__getitem__, 0),
                                  before)
    # with the bright anchor's measure, the dim slices would lose the object itself
    lost = apply_floor(np.stack([wide] * 4), {0: floors[0]}, pixels.__getitem__, 0.3)
    assert lost[3].sum() < 0.5 * obj.sum()


def test_object_size_is_estimated_on_the_prompted_slice(monkeypatch):
    """segment_volume's default diameter=None estimates once, on slice z; "off" never does;
    SliceEmbeddings estimates on the middle slice unless told another."""
    import napari_sam.scale as scale
    from napari_sam import Predictor, build_model
    from napari_sam.volume import SliceEmbeddings, segment_volume

    vol = np.stack([np.full((40, 48), k, np.float32) for k in range(5)])
    vol[:, 10:20, 10:20] += 50
    seen = []
    real = scale.resolve_diameter

    def spy(image, diameter, channels=None, model=None):
        seen.append((float(np.asarray(image).min()), diameter))
        return real(image, diameter, channels, model)
    monkeypatch.setattr(scale, "resolve_diameter", spy)
    pred = Predictor(build_model("test_vit"), device="cpu")
    segment_volume(vol, pred, z=1, points=[[15, 15]], floor=None)
    assert seen == [(1.0, None)]  # slice 1 (its background is 1)
    seen.clear()
    segment_volume(vol, pred, z=1, points=[[15, 15]], diameter="off")
    assert seen == []
    SliceEmbeddings(pred, vol)
    SliceEmbeddings(pred, vol, reference=4, diameter=12.0)
    assert seen == [(2.0, None), (4.0, 12.0)]
