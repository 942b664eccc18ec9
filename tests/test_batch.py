"""Stacks slice by slice (unique ids, linking) and resumable folder batches."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from napari_sam import AutoMaskGenerator
from napari_sam.automask.stack import automask_stack, link_slices
from napari_sam.batch import expand_inputs, output_stem, run_batch
from test_automask import OraclePredictor, disc_image, match_f1

CENTRES = ((30, 30), (30, 90), (90, 40), (95, 100))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def generator():
    return AutoMaskGenerator(OraclePredictor(), points_per_side=12, points_per_batch=144)


def moving_stack(n=3, shift=2):
    images, truths = zip(*(disc_image(centres=[(r + k * shift, c) for r, c in CENTRES], seed=k)
                           for k in range(n)))
    return np.stack(images), np.stack(truths)


def test_stack_ids_unique_across_slices(generator):
    stack, truth = moving_stack()
    res = automask_stack(stack, generator, pred_iou_thresh=0.9, stability_thresh=0.9)
    assert res.labels.shape == stack.shape and res.labels.dtype == np.uint32
    per_slice = [set(np.unique(s[s > 0]).tolist()) for s in res.labels]
    assert all(len(s) == 4 for s in per_slice)
    assert not (per_slice[0] & per_slice[1]) and not (per_slice[1] & per_slice[2])
    assert sorted(set().union(*per_slice)) == list(range(1, 13))
    assert [r["slice"] for r in res.records] == [0] * 4 + [1] * 4 + [2] * 4
    for k in range(3):
        assert match_f1(res.labels[k], truth[k]) == 1.0


def test_stack_linking_gives_tracks_one_id(generator):
    stack, truth = moving_stack()
    res = automask_stack(stack, generator, link=True, pred_iou_thresh=0.9, stability_thresh=0.9)
    ids = [np.unique(s[s > 0]).tolist() for s in res.labels]
    assert ids == [[1, 2, 3, 4]] * 3          # each disc keeps its id through the stack
    assert sorted({r["id"] for r in res.records}) == [1, 2, 3, 4] and len(res.records) == 12
    for lab in (1, 2, 3, 4):                  # and it is the same disc
        owners = {int(np.bincount(truth[k][res.labels[k] == lab]).argmax()) for k in range(3)}
        assert len(owners) == 1


def test_link_rule_one_to_one_by_iou():
    lab = np.zeros((2, 20, 20), np.uint32)
    lab[0, 2:10, 2:10] = 5          # A
    lab[0, 12:18, 12:18] = 7        # B, vanishes
    lab[1, 3:11, 2:10] = 9          # A moved by one row: IoU 7/9 -> linked
    lab[1, 12:14, 0:4] = 11         # new object
    out = link_slices(lab)
    assert out[0, 5, 5] == 1 and out[0, 15, 15] == 2       # renumbered by first appearance
    assert out[1, 5, 5] == 1 and out[1, 13, 1] == 3
    split = np.zeros((2, 10, 10), np.uint32)
    split[0, :, :] = 1
    split[1, :, :6] = 2             # IoU 0.6 with the whole
    split[1, :, 6:] = 3             # IoU 0.4
    out = link_slices(split, 0.3)
    assert out[1, 0, 0] == 1 and out[1, 0, 9] == 2           # one-to-one: best pair only
    assert link_slices(split, 0.7)[1, 0, 0] == 2               # below the threshold: new id


def test_stack_with_time_and_z_axes(generator):
    stack, _ = moving_stack(4)
    res = automask_stack(stack.reshape(2, 2, 128, 128), generator, axes="TZYX",
                         pred_iou_thresh=0.9, stability_thresh=0.9)
    assert res.labels.shape == (2, 2, 128, 128)
    assert len(np.unique(res.labels)) == 17
    assert res.records[-1]["index"] == [1, 1]


def _write_inputs(folder):
    folder.mkdir()
    image, _ = disc_image()
    tifffile.imwrite(folder / "single.tif", image)
    stack, _ = moving_stack(2)
    tifffile.imwrite(folder / "stack.tif", stack, metadata={"axes": "ZYX"})
    (folder / "broken.tif").write_text("this is not an image\n")
    return image, stack


def test_folder_batch_resumable_and_bad_file(tmp_path, generator):
    from pycocotools.coco import COCO

    from napari_sam.io.tables import read_csv

    image, stack = _write_inputs(tmp_path / "in")
    out = tmp_path / "out"
    opts = dict(generator=generator, pred_iou_thresh=0.9, stability_thresh=0.9, overlay=True)
    s1 = run_batch([str(tmp_path / "in")], out, **opts)
    assert (s1["processed"], s1["skipped"], s1["failed"]) == (2, 0, 1)
    bad = [f for f in s1["files"] if f["status"] == "failed"]
    assert bad[0]["path"].endswith("broken.tif") and bad[0]["error"]
    assert s1["objects"] == 4 + 8
    lab = tifffile.imread(out / "single_labels.tif")
    assert lab.dtype == np.uint32 and lab.shape == image.shape and lab.max() == 4
    lab3 = tifffile.imread(out / "stack_labels.tif")
    assert lab3.shape == stack.shape and len(np.unique(lab3)) == 9
    coco = COCO(str(out / "stack_coco.json"))
    assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) == 8
    assert all(0.9 <= a["score"] <= 1 for a in coco.loadAnns(coco.getAnnIds()))
    assert len(read_csv(out / "single_objects.csv")["label"]) == 4
    assert (out / "stack_overlay.png").stat().st_size > 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    s2 = run_batch([str(tmp_path / "in" / "*.tif")], out, **opts)      # resumed: skips
    assert (s2["processed"], s2["skipped"], s2["failed"]) == (0, 2, 1)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    os.remove(out / "single_coco.json")                                 # a partial set
    s3 = run_batch([str(tmp_path / "in")], out, **opts)
    done = {os.path.basename(f["path"]): f["status"] for f in s3["files"]}
    assert done == {"single.tif": "completed", "stack.tif": "skipped", "broken.tif": "failed"}
    assert len(COCO(str(out / "single_coco.json")).getAnnIds()) == 4
    assert (out / "single_labels.tif").stat().st_mtime_ns == stamps["single_labels.tif"]

    s4 = run_batch([str(tmp_path / "in")], out, overwrite=True, **opts)  # redo everything
    assert (s4["processed"], s4["skipped"], s4["failed"]) == (2, 0, 1)
    assert (out / "single_labels.tif").stat().st_mtime_ns != stamps["single_labels.tif"]
    json.dumps(s4)  # the summary is plain data


def test_expand_inputs(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"x")
    (tmp_path / "b.PNG").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    files, problems = expand_inputs([str(tmp_path), str(tmp_path / "*.tif"),
                                     str(tmp_path / "missing.tif"), str(tmp_path / "*.jpg")])
    assert [f.name for f in files] == ["a.tif", "b.PNG"]
    assert [why for _, why in problems] == ["no such file or folder",
                                            "the pattern matches no images"]
    assert output_stem(tmp_path / "x.ome.tif") == "x"
