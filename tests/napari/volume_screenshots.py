"""Screenshots for docs/volumes.md: a propagated 3D object, and tracks of a time-lapse.

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python tests/napari/volume_screenshots.py

docs/volume_object.png: a generated nuclei volume (`nuclei_volume`, z step 2), one click on
a nucleus, *Segment in volume*, the committed object shown in 3D (the volume rendered, the
labels as an isosurface-like label rendering) beside the interactive widget.
docs/volume_tracks.png: a generated time-lapse run through the automatic widget's "all
frames: tracks" mode: the track labels and the Tracks layer with its division graph.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _settle(seconds=0.5):
    from qtpy.QtWidgets import QApplication

    end = time.time() + seconds
    while time.time() < end:
        QApplication.instance().processEvents()
        time.sleep(0.01)


def _save(viewer, path: Path) -> None:
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    _settle()
    for w in QApplication.allWidgets():
        if type(w).__name__ == "NapariQtNotification":  # toasts over the canvas
            w.close()
    _settle()
    shot = viewer.screenshot(canvas_only=False, flash=False)
    imsave(path, shot, check_contrast=False)
    print("saved", path)


def object_shot(out: Path) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_sam import load_model
    from napari_sam._napari.widget import SamWidget
    from napari_sam.training.synthetic3d import nuclei_volume
    from napari_sam.volume.propagate import interior_points

    v = nuclei_volume(101, shape=(24, 160, 160), n=14)
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    image = viewer.add_image(v.image, name="nuclei volume", scale=v.spacing)
    w = SamWidget(viewer, model=load_model("bundled"))
    viewer.window.add_dock_widget(w, name="Interactive segmentation", area="right")
    app = QApplication.instance()
    for i in (3, 7, 11):  # one click on each of three nuclei, then Segment in volume
        gt = v.labels == i
        z = int(np.argmax(gt.sum((1, 2))))
        viewer.dims.set_current_step(0, z)
        _settle(0.2)
        while not w.ready:
            app.processEvents()
        r, c = interior_points(gt[z])[0]
        w.points_layer.add(w.points_layer.world_to_data(image.data_to_world((z, r, c))))
        w.volume.toggle()
        while w.volume.busy:
            app.processEvents()
        print(w.status.value)
    labels = viewer.layers["nuclei volume labels"]
    for layer in (w.points_layer, w.shapes_layer, w.preview_layer):
        layer.visible = False
    viewer.dims.ndisplay = 3
    image.rendering = "mip"
    image.opacity = 0.6
    labels.opacity = 0.9
    viewer.camera.angles = (0, 30, 60)
    viewer.camera.zoom = 3.0
    _save(viewer, out / "volume_object.png")
    viewer.close()


def tracks_shot(out: Path) -> None:
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_sam import load_model
    from napari_sam._napari.automask_job import TRACKS
    from napari_sam._napari.automask_widget import AutomaskWidget
    from napari_sam.training.synthetic3d import timelapse

    tl = timelapse(101, shape=(12, 128, 128), n=6)
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    viewer.add_image(tl.image, name="cells")
    w = AutomaskWidget(viewer, model=load_model("bundled"))
    viewer.window.add_dock_widget(w, name="Automatic segmentation", area="right")
    w.slices.value = TRACKS
    w.points_per_side.value = 16
    app = QApplication.instance()
    w.run()
    while w.busy:
        app.processEvents()
    app.processEvents()
    viewer.dims.set_current_step(0, 11)
    viewer.dims.ndisplay = 2
    tracks = viewer.layers["cells tracks"]
    tracks.tail_length = 12
    tracks.tail_width = 3
    viewer.layers["cells automask"].opacity = 0.45
    app.processEvents()
    _save(viewer, out / "volume_tracks.png")
    print(w.status.value)
    viewer.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--only", choices=("object", "tracks"), default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="napari support for the PyQt5")
    out = Path(args.out)
    if args.only in (None, "object"):
        object_shot(out)
    if args.only in (None, "tracks"):
        tracks_shot(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
