"""The Fine-tune widget in a real viewer: layer pairs, a run with its live plot, the result
offered by the other widgets' model choosers, Cancel keeping the best model, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_sam._napari import options
from napari_sam._napari.automask_widget import AutomaskWidget
from napari_sam._napari.finetune_widget import FinetuneWidget
from napari_sam.model import build_model, load_model
from napari_sam.model.config import TEST_VIT

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_finetune import TINY_SIZE, halo_cells  # noqa: E402

pytestmark = pytest.mark.gui


def tiny():
    torch.manual_seed(0)
    model = build_model(TEST_VIT.with_(image_size=64))
    model.object_size = dict(TINY_SIZE)  # the halo cells at 1:1: no tiles
    return model


def setup(viewer, n=3):
    for i in range(n):
        img, lab = halo_cells(i)
        viewer.add_image(img, name=f"img{i}")
        viewer.add_labels(lab, name=f"lab{i}")


def make(viewer, tmp_path, model=None):
    w = FinetuneWidget(viewer, model=model or tiny())
    viewer.window.add_dock_widget(w)
    w.output.value = tmp_path / "tuned.pt"
    return w


def wait_done(qtbot, w, timeout=120_000):
    qtbot.waitUntil(lambda: not w.busy, timeout=timeout)


def test_pairs_run_plot_and_model_choosers(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(options, "USER_MODELS", [])
    viewer = make_napari_viewer()
    setup(viewer)
    other = AutomaskWidget(viewer)
    viewer.window.add_dock_widget(other)
    w = make(viewer, tmp_path)
    assert w.model.value == "given model"
    for i in range(3):
        w.image.value, w.labels_layer.value = viewer.layers[f"img{i}"], viewer.layers[f"lab{i}"]
        w.add_pair()
    w.add_pair()  # the same pair twice counts once
    assert len(w.pairs) == 3 and "img2 + lab2" in w.pairs_label.value
    before = viewer.layers["lab0"].data.copy()
    # evaluations every 1/8 of the budget (15 s); stop after the first one past step 0
    w.minutes.value = 2
    w.run()
    assert w.busy and not w.run_button.enabled and w.cancel_button.enabled
    qtbot.waitUntil(lambda: len(w.plot.points) >= 2 or not w.busy, timeout=300_000)
    w.cancel()
    wait_done(qtbot, w)
    res = w.result
    assert res is not None, w.status.value
    assert res.path == tmp_path / "tuned.pt" and res.path.is_file()
    assert load_model(str(res.path)).config.image_size == 64
    assert len(w.plot.points) == len(res.history) >= 2
    assert w.plot.points[0] == (0, res.history[0]["score"])
    assert "Saved" in w.status.value and w.run_button.enabled
    np.testing.assert_array_equal(viewer.layers["lab0"].data, before)  # data untouched
    # the result is offered by every model chooser, and loads from there
    assert str(res.path) in other.model.choices and str(res.path) in w.model.choices
    assert w.output.value != res.path  # a new name for the next run
    # the plot draws (no exception) with points
    w.plot.repaint()


def test_cancel_keeps_the_best_so_far(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    setup(viewer, 2)
    w = make(viewer, tmp_path)
    for i in range(2):
        w.image.value, w.labels_layer.value = viewer.layers[f"img{i}"], viewer.layers[f"lab{i}"]
        w.add_pair()
    w.minutes.value = 30
    w.run()
    qtbot.waitUntil(lambda: len(w.plot.points) >= 1 or not w.busy, timeout=60_000)
    assert w.busy, w.status.value
    w.cancel()
    wait_done(qtbot, w)
    assert w.result is not None and w.result.stopped
    assert w.result.path.is_file() and w.result.seconds < 600
    assert "cancelled" in w.status.value


def test_errors_say_what_to_do(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = make(viewer, tmp_path)
    w.run()
    assert "choose an image layer" in w.status.value and not w.busy
    img, lab = halo_cells(0)
    viewer.add_image(img, name="img")
    viewer.add_labels(np.zeros_like(lab), name="empty")
    w.image.value, w.labels_layer.value = viewer.layers["img"], viewer.layers["empty"]
    w.run()
    qtbot.waitUntil(lambda: not w.busy, timeout=60_000)  # the data are checked in the worker
    assert "the labels are empty" in w.status.value
    (tmp_path / "tuned.pt").write_bytes(b"x")
    w.run()
    assert "exists: choose another name" in w.status.value
