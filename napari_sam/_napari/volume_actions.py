"""*Segment in volume / Track* for the interactive widget: the current object through a stack.

On a (Z, Y, X) or (T, Y, X) layer, the button (or Shift-V) follows the object prompted on the
displayed slice through the whole stack with `volume.segment_volume`, in a worker (progress
in the widget, the same button cancels). Prompts left on other slices are anchors
(corrections). The answer is committed as ONE new id through all its slices, like a 2D
commit: only background pixels change unless "overwrite" is ticked, and Undo (U) removes it.
For a time-lapse ("stack: time-lapse (T)"), a Tracks layer follows the committed objects'
centroids (one track per id), refreshed after each commit and undo.

The method follows `segment_volume(method="auto")`: SAM 2.1 models follow the object with
SAM 2's memory (`volume.memory`), every other model with slice-to-slice prompting. The
slices are embedded at the object size of the widget's diameter field (estimated on the
displayed slice when it says auto).

The propagation has its own Predictor over the widget's model and its own per-slice
embeddings (kept while the image, model and channels stay the same), so clicks on the GUI
thread never wait for it.
"""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np
from magicgui.widgets import ComboBox, PushButton
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal

from ..predictor import Predictor
from ..volume import Cancelled, SliceEmbeddings, segment_volume
from ..volume.memory import is_sam2
from . import layers as L
from .commits import CommitError
from .controls import _row
from .keys import KeyBindings
from .tracks import refresh_tracks

KEY = "Shift-V"
VOLUME, TIME = "volume (Z)", "time-lapse (T)"
BUTTON = f"Segment in volume / Track [{KEY}]"


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(int, int, str)


def stack_prompts(prompts, n: int) -> dict:
    """{slice: prompt dict for segment_volume} for every slice of a stack with prompts."""
    out = {}
    for k in range(n):
        p, _ = prompts.read((k,))
        if p.is_empty():
            continue
        out[k] = dict(points=p.points if len(p.points) else None,
                      point_labels=p.labels if len(p.points) else None,
                      box=p.box, mask=p.region)
    return out


class VolumeActions:
    """The button, the stack kind and the key of the interactive widget `w` (a SamWidget)."""

    def __init__(self, w) -> None:
        self.w = w
        self.button = PushButton(text=BUTTON, tooltip="follow the current object through "
                                 "every slice (prompts on other slices are corrections) and "
                                 "commit it as one id; press again to cancel")
        self.kind = ComboBox(choices=[VOLUME, TIME], value=VOLUME,
                             tooltip="time-lapse: also draw the committed objects as tracks")
        w.append(_row(self.button, self.kind, label="stack"))
        self.button.changed.connect(self.toggle)
        self._relay = _Relay()
        self._relay.progressed.connect(w._on_progress)
        self._stop = threading.Event()
        self.worker = None
        self.embeddings: Optional[SliceEmbeddings] = None
        self._emb_key = None
        self.tracks = None       # the Tracks layer of a time-lapse
        self._target = None      # (labels layer, image) of the running job
        self._keys = KeyBindings(w.viewer, {KEY: self.toggle})

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def toggle(self, *_) -> None:
        """Start following the current object, or cancel the running job."""
        if self.busy:
            return self.cancel()
        error = self.start()
        if error:
            show_info(f"napari-sam: {error}")
            self.w.status.value = error

    def start(self) -> Optional[str]:
        """Start the worker; returns a message instead when it cannot run."""
        w = self.w
        image = w._image
        if image is None or w._key is None or len(w._key[1]) != 1 or image.rgb:
            return "Segment in volume needs a (Z, Y, X) or (T, Y, X) image layer"
        if not w.ready or w._segmenter is None or w.tiled.active:
            return "wait until the slice is embedded, then click on an object"
        data = L.image_data(image)
        given = stack_prompts(w.prompt_layers, data.shape[0])
        z = w._key[1][0]
        if z not in given:
            return "click on the object on the displayed slice first"
        main = given.pop(z)
        predictor = w._embedder.predictor
        diameter = w._key[5]  # the object-size field: None (estimate), "off" or px
        key = (image.unique_id, w._key[2], w._key[3], id(predictor.model), diameter)
        if key != self._emb_key:
            own = Predictor(predictor.model, predictor.device, precision="fp32")
            self.embeddings = SliceEmbeddings(own, data, w._key[3], diameter=diameter,
                                              reference=z)
            self._emb_key = key
        labels = w.labels_layer.value
        self._target = (labels, image)
        self._stop.clear()
        relay = self._relay
        spacing = tuple(float(s) for s in image.scale[-3:])
        self.worker = create_worker(
            segment_volume, data, embeddings=self.embeddings, z=z, anchors=given,
            spacing=spacing, cancel=self._stop, method="auto",
            progress=lambda d, t, m="": relay.progressed.emit(int(d), int(t), str(m)),
            **main, _connect={"returned": self._done, "errored": self._failed,
                              "finished": self._finished}, _start_thread=False)
        self.button.text = "Cancel propagation"
        w.progress.visible = True
        how = "SAM 2.1's memory" if is_sam2(predictor.model) else "slice-to-slice prompts"
        w.status.value = f"following the object from slice {z} ({how})..."
        self.worker.start()
        return None

    def cancel(self) -> None:
        self._stop.set()
        self.w.status.value = "cancelling..."

    def _failed(self, err) -> None:
        if isinstance(err, Cancelled):
            self.w.status.value = "cancelled: nothing was committed"
            return
        show_error(f"napari-sam: {err}")
        self.w.status.value = f"failed: {err}"

    def _finished(self) -> None:
        self.worker = None
        self.button.text = BUTTON
        self.w.progress.visible = False

    def _done(self, mask) -> None:
        w = self.w
        labels, image = self._target
        if w._closed or image not in w.viewer.layers:
            return
        if not mask.any():
            w.status.value = "the object was not found on any slice: nothing committed"
            return
        try:
            if labels is None or labels not in w.viewer.layers:
                labels = w._committer.new_layer(image, False, w.points_layer)
                w.reset_choices()
                w.labels_layer.value = labels
            record = w._committer.commit(labels, image, (), mask, w.overwrite.value)
        except (CommitError, ValueError) as err:
            return show_error(f"napari-sam: {err}")
        self._target = (labels, image)
        for k in range(mask.shape[0]):  # the prompts are used up
            w.prompt_layers.clear((k,))
        w._show_mask(None)
        slices = np.flatnonzero(mask.any(axis=(1, 2)))
        if self.kind.value == TIME:
            self.tracks = refresh_tracks(w.viewer, labels.data, image, self.tracks)
        w.status.value = (f"committed object {record.label_id} on slices {slices[0]}-"
                          f"{slices[-1]} to {labels.name!r}")

    def after_undo(self) -> None:
        """Keep the Tracks layer in step with the labels after an undo."""
        if self.tracks is not None and self._target is not None:
            labels, image = self._target
            labels = labels if labels is not None else self.w.labels_layer.value
            if labels is not None and labels in self.w.viewer.layers:
                self.tracks = refresh_tracks(self.w.viewer, labels.data, image, self.tracks)

    def release(self) -> None:
        self._keys.release()
        self._stop.set()
