"""`napari-sam automask BIG.tif -o OUTDIR --tile-size N --overlap N` (tiny random model)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch

from napari_sam import build_model
from napari_sam.cli import main
from napari_sam.model import save_checkpoint
from napari_sam.training.synthetic import nuclei_image

ARGS = ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-thresh", "0",
        "--device", "cpu", "--precision", "fp32", "-q"]
GEO = [(33550, "d", 3, (0.5, 0.5, 0.0), True),
       (33922, "d", 6, (0.0, 0.0, 0.0, 440000.0, 5200000.0, 0.0), True),
       (34735, "H", 8, (1, 1, 0, 1, 1024, 0, 1, 1), True)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = d / "tiny.pt"
    save_checkpoint(model, build_model("test_vit"))
    img, _ = nuclei_image(4, size=(1100, 700))          # longer side > 4 x 256: tiled
    big = d / "scene.tif"
    tifffile.imwrite(big, img, tile=(256, 256), extratags=GEO)
    small = d / "small.tif"
    tifffile.imwrite(small, img[:300, :300])
    return model, big, small


def test_cli_tiles_a_large_image(files, tmp_path, capsys):
    from napari_sam.io.images import read_meta
    from napari_sam.io.tables import read_csv

    model, big, small = files
    out = tmp_path / "out"
    rc = main(["automask", str(big), str(small), "-o", str(out), "--model", str(model),
               "--tile-size", "256", "--overlap", "64", "--overlay", *ARGS])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "2 inputs: 2 processed" in text
    with tifffile.TiffFile(out / "scene_labels.tif") as tif:
        page = tif.pages[0]
        lab = page.asarray()
        assert page.is_tiled and lab.dtype == np.uint32 and lab.shape == (1100, 700)
    assert read_meta(out / "scene_labels.tif").geo["ModelTiepointTag"][3] == 440000.0
    ids = np.unique(lab[lab > 0])
    assert len(ids) > 0 and ids.tolist() == list(range(1, len(ids) + 1))
    table = read_csv(out / "scene_objects.csv")
    assert table["label"].tolist() == ids.tolist()
    assert table["area"].tolist() == np.bincount(lab.ravel())[1:].tolist()
    assert (out / "scene_coco.json").is_file() and (out / "small_labels.tif").is_file()
    from PIL import Image  # the overlay of the tiled image: the image with coloured outlines

    overlay = np.asarray(Image.open(out / "scene_overlay.png"))
    assert overlay.shape[:2] == (1100, 700) and (out / "small_overlay.png").is_file()
    outline = overlay[..., 0] != overlay[..., 1]  # grey pixels have R == G; outlines are coloured
    assert outline.any() and (lab[outline] > 0).all()  # outlines lie inside objects
    assert not list(out.glob(".*tiling"))  # the work folder is gone
    rc = main(["automask", str(big), "-o", str(out), "--model", str(model), *ARGS])
    assert rc == 0 and "1 skipped" in capsys.readouterr().out


def test_cli_tiling_on_and_off(files, tmp_path, capsys):
    model, big, small = files
    rc = main(["automask", str(small), "-o", str(tmp_path / "a"), "--model", str(model),
               "--tiling", "on", "--tile-size", "256", "--overlap", "64", "--format", "tif",
               "--summary-json", str(tmp_path / "a.json"), *ARGS])
    assert rc == 0
    import json

    summary = json.loads((tmp_path / "a.json").read_text())
    assert summary["files"][0].get("tiled") is True
    rc = main(["automask", str(big), "-o", str(tmp_path / "b"), "--model", str(model),
               "--tiling", "off", "--format", "tif", "--summary-json", str(tmp_path / "b.json"),
               *ARGS])
    assert rc == 0
    assert "tiled" not in json.loads((tmp_path / "b.json").read_text())["files"][0]
    assert tifffile.imread(tmp_path / "b" / "scene_labels.tif").shape == (1100, 700)
