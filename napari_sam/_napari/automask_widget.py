"""Automask dock widget: segment everything in an image layer, then tune with sliders.

Run embeds the image and decodes the point grid in a worker thread (progress bar, Cancel);
the result goes into a new uint32 Labels layer with the image's scale and translate. The
threshold sliders re-filter the kept candidates on the GUI thread (`automask_job.Session`:
no model call) and update that same layer. The computation is in `automask_job.py`.

Modes (`automask.segmenter.resolve_mode`): amg (the prompt grid), ais (the model's instance decoder and
a seeded watershed), apg (the decoder's seeds as prompts), auto (ais when the model has a
decoder). In the decoder modes the centre / boundary distance and foreground sliders and
min area re-threshold the decoder maps kept from the run (`decoder_job.DecoderSession`):
the encoder never runs again for them, nor for a new Run on the same image layer, model,
device, diameter, channels and slice.

Large 2D layers (the interactive widget's rule: the `tiling` row, `tiled_jobs.TilingRule`)
are segmented tile by tile at native resolution (`automask_tiled.py`); their result is in
memory or, when very large, a zarr label image on disk, and the sliders apply at the next
Run (a tiled run keeps no candidates to re-filter).

The controls (layout, slider bookkeeping) are in `automask_form.py`; this module runs the
job in a worker thread and shows its result.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from magicgui.widgets import Container
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from ..runtime.cpu import tune_cpu_if_requested
from . import layers as L
from .automask_form import AutomaskForm
from .automask_job import CURRENT, Request, check_request, run_job
from .automask_tiled import labels_levels
from .decoder_job import DecoderSession
from .downloads import missing, size_text
from .keys import on_close
from .layers import is_kind
from .options import FILE_CHOICE, GIVEN_CHOICE, parse_channels
from .tiled_jobs import TilingRule
from .tiled_mode import tiled_setup
from .tracks import show_linked

if TYPE_CHECKING:  # pragma: no cover
    import napari

_META_KEYS = ("source", "pixel_size", "z_size", "geo", "axes", "georef", "band_names", "nodata")


class _Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    progressed = Signal(int, int, str)


class AutomaskWidget(AutomaskForm, Container):
    """Automatic mask generation on an Image layer with live threshold sliders.

    model: None (the bundled model), a registry name, a checkpoint path, or a loaded Sam.
    tiling ("auto", "on", "off") and tile_above (pixels, 0: twice the model's input side):
    which 2D layers are segmented tile by tile, as in the interactive widget.
    """

    def __init__(self, viewer: napari.viewer.Viewer, model=None, device: str = "auto",
                 tiling: str = "auto", tile_above: int = 0) -> None:
        super().__init__(labels=True)
        tune_cpu_if_requested(default=False)  # only with NAPARI_SAM_TUNE_CPU=1
        self.viewer = viewer
        model = os.fspath(model) if isinstance(model, os.PathLike) else model
        self._given = None if model is None or isinstance(model, str) else model
        self._loaded = {}          # (model name, device) -> Sam, so Run does not reload
        self._worker = None
        self._stop = threading.Event()
        self.session = None        # automask_job.Session of the last run
        self.result_layer = None   # the Labels layer the sliders update
        self.tiled_result = None   # automask_tiled.TiledOutput when the last run was tiled
        self._source = None        # the image layer of the last run
        self._key = None           # (model name, device) of the last run
        self._run_key = None       # `_cache_key` of the last run (decoder sessions)
        self._closed = False
        self._follow = True        # thresholds follow the model's defaults until moved
        self._area_follow = True   # min area follows the object size until moved
        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self._build(model, device, tiling, tile_above)
        active = viewer.layers.selection.active
        if active is not None and is_kind(active, "Image"):
            self.image.value = active
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        on_close(self.native, self.release)
        self._on_image_changed()

    def reset_choices(self, *_) -> None:
        if not self._closed:  # napari may call this after the widget closed
            super().reset_choices()

    def _cache_key(self, req) -> tuple:
        """What a kept decoder session depends on: image layer, model, device, object size,
        channels and slice."""
        return (id(self.image.value), req.model_name, id(req.model), req.device,
                str(req.diameter), tuple(req.channels or ()), tuple(req.index), req.mode)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    # ---- run -----------------------------------------------------------------------------
    def _request(self):
        """A Request for the chosen image and options, or a message saying what is wrong."""
        image = self.image.value
        if image is None:
            return "no image layer: open or add an image first"
        try:
            channels = parse_channels(self.channels.value)
        except ValueError as err:
            return str(err)
        data = L.image_data(image)
        mode = self.slices.value if image.ndim > 2 else CURRENT
        error = check_request(data.shape, image.rgb, mode, channels)
        if error:
            return f"{image.name!r}: {error}"
        choice = self.model.value
        name = self._model_name()
        if choice == FILE_CHOICE and not self.model_file.value.is_file():
            return "choose a model file (.pt / .pth)"
        known = missing(name) if (name, self.device.value) not in self._loaded else None
        if known is not None:  # never a silent download of hundreds of MB
            return (f"{name} is not downloaded ({size_text(known.size)}): fetch it with the "
                    f"Download button of the interactive segmentation panel, or run "
                    f"`napari-sam models download {name}`, or choose another model")
        model = self._given if choice == GIVEN_CHOICE else self._loaded.get(
            (name, self.device.value))
        index = L.slice_index(self.viewer, image) if mode == CURRENT else ()
        rule = TilingRule(self.tiling.value, int(self.tile_above.value))
        req = Request(data, image.rgb, index, mode, channels, model, name, self.device.value,
                      int(self.points_per_side.value),
                      self._thresholds(defaults=True, run=True),
                      tiled_setup(image, rule), self.size.value, self.method.value,
                      self._decoder_values(defaults=True))
        kept = self.session
        if isinstance(kept, DecoderSession) and kept.key == self._cache_key(req):
            req.cached = kept  # same image, model and size: no encoder pass
        return req

    def run(self, *_) -> None:
        """Segment the chosen image in a worker thread; the result becomes a new layer."""
        if self.busy:
            return
        req = self._request()
        if isinstance(req, str):
            self.status.value = req
            return
        self._stop.clear()
        self._source = self.image.value
        self._key = (req.model_name, req.device)
        self._run_key = self._cache_key(req)
        relay = self._relay
        self._worker = create_worker(
            run_job, req, lambda d, t, m="": relay.progressed.emit(int(d), int(t), str(m)),
            self._stop.is_set,
            _connect={"returned": self._on_done, "errored": self._on_error,
                      "finished": self._on_finished},
            _start_thread=False)
        self._set_busy(True)
        self.status.value = "starting"
        self._worker.start()

    def cancel(self, *_) -> None:
        """Stop the running segmentation (nothing is added)."""
        if self._worker is not None:
            self._stop.set()
            self._worker.quit()
            self.status.value = "cancelling..."

    def _set_busy(self, busy: bool) -> None:
        self.cancel_button.enabled = self.progress.visible = busy
        self.run_button.enabled = not busy

    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self._worker is not None and not self._stop.is_set() and not self._closed:
            self.progress.max, self.progress.value = max(total, 1), done
            self.status.value = message

    def _on_done(self, out) -> None:
        if out.model is not None and self._given is None:
            self._loaded = {self._key: out.model}  # keep one loaded model
        if self._closed:  # the controls may be deleted already
            return
        if out.cancelled:
            self.status.value = "cancelled; press Run to start again"
        elif out.error:
            self.status.value = out.error
        else:
            self.session, self.tiled_result = out.session, out.tiled
            if isinstance(out.session, DecoderSession):
                out.session.key = self._run_key
                if self._decoder_follow:  # show the thresholds the run used
                    from .decoder_job import decoder_defaults

                    for k, slider in self._decoder_sliders.items():
                        with slider.changed.blocked():
                            slider.value = decoder_defaults(out.model)[k]
            self._set_sliders(out.thresholds if self._follow else self._thresholds(),
                              out.floors)
            self._show_min_area((out.thresholds or {}).get("min_area"))
            if out.tiled is not None:
                self._show_tiled(out.tiled)
            else:
                self._show(out.result, new_layer=True)
            self.note.visible = out.tiled is not None

    def _on_error(self, err) -> None:
        if self._closed:
            return
        self.status.value = f"failed: {type(err).__name__}: {err}"

    def _on_finished(self) -> None:
        self._worker = None
        if self._closed:
            return
        self._set_busy(False)
        if self._stop.is_set():  # after quit() the worker drops its result
            self.status.value = "cancelled; press Run to start again"

    # ---- results -------------------------------------------------------------------------
    def refilter(self, *_) -> None:
        """Apply the sliders to the last run's candidates (no model call)."""
        if self.tiled_result is not None and self.session is None and not self.busy:
            self.status.value = "tiled run: the thresholds apply at the next Run"
        if self.session is None or self.busy:
            return
        self._show(self.session.result(**self._thresholds(defaults=True),
                                       **self._decoder_values(defaults=True)))

    def _show(self, result, new_layer: bool = False) -> None:
        layer = self.result_layer
        if new_layer or layer is None or layer not in self.viewer.layers:
            image = self._source
            meta = {k: image.metadata[k] for k in _META_KEYS if k in image.metadata}
            layer = self.viewer.add_labels(result.labels, name=f"{image.name} automask",
                                           metadata=meta, **L.transform(image, result.labels.ndim))
            self.result_layer = layer
        else:
            layer.data = result.labels
        layer.metadata["records"] = result.records
        n = show_linked(self, layer) or len(result.records)  # 3D objects, tracks (tracks.py)
        hint = "" if n else ": none pass the thresholds; lower pred IoU / stability"
        self.status.value = f"{n} objects in {layer.name!r}{hint}"

    def _show_tiled(self, out) -> None:
        """A new Labels layer for a tiled run's result (numpy, or zarr on disk), with the
        image's scale and translate; multiscale when it is large."""
        image = self._source
        meta = {k: image.metadata[k] for k in _META_KEYS if k in image.metadata}
        meta["records"] = out.records
        meta["tiling"] = {"grid": list(out.grid_shape), "tiles_run": out.tiles_run,
                          "labels_path": None if out.path is None else str(out.path)}
        levels = labels_levels(out.labels)
        layer = self.viewer.add_labels(levels if len(levels) > 1 else levels[0],
                                       multiscale=len(levels) > 1,
                                       name=f"{image.name} automask", metadata=meta,
                                       **L.transform(image, 2))
        self.result_layer = layer
        ny, nx = out.grid_shape
        where = "" if out.path is None else f", on disk: {out.path}"
        resumed = f", {out.resumed} from an earlier run" if out.resumed else ""
        hint = "" if out.records else "; none pass the thresholds: lower them and Run again"
        self.status.value = (f"{len(out.records)} objects in {layer.name!r} ({ny} x {nx} "
                             f"tiles{resumed}{where}){hint}")

    def release(self) -> None:
        """Stop the worker and disconnect from the viewer (the widget is closing)."""
        if self._closed:
            return
        self._stop.set()
        if self._worker is not None:
            self._worker.quit()
        self._closed = True
        self.size.close()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.disconnect(self.reset_choices)
