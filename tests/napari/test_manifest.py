"""The npe2 manifest: valid, every python_name imports, contributions work in napari."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")


@pytest.fixture(scope="module")
def manifest():
    return npe2.PluginManifest.from_distribution("napari-sam-suite")


def test_manifest_valid(manifest):
    assert manifest.name == "napari-sam-suite"
    assert all(c.id.startswith("napari-sam-suite.") for c in manifest.contributions.commands)
    npe2.PluginManifest.validate_imports(manifest)  # what `npe2 validate --imports` runs


def test_every_python_name_imports(manifest):
    for command in manifest.contributions.commands:
        module, _, attr = command.python_name.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.python_name


def test_commands_referenced(manifest):
    ids = {c.id for c in manifest.contributions.commands}
    c = manifest.contributions
    used = {w.command for w in c.widgets} | {s.command for s in c.sample_data} | \
        {r.command for r in c.readers} | {w.command for w in c.writers}
    assert used == ids


@pytest.mark.gui
def test_sample_data_and_plugin_widget(make_napari_viewer, qtbot, tmp_path):
    import torch

    from napari_sam import build_model

    viewer = make_napari_viewer()
    for key, ndim, rgb in (("nuclei", 2, False), ("nuclei_stack", 3, False),
                           ("rgb_shapes", 2, True)):
        (layer,) = viewer.open_sample("napari-sam-suite", key)
        assert layer.ndim == ndim and layer.rgb == rgb and layer.data.size
    # napari hands plugin widgets a proxy of the viewer that hides private attributes
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam-suite", "Interactive segmentation")
    assert widget.viewer == viewer and widget.image.value == viewer.layers["shapes (RGB)"]
    assert widget.model.value == "bundled"
    torch.save(build_model("test_vit").state_dict(), tmp_path / "tiny.pt")
    widget.diameter.value = "off"  # one embedding of the whole image (scale: test_scale.py)
    widget.model_file.value = tmp_path / "tiny.pt"
    widget.model.value = "file..."
    qtbot.waitUntil(lambda: widget.ready, timeout=30_000)
    widget.points_layer.add([128, 128])
    assert widget.preview_layer.data.shape == (256, 256) and widget.decode_ms
    widget.close()
    assert "SAM points" not in viewer.layers


@pytest.mark.gui
def test_annotate_launcher(make_napari_viewer, qtbot, disk_model, monkeypatch, tmp_path):
    import napari

    import napari_sam
    from napari_sam._napari.launch import DOCK_NAME

    made = []
    monkeypatch.setattr(napari, "Viewer", lambda: made.append(make_napari_viewer()) or made[-1])
    viewer = napari_sam.annotate(np.zeros((3, 64, 64), np.uint16), model=disk_model,
                                 labels=np.zeros((3, 64, 64), np.uint32), run=False)
    widget = viewer.window.dock_widgets[DOCK_NAME]
    assert widget.labels_layer.value is viewer.layers["image labels"]
    qtbot.waitUntil(lambda: widget.ready, timeout=20_000)

    from napari_sam.cli import build_parser

    args = build_parser().parse_args(["annotate", "img.tif", "--model", "vit_b"])
    assert args.image == "img.tif" and args.model == "vit_b" and args.func
