"""The widget on large 2D layers: prompts answered tile by tile, only the needed tiles embedded.

The image is 1024 x 1024 and the model's input 256 pixels (test_vit with the disk decoder of
conftest.py), so the plane is more than twice the input side and the widget tiles it: 5 x 5
tiles of 256 pixels overlapping by 64 (windows start at 0, 192, 384, 576, 768; the cores
meet at 224, 416, 608, 800).
"""

from __future__ import annotations

import sys

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_sam._napari import large_image
from napari_sam._napari import widget as widget_module
from napari_sam._napari.sample_data import nuclei
from napari_sam._napari.widget import SamWidget

pytestmark = pytest.mark.gui

SIZE = 1024


def big_image(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((SIZE, SIZE)) * 1000 + 100).astype(np.uint16)


def make_widget(viewer, qtbot, wait, model, **kwargs):
    kwargs.setdefault("diameter", "off")  # native-resolution tiles, as configured
    w = SamWidget(viewer, model=model, **kwargs)
    viewer.window.add_dock_widget(w)
    wait(qtbot, w)
    return w


def wait_answer(qtbot, w, timeout=60_000):
    qtbot.waitUntil(lambda: not w.tiled.busy and w.tiled.answer is not None, timeout=timeout)
    return w.tiled.answer


def click(w, image, pixel):
    w.points_layer.add(w.points_layer.world_to_data(image.data_to_world(pixel)))


def full_mask(answer, shape=(SIZE, SIZE)):
    return answer.mask.to_full(shape)


def preview_in_image(w, image):
    """The preview layer's pixels, placed on the image's pixel grid (via world coordinates)."""
    prev = w.preview_layer
    out = np.zeros(image.data.shape[:2], bool)
    origin = np.rint(image.world_to_data(prev.data_to_world((0, 0)))).astype(int)
    h, wd = prev.data.shape
    out[origin[0]:origin[0] + h, origin[1]:origin[1] + wd] = prev.data > 0
    return out


def core_owners(tp, mask):
    rows, cols = np.nonzero(mask)
    return {tp.grid.owner(r, c).index for r, c in zip(rows, cols)}


def test_click_at_a_tile_corner_embeds_one_tile(make_napari_viewer, qtbot, wait, disk_model):
    viewer = make_napari_viewer()
    image = viewer.add_image(big_image(), name="big")
    w = make_widget(viewer, qtbot, wait, disk_model)
    tp = w.tiled.tp
    assert w.tiled.active and tp.grid.grid_shape == (5, 5)
    assert w.preview_layer.data.shape == (1, 1)               # nothing full-size up front
    assert tp.embeddings.store.done() == set()                # no embedding up front
    assert tp.embeddings.value_range is not None              # whole-image contrast (uint16)
    click(w, image, (224, 224))                               # where four cores meet
    answer = wait_answer(qtbot, w)
    mask = full_mask(answer)
    rows, cols = np.nonzero(mask)
    np.testing.assert_allclose([rows.mean(), cols.mean()], (224, 224), atol=1.5)
    assert core_owners(tp, mask) == {(0, 0), (0, 1), (1, 0), (1, 1)}  # pixels of 4 tiles
    assert answer.embedded == [(1, 1)] and tp.embeddings.store.done() == {(1, 1)}
    np.testing.assert_array_equal(preview_in_image(w, image), mask)
    assert w.candidate.value.startswith("1/3")
    w.next_mask()                                             # a larger candidate, no new tile
    bigger = wait_answer(qtbot, w)
    assert bigger.index == 1 and bigger.mask.area > answer.mask.area
    assert tp.embeddings.store.done() == {(1, 1)}
    assert w.candidate.value.startswith("2/3")


def test_click_near_a_border_follows_the_object(make_napari_viewer, qtbot, wait, disk_model,
                                                 monkeypatch):
    # disks of radius 40 around a click 32 pixels from the best tile's edge: the object
    # goes on into the tile above, which is embedded and asked too
    monkeypatch.setattr(sys.modules[type(disk_model).__module__], "RADII", (40.0, 48.0, 56.0))
    viewer = make_napari_viewer()
    image = viewer.add_image(big_image(), name="big")
    w = make_widget(viewer, qtbot, wait, disk_model)
    tp = w.tiled.tp
    click(w, image, (224, 100))
    answer = wait_answer(qtbot, w)
    mask = full_mask(answer)
    assert sorted(answer.mask.tiles) == [(0, 0), (1, 0)]
    assert sorted(answer.embedded) == [(0, 0), (1, 0)]
    assert tp.embeddings.store.done() == {(0, 0), (1, 0)}    # 2 of 25 tiles
    yy, xx = np.mgrid[:SIZE, :SIZE]
    disk = (yy - 224) ** 2 + (xx - 100) ** 2 <= 36 ** 2
    assert mask[disk].all()                                   # whole across the seam
    assert mask[:192].any() and mask[256:].any()              # beyond either window alone
    assert core_owners(tp, mask) == {(0, 0), (1, 0)}


