"""Fine-tune dock widget: adapt a model to annotated Image + Labels layers.

Pick image/labels layer pairs (Add pair; with none added, the pair shown in the two
choosers), the base model, a time budget and the output file, then Run: the training
(`training.finetune`) runs in a worker thread, the progress bar follows the time budget and
the plot shows the validation score at each evaluation. Cancel stops it early and still
writes the best weights so far. The written model is then offered by the model chooser of
every napari-sam widget (`options.add_user_model`). The layers' data are copied when Run
is pressed and never changed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Tuple

from magicgui.widgets import (ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit,
                              ProgressBar, PushButton)
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from . import layers as L
from .layers import is_kind
from .controls import _expanding_text, _row, model_controls
from .keys import on_close
from .options import FILE_CHOICE, GIVEN_CHOICE, add_user_model, parse_channels
from .score_plot import ScorePlot

if TYPE_CHECKING:  # pragma: no cover
    import napari


class _Relay(QObject):
    """Evaluation records and messages from the worker thread to the GUI thread."""

    evaluated = Signal(object)
    message = Signal(str)


def default_output() -> Path:
    from ..model.hub import cache_dir

    return cache_dir().parent / "finetuned" / time.strftime("finetuned-%Y%m%d-%H%M%S.pt")


def run_finetune(pairs, channels, output, cfg, progress, should_stop, log, model=None):
    """The worker's job: samples from (image, labels, name) arrays, a validation split,
    fine-tuning -> `FinetuneResult`. Also usable without a viewer."""
    from ..training.finetune import finetune
    from ..training.user_data import from_arrays, split_validation

    samples = from_arrays(pairs, channels)
    train, val = split_validation(samples, seed=cfg.seed)
    log(f"{len(train)} training, {len(val)} validation samples")
    return finetune(train, val, output, cfg, progress=progress, should_stop=should_stop,
                    log=log, model=model)


class FinetuneWidget(Container):
    """model: None (the bundled model), a registry name, a checkpoint path or a loaded Sam
    to start from."""

    def __init__(self, viewer: napari.viewer.Viewer, model=None, device: str = "auto") -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self._given = None if model is None or isinstance(model, str) else model
        self.pairs: List[Tuple[object, object]] = []
        self._worker = None
        self._stop = threading.Event()
        self._budget = 1.0
        self._closed = False
        self.result = None  # FinetuneResult of the last run
        self._relay = _Relay()
        self._relay.evaluated.connect(self._on_evaluated)
        self._relay.message.connect(self._on_message)
        self.image = ComboBox(label="image", choices=self._choices("Image"))
        self.labels_layer = ComboBox(label="labels", choices=self._choices("Labels"))
        self.add_button = PushButton(text="Add pair")
        self.clear_button = PushButton(text="Clear pairs")
        self.pairs_label = Label(label="pairs", value="none: the pair above is used")
        self.model, self.model_file, self.device = model_controls(model, device,
                                                                  self._given is not None)
        self.channels = LineEdit(label="channels", tooltip="images with more than 3 channels: "
                                 "up to 3 channel indices, e.g. 0 or 0,1,2")
        self.minutes = FloatSpinBox(label="minutes", value=10.0, min=0.1, max=1440.0, step=1.0,
                                    tooltip="time budget of training (the first validation and the final calibration come on top)")
        self.output = FileEdit(label="save as", mode="w", filter="*.pt", value=default_output())
        self.run_button = PushButton(text="Fine-tune")
        self.cancel_button = PushButton(text="Cancel", enabled=False,
                                        tooltip="stop now and keep the best model so far")
        self.progress = ProgressBar(label="", value=0, max=1000, visible=False)
        self.status = Label(label="status", value="")
        self.extend([self.image, self.labels_layer, _row(self.add_button, self.clear_button),
                     self.pairs_label, self.model, self.model_file, self.device, self.channels,
                     self.minutes, self.output, _row(self.run_button, self.cancel_button),
                     self.progress, self.status])
        _expanding_text(self.status.native)
        _expanding_text(self.pairs_label.native)
        self.plot = ScorePlot()
        self.native.layout().addWidget(self.plot)
        self.add_button.changed.connect(self.add_pair)
        self.clear_button.changed.connect(self.clear_pairs)
        self.model.changed.connect(self._on_model_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        on_close(self.native, self.release)

    def _choices(self, kind: str):
        return lambda *_: [(ly.name, ly) for ly in self.viewer.layers if is_kind(ly, kind)]

    def reset_choices(self, *_) -> None:
        if not self._closed:
            super().reset_choices()

    def _on_model_changed(self, *_) -> None:
        self.model_file.visible = self.model.value == FILE_CHOICE

    # ---- pairs ---------------------------------------------------------------------------
    def add_pair(self, *_) -> None:
        image, labels = self.image.value, self.labels_layer.value
        if image is None or labels is None:
            self.status.value = "choose an image and a labels layer first"
            return
        if (image, labels) not in self.pairs:
            self.pairs.append((image, labels))
        self._show_pairs()

    def clear_pairs(self, *_) -> None:
        self.pairs = []
        self._show_pairs()

    def _show_pairs(self) -> None:
        self.pairs_label.value = ("; ".join(f"{i.name} + {lab.name}" for i, lab in self.pairs)
                                  or "none: the pair above is used")

    # ---- run -----------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._worker is not None

    def _request(self):
        """(pairs of arrays, channels, output, config, model) or a message saying what to do."""
        from ..training.finetune import FinetuneConfig

        pairs = self.pairs or [(self.image.value, self.labels_layer.value)]
        if any(i is None or lab is None for i, lab in pairs):
            return "choose an image layer and the labels layer annotating it"
        try:
            channels = parse_channels(self.channels.value)
        except ValueError as err:
            return str(err)
        out = Path(self.output.value)
        if not out.name or out.suffix not in (".pt", ".pth"):
            return "choose the file to save the model as (.pt)"
        if out.exists():
            return f"{out} exists: choose another name"
        choice = self.model.value
        if choice == FILE_CHOICE and not Path(self.model_file.value).is_file():
            return "choose a model file (.pt / .pth)"
        base = str(self.model_file.value) if choice == FILE_CHOICE else choice
        arrays = []
        for image, labels in pairs:
            if image.multiscale or L.is_lazy(image):
                return f"{image.name!r} is multiscale or lazy: fine-tune on in-memory layers"
            arrays.append((L.image_data(image).copy(), labels.data.copy(),
                           f"{image.name} + {labels.name}"))
        cfg = FinetuneConfig(base="given model" if choice == GIVEN_CHOICE else base,
                             minutes=float(self.minutes.value), device=self.device.value)
        model = self._given if choice == GIVEN_CHOICE else None
        return arrays, channels, out, cfg, model

    def run(self, *_) -> None:
        """Start fine-tuning in a worker thread."""
        if self.busy:
            return
        req = self._request()
        if isinstance(req, str):
            self.status.value = req
            return
        arrays, channels, out, cfg, model = req
        self._stop.clear()
        self._budget = cfg.minutes * 60
        self._t0 = time.monotonic()
        self.plot.set_points([])
        relay = self._relay
        self._worker = create_worker(
            run_finetune, arrays, channels, out, cfg, relay.evaluated.emit, self._stop.is_set,
            relay.message.emit, model,
            _connect={"returned": self._on_done, "errored": self._on_error,
                      "finished": self._on_finished},
            _start_thread=False)
        self._set_busy(True)
        self.status.value = "starting"
        self._worker.start()

    def cancel(self, *_) -> None:
        """Stop early; the best model so far is still written."""
        if self._worker is not None:
            self._stop.set()
            self.status.value = "stopping: writing the best model so far..."

    def _set_busy(self, busy: bool) -> None:
        self.cancel_button.enabled = self.progress.visible = busy
        self.run_button.enabled = not busy

    def _on_message(self, text: str) -> None:
        if not self._stop.is_set():
            self.status.value = text

    def _on_evaluated(self, rec: dict) -> None:
        self.plot.add_point(rec["step"], rec["score"])
        frac = min(1.0, rec["seconds"] / max(self._budget, 1e-9))
        self.progress.value = int(1000 * frac)
        if not self._stop.is_set():
            self.status.value = (f"step {rec['step']}: score {rec['score']:.3f} (click "
                                 f"{rec['click_miou']:.3f}, box {rec['box_miou']:.3f}), best "
                                 f"{rec['best']:.3f}")

    def _on_done(self, res) -> None:
        self.result = res
        add_user_model(res.path)
        b, a = res.before, res.after
        extra = ""
        if "automask_f1@0.5" in a:
            extra = (f", automask F1 {b['automask_f1@0.5']:.3f} -> {a['automask_f1@0.5']:.3f}")
        self.status.value = (f"{'cancelled; ' if res.stopped else ''}{res.steps} steps: "
                             f"score {b['score']:.3f} -> {a['score']:.3f}{extra}. Saved as "
                             f"{res.path.name}, now in the model lists")
        self.status.tooltip = str(res.path)
        self.output.value = default_output()

    def _on_error(self, err) -> None:
        self.status.value = f"failed: {type(err).__name__}: {err}"

    def _on_finished(self) -> None:
        self._worker = None
        self._set_busy(False)

    def release(self) -> None:
        """Stop the worker and disconnect from the viewer (the widget is closing)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self.reset_choices)
