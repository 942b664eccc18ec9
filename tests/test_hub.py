"""Checkpoint registry and hash-verified downloads, against a real local HTTP server."""

import hashlib
import http.server
import re
import socket
import sys
import threading
import types

import pytest
import torch

from napari_sam.model import hub
from napari_sam.model.hub import KNOWN_CHECKPOINTS, DownloadError, KnownCheckpoint, fetch
from napari_sam.model.sam2 import SAM2_CONFIGS


class _Handler(http.server.BaseHTTPRequestHandler):
    routes = {}  # path -> (body, mode); set per server
    hits = None

    def do_GET(self):  # noqa: N802
        self.hits.append(self.path)
        if self.path not in self.routes:
            self.send_error(404)
            return
        body, mode = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode == "short":  # promise more than is sent, then hang up
            self.send_header("Content-Length", str(len(body) + 4096))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def payload(tmp_path):
    gen = torch.Generator().manual_seed(0)
    path = tmp_path / "tiny.pt"
    torch.save({"mask_decoder.w": torch.randn(64, 64, generator=gen)}, path)
    return path.read_bytes()


@pytest.fixture
def server(payload):
    hits = []
    handler = type("H", (_Handler,), {"hits": hits, "routes": {
        "/tiny.pt": (payload, "ok"), "/short.pt": (payload, "short")}})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield base, hits
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_SAM_CACHE", str(folder))
    monkeypatch.delenv("NAPARI_SAM_MIRROR", raising=False)
    return folder


def _known(url, data, **kw):
    fields = dict(name="tiny", url=url, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
                  arch="vit_b", filename="tiny.pt", description="test checkpoint")
    fields.update(kw)
    return KnownCheckpoint(**fields)