def test_box_over_four_tiles_and_commit(make_napari_viewer, qtbot, wait, disk_model):
    viewer = make_napari_viewer()
    image = viewer.add_image(big_image(), name="big", scale=(0.5, 0.5), translate=(3.0, -7.0))
    w = make_widget(viewer, qtbot, wait, disk_model)
    tp = w.tiled.tp
    # box (row0, col0, row1, col1) = (150, 600, 330, 700): tile rows 0-1, tile columns 2-3
    corners = np.array([[150, 600], [150, 700], [330, 700], [330, 600]], float)
    shapes = w.shapes_layer
    shapes.add_rectangles(np.array([shapes.world_to_data(image.data_to_world(c))
                                    for c in corners]))
    answer = wait_answer(qtbot, w)
    r0, c0, r1, c1 = answer.mask.bbox
    np.testing.assert_allclose([r0, c0, r1 - 1, c1 - 1], [150, 600, 330, 700], atol=3)
    assert answer.mask.mask.mean() > 0.95                     # the whole box, one piece
    assert len(answer.mask.tiles) == 4
    assert tp.embeddings.store.done() == set(answer.mask.tiles)  # only those were embedded
    np.testing.assert_array_equal(preview_in_image(w, image), full_mask(answer))
    w.commit()
    labels = viewer.layers["big labels"]
    assert labels.data.dtype == np.uint32 and labels.data.shape == (SIZE, SIZE)
    assert tuple(labels.scale) == (0.5, 0.5) and tuple(labels.translate) == (3.0, -7.0)
    np.testing.assert_array_equal(labels.data == 1, full_mask(answer))
    assert not len(w.shapes_layer.data) and w.tiled.answer is None  # prompts cleared
    first = labels.data.copy()
    click(w, image, (240, 650))                               # inside the first object
    w.overwrite.value = True
    second = wait_answer(qtbot, w)
    w.commit()
    assert set(np.unique(labels.data)) == {0, 1, 2}
    np.testing.assert_array_equal(labels.data == 2, full_mask(second))
    w.undo()
    np.testing.assert_array_equal(labels.data, first)         # exact pixels back
    w.undo()
    assert not labels.data.any()


def test_lazy_layer_cache_beside_file_and_cancel(make_napari_viewer, qtbot, wait, disk_model,
                                                 tmp_path, monkeypatch):
    img = big_image(1)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, img, tile=(256, 256))
    monkeypatch.setattr(large_image, "LARGE", 512)  # our reader claims it: a lazy layer
    viewer = make_napari_viewer()
    image = viewer.open(str(path), plugin="napari-sam-suite")[0]
    assert isinstance(image.data, da.Array)
    w = make_widget(viewer, qtbot, wait, disk_model)
    emb = w.tiled.tp.embeddings
    assert emb.cache_dir is not None and emb.cache_dir.parent == tmp_path / "scene.tif.sam-cache"
    click(w, image, (600, 610))
    assert w.tiled.busy
    w.cancel()                                                # stops between tiles
    assert "cancelled" in w.status.value
    qtbot.waitUntil(lambda: not w.tiled.busy, timeout=60_000)
    assert w.tiled.answer is None and not w.preview_layer.data.any()
    w.update_preview()                                        # ask again
    answer = wait_answer(qtbot, w)
    tiles = set(answer.mask.tiles)
    done = {tuple(int(v) for v in p.name.split("_")) for p in (emb.cache_dir / "done").iterdir()}
    assert done == tiles                                      # on disk, beside the image
    rows, cols = np.nonzero(full_mask(answer))
    np.testing.assert_allclose([rows.mean(), cols.mean()], (600, 610), atol=1.5)


