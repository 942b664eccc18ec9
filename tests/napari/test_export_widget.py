"""The export widget in a real viewer: files written, overwrite only after a yes, COCO
round trip, CSV intensities, stacks, and bad input reported in the widget."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_sam._napari.export import clean_stem, plan
from napari_sam._napari.export_widget import ExportWidget
from napari_sam.io.coco import read_coco
from napari_sam.io.tables import read_csv

pytestmark = pytest.mark.gui


def squares(shape=(60, 80)):
    """Labels with three rectangles (one touching the border) and an intensity image whose
    value inside object k is 10 * k."""
    labels = np.zeros(shape, np.uint32)
    labels[5:20, 5:30] = 1
    labels[30:55, 40:80] = 2
    labels[25:28, 2:6] = 7
    image = (labels * 10).astype(np.uint16)
    return labels, image


class Answers:
    """A confirmation hook that records what it was asked and answers as told."""

    def __init__(self, answer: bool) -> None:
        self.answer, self.asked = answer, []

    def __call__(self, paths):
        self.asked.append(list(paths))
        return self.answer


def make_widget(viewer, folder, **formats):
    w = ExportWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.folder.value = folder
    for name, on in formats.items():
        w.formats[name].value = on
    return w


def test_writes_files_and_coco_round_trip(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels, image = squares()
    viewer.add_image(image, name="cells", metadata={"source": "/data/cells.tif"})
    layer = viewer.add_labels(labels, name="cells automask", scale=(0.5, 0.25),
                              metadata={"records": [{"id": 1, "predicted_iou": 0.91},
                                                    {"id": 2, "predicted_iou": 0.8}]})
    w = make_widget(viewer, tmp_path)
    assert w.labels.value is layer and w.stem.value == "cells_automask"
    w.confirm_overwrite = Answers(True)
    w.intensity.value = viewer.layers["cells"]
    written = w.export()
    names = sorted(p.name for p in written)
    assert names == ["cells_automask_coco.json", "cells_automask_labels.tif",
                     "cells_automask_objects.csv"]
    assert all(p.is_file() for p in written) and w.confirm_overwrite.asked == []
    assert all(p.name in w.status.value for p in written)
    np.testing.assert_array_equal(read_coco(tmp_path / "cells_automask_coco.json"), labels)
    coco = json.loads((tmp_path / "cells_automask_coco.json").read_text())
    assert coco["images"][0]["file_name"] == "cells.tif"
    scores = {a["label_id"]: a.get("predicted_iou") for a in coco["annotations"]}
    assert scores == {1: 0.91, 2: 0.8, 7: None}
    tif = tifffile.imread(tmp_path / "cells_automask_labels.tif")
    assert tif.dtype == np.uint32
    np.testing.assert_array_equal(tif, labels)
    table = read_csv(tmp_path / "cells_automask_objects.csv")
    assert table["label"].tolist() == [1, 2, 7]
    assert table["area"].tolist() == [15 * 25, 25 * 40, 3 * 4]
    np.testing.assert_allclose(table["mean_intensity"], [10, 20, 70])
    np.testing.assert_allclose(table["area_um2"], table["area"] * 0.125)
    assert not list(tmp_path.glob(".*partial*"))  # atomic writes leave nothing behind


def test_refuses_to_overwrite_without_a_yes(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels, _ = squares()
    layer = viewer.add_labels(labels, name="cells")
    w = make_widget(viewer, tmp_path, csv=False)
    w.confirm_overwrite = Answers(True)
    assert len(w.export()) == 2
    tif, coco = tmp_path / "cells_labels.tif", tmp_path / "cells_coco.json"
    before = {p: p.read_bytes() for p in (tif, coco)}

    layer.data = np.where(labels == 2, 0, labels).astype(np.uint32)  # an edit
    no = Answers(False)
    w.confirm_overwrite = no
    assert w.export() == []
    assert no.asked == [[tif, coco]] and "nothing written" in w.status.value
    assert {p: p.read_bytes() for p in (tif, coco)} == before  # untouched

    w.formats["csv"].value = True  # a new file beside existing ones: still asks, still no
    assert w.export() == [] and not (tmp_path / "cells_objects.csv").exists()

    yes = Answers(True)
    w.confirm_overwrite = yes
    assert len(w.export()) == 3 and yes.asked == [[tif, coco]]
    np.testing.assert_array_equal(read_coco(coco), layer.data)
    assert 2 not in np.unique(tifffile.imread(tif))


def test_stack_and_bad_input(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels, image = squares()
    stack = np.stack([labels, np.where(labels > 0, labels + 10, 0).astype(np.uint32)])
    viewer.add_labels(stack, name="stack labels")
    viewer.add_image(image, name="2d image")
    w = make_widget(viewer, tmp_path)
    w.confirm_overwrite = Answers(True)
    w.stem.value = "a/b stack"  # no path separators in the file names
    w.intensity.value = viewer.layers["2d image"]
    assert w.export() == [] and "does not match" not in w.status.value
    assert "nothing written" in w.status.value and "shape" in w.status.value
    assert not list(tmp_path.iterdir())
    w.intensity.value = None
    written = w.export()
    assert [p.name for p in written] == ["a_b_stack_labels.tif", "a_b_stack_coco.json",
                                         "a_b_stack_objects.csv"]
    np.testing.assert_array_equal(read_coco(written[1]), stack)
    assert read_csv(written[2])["z"].tolist() == [0, 0, 0, 1, 1, 1]
    for box in w.formats.values():
        box.value = False
    assert w.export() == [] and "at least one format" in w.status.value
    w.formats["tif"].value = True
    w.folder.value = tmp_path / "missing"
    assert w.export() == [] and "does not exist" in w.status.value


def test_plan_and_stem():
    assert clean_stem("nuclei labels [1]") == "nuclei_labels_1"
    assert clean_stem("../..") == "labels"
    paths, existing = plan("/nowhere", "x", ["csv", "tif"])
    assert list(paths) == ["tif", "csv"] and existing == []


def test_both_widgets_open_from_the_plugin_menu(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels, image = squares()
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells labels")
    _, auto = viewer.window.add_plugin_dock_widget("napari-sam-suite", "Automatic segmentation")
    assert auto.image.value is viewer.layers["cells"] and auto.model.value == "bundled"
    _, export = viewer.window.add_plugin_dock_widget("napari-sam-suite", "Export labels")
    assert export.labels.value is viewer.layers["cells labels"]
    export.folder.value = tmp_path
    export.confirm_overwrite = Answers(False)
    assert [p.name for p in export.export()] == ["cells_labels_labels.tif",
                                                 "cells_labels_coco.json",
                                                 "cells_labels_objects.csv"]
