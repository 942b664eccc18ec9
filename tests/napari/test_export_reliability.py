"""Export and reopen (issue 19, item 17): a COCO file reopened through the plugin keeps the
pixel size; the CSV's intensity image defaults to the image the labels came from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_sam._napari.export_widget import ExportWidget
from napari_sam._napari.io_hooks import get_reader
from napari_sam.io.coco import write_coco
from napari_sam.io.tables import read_csv

pytestmark = pytest.mark.gui


def squares(shape=(60, 80)):
    labels = np.zeros(shape, np.uint32)
    labels[5:20, 5:30] = 1
    labels[30:55, 40:80] = 2
    return labels, (labels * 10 + 5).astype(np.uint16)


def reopen(path):
    reader = get_reader(str(path))
    assert reader is not None, path
    [(data, kwargs, kind)] = reader(str(path))
    return data, kwargs, kind


def test_coco_reopens_with_the_pixel_size(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels, image = squares()
    viewer.add_image(image, name="cells", scale=(0.65, 0.65))
    viewer.add_labels(labels, name="cells labels", scale=(0.65, 0.65))
    w = ExportWidget(viewer)
    w.folder.value = tmp_path
    w.formats["csv"].value = False
    w.export()
    coco = tmp_path / "cells_labels_coco.json"
    assert coco in w.written
    data, kwargs, kind = reopen(coco)
    assert kind == "labels" and np.array_equal(data, labels)
    assert kwargs["scale"] == pytest.approx((0.65, 0.65))
    tif_data, tif_kwargs, _ = reopen(tmp_path / "cells_labels_labels.tif")
    assert tif_kwargs["scale"] == pytest.approx(kwargs["scale"])
    # the plugin's COCO writer stores it too, and the layer goes back into napari scaled
    layer = viewer.layers["cells labels"]
    out = tmp_path / "again_coco.json"
    viewer.layers.selection.active = layer
    from napari_sam._napari.io_hooks import write_labels_coco

    write_labels_coco(str(out), layer.data, {"scale": layer.scale, "metadata": {}})
    out_data, out_kwargs, _ = reopen(out)
    again = viewer.add_labels(out_data, **out_kwargs)
    assert tuple(again.scale) == pytest.approx((0.65, 0.65))


def test_older_coco_takes_the_pixel_size_of_its_label_tiff(tmp_path):
    from napari_sam.io.images import ImageMeta
    from napari_sam.io.labels import write_labels_tif

    labels, _ = squares()
    write_labels_tif(tmp_path / "run_labels.tif", labels,
                     meta=ImageMeta(path=None, axes="YX", shape=labels.shape, dtype=None,
                                    pixel_size=(0.5, 0.5)))
    coco = write_coco(tmp_path / "run_coco.json", labels, "run.tif")  # no pixel size in it
    assert "pixel_size" not in json.loads(coco.read_text())["napari_sam"]
    assert reopen(coco)[1]["scale"] == pytest.approx((0.5, 0.5))
    lonely = write_coco(tmp_path / "alone_coco.json", labels, "alone.tif")
    assert reopen(lonely)[1]["scale"] == (1.0, 1.0)


def test_csv_intensities_default_to_the_source_image(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels, image = squares()
    viewer.add_image(np.zeros((10, 10)), name="other size")
    cells = viewer.add_image(image, name="cells")
    viewer.add_image(np.ones_like(image), name="background")
    layer = viewer.add_labels(labels, name="cells automask")
    w = ExportWidget(viewer)
    assert w.labels.value is layer and w.intensity.value is cells  # by name
    w.folder.value = tmp_path
    w.formats["coco"].value = w.formats["tif"].value = False
    w.export()
    table = read_csv(tmp_path / "cells_automask_objects.csv")
    np.testing.assert_allclose(table["mean_intensity"], [15, 25])
    # no name to go by: the only image of the labels' shape
    viewer.layers.remove("background")
    plain = viewer.add_labels(labels, name="drawn")
    w.labels.value = plain
    assert w.intensity.value is cells
    # two candidates and no name: none (the user chooses)
    viewer.add_image(image, name="second")
    w.labels.value = layer
    w.labels.value = plain
    assert w.intensity.value is None
