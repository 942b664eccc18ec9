"""Fault injection: damaged embedding caches, killed writes, cut downloads, resumed batches.

Each test damages something on disk the way a crash, a full disk or a flaky network does,
and checks that the damage is detected: the work is redone, or the error names the file
and the fix. Nothing is read back silently wrong.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import pytest
import torch

from napari_sam import build_model
from napari_sam.tiled.cache import CacheCorruptError, CacheMismatchError
from napari_sam.tiled import TiledEmbeddings


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("test_vit")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    img = rng.normal(1000, 50, (300, 300)).astype(np.uint16)
    img[60:200, 80:220] += 2000
    return img


@pytest.fixture
def cached(model, image, tmp_path, one_thread):
    """A cache folder with every tile computed, and the tiles' true features."""
    cache = tmp_path / "cache"
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache,
                          precision="fp32")
    emb.compute()
    truth = {t.index: emb.store.get(t.index) for t in emb.grid}
    return cache, truth


def _chunk(cache, index=(0, 0)):
    return cache / "features" / f"{index[0]}.{index[1]}.0.0.0"


def _flip(path, offsets=(40, 41)):
    data = bytearray(path.read_bytes())
    for o in offsets:
        data[o % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "deleted": lambda p: p.unlink(),
    "flipped": lambda p: _flip(p, (len(p.read_bytes()) // 2, len(p.read_bytes()) // 2 + 7)),
    "garbled": lambda p: p.write_bytes(os.urandom(len(p.read_bytes()))),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]),
    "emptied": lambda p: p.write_bytes(b""),
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_chunk_is_detected_then_recomputed(model, image, cached, how):
    cache, truth = cached
    DAMAGE[how](_chunk(cache))
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache,
                          precision="fp32")
    with pytest.raises(CacheCorruptError, match=str(cache).replace("\\", "\\\\")):
        emb.store.get((0, 0))
    with pytest.warns(RuntimeWarning, match="damaged.*recomputing"):
        f = emb.features(emb.grid[0, 0])
    np.testing.assert_allclose(f[0].numpy(), truth[(0, 0)], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(emb.store.get((0, 0)), truth[(0, 0)])  # repaired on disk
    with warnings.catch_warnings():  # the other tiles are read as they are
        warnings.simplefilter("error")
        np.testing.assert_array_equal(emb.features(emb.grid[0, 1])[0].numpy(), truth[(0, 1)])


def test_marker_without_checksum_is_not_trusted(model, image, cached):
    cache, truth = cached
    (cache / "done" / "0_1").write_bytes(b"")  # an older cache, or a damaged marker
    emb = TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache,
                          precision="fp32")
    with pytest.raises(CacheCorruptError, match="no checksum"):
        emb.store.get((0, 1))
    with pytest.warns(RuntimeWarning):
        np.testing.assert_allclose(emb.features(emb.grid[0, 1])[0].numpy(), truth[(0, 1)],
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("how", ["garbled", "deleted", "wrong shape"])
def test_damaged_array_metadata_names_the_folder_and_the_fix(model, image, cached, how):
    cache, _ = cached
    meta = cache / "features" / ".zarray"
    if how == "garbled":
        meta.write_text('{"chunks": [1, 1, 3')
    elif how == "deleted":
        meta.unlink()
    else:
        d = json.loads(meta.read_text())
        d["shape"][0] += 1
        meta.write_text(json.dumps(d))
    with pytest.raises(CacheMismatchError) as info:
        TiledEmbeddings(model, image, tile_size=256, overlap=64, cache=cache)
    assert str(cache) in str(info.value) and "Delete" in str(info.value)


# ---- resumed batches and files left by killed writes -----------------------------------
@pytest.fixture(scope="module")
def generator():
    from napari_sam import AutoMaskGenerator
    from test_automask import OraclePredictor

    return AutoMaskGenerator(OraclePredictor(), points_per_side=12, points_per_batch=144)


@pytest.fixture
def one_input(tmp_path):
    import tifffile
    from test_automask import disc_image

    image, _ = disc_image(centres=[(30, 30), (30, 90), (90, 40)], seed=0)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "cells.tif", image)
    return folder / "cells.tif"