def _left(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_dir_env(cache):
    assert hub.cache_dir() == cache


def test_download_verifies_and_caches(server, payload, cache):
    base, hits = server
    k = _known(f"{base}/tiny.pt", payload)
    path = fetch(k, progress=False)
    assert path == cache / "tiny.pt" and path.read_bytes() == payload
    assert (cache / "tiny.pt.sha256").read_text().startswith("sha256:" + k.sha256)
    assert torch.load(path, weights_only=True)["mask_decoder.w"].shape == (64, 64)
    assert fetch(k, progress=False) == path
    assert hits == ["/tiny.pt"]  # the second fetch came from the cache
    # a cached file without its marker is hashed once, not downloaded again
    (cache / "tiny.pt.sha256").unlink()
    assert fetch(k, progress=False) == path and (cache / "tiny.pt.sha256").is_file()
    assert len(hits) == 1
    # a corrupted cached file of the right size is replaced by a fresh download
    path.write_bytes(b"x" * len(payload))
    (cache / "tiny.pt.sha256").unlink()
    assert fetch(k, progress=False).read_bytes() == payload and len(hits) == 2


def test_hash_mismatch_leaves_nothing(server, payload, cache):
    base, _ = server
    k = _known(f"{base}/tiny.pt", payload, sha256="0" * 64)
    with pytest.raises(DownloadError, match="hash mismatch.*expected sha256 0{64}, got") as err:
        fetch(k, progress=False)
    assert "discarded" in str(err.value)
    assert _left(cache) == []


def test_size_mismatch_leaves_nothing(server, payload, cache):
    base, _ = server
    with pytest.raises(DownloadError, match="size mismatch"):
        fetch(_known(f"{base}/tiny.pt", payload, size=len(payload) + 1), progress=False)
    assert _left(cache) == []


def test_interrupted_download_leaves_nothing(server, payload, cache):
    base, _ = server
    with pytest.raises(DownloadError, match="incomplete|broke off"):
        fetch(_known(f"{base}/short.pt", payload), progress=False)
    assert _left(cache) == []


def test_http_error(server, payload, cache):
    base, _ = server
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(_known(f"{base}/missing.pt", payload), progress=False)
    assert _left(cache) == []


def test_server_down(payload, cache):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as err:
        fetch(_known(f"http://127.0.0.1:{port}/tiny.pt", payload), progress=False)
    msg = str(err.value)
    assert "could not reach" in msg and "offline" in msg and "by hand" in msg
    assert _left(cache) == []


def test_ctrl_c_discards_partial(payload, cache, monkeypatch):
    class Resp:
        headers = {"Content-Length": str(len(payload))}
        calls = 0

        def read(self, n):
            Resp.calls += 1
            if Resp.calls > 1:
                raise KeyboardInterrupt
            return payload[:10]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(hub, "_open", lambda url: Resp())
    with pytest.raises(KeyboardInterrupt) as err:
        fetch(_known("http://example.invalid/tiny.pt", payload), progress=False)
    assert isinstance(err.value, DownloadError) and "interrupted" in str(err.value)
    assert _left(cache) == []


def test_unverifiable_needs_verify_false(server, payload, cache, monkeypatch):
    base, hits = server
    monkeypatch.setitem(sys.modules, "xxhash", None)  # make `import xxhash` fail
    k = _known(f"{base}/tiny.pt", payload, sha256=None, xxh128="0" * 32)
    with pytest.raises(DownloadError, match="verify=False"):
        fetch(k, progress=False)
    assert hits == [] and _left(cache) == []
    assert fetch(k, progress=False, verify=False).read_bytes() == payload


def test_xxh128_checked_when_available(server, payload, cache, monkeypatch):
    base, _ = server
    fake = types.SimpleNamespace(xxh128=hashlib.md5)  # stand-in with the same interface
    monkeypatch.setitem(sys.modules, "xxhash", fake)
    good = hashlib.md5(payload).hexdigest()
    k = _known(f"{base}/tiny.pt", payload, sha256=None, xxh128=good)
    assert fetch(k, progress=False).read_bytes() == payload
    assert (cache / "tiny.pt.sha256").read_text().startswith("xxh128:" + good)
    bad = _known(f"{base}/tiny.pt", payload, sha256=None, xxh128="0" * 32, filename="b.pt")
    with pytest.raises(DownloadError, match="hash mismatch"):
        fetch(bad, progress=False)


def test_mirror_and_list(server, payload, cache, monkeypatch):
    base, hits = server
    monkeypatch.setenv("NAPARI_SAM_MIRROR", base)
    k = _known("https://example.invalid/elsewhere.pt", payload)
    monkeypatch.setitem(KNOWN_CHECKPOINTS, "tiny", k)
    rows = {r["name"]: r for r in hub.list_checkpoints()}
    assert rows["tiny"]["cached"] is False and rows["vit_h"]["arch"] == "vit_h"
    fetch("tiny", progress=False)
    assert hits == ["/tiny.pt"]
    assert hub.list_checkpoints()[-1]["cached"] is True


def test_unknown_name():
    with pytest.raises(KeyError, match="vit_b_lm"):
        fetch("vit_zz")


def test_known_checkpoints_well_formed():
    assert {"vit_b", "vit_l", "vit_h", "vit_t", "vit_b_lm", "vit_l_lm",
            "vit_b_em_organelles"} <= set(KNOWN_CHECKPOINTS)
    filenames = [k.filename for k in KNOWN_CHECKPOINTS.values()]
    assert len(set(filenames)) == len(filenames)
    for name, k in KNOWN_CHECKPOINTS.items():
        assert k.name == name and (k.arch in {"vit_b", "vit_l", "vit_h", "vit_t"}
                                   or k.arch in SAM2_CONFIGS)
        assert re.fullmatch(r"https://[\w.-]+/\S+", k.url), k.url
        assert k.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", k.sha256), name
        assert k.xxh128 is None or re.fullmatch(r"[0-9a-f]{32}", k.xxh128), name
        assert k.sha256 or k.xxh128, name
        assert k.size is None or (isinstance(k.size, int) and k.size > 0)
        assert "/" not in k.filename and k.description
    sam2 = [f"sam2.1_hiera_{s}" for s in ("tiny", "small", "base_plus", "large")]
    for name in ["vit_b", "vit_l", "vit_h", "vit_t"] + sam2:
        assert KNOWN_CHECKPOINTS[name].sha256 and KNOWN_CHECKPOINTS[name].size
    for name in sam2:
        assert KNOWN_CHECKPOINTS[name].arch == name


def test_cli_models_list(cache, capsys):
    from napari_sam.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in KNOWN_CHECKPOINTS:
        assert name in out
    assert "bundled" in out and str(cache) in out


def test_cli_models_download(server, payload, cache, capsys, monkeypatch):
    from napari_sam.cli import main

    base, _ = server
    monkeypatch.setitem(KNOWN_CHECKPOINTS, "tiny", _known(f"{base}/tiny.pt", payload))
    assert main(["models", "download", "-q", "tiny"]) == 0
    assert str(cache / "tiny.pt") in capsys.readouterr().out
    assert main(["models", "download", "-q", "nope"]) == 1
    assert "unknown checkpoint" in capsys.readouterr().err
