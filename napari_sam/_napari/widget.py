"""Interactive segmentation dock widget: click, refine, commit, undo.

Thin: the prompt layers are `prompt_layers.PromptLayers`, prompts are decoded by
`prompts.Segmenter`, objects are written by `commits.Committer` (`prompts.commit_mask`), and
embeddings come from `workers.Embedder` (a napari worker, cached per layer and slice).
Decoding (a few ms to tens of ms) runs on the GUI thread, once per prompt change; encoding
never does. The controls are laid out in `controls.py`; the actions (preview, commit, undo...)
are in `widget_actions.py`.

Large 2D layers (multiscale, lazy, or more than twice the model's input side; see
`tiled_jobs.TilingRule`) are not embedded up front: `tiled_mode.TiledMode` answers their
prompts in a worker that embeds the tiles under them, and commits only the answer's box.
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING

from magicgui.widgets import Container
from qtpy.QtCore import QTimer
from napari.utils.notifications import show_error, show_warning

from ..model.registry import BUNDLED_PATH
from ..prompts import Segmenter
from ..runtime.cpu import tune_cpu_if_requested
from . import hints
from . import layers as L
from .layers import is_kind
from .commits import Committer
from .downloads import Downloader, missing
from .keys import KeyBindings, on_close
from .controls import KEYS, build_controls
from .options import FILE_CHOICE, GIVEN_CHOICE, parse_channels
from .prompt_layers import PromptLayers
from .tiled_jobs import TilingRule
from .tiled_mode import TiledMode, tiled_setup
from .volume_actions import VolumeActions
from .widget_actions import READY, Actions
from .workers import Embedder

if TYPE_CHECKING:  # pragma: no cover
    import napari


class SamWidget(Actions, Container):
    """Segment Anything on the displayed image slice from Points and Shapes prompts.

    model: None (the bundled model), a registry name, a checkpoint path, or a loaded Sam.
    tiling: "auto", "on" or "off" and tile_above (pixels, 0: twice the model's input side):
    which 2D layers are answered tile by tile (the `tiling` controls). diameter: the
    object-size field's start value ("auto", "off" or pixels; see `diameter`).
    """

    def __init__(self, viewer: napari.viewer.Viewer, model=None, device: str = "auto",
                 tiling: str = "auto", tile_above: int = 0, diameter="auto") -> None:
        super().__init__(labels=True)
        tune_cpu_if_requested(default=False)  # only with NAPARI_SAM_TUNE_CPU=1
        self.viewer = viewer
        model = os.fspath(model) if isinstance(model, os.PathLike) else model
        self._given_model = None if model is None or isinstance(model, str) else model
        self._closed = False
        self._prompts = None      # PromptLayers over the current image
        self._image = None
        self._key = None          # (layer id, slice, model key, channels) being shown
        self._ready = False       # the predictor holds the embedding of self._key
        self._segmenter = None
        self._committer = Committer(viewer)
        self.decode_ms = deque(maxlen=1000)  # prompt change -> preview shown, per update
        self._embedder = Embedder(self._on_progress, self._on_embedded, self._on_failed,
                                  self._on_busy)
        self._download = Downloader(self._on_progress, self._on_downloaded, self._on_failed,
                                    self._say, self._on_busy)
        self._build(model, device, tiling, tile_above)
        self.insert(self.index(self.status) + 1, self._download.row)
        self._tiled = TiledMode(self._on_progress, self._on_prompt_failed, self._on_busy,
                                self.candidate, self.status)
        self._tiled.hint = self._tiled_overlap_hint
        self.diameter.value = str(diameter)
        self._set_model()
        self._keys = KeyBindings(viewer, {
            KEYS["commit"]: self.commit, KEYS["next_mask"]: self.next_mask,
            KEYS["undo"]: self.undo, KEYS["negative"]: self.toggle_negative,
            KEYS["clear"]: self.clear})
        self.volume = VolumeActions(self)  # Segment in volume / Track (volume_actions.py)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        viewer.dims.events.current_step.connect(self._on_slice)
        on_close(self.native, self.release)
        if self.model.value == "bundled" and not BUNDLED_PATH.is_file():
            show_warning(f"napari-sam: the bundled model is missing ({BUNDLED_PATH}); choose "
                         "another model in the widget or reinstall napari-sam")
        active, images = viewer.layers.selection.active, self._image_choices()
        if active is not None and is_kind(active, "Image"):
            self.image.value = active
        elif images:
            self.image.value = images[-1][1]  # the top-most image
        if self._image is None:
            self._select_image(self.image.value)

    @property
    def ready(self) -> bool:
        """True when the displayed slice is embedded: clicks give previews at once."""
        return self._ready and not self._embedder.busy

    @property
    def tiled(self) -> TiledMode:
        """The tiled mode: `tiled.active` on large layers, `tiled.answer` the newest object."""
        return self._tiled

    @property
    def prompt_layers(self):
        return self._prompts

    @property
    def preview_layer(self):
        return self._prompts and self._prompts.preview

    @property
    def shapes_layer(self):
        return self._prompts and self._prompts.shapes

    @property
    def points_layer(self):
        return self._prompts and self._prompts.points

    # ---- layout --------------------------------------------------------------------------
    def _build(self, model, device: str, tiling: str, tile_above: int) -> None:
        build_controls(self, model, device, given=self._given_model is not None,
                       tiling=tiling, tile_above=tile_above)
        self.image.changed.connect(self._on_image_changed)
        for w in (self.model, self.model_file, self.device):
            w.changed.connect(self._on_model_changed)
        self.channels.changed.connect(self._on_channels_changed)
        self.diameter.changed.connect(lambda *_: self._ensure_embedding())
        for w in (self.tiling, self.tile_above):
            w.changed.connect(lambda *_: self._ensure_embedding())
        self.embed_button.changed.connect(lambda *_: self._ensure_embedding(force=True))
        self.cancel_button.changed.connect(self.cancel)
        self.negative.changed.connect(self._set_default_sign)
        self.next_button.changed.connect(self.next_mask)
        self.commit_button.changed.connect(self.commit)
        self.undo_button.changed.connect(self.undo)
        self.clear_button.changed.connect(self.clear)

    def _image_choices(self, *_):
        return [(ly.name, ly) for ly in self.viewer.layers if is_kind(ly, "Image")]

    def _labels_choices(self, *_):
        return [("new layer", None)] + [(ly.name, ly) for ly in self.viewer.layers
                                         if is_kind(ly, "Labels") and not self._owns(ly)]

    def _owns(self, layer) -> bool:
        return self._prompts is not None and layer in self._prompts.layers

    def reset_choices(self, *_) -> None:
        if not self._closed:  # napari keeps calling this after the widget closed
            super().reset_choices()

    def _on_layers_changed(self, *_) -> None:
        self.reset_choices()
        if self._closed:
            return
        if self._image is not None and self._image not in self.viewer.layers:
            return self._select_image(self.image.value)  # the image was deleted
        if self._prompts is not None and not self._prompts.alive():
            gone = [ly.name for ly in self._prompts.layers if ly not in self.viewer.layers]
            self._remove_prompt_layers()  # the others go too; all three come back at once
            QTimer.singleShot(0, lambda: self._restore_prompts(gone))  # after the removal

    def _restore_prompts(self, gone) -> None:
        """Make the prompt layers again after the user deleted one of them."""
        if self._closed or self._prompts is not None:
            return
        self._key = None
        self._ensure_embedding()  # from the cache: at once
        if self._prompts is not None:
            self.status.value = (f"{', '.join(gone)} was deleted: the prompt layers were made "
                                 "again (close this panel to remove them)")

    # ---- image, slice, model -> embedding --------------------------------------------------
    def _on_image_changed(self, *_) -> None:
        if self.image.value != self._image:
            self._select_image(self.image.value)

    def _select_image(self, image) -> None:
        if self._image is not None:
            self._image.events.data.disconnect(self._on_image_data)
        self._image, self._key, self._ready = image, None, False
        self._remove_prompt_layers()
        error = L.check_image(image)
        if error:
            self.status.value = error
            if image is not None:
                show_error(f"napari-sam: {error}")
            return
        image.events.data.connect(self._on_image_data)
        target = self.labels_layer.value
        if target is not None and L.check_labels(target, image) and \
                L.writable_level0(target, image)[1]:
            self.labels_layer.value = None  # made for another image: commit to a new layer
        self._ensure_embedding()

    def _on_image_data(self, *_) -> None:
        self._embedder.cache.drop_layer(self._image.unique_id)
        self._ensure_embedding(force=True)

    def _set_model(self) -> None:
        choice = self.model.value
        name = str(self.model_file.value) if choice == FILE_CHOICE else choice
        self._embedder.set_model(self._given_model if choice == GIVEN_CHOICE else None, name,
                                 self.device.value)

    def _on_model_changed(self, *_) -> None:
        self.model_file.visible = self.model.value == FILE_CHOICE
        self._download.forget(self.model.value)  # a new choice replaces a pending one
        self._set_model()
        self._ensure_embedding()

    def _channels(self):
        try:
            return parse_channels(self.channels.value)
        except ValueError:
            return None

    def _on_channels_changed(self, *_) -> None:
        try:
            parse_channels(self.channels.value)
        except ValueError as err:
            return show_error(f"napari-sam: {err}")
        self._ensure_embedding()

    def _target_key(self):
        model_key = (self.model.value, str(self.model_file.value), self.device.value)
        rule = TilingRule(self.tiling.value, int(self.tile_above.value))
        return (self._image.unique_id, L.slice_index(self.viewer, self._image), model_key,
                self._channels(), rule, self.size.value)

    def _on_slice(self, *_) -> None:
        if self._prompts is not None and self._target_key() != self._key:
            self._show_mask(None)
            self._ensure_embedding()

    def _ensure_embedding(self, force: bool = False) -> None:
        """Use the cached embedding of the displayed slice, or compute it in a worker."""
        image = self._image
        if L.check_image(image) or self._closed:
            return
        if self._prompts is None:
            self._prompts = PromptLayers(self.viewer, image, self.update_preview,
                                         lambda: self.negative.value)
            self.reset_choices()
        key = self._target_key()
        if key == self._key and (self._ready or self._embedder.busy) and not force:
            return
        self._key, self._ready = key, False
        self._tiled.stop()
        if self.model.value == "bundled" and not BUNDLED_PATH.is_file():
            self.status.value = "the bundled model is missing: choose another model"
        elif self.model.value == FILE_CHOICE and not self.model_file.value.is_file():
            self.status.value = "choose a model file (.pt / .pth)"
        elif missing(self.model.value) is not None:  # asked first, never fetched silently
            self._key = None
            self.status.value = self._download.ask(self.model.value)
        elif self._embedder.request(key, L.image_data(image), key[1], key[3], force,
                                    tiled_setup(image, key[4]), diameter=key[5]):
            self._use_embedding()

    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self._closed:  # a worker's last signals after the widget closed
            return
        self.progress.max, self.progress.value = total, done
        self.status.value = message

    def _error(self, message: str) -> None:
        show_error(message)

    def _say(self, message: str) -> None:
        if not self._closed:
            self.status.value = message

    def _on_downloaded(self, name: str) -> None:
        if not self._closed and self.model.value == name:
            self._ensure_embedding()

    def _on_busy(self, *_) -> None:
        if self._closed:
            return
        busy = self._embedder.busy or self._tiled.busy or self._download.busy
        self.cancel_button.enabled = self.progress.visible = busy

    def _on_prompt_failed(self, message: str) -> None:
        if self._closed:
            return
        if "empty prompt" in message:  # the tiled predictor found no anchor for them all
            self.status.value = hints.SEPARATE
            return
        show_error(f"napari-sam: {message}")
        self.status.value = f"failed: {message}"

    def _on_embedded(self, key) -> None:
        if key == self._key:
            self._use_embedding()

    def _on_failed(self, message: str) -> None:
        if self._closed:
            return
        show_error(f"napari-sam {message}. Choose another model or image, then press Embed.")
        self.status.value = f"failed: {message}"

    def cancel(self, *_) -> None:
        """Stop the running embedding (its result is discarded), or the tiles being embedded
        for a prompt on a large image (the ones done stay cached)."""
        if self._download.cancel():
            self.status.value = "cancelling the download..."
        elif self._embedder.busy:
            self._embedder.cancel()
            self.status.value = "embedding cancelled; press Embed to start again"
        elif self._tiled.cancel():
            self.status.value = "cancelled; change the prompts to try again"

    def _use_embedding(self) -> None:
        if self._embedder.tiled is not None:  # a large layer: tiles come with the prompts
            self._ready = True
            self.status.value = self._tiled.start(self._embedder.tiled, self._image,
                                                  self._prompts)
            return self.update_preview()
        self._tiled.stop(self._prompts, self._image)
        predictor = self._embedder.predictor
        if self._segmenter is None or self._segmenter.predictor is not predictor:
            self._segmenter = Segmenter(predictor)
        self._segmenter.reset()
        self._ready = True
        self.status.value = READY
        self.update_preview()

    # ---- prompts and preview -------------------------------------------------------------
    def _remove_prompt_layers(self) -> None:
        prompts, self._prompts = self._prompts, None
        if prompts is not None:
            prompts.remove()

    def _set_default_sign(self, *_) -> None:
        if self._prompts is not None:
            self._prompts.set_negative(self.negative.value)

    def release(self) -> None:
        """Give back key bindings and events, stop the worker, remove the prompt layers."""
        if self._closed:
            return
        self._closed = True
        self._keys.release()
        self.volume.release()
        self.viewer.layers.events.inserted.disconnect(self._on_layers_changed)
        self.viewer.layers.events.removed.disconnect(self._on_layers_changed)
        self.viewer.dims.events.current_step.disconnect(self._on_slice)
        if self._image is not None:
            self._image.events.data.disconnect(self._on_image_data)
        self._embedder.cancel()
        self._tiled.cancel()
        self._download.close()
        self.size.close()
        # layers are removed on the next turn of the event loop: removing them while napari
        # is still tearing the dock down crashes it (segfault)
        QTimer.singleShot(0, self._remove_prompt_layers)
