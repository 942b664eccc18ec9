"""A registry model that is not downloaded (issue 19, item 11): the widget asks first (name
and size), shows progress in the widget, Cancel stops the download between chunks, a new
choice replaces a pending one, closing the widget stops it. No network: `hub._open` serves
a small napari-sam checkpoint from memory, chunk by chunk."""

from __future__ import annotations

import hashlib
import io
import time

import pytest

from napari_sam import build_model
from napari_sam._napari.options import GIVEN_CHOICE
from napari_sam._napari.sample_data import nuclei
from napari_sam._napari.widget import SamWidget
from napari_sam.model import hub, save_checkpoint

pytestmark = pytest.mark.gui


class FakeResponse:
    def __init__(self, payload: bytes, delay: float, served: list) -> None:
        self._data, self.delay, self.served = io.BytesIO(payload), delay, served
        self.headers = {"Content-Length": str(len(payload))}

    def read(self, n):
        time.sleep(self.delay)
        block = self._data.read(n)
        self.served.append(len(block))
        return block

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """vit_b and vit_t replaced by a tiny checkpoint served slowly; the cache in tmp_path."""
    path = tmp_path / "payload.pt"
    save_checkpoint(path, build_model("test_vit"))
    payload = path.read_bytes()
    digest = hashlib.sha256(payload).hexdigest()
    for name in ("vit_b", "vit_t"):
        monkeypatch.setitem(hub.KNOWN_CHECKPOINTS, name, hub.KnownCheckpoint(
            name, f"http://example.invalid/{name}.pt", digest, len(payload), "vit_b",
            f"fake_{name}.pt", f"fake {name}"))
    cache = tmp_path / "cache"
    monkeypatch.setenv(hub.ENV_CACHE, str(cache))
    monkeypatch.setattr(hub, "CHUNK", 32 * 1024)
    state = {"delay": 0.05, "opened": [], "served": []}

    def fake_open(url):
        state["opened"].append(url)
        return FakeResponse(payload, state["delay"], state["served"])

    monkeypatch.setattr(hub, "_open", fake_open)
    state["cache"], state["size"] = cache, len(payload)
    return state


def open_widget(viewer, qtbot, wait, disk_model):
    data, kwargs, _ = nuclei()[0]
    viewer.add_image(data, **kwargs)
    w = SamWidget(viewer, model=disk_model, diameter="off")
    viewer.window.add_dock_widget(w)
    wait(qtbot, w)
    return w


def shown(widget) -> bool:
    """Not hidden (the viewer itself is not shown in these tests)."""
    return not widget.native.isHidden()


def leftovers(cache):
    return sorted(p.name for p in cache.glob("*")) if cache.exists() else []


def test_download_is_asked_shown_cancelled_and_replaced(make_napari_viewer, qtbot, wait,
                                                        disk_model, fake_hub):
    viewer = make_napari_viewer()
    w = open_widget(viewer, qtbot, wait, disk_model)
    w.model.value = "vit_b"
    qtbot.wait(200)
    # asked first: name and size, nothing fetched
    assert fake_hub["opened"] == [] and not w._download.busy and not w.ready
    row = w._download.row
    assert shown(row) and "vit_b" in w._download.text.value and "2 MB" in w._download.text.value
    assert "not downloaded" in w.status.value and "Download" in w.status.value
    # progress in the widget, Cancel stops it between chunks and removes the partial file
    w._download.button.native.click()
    qtbot.waitUntil(lambda: w.progress.value > 0, timeout=10_000)
    assert shown(w.progress) and w.status.value.startswith("downloading vit_b")
    assert w.cancel_button.enabled
    w.cancel_button.native.click()
    qtbot.waitUntil(lambda: not w._download.busy, timeout=10_000)
    assert sum(fake_hub["served"]) < fake_hub["size"]  # stopped early
    assert leftovers(fake_hub["cache"]) == [] and "cancelled" in w.status.value
    assert not shown(w.progress)
    # a new choice replaces a pending one: the running download stops, the widget works
    w._download.button.native.click()
    qtbot.waitUntil(lambda: w.progress.value > 0, timeout=10_000)
    w.model.value = "vit_t"
    assert "vit_t" in w._download.text.value and shown(row)
    w.model.value = GIVEN_CHOICE
    assert not shown(row)
    wait(qtbot, w)  # the given model is embedded while the download winds down
    qtbot.waitUntil(lambda: not w._download.busy, timeout=10_000)
    assert leftovers(fake_hub["cache"]) == []
    # a completed download is verified, placed in the cache and used
    fake_hub["delay"] = 0.0
    w.model.value = "vit_b"
    w._download.button.native.click()
    wait(qtbot, w, timeout=60_000)
    assert "fake_vit_b.pt" in leftovers(fake_hub["cache"]) and not shown(row)
    assert w._embedder.model.source == "vit_b"


@pytest.mark.parametrize("how", ["remove_dock_widget", "close_window"])
def test_closing_the_widget_stops_the_download(make_napari_viewer, qtbot, wait, disk_model,
                                               fake_hub, how):
    viewer = make_napari_viewer(show=how == "close_window")
    w = open_widget(viewer, qtbot, wait, disk_model)
    w.model.value = "vit_t"
    w._download.button.native.click()
    qtbot.waitUntil(lambda: w.progress.value > 0, timeout=10_000)
    worker = w._download.worker
    done = []
    worker.finished.connect(lambda: done.append(1))
    if how == "close_window":
        viewer.close()
    else:
        viewer.window.remove_dock_widget(w.native)
    qtbot.waitUntil(lambda: bool(done), timeout=10_000)
    assert sum(fake_hub["served"]) < fake_hub["size"]
    assert leftovers(fake_hub["cache"]) == []


def test_automask_does_not_download_silently(make_napari_viewer, qtbot, fake_hub):
    from napari_sam._napari.automask_widget import AutomaskWidget

    viewer = make_napari_viewer()
    data, kwargs, _ = nuclei()[0]
    viewer.add_image(data, **kwargs)
    w = AutomaskWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model.value = "vit_b"
    w.run()
    qtbot.waitUntil(lambda: not w.busy, timeout=10_000)
    assert fake_hub["opened"] == [] and w.result_layer is None
    assert "vit_b is not downloaded" in w.status.value and "2 MB" in w.status.value
