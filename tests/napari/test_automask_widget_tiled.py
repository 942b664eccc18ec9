"""The automask widget on large 2D layers: tile by tile, stitched, cancellable, resumable.

The image is 640 x 640 and the model's input 256 pixels (`BlobSam` of
test_automask_widget.py: the real tiny encoder, a decoder that answers a point with the
bright disc under it), so the interactive widget's rule tiles it: 3 x 3 tiles of 256 pixels
(windows start at 0, 192, 384; the cores meet at 224 and 416). Discs of radius 24 lie
across those seams; with 8 x 8 points per tile (32 pixels apart) every disc holds a point.
The first disc (radius 40) is wider than the 64-pixel overlap: no tile sees it whole, so it
is one object only if its pieces are stitched.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import tifffile
from test_automask_widget import blob_model, count_calls, make_widget
from test_automask_widget import run as run_widget

from napari_sam._napari import automask_tiled, large_image
from napari_sam._napari.automask_job import Request, run_job
from napari_sam._napari.embedding import TiledSetup
from napari_sam._napari.tiled_jobs import TilingRule

pytestmark = pytest.mark.gui

SIZE, RADIUS = 640, 24
CENTRES = [(224, 100),   # across the horizontal seam, radius 40
           (100, 416),   # across the vertical seam
           (224, 416),   # where four tiles meet
           (540, 540), (80, 250)]


def scene(seed=0):
    rr, cc = np.mgrid[:SIZE, :SIZE]
    truth = np.zeros((SIZE, SIZE), np.uint32)
    for k, (r, c) in enumerate(CENTRES):
        radius = 40 if k == 0 else RADIUS
        truth[(rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2] = k + 1
    noise = np.random.default_rng(seed).normal(0, 0.05, truth.shape)
    return ((truth > 0) + noise).astype(np.float32), truth


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    """Layers without a file put their run folder in the per-user cache: a temporary one."""
    root = tmp_path / "user-cache" / "embeddings"
    monkeypatch.setattr("napari_sam.tiled.cache.default_cache_root", lambda: root)
    return root.parent / "automask"


run = partial(run_widget, timeout=120_000)  # tiled runs take longer


def assert_one_id_per_disc(labels, truth):
    labels = np.asarray(labels)
    ids = []
    for k in range(1, len(CENTRES) + 1):
        inside = labels[truth == k]
        top = np.bincount(inside).argmax()
        assert top > 0 and (inside == top).mean() > 0.9, k   # whole, one id across seams
        ids.append(top)
    assert len(set(ids)) == len(CENTRES)                       # no two discs share an id
    assert set(np.unique(labels)) == {0, *ids}                 # and nothing else was found


def test_large_layer_runs_tile_by_tile(make_napari_viewer, qtbot, user_cache):
    viewer = make_napari_viewer()
    data, truth = scene()
    viewer.add_image(data, name="scene", scale=(0.5, 2.0), translate=(10.0, -5.0))
    model = blob_model()
    calls = count_calls(model)
    w = make_widget(viewer, model)
    assert w.note.native.isHidden()
    run(qtbot, w)
    out = w.tiled_result
    assert out is not None and w.session is None, w.status.value
    assert out.grid_shape == (3, 3) and out.tiles_run == 9 and out.resumed == 0
    assert calls["encode"] == 9                                # each tile once, 256 px each
    layer = viewer.layers["scene automask"]
    assert layer is w.result_layer and isinstance(layer.data, np.ndarray)
    assert layer.data.dtype == np.uint32 and layer.data.shape == (SIZE, SIZE)
    assert tuple(layer.scale) == (0.5, 2.0) and tuple(layer.translate) == (10.0, -5.0)
    assert_one_id_per_disc(layer.data, truth)
    assert len(layer.metadata["records"]) == len(CENTRES)
    assert "3 x 3 tiles" in w.status.value and not w.note.native.isHidden()
    assert not list(user_cache.iterdir())                      # work folder gone when done

    before, seen = layer.data.copy(), dict(calls)
    w.pred_iou.value = 0.96                                    # would drop every disc
    assert "next Run" in w.status.value and calls == seen
    np.testing.assert_array_equal(layer.data, before)          # not re-filtered
    run(qtbot, w)                                              # ... but the next Run uses it
    assert w.result_layer is not layer and not w.result_layer.data.any()


def test_cancel_then_resume_into_zarr_beside_the_file(make_napari_viewer, qtbot, tmp_path,
                                                      monkeypatch):
    import zarr

    data, truth = scene(1)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, data, tile=(256, 256))
    monkeypatch.setattr(large_image, "LARGE", 512)            # our reader: a lazy layer
    monkeypatch.setattr(automask_tiled, "MEMORY_PIXELS", 1000)  # the result goes to disk
    viewer = make_napari_viewer()
    image = viewer.open(str(path), plugin="napari-sam-suite")[0]
    image.scale, image.translate = (2.0, 2.0), (5.0, 7.0)
    w = make_widget(viewer, blob_model())

    def cancel_after_two(done, total, message):
        if message.startswith("segmenting tile") and done >= 2:
            w.cancel()
    w._relay.progressed.connect(cancel_after_two)
    run(qtbot, w)
    w._relay.progressed.disconnect(cancel_after_two)
    assert "cancelled" in w.status.value and w.tiled_result is None
    assert [ly.name for ly in viewer.layers] == [image.name]   # nothing added
    folder = tmp_path / "scene.tif.sam-cache" / "automask"
    left = sorted(p.name for p in folder.iterdir())
    assert len(left) == 1 and left[0].endswith(".zarr.work")  # no half-painted labels
    finished = len(list((folder / left[0] / "done").iterdir()))
    assert finished >= 2
    caches = [p for p in folder.parent.iterdir() if p.name != "automask"]
    assert len(caches) == 1 and len(list((caches[0] / "done").iterdir())) >= finished

    run(qtbot, w)                                              # resumes
    out = w.tiled_result
    assert out is not None, w.status.value
    assert out.resumed == finished and out.tiles_run == 9 - finished
    layer = w.result_layer
    assert isinstance(layer.data, zarr.Array) and out.path.parent == folder
    assert str(out.path) in w.status.value and layer.metadata["tiling"]["labels_path"]
    assert tuple(layer.scale) == (2.0, 2.0) and tuple(layer.translate) == (5.0, 7.0)
    assert_one_id_per_disc(layer.data[:], truth)
    assert sorted(p.name for p in folder.iterdir()) == [out.path.name]  # work removed


def test_cancel_keeps_finished_tiles_without_a_viewer(user_cache):
    data, truth = scene(2)
    setup = TiledSetup(TilingRule(), (SIZE, SIZE), False, 2, None)
    req = Request(data, model=blob_model(), points_per_side=8, tiled=setup,
                  diameter="off")
    seen = []

    def progress(done, total, message):
        if message.startswith("segmenting tile"):
            seen.append(done)
    # Cancel is pressed once tile 3 is reported; the job notices at its next report, after
    # tile 4: the tile in flight is finished and kept, none is started
    first = run_job(req, progress, lambda: len(seen) > 0 and seen[-1] >= 3)
    assert first.cancelled and first.tiled is None
    work = list(user_cache.glob("*.zarr.work"))
    assert len(work) == 1 and len(list((work[0] / "done").iterdir())) == 4
    assert not list(user_cache.glob("*.partial"))
    again = run_job(req, progress)
    assert again.tiled.tiles_run == 5 and again.tiled.resumed == 4
    assert_one_id_per_disc(again.tiled.labels, truth)


def test_small_layer_and_tiling_off_keep_the_plain_path(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    data, truth = scene()
    viewer.add_image(data[:256, :256], name="small")
    model = blob_model()
    calls = count_calls(model)
    w = make_widget(viewer, model)
    run(qtbot, w)
    assert w.session is not None and w.tiled_result is None and w.note.native.isHidden()
    assert calls["encode"] == 1                                # one whole-plane embedding
    big = viewer.add_image(data, name="big")
    w.image.value = big
    w.tiling.value = "off"
    run(qtbot, w)
    assert w.session is not None and w.tiled_result is None and calls["encode"] == 2
    assert w.result_layer.data.shape == (SIZE, SIZE)
    w.tiling.value = "auto"
    w.tile_above.value = 1024                                  # 640 is small now
    run(qtbot, w)
    assert w.tiled_result is None and calls["encode"] == 3
