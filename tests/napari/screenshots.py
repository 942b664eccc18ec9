"""Screenshots of the widgets for docs/ and the click-to-preview timing.

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python tests/napari/screenshots.py \
        [--model bundled] [--out docs] [--clicks 20] [--threads 0] [--only automask]

Opens the nuclei sample, clicks on nuclei (interior points of the sample's ground truth),
commits several objects, saves docs/napari_clicks.png and docs/napari_commits.png, then
times 2 x `--clicks` prompt changes (a first click on a new nucleus, then a refining click):
from adding the point to the preview layer holding the new mask (the widget's own
`decode_ms`), and to the redrawn canvas (add + Qt event processing).

Automask: runs the automask widget on the same image with the model's own thresholds (the
bundled model's are calibrated at export, docs/models.md; `--pred-iou` / `--stability`
override them) and saves docs/napari_automask.png.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def interior_points(truth: np.ndarray, n: int):
    from napari_sam.prompts import interior_point

    ids = [i for i in np.unique(truth) if i]
    rng = np.random.default_rng(1)
    return [interior_point(truth == i) for i in rng.permutation(ids)[:n]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="bundled",
                    help="bundled, a registry name or file, or random:ARCH (untrained, e.g. "
                         "random:bundled: the bundled architecture, for timing)")
    ap.add_argument("--out", default=str(ROOT / "docs"))
    ap.add_argument("--clicks", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--only", choices=("interactive", "automask", "ais", "cells"), default=None,
                    help="take only these screenshots (default: all)")
    ap.add_argument("--pred-iou", type=float, default=None,
                    help="automask threshold (default: the model's)")
    ap.add_argument("--stability", type=float, default=None,
                    help="automask threshold (default: the model's)")
    args = ap.parse_args(argv)
    if args.only in (None, "interactive"):
        interactive(args)
    if args.only in (None, "automask"):
        automask(args)
    if args.only in (None, "ais"):
        ais(args)
    if args.only in (None, "cells"):
        cells(args)
    return 0


def _load(args):
    """Modules the screenshots use, the model to show, and event-loop helpers."""
    warnings.filterwarnings("ignore", message="napari support for the PyQt5")
    import napari
    import tifffile
    import torch
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    from napari_sam import build_model
    from napari_sam._napari.sample_data import nuclei

    if args.threads:
        torch.set_num_threads(args.threads)
    model = (build_model(args.model.split(":", 1)[1]) if args.model.startswith("random:")
             else args.model)
    def settle(seconds=0.3):  # once a viewer exists (it makes the QApplication)
        end = time.time() + seconds
        while time.time() < end:
            QApplication.instance().processEvents()
            time.sleep(0.01)

    def close_toasts():
        settle()
        for w in QApplication.allWidgets():
            if type(w).__name__ == "NapariQtNotification":  # toasts over the canvas
                w.close()
        settle()

    def finish(viewer, path):  # whole view, no toasts: save the window, close the viewer
        viewer.reset_view()
        close_toasts()
        imsave(path, viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
        viewer.close()

    return SimpleNamespace(napari=napari, tifffile=tifffile, torch=torch, imsave=imsave,
                           nuclei=nuclei, model=model, settle=settle, QApplication=QApplication,
                           close_toasts=close_toasts, finish=finish)


def automask(args) -> None:
    from napari_sam._napari.automask_widget import AutomaskWidget

    env = _load(args)
    napari, nuclei, settle = env.napari, env.nuclei, env.settle
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    data, kwargs, _ = nuclei()[0]
    viewer.add_image(data, **kwargs)
    widget = AutomaskWidget(viewer, model=env.model)
    widget.method.value = "amg"  # the grid of prompts (see `ais` for the decoder mode)
    viewer.window.add_dock_widget(widget, name="Automatic segmentation", area="right")
    if args.pred_iou is not None:
        widget.pred_iou.value = args.pred_iou
    if args.stability is not None:
        widget.stability.value = args.stability
    t0 = time.perf_counter()
    widget.run()
    end = time.time() + 300
    while widget.busy and time.time() < end:
        settle(0.1)
    if not any(ly.name.endswith("automask") for ly in viewer.layers):
        raise SystemExit(f"automask did not finish: {widget.status.value}")
    print(f"automask: {widget.status.value} in {time.perf_counter() - t0:.1f} s")
    if widget.session is not None:  # one embedding kept: the sliders re-filter it
        t0 = time.perf_counter()
        chosen = widget.pred_iou.value
        widget.pred_iou.value = chosen + 0.05  # a slider move: re-filter only
        widget.pred_iou.value = chosen
        print(f"two slider moves: {(time.perf_counter() - t0) * 1000:.0f} ms")
    else:  # the default zoom made the image run tile by tile: a new Run re-filters
        print("tiled run: no kept session, the sliders apply to the next Run")
    env.finish(viewer, Path(args.out) / "napari_automask.png")


def ais(args) -> None:
    """The automask widget in AIS mode on the nuclei sample, after a foreground slider move
    (re-thresholding the kept decoder maps): docs/ais_widget.png."""
    from napari_sam._napari.automask_widget import AutomaskWidget

    env = _load(args)
    napari, nuclei, settle = env.napari, env.nuclei, env.settle
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    data, kwargs, _ = nuclei()[0]
    viewer.add_image(data, **kwargs)
    widget = AutomaskWidget(viewer, model=env.model)
    widget.method.value = "ais"
    viewer.window.add_dock_widget(widget, name="Automatic segmentation", area="right")
    t0 = time.perf_counter()
    widget.run()
    end = time.time() + 300
    while widget.busy and time.time() < end:
        settle(0.1)
    if widget.session is None:
        raise SystemExit(f"AIS did not finish: {widget.status.value}")
    print(f"ais: {widget.status.value} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    widget.foreground.value = min(widget.foreground.value + 0.1, 0.95)  # watershed only
    print(f"foreground slider: {widget.status.value} in "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms")
    env.finish(viewer, Path(args.out) / "ais_widget.png")


def cells(args) -> None:
    """Touching, textured cells (32 px) with nothing typed: Run (diameter auto), then
    Estimate with the model loaded (the status says "checked by the model"), the circle
    and the labels in view: docs/napari_cells_estimate.png."""
    from napari_sam._napari.automask_widget import AutomaskWidget
    from napari_sam.training.evaluate import match_f1
    from napari_sam.training.multiscale import median_diameter, scaled_sample

    env = _load(args)
    napari, settle = env.napari, env.settle
    image, truth = scaled_sample("cells", 32, (512, 512), 7200)
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    viewer.add_image(image, name="cells")
    widget = AutomaskWidget(viewer, model=env.model)
    viewer.window.add_dock_widget(widget, name="Automatic segmentation", area="right")
    widget.run()
    end = time.time() + 300
    while widget.busy and time.time() < end:
        settle(0.1)
    labels = [ly for ly in viewer.layers if ly.name != "cells" and hasattr(ly, "selected_label")]
    if not labels:
        raise SystemExit(f"automask did not finish: {widget.status.value}")
    f1 = match_f1(np.asarray(labels[-1].data), truth)
    print(f"cells: {widget.status.value}; F1@0.5 {f1['f1@0.5']:.3f}, F1@0.75 "
          f"{f1['f1@0.75']:.3f}")
    widget.size.estimate()
    end = time.time() + 60
    while widget.size.worker is not None and time.time() < end:
        settle(0.1)
    print(f"estimate: {widget.status.value} (true median {median_diameter(truth):.1f} px)")
    env.finish(viewer, Path(args.out) / "napari_cells_estimate.png")


def interactive(args) -> None:
    from napari_sam._napari.widget import SamWidget

    env = _load(args)
    napari, tifffile, torch, imsave = env.napari, env.tifffile, env.torch, env.imsave
    model, settle, close_toasts = env.model, env.settle, env.close_toasts
    viewer = napari.Viewer()
    viewer.window.resize(1400, 900)
    data, kwargs, _ = env.nuclei()[0]
    image = viewer.add_image(data, **kwargs)
    widget = SamWidget(viewer, model=model)
    viewer.window.add_dock_widget(widget, name="Segment Anything", area="right")
    app = env.QApplication.instance()

    end = time.time() + 120
    while not widget.ready and time.time() < end:
        settle(0.1)
    if not widget.ready:
        raise SystemExit(f"the widget did not get ready: {widget.status.value}")
    truth = tifffile.imread(ROOT / "sample_data" / "nuclei_truth.tif")
    pts = interior_points(truth, 8 + 2 * args.clicks)
    points = widget.points_layer

    def click(rc, negative=False):
        widget.negative.value = negative
        points.add(points.world_to_data(image.data_to_world(rc)))
        end = time.time() + 120  # a tiled image (the default zoom) answers in a worker
        while widget._tiled.active and widget._tiled.busy and time.time() < end:
            settle(0.02)

    out = Path(args.out)
    for rc in pts[:6]:
        click(rc)
        widget.commit()
    click(pts[6])
    click(pts[6] + np.array([0, 8]))
    close_toasts()
    imsave(out / "napari_commits.png", viewer.screenshot(canvas_only=False, flash=False),
           check_contrast=False)
    widget.clear()
    viewer.layers.selection.active = points
    click(pts[7])
    click(pts[7] + np.array([6, -4]))
    click(pts[7] + np.array([-14, 0]), negative=True)
    close_toasts()
    imsave(out / "napari_clicks.png", viewer.screenshot(canvas_only=False, flash=False),
           check_contrast=False)

    widget.clear()
    walls, decode = [], []
    for rc in pts[8: 8 + args.clicks]:
        for p in (rc, rc + np.array([3, 3])):  # a new object, then a refining click
            t0 = time.perf_counter()
            click(p)
            if widget.decode_ms:
                decode.append(widget.decode_ms[-1])
            app.processEvents()
            walls.append((time.perf_counter() - t0) * 1000)
        widget.clear()
    print(f"model {args.model}, torch threads {torch.get_num_threads()}, image {data.shape}")
    if decode:  # one embedding: the widget times its own decode
        print(f"prompt change -> preview layer updated: median {np.median(decode):.1f} ms "
              f"(p90 {np.percentile(decode, 90):.1f}) over {len(decode)} updates")
    else:  # tiles: the answer comes from a worker, and the clicks below waited for it
        print("prompt change -> preview: tiled (zoomed) image, answered by a worker; "
              "the times below include the wait")
    print(f"prompt change -> canvas redrawn:        median {np.median(walls):.1f} ms "
          f"(p90 {np.percentile(walls, 90):.1f}) over {len(walls)} clicks")
    viewer.close()


if __name__ == "__main__":
    raise SystemExit(main())
