"""`napari-sam automask` end to end on sample_data/ with a tiny random model from a file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from testing_utils import randomize_
from napari_sam import build_model
from napari_sam.cli import main
from napari_sam.model import save_checkpoint

SAMPLES = Path(__file__).resolve().parent.parent / "sample_data"
# a random model's scores are not calibrated: thresholds low enough to keep some objects
ARGS = ["--points-per-side", "6", "--pred-iou-thresh", "0", "--stability-thresh", "0.3",
        "--device", "cpu", "--precision", "fp32", "-q"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, randomize_(build_model("test_vit"), seed=2))
    return path


def test_cli_automask_sample_data(tmp_path, model_path, capsys):
    from pycocotools.coco import COCO

    from napari_sam.io.tables import read_csv

    out = tmp_path / "out"
    inputs = [str(SAMPLES / "nuclei.tif"), str(SAMPLES / "nuclei_stack.tif")]
    rc = main(["automask", *inputs, "-o", str(out), "--model", str(model_path), "--overlay",
               *ARGS])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "2 inputs: 2 processed, 0 skipped" in text and "0 failed" in text
    for stem in ("nuclei", "nuclei_stack"):
        src = tifffile.imread(SAMPLES / f"{stem}.tif")
        lab = tifffile.imread(out / f"{stem}_labels.tif")
        assert lab.dtype == np.uint32 and lab.shape == src.shape
        n = len(np.unique(lab[lab > 0]))
        assert n > 0
        coco = COCO(str(out / f"{stem}_coco.json"))
        anns = coco.loadAnns(coco.getAnnIds())
        per_slice = sum(len(np.unique(s[s > 0])) for s in lab.reshape(-1, *lab.shape[-2:]))
        assert len(anns) == per_slice and len(coco.getImgIds()) == lab.reshape(
            -1, *lab.shape[-2:]).shape[0]
        mask = coco.annToMask(anns[0])
        z = coco.loadImgs(anns[0]["image_id"])[0].get("z", 0)
        assert np.array_equal(mask.astype(bool),
                              lab.reshape(-1, *lab.shape[-2:])[z] == anns[0]["label_id"])
        table = read_csv(out / f"{stem}_objects.csv")
        assert len(table["label"]) == per_slice
        assert (out / f"{stem}_overlay.png").stat().st_size > 0
    stack = tifffile.imread(out / "nuclei_stack_labels.tif")
    ids = [set(np.unique(s[s > 0]).tolist()) for s in stack]
    assert all(not (ids[k] & ids[k + 1]) for k in range(len(ids) - 1))  # unique per slice

    # again: everything is skipped
    rc = main(["automask", *inputs, "-o", str(out), "--model", str(model_path), *ARGS])
    assert rc == 0 and "0 processed, 2 skipped" in capsys.readouterr().out


def test_cli_automask_folder_with_bad_file(tmp_path, model_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLES / "nuclei_stack.tif", folder / "a.tif")
    (folder / "b.tif").write_text("not a tiff")
    out = tmp_path / "out"
    rc = main(["automask", str(folder), "-o", str(out), "--model", str(model_path),
               "--format", "tif,csv", "--link-slices", *ARGS])
    text = capsys.readouterr().out
    assert rc == 1
    assert "FAILED" in text and "b.tif" in text and "1 processed" in text
    assert (out / "a_labels.tif").is_file() and (out / "a_objects.csv").is_file()
    assert not (out / "a_coco.json").exists() and not (out / "b_labels.tif").exists()


def test_cli_automask_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["automask", "x.tif", "-o", str(tmp_path), "--format", "tif,gif"])
    assert "unknown format" in capsys.readouterr().err
    rc = main(["automask", str(tmp_path / "x.tif"), "-o", str(tmp_path / "o"), "--model",
               str(tmp_path / "missing.pt"), "-q"])
    assert rc == 1  # the input is missing: reported, nothing to run, no model needed
    assert "no such file" in capsys.readouterr().out
