"""`napari-sam automask --3d` and `napari-sam track`."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_sam.cli import main
from napari_sam.io.labels import read_labels
from napari_sam.io.tables import read_csv
from napari_sam.training.synthetic3d import nuclei_volume, timelapse
from napari_sam.volume import read_ctc

pytestmark = pytest.mark.usefixtures("one_thread")


def test_track_links_given_labels_to_ctc(tmp_path):
    tl = timelapse(3, shape=(10, 96, 96), n=3)
    tifffile.imwrite(tmp_path / "movie.tif", (tl.image * 4000).astype(np.uint16),
                     imagej=True, metadata={"axes": "TYX"})
    scrambled = np.stack([np.where(f > 0, f + 50 * (k % 2), 0) for k, f in  # ids disagree
                          enumerate(tl.labels)]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "lab.tif", scrambled, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "out"
    args = ["track", str(tmp_path / "movie.tif"), "-o", str(out), "--labels",
            str(tmp_path / "lab.tif"), "-q"]
    assert main(args) == 0
    labels, lineage = read_ctc(out / "movie_RES")
    assert len(lineage) == len(tl.lineage)
    assert sum(1 for v in lineage.values() if v[2]) == 2 * len(tl.divisions)
    lab, meta = read_labels(out / "movie_labels.tif")
    assert np.array_equal(lab, labels) and meta.axes == "TYX"
    table = read_csv(out / "movie_tracks.csv")
    assert set(table["track_id"]) == set(lineage)
    before = (out / "movie_tracks.csv").stat().st_mtime_ns
    assert main(args) == 0  # outputs exist: skipped, nothing rewritten
    assert (out / "movie_tracks.csv").stat().st_mtime_ns == before


def test_track_refuses_mismatched_labels(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "m.tif", np.zeros((3, 32, 32), np.uint16))
    assert main(["track", str(tmp_path / "m.tif"), "-o", str(tmp_path / "o"),
                 "--labels", str(tmp_path / "m.tif"), str(tmp_path / "m.tif")]) == 1
    assert "one labels file per movie" in capsys.readouterr().err


@pytest.mark.slow
def test_automask_3d_writes_labels_with_z_spacing_and_3d_table(tmp_path, capsys):
    v = nuclei_volume(2, shape=(10, 64, 64), n=3)
    tifffile.imwrite(tmp_path / "vol.tif", (v.image * 4000).astype(np.uint16), imagej=True,
                     resolution=(2.0, 2.0), metadata={"axes": "ZYX", "spacing": 1.0,
                                                      "unit": "um"})
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((32, 32), np.uint16))
    out = tmp_path / "out"
    rc = main(["automask", "--3d", str(tmp_path / "vol.tif"), str(tmp_path / "flat.tif"),
               "-o", str(out), "--points-per-side", "8", "-q"])
    err = capsys.readouterr().err
    assert rc == 1 and "flat.tif" in err and "one stack axis" in err  # the 2D file fails
    lab, meta = read_labels(out / "vol_labels.tif")
    assert lab.shape == v.labels.shape and meta.z_size == 1.0 and meta.pixel_size == (0.5, 0.5)
    assert 2 <= lab.max() <= 4
    table = read_csv(out / "vol_objects.csv")
    assert list(table["label"]) == list(range(1, lab.max() + 1))
    assert np.allclose(table["volume_um3"], table["volume"] * 0.25)
    assert (table["z_extent"] >= 2).all()
    assert not (out / "vol_coco.json").exists()


def test_track_and_automask_3d_pass_diameter_and_method(tmp_path, monkeypatch):
    """--diameter reaches track and automask_volume (default None: estimated), --method
    reaches track (auto: SAM 2's memory for SAM 2.1 models)."""
    import napari_sam.commands.volume_io as volume_io
    import napari_sam.volume as volume
    from napari_sam.volume import TrackResult

    for name, axes in (("m.tif", "TYX"), ("v.tif", "ZYX")):
        tifffile.imwrite(tmp_path / name, np.zeros((5, 32, 32), np.uint16), imagej=True,
                         metadata={"axes": axes})
    seen = []

    def fake_track(frames, model=None, **kw):
        seen.append(("track", kw["diameter"], kw["method"]))
        return TrackResult(np.zeros((5, 32, 32), np.uint32), {})

    def fake_volume(stack, model=None, **kw):
        seen.append(("3d", kw["diameter"]))
        return np.zeros((5, 32, 32), np.uint32)
    monkeypatch.setattr(volume, "track", fake_track)
    monkeypatch.setattr(volume, "automask_volume", fake_volume)
    monkeypatch.setattr(volume_io, "model_predictor", lambda args: object())
    m = str(tmp_path / "m.tif")
    assert main(["track", m, "-o", str(tmp_path / "a"), "-q"]) == 0
    assert main(["track", m, "-o", str(tmp_path / "b"), "-q", "--diameter", "off",
                 "--method", "prompt"]) == 0
    assert main(["track", m, "-o", str(tmp_path / "c"), "-q", "--diameter", "12.5",
                 "--method", "memory"]) == 0
    v = str(tmp_path / "v.tif")
    assert main(["automask", "--3d", v, "-o", str(tmp_path / "d"), "-q"]) == 0
    assert main(["automask", "--3d", v, "-o", str(tmp_path / "e"), "-q", "--diameter",
                 "20"]) == 0
    assert seen == [("track", None, "auto"), ("track", "off", "prompt"),
                    ("track", 12.5, "memory"), ("3d", None), ("3d", 20.0)]
