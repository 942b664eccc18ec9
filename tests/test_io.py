"""napari_sam.io: atomic writes, image reading (eager and lazy), label TIFF, COCO, CSV."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_sam.io import atomic, coco, images, labels as labels_io, tables
from napari_sam.io.images import ImageMeta, open_lazy, read_image
from napari_sam.io.lazy_tiff import LazyTiff

GEO = {
    "ModelPixelScaleTag": (10.0, 10.0, 0.0),
    "ModelTiepointTag": (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0),
    "GeoKeyDirectoryTag": (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633),
    "GeoAsciiParamsTag": "WGS 84 / UTM zone 33N|",
}


def leftovers(folder: Path):
    return [p.name for p in folder.iterdir() if ".partial" in p.name]


def random_labels(shape, n=25, seed=0, dtype=np.uint32):
    """Touching rectangles and blobs with shuffled, non-sequential ids."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype)
    ids = rng.choice(np.arange(1, 10 * n), size=n, replace=False)
    h, w = shape[-2:]
    for lab in ids:
        r, c = rng.integers(0, h), rng.integers(0, w)
        rh, rw = rng.integers(1, h // 3 + 2), rng.integers(1, w // 3 + 2)
        out[..., r:r + rh, c:c + rw] = lab
    out[..., 0, 0] = ids[0]          # first pixel and last pixel set: RLE edge cases
    out[..., -1, -1] = ids[1]
    out[..., :, w // 2] = ids[2]     # a full column: the run continues into the next column
    return out


# ---------------------------------------------------------------------------------------
# atomic writes

def test_atomic_write_creates_and_refuses_existing(tmp_path):
    target = tmp_path / "out.bin"
    with atomic.atomic_write(target) as f:
        f.write(b"hello")
    assert target.read_bytes() == b"hello"
    assert leftovers(tmp_path) == []
    with pytest.raises(FileExistsError, match="--overwrite"):
        with atomic.atomic_write(target) as f:
            f.write(b"other")
    assert target.read_bytes() == b"hello"
    with atomic.atomic_write(target, overwrite=True, mode="w", encoding="utf-8") as f:
        f.write("new")
    assert target.read_text() == "new"
    assert leftovers(tmp_path) == []


def test_new_file_has_ordinary_permissions(tmp_path):
    target = tmp_path / "perm.txt"
    with atomic.atomic_write(target, mode="w") as f:
        f.write("x")
    assert target.stat().st_mode & 0o777 == 0o666 & ~atomic._umask()


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_write_leaves_nothing(tmp_path, error):
    target = tmp_path / "data.bin"
    payload = bytes(range(256)) * 64
    with pytest.raises(error):
        with atomic.atomic_write(target) as f:
            f.write(payload[: len(payload) // 2])
            raise error("simulated crash half way")
    assert not target.exists()
    assert leftovers(tmp_path) == []


def test_failed_overwrite_keeps_old_file(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text('{"old": true}')
    with pytest.raises(RuntimeError):
        with atomic.atomic_write(target, overwrite=True, mode="w") as f:
            f.write('{"new": ')
            raise RuntimeError("disk full")
    assert target.read_text() == '{"old": true}'
    assert leftovers(tmp_path) == []


def test_file_appearing_meanwhile_is_not_clobbered(tmp_path):
    target = tmp_path / "race.txt"
    with pytest.raises(FileExistsError):
        with atomic.atomic_write(target, mode="w") as f:
            f.write("mine")
            target.write_text("theirs")  # another process wins the race
    assert target.read_text() == "theirs"
    assert leftovers(tmp_path) == []


def test_atomic_path_keeps_suffix_and_cleans_up(tmp_path):
    target = tmp_path / "img.tif"
    seen = []
    with pytest.raises(ValueError):
        with atomic.atomic_path(target) as tmp:
            seen.append(tmp)
            assert tmp.endswith(".partial.tif") and Path(tmp).name.startswith(".img.tif.")
            tifffile.imwrite(tmp, np.zeros((8, 8), np.uint8))
            assert atomic.partial_files(tmp_path) == [Path(tmp)]
            raise ValueError("fail after the library wrote")
    assert not Path(seen[0]).exists() and not target.exists()
    with atomic.atomic_path(target) as tmp:
        tifffile.imwrite(tmp, np.ones((8, 8), np.uint8))
    assert tifffile.imread(target).sum() == 64
    assert leftovers(tmp_path) == []


def test_atomic_write_rejects_read_modes_and_missing_folders(tmp_path):
    with pytest.raises(ValueError, match="write mode"):
        with atomic.atomic_write(tmp_path / "x", mode="rb"):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic.atomic_write(tmp_path / "nope" / "x"):
            pass


# ---------------------------------------------------------------------------------------
# reading images

def test_png_jpeg_and_float_tiff(tmp_path):
    import imageio.v3 as iio

    rng = np.random.default_rng(1)
    gray = rng.integers(0, 255, (20, 30), dtype=np.uint8)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "g.png", gray)
    iio.imwrite(tmp_path / "c.png", rgb)
    iio.imwrite(tmp_path / "c.jpg", rgb)
    a, m = read_image(tmp_path / "g.png")
    assert m.axes == "YX" and np.array_equal(a, gray) and m.pixel_size is None
    a, m = read_image(tmp_path / "c.png")
    assert m.axes == "YXC" and np.array_equal(a, rgb)
    a, m = read_image(tmp_path / "c.jpg", channels=[1])
    assert m.axes == "YXC" and a.shape == (20, 30, 1) and m.shape == a.shape
    f = rng.random((2, 16, 18)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", f, metadata={"axes": "ZYX"})
    a, m = read_image(tmp_path / "f.tif")
    assert a.dtype == np.float32 and m.axes == "ZYX" and np.array_equal(a, f)


def test_ome_channel_first_becomes_channel_last(tmp_path):
    data = np.arange(5 * 12 * 14, dtype=np.uint16).reshape(5, 12, 14)
    path = tmp_path / "multi.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "CYX", "PhysicalSizeX": 0.65,
                                           "PhysicalSizeY": 0.5, "PhysicalSizeXUnit": "µm"})
    a, m = read_image(path)
    assert m.axes == "YXC" and m.source_axes == "CYX" and a.shape == (12, 14, 5)
    assert np.array_equal(a, np.moveaxis(data, 0, -1))
    assert m.pixel_size == pytest.approx((0.5, 0.65))
    a, m = read_image(path, channels=[4, 0])
    assert np.array_equal(a, np.stack([data[4], data[0]], -1)) and m.axes == "YXC"
    a, m = read_image(path, channels=2)
    assert np.array_equal(a, data[2]) and m.axes == "YX" and m.shape == (12, 14)
    with pytest.raises(ValueError, match="5 channels"):
        read_image(path, channels=[7])


def test_imagej_hyperstack_axes_and_calibration(tmp_path):
    data = np.random.default_rng(0).integers(0, 200, (2, 3, 4, 10, 12), dtype=np.uint8)
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.2, 1 / 0.25),
                     metadata={"axes": "TZCYX", "unit": "um", "spacing": 1.5})
    a, m = read_image(path)
    assert m.axes == "TZYXC" and a.shape == (2, 3, 10, 12, 4)
    assert np.array_equal(a, np.moveaxis(data, 2, -1))
    assert m.pixel_size == pytest.approx((0.25, 0.2)) and m.z_size == pytest.approx(1.5)


def test_resolution_tags(tmp_path):
    img = np.zeros((8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "cm.tif", img, resolution=(1e4 / 0.4, 1e4 / 0.3),
                     resolutionunit="CENTIMETER")
    tifffile.imwrite(tmp_path / "dpi.tif", img, resolution=(72, 72), resolutionunit="INCH")
    tifffile.imwrite(tmp_path / "none.tif", img)
    assert read_image(tmp_path / "cm.tif")[1].pixel_size == pytest.approx((0.3, 0.4))
    assert read_image(tmp_path / "dpi.tif")[1].pixel_size is None  # a print default
    assert read_image(tmp_path / "none.tif")[1].pixel_size is None


def test_geotiff_tags_are_read(tmp_path):
    path = tmp_path / "scene.tif"
    extratags = labels_io._geo_extratags(GEO)
    tifffile.imwrite(path, np.zeros((6, 7, 3), np.uint8), photometric="rgb",
                     extratags=extratags)
    a, m = read_image(path)
    assert m.axes == "YXC" and m.geo == GEO and m.pixel_size is None


def write_pyramid(path, base):
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        opts = dict(tile=(32, 32), compression="zlib")
        tw.write(base, subifds=2, metadata={"axes": "YX", "PhysicalSizeX": 0.5,
                                            "PhysicalSizeY": 0.5}, **opts)
        tw.write(base[::2, ::2], subfiletype=1, **opts)
        tw.write(base[::4, ::4], subfiletype=1, **opts)


def test_pyramidal_ome_uses_level_0(tmp_path):
    base = np.random.default_rng(2).integers(0, 60000, (128, 96), dtype=np.uint16)
    path = tmp_path / "pyr.ome.tif"
    write_pyramid(path, base)
    a, m = read_image(path)
    assert np.array_equal(a, base) and m.levels == 3 and m.pixel_size == (0.5, 0.5)
    assert m.level_shapes == ((128, 96), (64, 48), (32, 24))
    lazy, lm = open_lazy(path)
    assert isinstance(lazy, LazyTiff) and np.array_equal(lazy[10:90, 5:70], base[10:90, 5:70])
    half, hm = open_lazy(path, level=1)
    assert half.shape == (64, 48) == hm.shape and np.array_equal(np.asarray(half),
                                                                 base[::2, ::2])
    with pytest.raises(ValueError, match="level"):
        open_lazy(path, level=5)


def test_bigtiff_lazy_reads_only_the_tiles_it_needs(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 255, (512, 768), dtype=np.uint8)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, bigtiff=True, tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff
    lazy, meta = open_lazy(path)
    assert isinstance(lazy, LazyTiff) and meta.shape == (512, 768) and lazy.chunksize == (64, 64)
    read_bytes = []
    original = tifffile.FileHandle.read

    def counting(self, size=-1):
        out = original(self, size)
        read_bytes.append(len(out))
        return out

    monkeypatch.setattr(tifffile.FileHandle, "read", counting)
    window = lazy[100:150, 200:260]  # inside 2 x 2 tiles
    monkeypatch.undo()
    assert np.array_equal(window, data[100:150, 200:260])
    assert len(read_bytes) == 4 and sum(read_bytes) < path.stat().st_size / 20
    assert lazy[5, 7] == data[5, 7] and np.array_equal(lazy[::-3, 700], data[::-3, 700])
    clone = pickle.loads(pickle.dumps(lazy))
    assert np.array_equal(clone[300:, :50], data[300:, :50])
    dask_array = images.as_dask(lazy)
    assert dask_array.chunksize == (512, 512)
    assert np.array_equal(dask_array[250:300, 500:600].compute(), data[250:300, 500:600])


@pytest.mark.parametrize("kind", ["planar_strips", "rgb_tiles", "stack_strips", "cyx_tiles"])
def test_lazy_matches_eager_for_any_index(tmp_path, kind):
    rng = np.random.default_rng(4)
    path = tmp_path / f"{kind}.tif"
    if kind == "planar_strips":
        tifffile.imwrite(path, rng.integers(0, 255, (3, 45, 50), dtype=np.uint8),
                         photometric="rgb", planarconfig="separate", rowsperstrip=8,
                         compression="zlib")
    elif kind == "rgb_tiles":
        tifffile.imwrite(path, rng.integers(0, 255, (70, 90, 3), dtype=np.uint8),
                         photometric="rgb", tile=(32, 48), compression="zlib")
    elif kind == "stack_strips":
        tifffile.imwrite(path, rng.random((4, 33, 41)).astype(np.float32), rowsperstrip=5,
                         photometric="minisblack",
                         compression="zlib", metadata={"axes": "ZYX"})
    else:
        tifffile.imwrite(tmp_path / "x.ome.tif", rng.integers(0, 4000, (3, 40, 50),
                                                              dtype=np.uint16),
                         tile=(16, 16), compression="zlib", metadata={"axes": "CYX"})
        path = tmp_path / "x.ome.tif"
    eager, meta = read_image(path)
    assert meta.axes == {"planar_strips": "YXC", "rgb_tiles": "YXC", "stack_strips": "ZYX",
                         "cyx_tiles": "YXC"}[kind]
    lazy = LazyTiff(path)
    assert lazy.shape == eager.shape and lazy.axes == meta.axes and lazy.dtype == eager.dtype
    assert np.array_equal(np.asarray(lazy), eager)
    for _ in range(25):
        key = []
        for n in lazy.shape:
            a = int(rng.integers(0, n))
            b = int(rng.integers(a, n + 1))
            key.append(a if rng.random() < 0.25 else slice(a, b, int(rng.integers(1, 4))))
        key = tuple(key)
        assert np.array_equal(lazy[key], eager[key]), key
    if "C" in meta.axes:
        picked, pm = open_lazy(path, channels=[2, 0])
        assert np.array_equal(np.asarray(picked), eager[..., [2, 0]]) and pm.axes == meta.axes
        one, om = open_lazy(path, channels=1)
        assert np.array_equal(one[3:9], eager[3:9, :, 1]) and om.axes == meta.axes[:-1]


def test_uncompressed_tiff_is_memory_mapped(tmp_path):
    data = np.arange(4 * 10 * 12, dtype=np.uint16).reshape(4, 10, 12)
    path = tmp_path / "mm.ome.tif"
    tifffile.imwrite(path, data, metadata={"axes": "CYX"})
    arr, meta = open_lazy(path)
    assert isinstance(arr, np.memmap) and meta.axes == "YXC"
    assert np.array_equal(arr, np.moveaxis(data, 0, -1))
    one, m = open_lazy(path, channels=3)
    assert isinstance(one, np.memmap) and np.array_equal(one, data[3]) and m.axes == "YX"
    picked, _ = open_lazy(path, channels=[1, 3])
    assert np.array_equal(np.asarray(picked), np.moveaxis(data[[1, 3]], 0, -1))


def test_axes_override_and_guess(tmp_path):
    data = np.random.default_rng(5).integers(0, 255, (3, 9, 11), dtype=np.uint8)
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, data, photometric="minisblack")  # plain pages: "QYX"
    a, m = read_image(path)
    assert m.axes == "ZYX" and np.array_equal(a, data)
    a, m = read_image(path, axes="CYX")
    assert m.axes == "YXC" and np.array_equal(a, np.moveaxis(data, 0, -1))
    lazy, lm = open_lazy(path, axes="CYX")
    assert lm.axes == "YXC" and np.array_equal(np.asarray(lazy), np.moveaxis(data, 0, -1))
    with pytest.raises(ValueError, match="axes"):
        read_image(path, axes="YX")


def test_unreadable_files_give_clear_errors(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match="broken.tif: could not read as an image"):
        read_image(bad)
    with pytest.raises(ValueError, match="could not read as an image"):
        open_lazy(bad)
    txt = tmp_path / "notes.png"
    txt.write_text("not a picture")
    with pytest.raises(ValueError, match="notes.png: could not read"):
        read_image(txt)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.tif")


# ---------------------------------------------------------------------------------------
# label TIFF

def test_label_tif_round_trip_keeps_dtype_pixel_size_and_geo(tmp_path):
    lab = random_labels((40, 50)).astype(np.uint16)
    meta = ImageMeta(path="scene.tif", axes="YXC", shape=(40, 50, 3), dtype=np.uint8,
                     pixel_size=(0.325, 0.5), geo=GEO)
    path = labels_io.write_labels_tif(tmp_path / "scene_labels.tif", lab, meta)
    back, m = labels_io.read_labels(path)
    assert back.dtype == np.uint32 and np.array_equal(back, lab) and m.axes == "YX"
    assert m.pixel_size == pytest.approx((0.325, 0.5)) and m.geo == GEO
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.resolutionunit == tifffile.RESUNIT.CENTIMETER
        xres, yres = page.resolution
        assert (1e4 / yres, 1e4 / xres) == pytest.approx((0.325, 0.5))
        assert tif.geotiff_metadata["ProjectedCSTypeGeoKey"] == 32633
    with pytest.raises(FileExistsError, match="--overwrite"):
        labels_io.write_labels_tif(path, lab, meta)
    labels_io.write_labels_tif(path, np.zeros_like(lab), overwrite=True)
    assert labels_io.read_labels(path)[0].max() == 0
    assert leftovers(tmp_path) == []


def test_label_tif_stacks_keep_axes(tmp_path):
    lab = random_labels((3, 20, 24))
    meta = ImageMeta(path=None, axes="TYX", shape=lab.shape, dtype=np.uint8,
                     pixel_size=(2.0, 2.0))
    back, m = labels_io.read_labels(labels_io.write_labels_tif(tmp_path / "t.tif", lab, meta))
    assert m.axes == "TYX" and np.array_equal(back, lab)
    meta = ImageMeta(path=None, axes="ZYXC", shape=lab.shape + (2,), dtype=np.uint8,
                     pixel_size=(0.2, 0.2), z_size=1.0)
    back, m = labels_io.read_labels(labels_io.write_labels_tif(tmp_path / "z.tif", lab, meta))
    assert m.axes == "ZYX" and m.z_size == pytest.approx(1.0) and np.array_equal(back, lab)
    back, m = labels_io.read_labels(labels_io.write_labels_tif(tmp_path / "n.tif", lab))
    assert m.axes == "ZYX" and m.pixel_size is None


def test_big_label_images_are_tiled(tmp_path):
    lab = np.zeros((8, labels_io.TILE_ABOVE + 10), np.uint32)
    lab[2:5, 4000:4100] = 4_000_000_000
    path = labels_io.write_labels_tif(tmp_path / "wide.tif", lab)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages.first.is_tiled
    assert np.array_equal(labels_io.read_labels(path)[0], lab)


@pytest.mark.parametrize("values, message", [
    (np.array([[0, -1]], np.int32), "negative"),
    (np.array([[0, 2 ** 32]], np.int64), "more than uint32"),
    (np.array([[0, 1.5]], np.float32), "integer type"),
])
def test_label_values_are_never_truncated(tmp_path, values, message):
    with pytest.raises(ValueError, match=message):
        labels_io.write_labels_tif(tmp_path / "bad.tif", values)
    assert not (tmp_path / "bad.tif").exists() and leftovers(tmp_path) == []


def test_label_conversions():
    assert labels_io.to_uint32(np.array([[True, False]])).dtype == np.uint32
    big = np.array([[0, 2 ** 32 - 1]], np.int64)
    assert labels_io.to_uint32(big)[0, 1] == 2 ** 32 - 1


def test_read_labels_refuses_channels(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((5, 5, 3), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match="channels"):
        labels_io.read_labels(tmp_path / "rgb.tif")


# ---------------------------------------------------------------------------------------
# COCO

def test_rle_matches_pycocotools():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(6)
    for trial in range(30):
        h, w = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        mask = rng.random((h, w)) < rng.random()
        if trial % 5 == 0:
            mask[:] = True
        if not mask.any():
            continue
        rows, cols = np.nonzero(mask)
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        counts = coco._rle_counts(mask[r0:r1, c0:c1], r0, c0, h, w)
        expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert coco._compress(counts, h, w)["counts"] == expected["counts"], (trial, mask)
        assert coco._counts_from_string(expected["counts"]) == counts
        rows, cols = coco._pixels({"size": [h, w], "counts": expected["counts"].decode()}, h, w)
        painted = np.zeros((h, w), bool)
        painted[rows, cols] = True
        assert np.array_equal(painted, mask)


def test_coco_round_trip_is_exact_2d(tmp_path):
    from pycocotools.coco import COCO

    lab = random_labels((37, 53), n=30)
    lab[lab == lab.max()] = 4_000_000_000  # a huge id survives too
    path = coco.write_coco(tmp_path / "img_coco.json", lab, "img.tif")
    back = coco.read_coco(path)
    assert back.dtype == np.uint32 and np.array_equal(back, lab)
    api = COCO(str(path))
    assert len(api.getImgIds()) == 1 and len(api.getAnnIds()) == len(np.unique(lab)) - 1
    assert api.loadCats(api.getCatIds())[0]["name"] == "object"
    for ann in api.loadAnns(api.getAnnIds()):
        mask = api.annToMask(ann).astype(bool)
        assert np.array_equal(mask, lab == ann["label_id"])
        assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
        rows, cols = np.nonzero(mask)
        assert ann["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1,
                               rows.max() - rows.min() + 1]
    with pytest.raises(FileExistsError, match="--overwrite"):
        coco.write_coco(path, lab, "img.tif")


def test_coco_round_trip_is_exact_for_stacks(tmp_path):
    from pycocotools.coco import COCO

    lab = np.stack([random_labels((20, 30), n=12, seed=s) for s in range(3)])
    lab[1] = np.where(lab[1] > 0, lab[1] + 1000, 0)  # ids unique across the stack...
    lab[2, :5, :5] = lab[0, 0, 0]                  # ...and one linked across slices
    lab[1, 10:12] = 0                               # and an empty-ish slice part
    path = coco.write_coco(tmp_path / "stack_coco.json", lab, "stack.tif")
    data = json.loads(path.read_text())
    assert [im["file_name"] for im in data["images"]] == [f"stack.tif[{z}]" for z in range(3)]
    assert [im["z"] for im in data["images"]] == [0, 1, 2]
    assert np.array_equal(coco.read_coco(path), lab)
    assert np.array_equal(coco.read_coco(path, shape=lab.shape), lab)
    api = COCO(str(path))
    anns = api.loadAnns(api.getAnnIds(imgIds=[3]))
    assert {a["label_id"] for a in anns} == set(np.unique(lab[2])) - {0}


def test_coco_empty_labels(tmp_path):
    path = coco.write_coco(tmp_path / "e_coco.json", np.zeros((6, 7), np.uint8), "e.png")
    assert json.loads(path.read_text())["annotations"] == []
    out = coco.read_coco(path)
    assert out.shape == (6, 7) and out.dtype == np.uint32 and out.max() == 0


def test_coco_records_scores(tmp_path):
    lab = np.zeros((10, 10), np.uint32)
    lab[1:3, 1:3], lab[5:9, 5:9] = 4, 9
    listed = [{"label": 9, "predicted_iou": 0.9, "stability_score": 0.8, "area": 16},
              {"label": 4, "predicted_iou": 0.7, "stability": 0.95, "score": 0.5}]
    anns = coco.labels_to_coco(lab, "x", records=listed)["annotations"]
    assert [a["label_id"] for a in anns] == [4, 9]
    assert anns[0]["score"] == 0.5 and anns[0]["stability_score"] == 0.95
    assert anns[1]["score"] == 0.9 and anns[1]["predicted_iou"] == 0.9
    by_order = coco.labels_to_coco(lab, "x", records=[{"score": 0.1}, {"score": 0.2}])
    assert [a["score"] for a in by_order["annotations"]] == [0.1, 0.2]
    as_dict = coco.labels_to_coco(lab, "x", records={9: {"score": 0.3}})
    assert "score" not in as_dict["annotations"][0] and as_dict["annotations"][1]["score"] == 0.3
    with pytest.raises(ValueError, match="records"):
        coco.labels_to_coco(lab, "x", records=[{"score": 1.0}])
    json.dumps(by_order)  # JSON-safe


def test_read_foreign_coco_polygons_and_uncompressed_rle(tmp_path):
    from pycocotools import mask as mask_utils

    mask = np.zeros((12, 16), np.uint8)
    mask[2:6, 3:9] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    # uncompressed counts, as other tools write them
    counts, pos, value = [], 0, 0
    flat = mask.ravel(order="F")
    while pos < flat.size:
        run = 0
        while pos < flat.size and flat[pos] == value:
            run, pos = run + 1, pos + 1
        counts.append(run)
        value = 1 - value
    data = {
        "images": [{"id": 7, "file_name": "a.png", "height": 12, "width": 16}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 1,
             "segmentation": {"size": [12, 16], "counts": counts}},
            {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0,
             "segmentation": [[10.0, 7.0, 14.0, 7.0, 14.0, 11.0, 10.0, 11.0]]},
            {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 0,
             "segmentation": {"size": [12, 16], "counts": rle["counts"].decode()}},
        ],
        "categories": [{"id": 1, "name": "cell"}],
    }
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(data))
    out = coco.read_coco(path)
    assert out.shape == (12, 16)
    assert np.array_equal(out[2:6, 3:9], np.full((4, 6), 3))  # later annotations win
    assert (out == 2).sum() > 0 and out[9, 12] == 2 and out[0, 0] == 0
    assert set(np.unique(out)) == {0, 2, 3}


