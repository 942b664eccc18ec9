"""Known downloadable checkpoints and a per-user, hash-verified download cache.

    path = fetch("vit_b")          # downloads once, verifies, then reads from the cache

Files land in `cache_dir()` (`$NAPARI_SAM_CACHE`, else the platform's user cache folder +
`checkpoints`). A download goes to `<file>.partial` next to its final name, is checked against
the published hash (and size), and only then renamed into place; a small `<file>.sha256` marker
records the check so the 2.5 GB ViT-H file is not re-hashed on every load. Any failure removes the
partial file and raises `DownloadError` saying what happened and what to do. A file with no
checkable hash (allowed with `verify=False`) and no known size must open as a complete checkpoint
(a zip container with every member's CRC intact, or a legacy file `torch.load` reads) before it is
renamed into place, as a download of unannounced length may end early without an error; its
marker (`local-sha256:<digest> <size>`) must be there before a cached copy is used.
micro-sam publishes only xxh128 hashes for its current models, checked when the optional `xxhash`
package is installed; without it `fetch` refuses to download them unless `verify=False`.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional, Tuple, Union

from .hub_catalog import KNOWN_CHECKPOINTS, KnownCheckpoint  # the catalogue; used and re-exported

CHUNK = 1 << 20
TIMEOUT_S = 30
ENV_CACHE = "NAPARI_SAM_CACHE"
ENV_MIRROR = "NAPARI_SAM_MIRROR"  # a base URL holding the files under their `filename`


class DownloadError(RuntimeError):
    """A checkpoint could not be downloaded or did not pass verification.

    Parameters
    ----------
    message : str
    """


class DownloadCancelled(DownloadError):
    """Raised by a `progress` callable to stop a download between two chunks.

    Parameters
    ----------
    message : str
    """


class DownloadInterrupted(DownloadError, KeyboardInterrupt):
    """Ctrl-C during a download: still caught by `except KeyboardInterrupt`.

    Parameters
    ----------
    message : str
    """




def cache_dir() -> Path:
    """The checkpoint folder: `$NAPARI_SAM_CACHE`, else `<user cache>/napari-sam/checkpoints`.

    Returns
    -------
    Path
    """
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("napari-sam")) / "checkpoints"


def _xxhash():
    try:
        return importlib.import_module("xxhash")
    except ImportError:
        return None


def _expected(k: KnownCheckpoint) -> Optional[Tuple[str, str]]:
    """(algorithm, hex digest) this installation can check, or None."""
    if k.sha256:
        return "sha256", k.sha256.lower()
    if k.xxh128 and _xxhash() is not None:
        return "xxh128", k.xxh128.lower()
    return None


def _new_hasher(algo: str):
    return hashlib.sha256() if algo == "sha256" else _xxhash().xxh128()


def _resolve(name_or_known: Union[str, KnownCheckpoint]) -> KnownCheckpoint:
    if isinstance(name_or_known, KnownCheckpoint):
        return name_or_known
    try:
        return KNOWN_CHECKPOINTS[str(name_or_known)]
    except KeyError:
        raise KeyError(f"unknown checkpoint {name_or_known!r}; known: "
                       f"{', '.join(KNOWN_CHECKPOINTS)}") from None


def _paths(k: KnownCheckpoint, cache) -> Tuple[Path, Path, Path]:
    final = Path(cache).expanduser() / k.filename if cache is not None else cache_dir() / k.filename
    return final, final.with_name(final.name + ".partial"), final.with_name(final.name + ".sha256")


def _marker_ok(marker: Path, want: Tuple[str, str], size: int) -> bool:
    try:
        digest, recorded = marker.read_text().split()[:2]
    except (OSError, ValueError):
        return False
    return digest == f"{want[0]}:{want[1]}" and recorded == str(size)


def _write_marker(marker: Path, want: Tuple[str, str], size: int) -> None:
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(f"{want[0]}:{want[1]} {size}\n")
    os.replace(tmp, marker)


def _complete_checkpoint(path: Path) -> Optional[str]:
    """None if `path` holds a whole PyTorch checkpoint, else why not (for unverified files):
    a zip container (CRC per member) cut short or changed fails `testzip`; a pickle must load."""
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
            return None if bad is None else f"member {bad} is damaged"
        import torch

        torch.load(path, map_location="cpu", weights_only=True)
        return None
    except Exception as err:  # noqa: BLE001 - BadZipFile, EOFError, UnpicklingError ...
        return f"{type(err).__name__}: {str(err)[:200]}"


def _local_marker_ok(marker: Path, size: int) -> bool:
    try:
        digest, recorded = marker.read_text().split()[:2]
    except (OSError, ValueError):
        return False
    return digest.startswith("local-sha256:") and recorded == str(size)


def _hash_file(path: Path, algo: str) -> str:
    h = _new_hasher(algo)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _unlink(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _open(url: str):
    req = urllib.request.Request(url, headers={"User-Agent": "napari-sam"})
    return urllib.request.urlopen(req, timeout=TIMEOUT_S)


def _download(k: KnownCheckpoint, url: str, partial: Path, want, progress: bool) -> int:
    """Stream `url` into `partial`, hashing on the way; raise DownloadError on any problem."""
    by_hand = f"download {url} by hand and pass the file's path instead of {k.name!r}"
    try:
        resp = _open(url)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"could not download {k.name}: the server answered HTTP {err.code} "
                            f"{err.reason} for {url}; try again later, or {by_hand}") from err
    except ValueError as err:
        raise DownloadError(f"cannot download {k.name}: invalid URL {url!r} ({err})") from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadError(f"could not reach {url} ({reason}): you may be offline or behind a "
                            f"proxy; {by_hand} (or set {ENV_MIRROR} to a mirror)") from err
    from tqdm import tqdm

    got = 0
    hasher = _new_hasher(want[0]) if want else hashlib.sha256()
    with resp:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else k.size
        try:
            with open(partial, "wb") as out, tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                    desc=k.name, disable=callable(progress) or not progress,
                    leave=False) as bar:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    hasher.update(block)
                    got += len(block)
                    bar.update(len(block))
                    if callable(progress):
                        progress(got, total)  # may raise DownloadCancelled
        except KeyboardInterrupt:
            raise DownloadInterrupted(f"download of {k.name} interrupted after {got} bytes; "
                                      "the partial file was discarded") from None
        except (http.client.HTTPException, OSError) as err:
            raise DownloadError(f"the download of {k.name} broke off after {got} bytes ({err!r}); "
                                "the partial file was discarded, try again") from err
    if length and length.isdigit() and got != int(length):
        raise DownloadError(f"the download of {k.name} is incomplete: got {got} of {length} bytes "
                            "(the connection closed early); the partial file was discarded, "
                            "try again")
    if k.size is not None and got != k.size:
        raise DownloadError(f"size mismatch for {k.name}: expected {k.size} bytes, got {got}; "
                            f"the download was discarded, try again, or {by_hand}")
    if want is not None and hasher.hexdigest() != want[1]:
        raise DownloadError(f"hash mismatch for {k.name}: expected {want[0]} {want[1]}, got "
                            f"{hasher.hexdigest()}; the download was discarded, try again (if it "
                            f"keeps failing the file on the server changed: {by_hand})")
    if want is None and k.size is None:  # nothing published to check it against
        why = _complete_checkpoint(partial)
        if why is not None:
            raise DownloadError(
                f"the download of {k.name} is not a complete checkpoint ({got} bytes; {why}): "
                "the connection probably closed early, and the server announced no length to "
                f"check. The partial file was discarded; try again, or {by_hand}")
    return got, hasher.hexdigest()


def fetch(name_or_known: Union[str, KnownCheckpoint], *, progress: bool = True, cache=None,
          verify: bool = True, url: Optional[str] = None, force: bool = False) -> Path:
    """Path of a checkpoint in the cache, downloading and verifying it first if needed.

    Parameters
    ----------
    name_or_known : str or KnownCheckpoint
    progress : bool or callable
        True (a bar on stderr), False, or `f(bytes done, bytes total or None)` called after
        each chunk (no bar); raising `DownloadCancelled` there stops and removes the partial file.
    cache : str or Path, optional
        A folder instead of `cache_dir()`.
    verify : bool
        False allows files with no checkable hash (then a known size or completeness is checked).
    url : str, optional
        Source instead of `$NAPARI_SAM_MIRROR/<filename>` or the entry's URL; hashes still apply.
    force : bool
        Download again even if a cached copy looks fine (for a cached file that fails to load).

    Returns
    -------
    Path
    """
    k = _resolve(name_or_known)
    final, partial, marker = _paths(k, cache)
    want = _expected(k)
    if force:
        _unlink(final, marker)
    if final.is_file():
        size = final.stat().st_size
        if k.size is None or size == k.size:
            if want is not None and _marker_ok(marker, want, size):
                return final
            if want is None and (k.size is not None or _local_marker_ok(marker, size)):
                return final
            if want is None and _complete_checkpoint(final) is None:  # an older, unmarked copy
                _write_marker(marker, ("local-sha256", _hash_file(final, "sha256")), size)
                return final
            if want is not None and _hash_file(final, want[0]) == want[1]:  # not checked yet
                _write_marker(marker, want, size)
                return final
        _unlink(final, marker)  # wrong size or hash: not what the name promises, fetch afresh
    if want is None and verify:
        hint = " (or `pip install xxhash` to check micro-sam's xxh128 hash)" if k.xxh128 else ""
        raise DownloadError(
            f"{k.name} has no published SHA-256, so its download cannot be verified{hint}; pass "
            f"verify=False (`napari-sam models download --no-verify {k.name}`) to download it "
            f"anyway, or download {k.url} by hand and pass the file's path")
    mirror = os.environ.get(ENV_MIRROR)
    source = url or (f"{mirror.rstrip('/')}/{k.filename}" if mirror else k.url)
    final.parent.mkdir(parents=True, exist_ok=True)
    done = False
    _unlink(marker)  # no marker may vouch for a file that is being replaced
    try:
        size, digest = _download(k, source, partial, want, progress)
        os.replace(partial, final)
        done = True
    finally:
        if not done:
            _unlink(partial)
    _write_marker(marker, want if want is not None else ("local-sha256", digest), size)
    return final


def forget(name_or_known: Union[str, KnownCheckpoint], cache=None) -> Path:
    """Remove a cached checkpoint and its marker (one that fails to load), so that the next
    `fetch` downloads it afresh; returns the path it had.

    Parameters
    ----------
    name_or_known : str or KnownCheckpoint
    cache : str or Path, optional

    Returns
    -------
    Path
    """
    final, partial, marker = _paths(_resolve(name_or_known), cache)
    _unlink(final, marker, partial)
    return final


def list_checkpoints(cache=None) -> List[dict]:
    """One dict per known checkpoint: name, arch, size, description, cached, path and
    instance_decoder ("unetr" or "").

    Parameters
    ----------
    cache : str or Path, optional

    Returns
    -------
    list of dict
    """
    rows = []
    for k in KNOWN_CHECKPOINTS.values():
        final = _paths(k, cache)[0]
        cached = final.is_file() and (k.size is None or final.stat().st_size == k.size)
        rows.append({"name": k.name, "arch": k.arch, "size": k.size,
                     "description": k.description, "cached": cached, "path": str(final),
                     "instance_decoder": k.instance_decoder})
    return rows
