"""Checkpoint downloads for the widgets: asked first, shown in the widget, cancellable.

A registry model that is not in the cache (`model.hub`) is never fetched silently: the
widget shows a row "vit_b (Segment Anything ViT-B (Meta), 358 MB) is not downloaded" with a
*Download* button. The download runs in a worker thread (`hub.fetch` with a progress
callable); progress reaches the GUI thread through a queued Qt signal; *Cancel*, another
model choice or closing the widget stop it between two chunks (the partial file is removed
by `hub.fetch`).
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from magicgui.widgets import Container, Label, PushButton
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, Signal

from ..model import hub


def missing(name: str) -> Optional[hub.KnownCheckpoint]:
    """The registry entry of `name` when it is a known checkpoint not in the cache, else None."""
    known = hub.KNOWN_CHECKPOINTS.get(str(name))
    if known is None:
        return None
    final = hub._paths(known, None)[0]
    if final.is_file() and (known.size is None or final.stat().st_size == known.size):
        return None
    return known


def size_text(n: Optional[int]) -> str:
    if n is None:
        return "size not published"
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


class _Relay(QObject):
    """Carries (bytes done, bytes total; -1: unknown) from the worker to the GUI thread."""

    progressed = Signal(object, object)


class Downloader:
    """The "not downloaded" row of a widget and at most one download.

    Callbacks (GUI thread): progress(done_mb, total_mb, message), done(name) when the file is
    in the cache, failed(message), status(message), busy(bool).
    """

    def __init__(self, progress: Callable, done: Callable, failed: Callable,
                 status: Callable, busy: Callable) -> None:
        self._progress, self._done, self._failed = progress, done, failed
        self._status, self._busy = status, busy
        self.asked: Optional[str] = None     # the name shown in the row
        self.running: Optional[str] = None   # the name being downloaded
        self.worker = None
        self.closed = False   # the widget closed: its controls may be deleted already
        self._stop = threading.Event()
        self._relay = _Relay()
        self._relay.progressed.connect(self._on_progress)
        self.text = Label(value="")
        self.button = PushButton(text="Download")
        self.button.changed.connect(self.start)
        self.row = Container(widgets=[self.text, self.button], layout="horizontal",
                             labels=False, visible=False)
        self.text.native.setWordWrap(True)

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def ask(self, name: str) -> str:
        """Show the question for `name` (replacing any other); returns the status line."""
        known = hub.KNOWN_CHECKPOINTS[name]
        if self.running is not None and self.running != name:
            self.cancel()
        self.asked = name
        size = size_text(known.size)
        self.text.value = f"{name} ({known.description}, {size}) is not downloaded"
        self.button.enabled = self.running is None
        self.row.visible = True
        where = hub.cache_dir()
        return (f"{name} is not downloaded ({size}): press Download to fetch it into {where}, "
                "or choose another model")

    def forget(self, name: Optional[str] = None) -> None:
        """A new model choice: drop the question and stop a download of another model."""
        if self.running is not None and self.running != name:
            self.cancel()
        if self.asked != name:
            self.asked = None
            self.row.visible = False

    def start(self, *_) -> None:
        """Download the asked model in a worker thread."""
        name = self.asked
        if name is None or self.running is not None:
            return
        self._stop = threading.Event()
        stop, relay = self._stop, self._relay

        def report(done, total):
            if stop.is_set():
                raise hub.DownloadCancelled(f"the download of {name} was cancelled")
            relay.progressed.emit(done, -1 if total is None else total)

        self.running = name
        self.button.enabled = False
        self.worker = create_worker(
            hub.fetch, name, progress=report,
            _connect={"returned": lambda path: self._on_returned(name, stop),
                      "errored": lambda err: self._on_error(name, stop, err),
                      "finished": self._on_finished},
            _start_thread=False)
        self._busy(True)
        self._progress(0, 1, f"downloading {name}")
        self.worker.start()

    def cancel(self) -> bool:
        """Stop the running download between two chunks; True if one was running."""
        if self.worker is None:
            return False
        self._stop.set()
        return True

    def close(self) -> None:
        """The widget is closing: stop the download; touch no control from now on."""
        self.closed = True
        self.cancel()

    def _on_progress(self, done, total) -> None:
        if self.closed or self.running is None or self._stop.is_set():
            return
        mb = 1e6
        if total is not None and total > 0:
            self._progress(int(done / mb), max(1, int(total / mb)),
                           f"downloading {self.running}: {done / mb:.0f} of "
                           f"{total / mb:.0f} MB")
        else:
            self._progress(0, 0, f"downloading {self.running}: {done / mb:.0f} MB")

    def _on_returned(self, name: str, stop: threading.Event) -> None:
        if stop.is_set() or self.closed:
            return
        if self.asked == name:
            self.asked = None
            self.row.visible = False
        self._done(name)

    def _on_error(self, name: str, stop: threading.Event, err: Exception) -> None:
        if isinstance(err, hub.DownloadCancelled) or stop.is_set() or self.closed:
            return
        self._failed(f"could not download {name}: {err}")

    def _on_finished(self) -> None:
        name, cancelled = self.running, self._stop.is_set()
        self.worker = self.running = None
        if self.closed:
            return
        self.button.enabled = True
        self._busy(False)
        if cancelled and self.asked == name:  # Cancel pressed (not another model chosen)
            self._status(f"download of {name} cancelled; press Download to start again, or "
                         "choose another model")
