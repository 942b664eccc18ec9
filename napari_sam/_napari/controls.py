"""The controls of the interactive widget and their layout (behaviour is in widget.py)."""

from __future__ import annotations

from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, Label, LineEdit,
                              ProgressBar, PushButton, SpinBox)

from .options import DEVICES, FILE_CHOICE, GIVEN_CHOICE, model_choices, watch_choices
from .tiled_jobs import TILING_CHOICES

KEYS = {"commit": "Shift-C", "next_mask": "Shift-M", "undo": "U", "negative": "N",
        "clear": "Shift-X"}


def model_controls(model, device: str, given: bool):
    """(model, model file, device) choosers shared by the widgets: `model` is a registry
    name, a checkpoint path (shown as "file...") or anything else (a given model)."""
    choices = model_choices(given=given)
    start = GIVEN_CHOICE if given else "bundled"
    if isinstance(model, str):
        start = model if model in choices else FILE_CHOICE
    chooser = ComboBox(label="model", choices=lambda _w: model_choices(given=given), value=start,
                       tooltip="bundled, models fine-tuned in this session (their files), "
                       "downloadable checkpoints, or a file")
    watch_choices(chooser)
    return (chooser,
            FileEdit(label="model file", mode="r", filter="*.pt *.pth",
                     visible=start == FILE_CHOICE, value=model if start == FILE_CHOICE else ""),
            ComboBox(label="device", choices=DEVICES,
                     value=device if device in DEVICES else "auto"))


def tiling_controls(tiling: str, tile_above: int, what: str):
    """(tiling mode, "above px") controls shared by the widgets; `what` says what tiling
    does in the widget."""
    return (ComboBox(choices=TILING_CHOICES,
                     value=tiling if tiling in TILING_CHOICES else "auto",
                     tooltip=f"large 2D images: {what}.\nauto: multiscale/lazy layers and "
                     "planes longer than 'above'; on: every 2D image; off: the whole plane, "
                     "shrunk to the model's input"),
            SpinBox(value=max(0, int(tile_above)), min=0, max=1_000_000, step=256,
                    tooltip="longer side (pixels) above which auto tiles a plane; 0: twice "
                    "the model's input side (512 for the bundled model, 2048 for SAM)"))


def build_controls(w: Container, model, device: str, given: bool, tiling: str = "auto",
                   tile_above: int = 0) -> None:
    """Create the controls as attributes of the widget `w` and add them to it, in order."""
    w.image = ComboBox(label="image", choices=w._image_choices)
    w.model, w.model_file, w.device = model_controls(model, device, given)
    w.channels = LineEdit(label="channels", tooltip="RGB/multichannel: up to 3 channel "
                          "indices, e.g. 0 or 0,1,2 (empty: as the image is)")
    from .diameter import DiameterControl

    w.size = DiameterControl(w.viewer, lambda: w._image, w._channels,
                             lambda text: setattr(w.status, "value", text),
                             lambda: w._embedder.model)
    w.diameter = w.size.field
    w.tiling, w.tile_above = tiling_controls(
        tiling, tile_above, "answer prompts tile by tile at native resolution, embedding only "
        "the tiles under the prompts")
    w.embed_button = PushButton(text="Embed", tooltip="compute the image embedding again")
    w.cancel_button = PushButton(text="Cancel", enabled=False)
    w.progress = ProgressBar(label="", value=0, max=3, visible=False)
    w.status = Label(label="status", value="")
    w.negative = CheckBox(text=f"negative clicks [{KEYS['negative']}] (or Shift+click)")
    w.candidate = Label(value="-", tooltip="chosen candidate / candidates, predicted IoU")
    w.next_button = PushButton(text=f"Next mask [{KEYS['next_mask']}]")
    w.labels_layer = ComboBox(label="labels", choices=w._labels_choices,
                              tooltip="the Labels layer that receives committed objects")
    w.overwrite = CheckBox(text="overwrite existing objects")
    w.commit_button = PushButton(text=f"Commit [{KEYS['commit']}]")
    w.undo_button = PushButton(text=f"Undo [{KEYS['undo']}]")
    w.clear_button = PushButton(text=f"Clear [{KEYS['clear']}]")
    w.extend([w.image, w.model, w.model_file, w.device, w.channels, w.size.row,
              _row(w.tiling, Label(value="above px"), w.tile_above,
                   label="tiling"), _row(w.embed_button, w.cancel_button), w.progress, w.status,
              w.negative, _row(w.candidate, w.next_button, label="mask"),
              w.labels_layer, w.overwrite,
              _row(w.commit_button, w.undo_button, w.clear_button)])
    _expanding_text(w.status.native)


def _row(*widgets, label: str = "") -> Container:
    return Container(widgets=widgets, layout="horizontal", labels=False, label=label)


def _expanding_text(label) -> None:
    """A QLabel that wraps long messages and takes the row's width, text on the left."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QSizePolicy

    label.setWordWrap(True)
    label.setAlignment(Qt.AlignLeft | Qt.AlignVCenter)
    label.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)
