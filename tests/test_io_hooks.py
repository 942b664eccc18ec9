"""npe2 reader/writer functions in napari_sam._napari.io_hooks (no napari needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_sam._napari import io_hooks
from napari_sam.io import coco, labels as labels_io, tables
from napari_sam.io.images import ImageMeta

GEO = {"ModelPixelScaleTag": (30.0, 30.0, 0.0),
       "ModelTiepointTag": (0.0, 0.0, 0.0, 300000.0, 5000000.0, 0.0),
       "GeoKeyDirectoryTag": (1, 1, 0, 1, 3072, 0, 1, 32632)}


def make_labels(shape=(24, 32)):
    lab = np.zeros(shape, np.uint32)
    lab[..., 2:8, 3:12] = 7
    lab[..., 10:20, 12:30] = 3
    lab[..., 10:20, 30:] = 11  # touching 3
    return lab


def layer_meta(**extra):
    """The meta dict napari hands a writer (Layer.as_layer_data_tuple), trimmed."""
    meta = {"name": "cells labels", "scale": (0.5, 0.25), "translate": (0.0, 0.0),
            "units": ("pixel", "pixel"), "metadata": {}, "opacity": 0.7}
    meta.update(extra)
    return meta


GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui")


def test_hooks_module_imports_no_gui():
    """Only standard-library and napari_sam imports at module level (npe2 loads it fast)."""
    import ast

    tree = ast.parse(open(io_hooks.__file__, encoding="utf-8").read())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            top.add(node.module.split(".")[0])
    assert top <= {"__future__", "pathlib", "typing"}, top
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any(n.split(".")[0] in GUI_MODULES for n in names), names


def test_tif_writer_carries_scale_and_geo(tmp_path):
    lab = make_labels()
    written = io_hooks.write_labels_tif(str(tmp_path / "out_labels.tif"), lab,
                                        layer_meta(metadata={"geo": GEO}))
    assert written == [str(tmp_path / "out_labels.tif")]
    back, meta = labels_io.read_labels(written[0])
    assert np.array_equal(back, lab) and meta.pixel_size == pytest.approx((0.5, 0.25))
    assert meta.geo == GEO
    # napari's Layer.scale is a numpy array: the writer takes it as well as a tuple
    again = io_hooks.write_labels_tif(str(tmp_path / "arr_labels.tif"), lab,
                                      layer_meta(scale=np.array([0.5, 0.25])))
    assert labels_io.read_labels(again[0])[1].pixel_size == pytest.approx((0.5, 0.25))


def test_writer_units_extension_and_overwrite(tmp_path):
    lab = make_labels((2, 24, 32))
    meta = layer_meta(scale=(2.0, 300.0, 300.0), units=("nanometer",) * 3)
    written = io_hooks.write_labels_tif(str(tmp_path / "stack"), [lab, lab[:, ::2, ::2]], meta)
    assert written == [str(tmp_path / "stack.tif")]  # multiscale: level 0; suffix added
    back, info = labels_io.read_labels(written[0])
    assert np.array_equal(back, lab) and info.axes == "ZYX"
    assert info.pixel_size == pytest.approx((0.3, 0.3)) and info.z_size == pytest.approx(0.002)
    # napari's save dialog has already asked: the writer replaces the file
    io_hooks.write_labels_tif(written[0], np.zeros_like(lab), meta)
    assert labels_io.read_labels(written[0])[0].max() == 0
    # a default scale of 1 in pixels means "unknown"
    plain = io_hooks.write_labels_tif(str(tmp_path / "p.tif"), lab[0],
                                      layer_meta(scale=(1.0, 1.0)))
    assert labels_io.read_labels(plain[0])[1].pixel_size is None


def test_coco_writer_and_reader_round_trip(tmp_path):
    lab = make_labels()
    records = [{"label": 3, "predicted_iou": 0.9}, {"label": 7, "predicted_iou": 0.8},
               {"label": 11, "predicted_iou": 0.7}]
    meta = layer_meta(metadata={"source": "/data/cells.tif", "records": records})
    written = io_hooks.write_labels_coco(str(tmp_path / "cells_coco.json"), lab, meta)
    data = json.loads(open(written[0]).read())
    assert data["images"][0]["file_name"] == "cells.tif"
    assert [a["score"] for a in data["annotations"]] == [0.9, 0.8, 0.7]
    reader = io_hooks.get_reader(written[0])
    assert callable(reader)
    [(out, kwargs, kind)] = reader(written[0])
    assert kind == "labels" and kwargs["name"] == "cells_coco" and np.array_equal(out, lab)


def test_csv_writer(tmp_path):
    lab = make_labels()
    written = io_hooks.write_labels_csv(str(tmp_path / "objects.csv"), lab, layer_meta())
    table = tables.read_csv(written[0])
    assert table["label"].tolist() == [3, 7, 11]
    assert table["area_um2"] == pytest.approx(table["area"] * 0.125)


def test_reader_opens_label_tifs_with_scale(tmp_path):
    lab = make_labels((3, 24, 32))
    meta = ImageMeta(path="x.tif", axes="ZYX", shape=lab.shape, dtype=np.uint16,
                     pixel_size=(0.4, 0.4), z_size=2.0, geo=GEO)
    path = labels_io.write_labels_tif(tmp_path / "x_labels.tif", lab, meta)
    reader = io_hooks.get_reader(str(path))
    [(out, kwargs, kind)] = reader(str(path))
    assert kind == "labels" and np.array_equal(out, lab) and kwargs["name"] == "x_labels"
    assert kwargs["scale"] == pytest.approx((2.0, 0.4, 0.4))
    assert kwargs["metadata"]["geo"] == GEO
    # what the reader gives, the writer carries back into the file
    again = io_hooks.write_labels_tif(str(tmp_path / "again.tif"), out, {**kwargs})
    _, info = labels_io.read_labels(again[0])
    assert info.geo == GEO and info.pixel_size == pytest.approx((0.4, 0.4))
    # lists of paths are claimed only when all are ours
    assert io_hooks.get_reader([str(path), str(path)])(
        [str(path), str(path)])[1][2] == "labels"
    assert io_hooks.get_reader([str(path), str(tmp_path / "other.tif")]) is None


def test_reader_declines_other_files(tmp_path):
    tifffile.imwrite(tmp_path / "image.tif", np.zeros((4, 4), np.uint8))
    (tmp_path / "notes_coco.json").write_text('["not", "coco"]')
    (tmp_path / "data.json").write_text('{"images": [], "annotations": []}')
    coco.write_coco(tmp_path / "real_coco.json", make_labels(), "real.tif")
    assert io_hooks.get_reader(str(tmp_path / "image.tif")) is None
    assert io_hooks.get_reader(str(tmp_path / "notes_coco.json")) is None
    assert io_hooks.get_reader(str(tmp_path / "data.json")) is None
    assert io_hooks.get_reader(str(tmp_path / "missing_labels.tif")) is None
    assert io_hooks.get_reader(str(tmp_path / "real_coco.json")) is not None
    assert io_hooks.get_reader(str(tmp_path)) is None


def test_npe2_signatures():
    """The functions fit npe2's single-layer writer and reader-getter shapes."""
    import inspect

    for fn in (io_hooks.write_labels_tif, io_hooks.write_labels_coco,
               io_hooks.write_labels_csv):
        assert list(inspect.signature(fn).parameters) == ["path", "data", "meta"]
    assert list(inspect.signature(io_hooks.get_reader).parameters) == ["path"]