def test_resumed_batch_keeps_the_scores_in_coco(tmp_path, generator, one_input, one_thread):
    from napari_sam.batch import run_batch
    from napari_sam.io.labels import read_label_records

    out = tmp_path / "out"
    opts = dict(generator=generator, pred_iou_thresh=0.9, stability_thresh=0.9)
    run_batch([str(one_input)], out, **opts)
    first = json.loads((out / "cells_coco.json").read_text())["annotations"]
    assert first and all({"score", "predicted_iou", "stability_score"} <= set(a) for a in first)
    assert {r["id"] for r in read_label_records(out / "cells_labels.tif")} == \
        {a["label_id"] for a in first}
    (out / "cells_coco.json").unlink()  # killed before the COCO file was written
    s = run_batch([str(one_input)], out, **opts)
    assert s["files"][0]["status"] == "completed"
    again = json.loads((out / "cells_coco.json").read_text())["annotations"]
    key = lambda a: a["label_id"]  # noqa: E731
    for a, b in zip(sorted(first, key=key), sorted(again, key=key)):
        for k in ("label_id", "score", "predicted_iou", "stability_score", "area"):
            assert a[k] == pytest.approx(b[k], abs=1e-6), k


def test_batch_removes_partial_files_of_killed_writes(tmp_path, generator, one_input):
    import subprocess
    import sys
    import textwrap

    from napari_sam.batch import run_batch
    from napari_sam.io.atomic import atomic_write, partial_files

    out = tmp_path / "out"
    out.mkdir()
    # a writer killed with SIGKILL in the middle of a write
    import napari_sam.io.atomic as atomic_module

    # the module alone (no torch to import): the writer starts in a fraction of a second
    script = textwrap.dedent(f"""
        import importlib.util, os, signal
        spec = importlib.util.spec_from_file_location("atomic", {atomic_module.__file__!r})
        atomic = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(atomic)
        with atomic.atomic_write({str(out / 'cells_labels.tif')!r}) as f:
            f.write(b"half a file")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", script], check=False, timeout=120)
    stale = partial_files(out)
    assert len(stale) == 1 and not (out / "cells_labels.tif").exists()
    old = time.time() - 60
    os.utime(stale[0], (old, old))
    # a live writer's temporary file in the same folder is left alone
    logs = []
    with atomic_write(out / "other.json", mode="w") as f:
        f.write("{}")
        live = partial_files(out)
        os.utime([p for p in live if p != stale[0]][0], (old, old))
        s = run_batch([str(one_input)], out, generator=generator, pred_iou_thresh=0.9,
                      stability_thresh=0.9, log=logs.append)
        assert [p.name for p in partial_files(out)] == [".other.json" + p.name[len(
            ".other.json"):] for p in partial_files(out)]
        assert len(partial_files(out)) == 1  # only the live one is left
    assert s["failed"] == 0 and (out / "cells_labels.tif").is_file()
    assert partial_files(out) == [] and (out / "other.json").read_text() == "{}"
    assert any("removed 1 temporary file" in m for m in logs)


def test_summary_json_is_written_atomically(tmp_path, monkeypatch, capsys):
    from napari_sam.commands import automask as cmd

    summary = tmp_path / "summary.json"
    summary.write_text('{"old": true}')
    fake = {"inputs": 0, "processed": 0, "skipped": 0, "failed": 0, "objects": 0,
            "seconds": 0.0, "outdir": str(tmp_path), "files": []}
    monkeypatch.setattr("napari_sam.batch.run_batch", lambda *a, **k: fake)

    def full_disk(obj, f, **kw):
        f.write('{"inputs": ')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cmd.json, "dump", full_disk)
    from napari_sam.cli import main

    rc = main(["automask", str(tmp_path / "x.tif"), "-o", str(tmp_path / "o"), "-q",
               "--tiling", "off", "--summary-json", str(summary)])
    err = capsys.readouterr().err
    assert rc == 1 and "No space left" in err and "Traceback" not in err
    assert summary.read_text() == '{"old": true}'  # the old file, never a stub
    from napari_sam.io.atomic import partial_files

    assert partial_files(tmp_path) == []


# ---- downloads -------------------------------------------------------------------------
class _Resp:
    """A response without Content-Length that ends early when `cut`."""

    def __init__(self, body, cut=False, hits=None):
        self.body = body[: len(body) // 2] if cut else body
        self.headers = {}
        self.pos = 0
        if hits is not None:
            hits.append(cut)

    def read(self, n):
        block = self.body[self.pos:self.pos + n]
        self.pos += len(block)
        return block

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    monkeypatch.setenv("NAPARI_SAM_CACHE", str(folder))
    monkeypatch.delenv("NAPARI_SAM_MIRROR", raising=False)
    return folder


@pytest.fixture
def checkpoint_bytes(tmp_path):
    from napari_sam.model import save_checkpoint

    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model("test_vit"))
    return path.read_bytes()


def _unverified(name="nohash"):
    from napari_sam.model.hub import KnownCheckpoint

    return KnownCheckpoint(name, f"http://example.invalid/{name}.pt", None, None, "vit_b",
                           f"{name}.pt", "no hash, no size")


def test_cut_download_without_length_is_never_placed(hub_cache, checkpoint_bytes,
                                                     monkeypatch):
    from napari_sam.model import hub

    hits = []
    monkeypatch.setattr(hub, "_open", lambda url: _Resp(checkpoint_bytes, cut=True, hits=hits))
    k = _unverified()
    with pytest.raises(hub.DownloadError, match="not a complete checkpoint.*try again"):
        hub.fetch(k, progress=False, verify=False)
    assert not hub_cache.exists() or list(hub_cache.iterdir()) == []
    monkeypatch.setattr(hub, "_open", lambda url: _Resp(checkpoint_bytes, hits=hits))
    path = hub.fetch(k, progress=False, verify=False)
    assert path.read_bytes() == checkpoint_bytes
    assert (hub_cache / "nohash.pt.sha256").read_text().startswith("local-sha256:")
    assert hub.fetch(k, progress=False, verify=False) == path and len(hits) == 2  # cached


def test_half_file_already_in_the_cache_is_downloaded_again(hub_cache, checkpoint_bytes,
                                                            monkeypatch):
    from napari_sam.model import hub

    hub_cache.mkdir()
    (hub_cache / "nohash.pt").write_bytes(checkpoint_bytes[: len(checkpoint_bytes) // 2])
    hits = []
    monkeypatch.setattr(hub, "_open", lambda url: _Resp(checkpoint_bytes, hits=hits))
    path = hub.fetch(_unverified(), progress=False, verify=False)
    assert path.read_bytes() == checkpoint_bytes and hits == [False]


def test_download_again_really_downloads(hub_cache, checkpoint_bytes, monkeypatch, capsys):
    from napari_sam.model import hub
    from napari_sam.model.checkpoints import CheckpointError
    from napari_sam.model.registry import load_model

    hits = []
    monkeypatch.setattr(hub, "_open", lambda url: _Resp(checkpoint_bytes, hits=hits))
    k = _unverified("damaged")
    monkeypatch.setitem(hub.KNOWN_CHECKPOINTS, "damaged", k)
    path = hub.fetch(k, progress=False, verify=False)
    data = bytearray(path.read_bytes())  # damaged on disk later, size unchanged
    data[-22:] = b"\0" * 22  # the zip directory's end record
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="removed from the cache; run again"):
        load_model("damaged")
    assert not path.exists()
    assert hub.fetch(k, progress=False, verify=False) == path and len(hits) == 2
    assert load_model("damaged").config.name == "test_vit" and len(hits) == 2
    # the command line: --force downloads even when a cached copy looks fine
    from napari_sam.cli import main

    assert main(["models", "download", "damaged", "--no-verify", "--force", "-q"]) == 0
    assert len(hits) == 3 and path.read_bytes() == checkpoint_bytes


# ---- progress in a log file --------------------------------------------------------------
def test_plain_progress_lines_are_rate_limited():
    import io as _io

    from napari_sam.progress import cli_progress, plain_progress

    now = [0.0]
    out = _io.StringIO()
    report = plain_progress("automask", every_s=5, file=out, clock=lambda: now[0])
    for i in range(100):  # 100 steps, 0.5 s apart, on two images
        now[0] = i * 0.5
        report(i + 1, 100, f"{'a' if i < 50 else 'b'}.tif decoding")
    lines = out.getvalue().splitlines()
    assert lines[0] == "automask: 1/100 (1%) a.tif decoding"
    assert "automask: 51/100 (51%) b.tif decoding" in lines  # a new image: a line at once
    assert lines[-1] == "automask: 100/100 (100%) b.tif decoding"
    assert 10 <= len(lines) <= 14  # one per 5 s of 50 s, plus first, new image, end
    assert "\r" not in out.getvalue()
    # a file is not a terminal: plain lines, not a bar
    out2 = _io.StringIO()
    cli_progress("x", file=out2)(1, 2, "tile")
    assert out2.getvalue() == "x: 1/2 (50%) tile\n"