def test_labels_that_cannot_be_written_give_a_message(make_napari_viewer, qtbot, wait,
                                                      disk_model, monkeypatch):
    errors = []
    monkeypatch.setattr(widget_module, "show_error", errors.append)
    viewer = make_napari_viewer()
    image = viewer.add_image(da.from_array(big_image(), chunks=256), name="lazy")
    readonly = viewer.add_labels(da.zeros((SIZE, SIZE), dtype=np.uint32, chunks=256),
                                 name="read-only")
    viewer.layers.selection.active = image
    w = make_widget(viewer, qtbot, wait, disk_model)
    assert w.tiled.active
    w.labels_layer.value = readonly
    click(w, image, (500, 500))
    wait_answer(qtbot, w)
    w.commit()
    assert errors and "cannot be written" in errors[-1] and "read-only" in errors[-1]
    assert w.tiled.answer is not None                         # the object is still there


def test_small_image_and_tiling_off_use_the_plain_predictor(make_napari_viewer, qtbot, wait,
                                                            disk_model):
    viewer = make_napari_viewer()
    data, kwargs, _ = nuclei()[0]
    image = viewer.add_image(data, **kwargs)                  # 512 x 512: twice the input
    w = make_widget(viewer, qtbot, wait, disk_model)
    assert not w.tiled.active and w._embedder.predictor is not None
    click(w, image, (200, 150))
    assert w.preview_layer.data.shape == (512, 512) and w.preview_layer.data[200, 150]
    big = viewer.add_image(big_image(), name="big")
    w.tiling.value = "off"
    w.image.value = big
    wait(qtbot, w)
    assert not w.tiled.active and w.preview_layer.data.shape == (SIZE, SIZE)
    w.tiling.value = "auto"
    wait(qtbot, w)
    assert w.tiled.active
    w.tile_above.value = 2048                                 # the 1024 plane is small now
    wait(qtbot, w)
    assert not w.tiled.active
    click(w, big, (300, 300))
    assert w.preview_layer.data.shape == (SIZE, SIZE) and w.preview_layer.data[300, 300]


def test_rule_and_cropped_commits_without_a_viewer():
    import zarr

    from napari_sam._napari.tiled_jobs import TilingRule, commit_crop
    from napari_sam.tiled import TiledMask

    auto = TilingRule()
    assert not auto.applies((512, 512), False, 2, 256)        # twice the input: whole
    assert auto.applies((513, 200), False, 2, 256)
    assert auto.applies((100, 100), True, 2, 256)             # lazy data is never read whole
    assert not auto.applies((4000, 4000), True, 3, 256)       # stacks: slice by slice
    assert not TilingRule("off").applies((9000, 9000), True, 2, 1024)
    assert TilingRule("on").applies((64, 64), False, 2, 1024)
    assert not TilingRule("auto", 2048).applies((2048, 10), False, 2, 256)
    z = zarr.zeros((300, 400), chunks=(100, 100), dtype="uint32")
    z[10, 20] = 5
    m = np.zeros((4, 5), bool)
    m[1:3, 1:4] = True
    m[0, 0] = True                                            # on the existing object
    rec = commit_crop(z, TiledMask((10, 20, 14, 25), m, 0.9), 6)
    assert int(z[10, 20]) == 5 and (z[:] == 6).sum() == 6     # background only
    assert (z[11:13, 21:24] == 6).all()
    rec.undo(z)
    assert (z[:] == 6).sum() == 0 and int(z[10, 20]) == 5
    with pytest.raises(ValueError, match="no free label id"):
        commit_crop(np.zeros((300, 400), np.uint8), TiledMask((0, 0, 4, 5), m, 0.9), 256)


def test_commit_into_a_zarr_multiscale_labels_layer(make_napari_viewer, qtbot, wait,
                                                    disk_model, tmp_path):
    # the recipe of docs/large_images.md for labels too large for memory
    import zarr

    viewer = make_napari_viewer()
    image = viewer.add_image(da.zeros((2048, 2048), dtype=np.uint16, chunks=512) + 7,
                             name="huge")
    z = zarr.open(str(tmp_path / "labels.zarr"), mode="w", shape=(2048, 2048),
                  chunks=(512, 512), dtype="uint32")
    z[0, 0] = 41                                              # an earlier object
    labels = viewer.add_labels([z] + large_image.levels_for(z)[1:], multiscale=True,
                               name="on disk")
    viewer.layers.selection.active = image
    w = make_widget(viewer, qtbot, wait, disk_model)
    w.labels_layer.value = labels
    click(w, image, (1500, 333))
    answer = wait_answer(qtbot, w)
    assert len(w.tiled.tp.embeddings.store.done()) == 1
    w.commit()
    np.testing.assert_array_equal(z[:] == 42, full_mask(answer, (2048, 2048)))
    assert int(labels.data[1][750, 166]) == 42                # the lower level follows
    w.undo()
    assert int(z[:].max()) == 41 and (z[:] > 0).sum() == 1