def test_read_coco_errors(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a COCO file"):
        coco.read_coco(bad)
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        coco.read_coco(bad)
    data = {"images": [{"id": 1, "height": 4, "width": 4}],
            "annotations": [{"id": 5, "image_id": 1, "segmentation": {"size": [4, 4],
                                                                      "counts": [3, 2]}}]}
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation 5: RLE counts do not cover"):
        coco.read_coco(bad)
    data["annotations"][0]["image_id"] = 2
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not listed"):
        coco.read_coco(bad)


# ---------------------------------------------------------------------------------------
# tables

def test_object_table_columns_and_values(tmp_path):
    lab = np.zeros((20, 30), np.uint32)
    lab[2:6, 3:11] = 5      # 4 x 8 rectangle
    lab[10:19, 20:23] = 2   # 9 x 3
    img = np.zeros((20, 30, 2), np.float32)
    img[..., 0] = 1.0
    img[10:19, 20:23, 1] = 4.0
    table = tables.object_table(lab, img, pixel_size=(0.5, 0.25))
    assert list(table) == ["label", "area", "area_um2", "centroid_row", "centroid_col",
                           "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1", "eccentricity",
                           "mean_intensity_c0", "mean_intensity_c1"]
    assert table["label"].tolist() == [2, 5] and table["area"].tolist() == [27, 32]
    assert table["area_um2"] == pytest.approx([27 * 0.125, 32 * 0.125])
    assert table["centroid_row"] == pytest.approx([14.0, 3.5])
    assert table["bbox_col1"].tolist() == [23, 11]
    assert table["mean_intensity_c0"] == pytest.approx([1.0, 1.0])
    assert table["mean_intensity_c1"] == pytest.approx([4.0, 0.0])
    gray = tables.object_table(lab, img[..., 1])
    assert "mean_intensity" in gray and "area_um2" not in gray
    with pytest.raises(ValueError, match="does not match"):
        tables.object_table(lab, img[:10])


def test_object_table_stack_and_csv_round_trip(tmp_path):
    lab = np.stack([random_labels((16, 18), n=6, seed=s) for s in range(2)])
    table = tables.object_table(lab, image=lab.astype(np.uint16))
    assert list(table)[:3] == ["label", "z", "area"]
    for z in range(2):
        ids = table["label"][table["z"] == z]
        assert sorted(ids.tolist()) == sorted(set(np.unique(lab[z]).tolist()) - {0})
    assert np.array_equal(table["mean_intensity"], table["label"].astype(float))
    path = tables.write_csv(tmp_path / "objects.csv", table)
    back = tables.read_csv(path)
    assert list(back) == list(table)
    for key in table:
        assert np.array_equal(back[key], table[key]), key  # floats exact via repr
    header = path.read_text().splitlines()[0]
    assert header.startswith("label,z,area,centroid_row")
    with pytest.raises(FileExistsError, match="--overwrite"):
        tables.write_csv(path, table)


def test_object_table_empty(tmp_path):
    table = tables.object_table(np.zeros((5, 5), np.uint8), np.zeros((5, 5, 3)))
    assert all(len(v) == 0 for v in table.values())
    assert "mean_intensity_c2" in table
    path = tables.write_csv(tmp_path / "empty.csv", table)
    assert path.read_text().strip().split(",")[0] == "label"


def test_write_csv_checks_lengths(tmp_path):
    with pytest.raises(ValueError, match="different lengths"):
        tables.write_csv(tmp_path / "x.csv", {"a": [1, 2], "b": [1]})
    assert not (tmp_path / "x.csv").exists()


def test_package_exports():
    import napari_sam.io as io

    for name in ("atomic_write", "atomic_path", "read_image", "open_lazy", "ImageMeta",
                 "write_labels_tif", "read_labels", "write_coco", "read_coco",
                 "labels_to_coco", "object_table", "write_csv"):
        assert callable(getattr(io, name)) or isinstance(getattr(io, name), type)
    assert os.path.basename(io.atomic.__file__) == "atomic.py"
