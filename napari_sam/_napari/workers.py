"""napari workers: embeddings (`Embedder`) and tiled prompts (`TiledPrompter`), each one at a
time, the newest request winning."""

from __future__ import annotations

from typing import Callable, Optional

from napari.qt.threading import create_worker

from ..predictor import Predictor
from .embedding import EmbeddingCache, TiledSetup, embed_job
from .tiled_jobs import predict_job


class Embedder:
    """Holds the model, a cache of image embeddings and at most one embedding worker.

    `request(key, ...)` serves a cached embedding at once; otherwise it starts a worker, or,
    while one runs, remembers the request and serves it when the worker ends. Callbacks run on
    the GUI thread: progress(done, total, message), ready(key), failed(message), busy(bool).
    For a layer that `tiled` wants tiled, the cached thing is an `OnDemandPredictor`, held in
    `tiled` while that key is shown (None otherwise).

    With the diameter on "auto" (None), the first slice of a layer estimates it (checked by
    the model, up to a second) and the other slices of that layer, with the same model and
    channels, reuse the value, as the batch functions use one diameter per stack; keys are
    (layer id, slice, model, channels, tiling, diameter), see `SamWidget._target_key`.
    """

    def __init__(self, progress: Callable, ready: Callable, failed: Callable, busy: Callable):
        self._progress, self._ready, self._failed, self._busy = progress, ready, failed, busy
        self.cache = EmbeddingCache()
        self.model = None
        self.model_name, self.device = "bundled", "auto"
        self.predictor: Optional[Predictor] = None
        self.tiled = None         # the OnDemandPredictor of the shown key, if it is tiled
        self.worker = None
        self.wanted = None        # (key, data, index, channels, tiled) of the newest request
        self.failed_key = None
        self._generation = 0      # bumped by set_model: older workers' results are dropped
        self.diameters = {}       # (layer id, model, channels) -> diameter found on "auto"

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def set_model(self, model, name: str, device: str) -> None:
        """Use `model` (a Sam), or load `name` on `device` in the next worker if it is None."""
        self.model, self.model_name, self.device = model, name, device
        self.predictor = self.tiled = None
        self.cache.clear()
        self.diameters.clear()
        self.failed_key = None
        self._generation += 1

    def request(self, key, data, index, channels, force: bool = False,
                tiled: Optional[TiledSetup] = None, diameter=None) -> bool:
        """Ask for the embedding of `data[index]` (objects of `diameter`, see `embed_job`);
        True if the predictor (or `self.tiled`) holds it now."""
        self.wanted = (key, data, index, channels, tiled, diameter)
        self.tiled = None
        if force:
            self.failed_key = None
            self.diameters.pop(_layer_of(key), None)  # asked again: estimate again
        elif key == self.failed_key:
            return False
        emb = None if force else self.cache.get(key)
        if emb is not None and self.predictor is not None:
            self._hold(emb)
            return True
        if self.worker is None:
            self._start()
        return False

    def cancel(self) -> None:
        if self.worker is not None:
            self.wanted = None
            self.worker.quit()

    def _start(self) -> None:
        key, data, index, channels, tiled, diameter = self.wanted
        generation = self._generation
        auto = diameter is None
        if auto:
            diameter = self.diameters.get(_layer_of(key), None)
        self.worker = create_worker(
            embed_job, self.model, self.model_name, self.device, data, index, channels, tiled,
            diameter,
            _connect={"yielded": lambda step: self._progress(*step),
                      "returned": lambda result: self._done(generation, key, result, auto),
                      "errored": lambda err: self._fail(key, str(err)),
                      "finished": self._finished},
            _start_thread=False)
        self._busy(True)
        self.worker.start()

    def _done(self, generation: int, key, result, auto: bool = False) -> None:
        if result.error:
            return self._fail(key, result.error)
        if generation != self._generation:
            return  # the model was changed while this worker ran
        if auto and result.diameter is not None:
            self.diameters.setdefault(_layer_of(key), result.diameter)
        if self.predictor is None:
            self.model = result.model
            # decoding runs on the GUI thread: fp32 is the fastest for the small decoder
            self.predictor = Predictor(result.model, self.device, precision="fp32")
        self.cache.put(key, result.tiled or result.embedding)
        if self.wanted is not None and self.wanted[0] == key:
            self._hold(result.tiled or result.embedding)
            self._ready(key)

    def _hold(self, emb) -> None:
        """Make `emb` (an ImageEmbedding or an OnDemandPredictor) the one in use."""
        if hasattr(emb, "embeddings"):  # tiled: tiles are embedded under the prompts
            self.tiled = emb
        else:
            self.tiled = None
            self.predictor.set_embedding(emb)

    def _fail(self, key, message: str) -> None:
        self.failed_key = key
        self._failed(message)

    def _finished(self) -> None:
        self.worker = None
        self._busy(False)
        if self.wanted is None:
            return  # cancelled
        key = self.wanted[0]
        if key != self.failed_key and (key not in self.cache or self.predictor is None):
            self._start()  # the slice, image or model changed meanwhile: the newest wins


class TiledPrompter:
    """Answers prompts on a large layer in a worker: `predict_job` embeds the tiles under
    the prompt (progress, cancel between tiles) and returns a TiledAnswer.

    One job at a time; a request made while one runs replaces the waiting one and starts
    when it ends; only the newest request's answer is delivered. Callbacks run on the GUI
    thread: progress(done, total, message), answered(answer), failed(message), busy(bool).
    """

    def __init__(self, progress: Callable, answered: Callable, failed: Callable,
                 busy: Callable) -> None:
        self._progress, self._answered, self._failed, self._busy = (progress, answered,
                                                                    failed, busy)
        self.worker = None
        self.wanted = None      # (serial, predictor, points, labels, box, choice)
        self._serial = 0        # bumped by every request and by drop()

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def request(self, tp, points, labels, box, choice=None) -> None:
        self._serial += 1
        self.wanted = (self._serial, tp, points, labels, box, choice)
        if self.worker is None:
            self._start()

    def drop(self) -> None:
        """Forget the waiting request; an answer still being computed is not delivered."""
        self._serial += 1
        self.wanted = None

    def cancel(self) -> None:
        self.drop()
        if self.worker is not None:
            self.worker.quit()

    def _start(self) -> None:
        serial, tp, points, labels, box, choice = self.wanted
        self.wanted = None
        self.worker = create_worker(
            predict_job, tp, points, labels, box, choice,
            _connect={"yielded": lambda step: self._progress(*step),
                      "returned": lambda answer: self._done(serial, answer),
                      "errored": lambda err: self._failed(str(err)),
                      "finished": self._finished},
            _start_thread=False)
        self._busy(True)
        self.worker.start()

    def _done(self, serial: int, answer) -> None:
        if serial == self._serial:  # still the newest request
            self._answered(answer)

    def _finished(self) -> None:
        self.worker = None
        self._busy(False)
        if self.wanted is not None:
            self._start()


def _layer_of(key) -> tuple:
    """(layer id, model, channels) of an embedding key (`SamWidget._target_key`)."""
    return key[0], key[2], key[3]
