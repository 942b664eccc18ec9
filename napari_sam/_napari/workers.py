"""Embeddings computed in a napari worker: one at a time, cached, the newest request wins."""

from __future__ import annotations

from typing import Callable, Optional

from napari.qt.threading import create_worker

from ..predictor import Predictor
from .embedding import EmbeddingCache, embed_job


class Embedder:
    """Holds the model, a cache of image embeddings and at most one embedding worker.

    `request(key, ...)` serves a cached embedding at once; otherwise it starts a worker, or,
    while one runs, remembers the request and serves it when the worker ends. Callbacks run on
    the GUI thread: progress(done, total, message), ready(key), failed(message), busy(bool).
    """

    def __init__(self, progress: Callable, ready: Callable, failed: Callable, busy: Callable):
        self._progress, self._ready, self._failed, self._busy = progress, ready, failed, busy
        self.cache = EmbeddingCache()
        self.model = None
        self.model_name, self.device = "bundled", "auto"
        self.predictor: Optional[Predictor] = None
        self.worker = None
        self.wanted = None        # (key, data, index, channels) of the newest request
        self.failed_key = None
        self._generation = 0      # bumped by set_model: older workers' results are dropped

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def set_model(self, model, name: str, device: str) -> None:
        """Use `model` (a Sam), or load `name` on `device` in the next worker if it is None."""
        self.model, self.model_name, self.device = model, name, device
        self.predictor = None
        self.cache.clear()
        self.failed_key = None
        self._generation += 1

    def request(self, key, data, index, channels, force: bool = False) -> bool:
        """Ask for the embedding of `data[index]`; True if the predictor holds it now."""
        self.wanted = (key, data, index, channels)
        if force:
            self.failed_key = None
        elif key == self.failed_key:
            return False
        emb = None if force else self.cache.get(key)
        if emb is not None and self.predictor is not None:
            self.predictor.set_embedding(emb)
            return True
        if self.worker is None:
            self._start()
        return False

    def cancel(self) -> None:
        if self.worker is not None:
            self.wanted = None
            self.worker.quit()

    def _start(self) -> None:
        key, data, index, channels = self.wanted
        generation = self._generation
        self.worker = create_worker(
            embed_job, self.model, self.model_name, self.device, data, index, channels,
            _connect={"yielded": lambda step: self._progress(*step),
                      "returned": lambda result: self._done(generation, key, result),
                      "errored": lambda err: self._fail(key, str(err)),
                      "finished": self._finished},
            _start_thread=False)
        self._busy(True)
        self.worker.start()

    def _done(self, generation: int, key, result) -> None:
        if result.error:
            return self._fail(key, result.error)
        if generation != self._generation:
            return  # the model was changed while this worker ran
        if self.predictor is None:
            self.model = result.model
            # decoding runs on the GUI thread: fp32 is the fastest for the small decoder
            self.predictor = Predictor(result.model, self.device, precision="fp32")
        self.cache.put(key, result.embedding)
        if self.wanted is not None and self.wanted[0] == key:
            self.predictor.set_embedding(result.embedding)
            self._ready(key)

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
