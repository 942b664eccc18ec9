"""Screenshots of fine-tuning for docs/finetuning.md.

    xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python tests/napari/finetune_screenshots.py \
        [--minutes 1] [--out docs]

Opens three annotated ring-cell images (`training.synthetic_shift`, 256 x 256) as Image +
Labels pairs and a fourth unannotated one, fine-tunes the bundled model in the Fine-tune
widget for `--minutes` (saves docs/finetune_widget.png with the score plot), then runs the
Automatic segmentation widget with the fine-tuned model chosen from its model list on the
fourth image (docs/finetune_automask.png).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait(app, cond, timeout):
    t0 = time.time()
    while not cond():
        app.processEvents()
        time.sleep(0.05)
        if time.time() - t0 > timeout:
            raise TimeoutError("timed out")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--out", default=str(ROOT / "docs"))
    a = ap.parse_args()
    import imageio.v3 as iio
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_sam._napari.automask_widget import AutomaskWidget
    from napari_sam._napari.finetune_widget import FinetuneWidget
    from napari_sam.training.synthetic_shift import ring_cells

    from napari.settings import get_settings

    get_settings().application.gui_notification_level = "none"  # no toasts in the pictures
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 1000)
    app = QApplication.instance()
    for i in range(3):
        img, lab = ring_cells(i, (256, 256))
        viewer.add_image(img, name=f"cells {i}", visible=i == 2)
        viewer.add_labels(lab, name=f"cells {i} labels", visible=i == 2)
    w = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(w, name="Fine-tune")
    for i in range(3):
        w.image.value = viewer.layers[f"cells {i}"]
        w.labels_layer.value = viewer.layers[f"cells {i} labels"]
        w.add_pair()
    w.minutes.value = a.minutes
    w.output.value = Path(tempfile.mkdtemp()) / "ring_cells.pt"
    viewer.reset_view()
    w.run()
    wait(app, lambda: not w.busy, a.minutes * 60 + 1800)
    print(w.status.value)
    out = Path(a.out)
    iio.imwrite(out / "finetune_widget.png", viewer.screenshot(canvas_only=False, flash=False))
    viewer.window.remove_dock_widget("all")
    for ly in list(viewer.layers):
        ly.visible = False
    img, _ = ring_cells(7, (256, 256))
    viewer.add_image(img, name="new image")
    am = AutomaskWidget(viewer)
    viewer.window.add_dock_widget(am, name="Automatic segmentation")
    am.image.value = viewer.layers["new image"]
    am.model.value = str(w.result.path)
    viewer.reset_view()
    am.run()
    wait(app, lambda: not am.busy, 1800)
    print(am.status.value)
    iio.imwrite(out / "finetune_automask.png", viewer.screenshot(canvas_only=False, flash=False))
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
