"""Viewer key bindings owned by a widget, given back when the widget closes."""

from __future__ import annotations

from typing import Callable, Dict


class KeyBindings:
    """Binds keys on a viewer and restores what was bound before on `release()`."""

    def __init__(self, viewer, keys: Dict[str, Callable[[], None]]) -> None:
        self.viewer = viewer
        self._previous: Dict[str, object] = {}
        for key, action in keys.items():
            self._previous[key] = viewer.bind_key(key, _as_binding(action), overwrite=True)

    def release(self) -> None:
        for key, previous in self._previous.items():
            self.viewer.bind_key(key, previous, overwrite=True)
        self._previous.clear()


def _as_binding(action: Callable[[], None]):
    def binding(viewer):
        action()

    binding.__doc__ = action.__doc__
    return binding


def on_close(widget, callback: Callable[[], None]) -> None:
    """Call `callback` when the Qt widget is closed or taken out of its dock."""
    from qtpy.QtCore import QEvent, QObject

    class _Watcher(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 (Qt's name)
            kind = event.type()
            if kind == QEvent.Close or (kind == QEvent.ParentChange and obj.parent() is None):
                callback()
            return False

    watcher = _Watcher(widget)
    widget.installEventFilter(watcher)
    widget.destroyed.connect(lambda *_: callback())
