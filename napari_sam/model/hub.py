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
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

CHUNK = 1 << 20
TIMEOUT_S = 30
ENV_CACHE = "NAPARI_SAM_CACHE"
ENV_MIRROR = "NAPARI_SAM_MIRROR"  # a base URL holding the files under their `filename`


class DownloadError(RuntimeError):
    """A checkpoint could not be downloaded or did not pass verification."""


class DownloadCancelled(DownloadError):
    """Raised by a `progress` callable to stop a download between two chunks."""


class DownloadInterrupted(DownloadError, KeyboardInterrupt):
    """Ctrl-C during a download: still caught by `except KeyboardInterrupt`."""


@dataclass(frozen=True)
class KnownCheckpoint:
    name: str
    url: str
    sha256: Optional[str]
    size: Optional[int]  # bytes, None where no public source states it
    arch: str  # "vit_b", "vit_l", "vit_h", "vit_t" or a SAM 2.1 name ("sam2.1_hiera_tiny", ...)
    filename: str
    description: str = ""
    xxh128: Optional[str] = None  # micro-sam's own hash, checked only if `xxhash` is installed
    # instance decoder in the file: "unetr" (micro-sam's `decoder_state`, see
    # model/unetr_decoder.py) or "" (none: grid automask only)
    instance_decoder: str = ""


_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
_MICRO_SAM = "https://uk1s3.embassy.ebi.ac.uk/public-datasets/bioimage.io"

KNOWN_CHECKPOINTS: Dict[str, KnownCheckpoint] = {k.name: k for k in (
    # Meta's SAM files (vit_b, vit_l, vit_h). URL + SHA-256: computational-cell-analytics/micro-sam
    # micro_sam/util.py (its pooch registry before the switch to xxh128, e.g. commit 4d7a4066).
    # Sizes: dafne-imaging/dafne src/dafne/utils/sam_mask_refine.py (CHECKPOINT_MODELS). URLs also
    # in facebookresearch/segment-anything README; hash + size pairs agree with several other
    # public manifests found through the code index.
    KnownCheckpoint(
        "vit_b", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375042383,
        "vit_b", "sam_vit_b_01ec64.pth", "Segment Anything ViT-B (Meta)"),
    KnownCheckpoint(
        "vit_l", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1249524607,
        "vit_l", "sam_vit_l_0b3195.pth", "Segment Anything ViT-L (Meta)"),
    KnownCheckpoint(
        "vit_h", "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2564550879,
        "vit_h", "sam_vit_h_4b8939.pth", "Segment Anything ViT-H (Meta)"),
    # File: weights/mobile_sam.pt in ChaoningZhang/MobileSAM (README.md loads it from there).
    # SHA-256: computational-cell-analytics/micro-sam micro_sam/util.py ("vit_t", the same
    # weights mirrored on owncloud.gwdg.de). This hash together with this URL and the size
    # 40728226 also appears in several public manifests found through the code index (the index
    # did not name their repositories).
    KnownCheckpoint(
        "vit_t", "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt",
        "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f", 40728226,
        "vit_t", "mobile_sam.pt", "MobileSAM: TinyViT encoder, SAM decoder"),
    # SAM 2.1 (Meta, release 092824). URLs: facebookresearch/sam2 checkpoints/download_ckpts.sh
    # (SAM2p1_BASE_URL), repeated in many projects found through the code index. SHA-256:
    # computational-cell-analytics/micro-sam micro_sam util ("sam2.1": hvit_t/s/b/l), the
    # same four digests pinned next to these URLs in several other public projects. Sizes:
    # public manifests found through the code index (tiny in two of them; small, base+ and
    # large in one each); the download also checks the hash, so a wrong size only fails early.
    KnownCheckpoint(
        "sam2.1_hiera_tiny", f"{_SAM2}/sam2.1_hiera_tiny.pt",
        "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156008466,
        "sam2.1_hiera_tiny", "sam2.1_hiera_tiny.pt", "SAM 2.1 Hiera-T (Meta): images and stacks"),
    KnownCheckpoint(
        "sam2.1_hiera_small", f"{_SAM2}/sam2.1_hiera_small.pt",
        "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184416285,
        "sam2.1_hiera_small", "sam2.1_hiera_small.pt", "SAM 2.1 Hiera-S (Meta)"),
    KnownCheckpoint(
        "sam2.1_hiera_base_plus", f"{_SAM2}/sam2.1_hiera_base_plus.pt",
        "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323606802,
        "sam2.1_hiera_base_plus", "sam2.1_hiera_base_plus.pt", "SAM 2.1 Hiera-B+ (Meta)"),
    KnownCheckpoint(
        "sam2.1_hiera_large", f"{_SAM2}/sam2.1_hiera_large.pt",
        "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898083611,
        "sam2.1_hiera_large", "sam2.1_hiera_large.pt", "SAM 2.1 Hiera-L (Meta)"),
    # URL + xxh128: computational-cell-analytics/micro-sam micro_sam/v1/util.py, models() (model
    # zoo version 1.2; commit 087172c5). The same three URL/xxh128 pairs are hard-coded in another
    # public project found through the code index. micro-sam publishes no SHA-256 and no size
    # for these files, so both stay None (see the module docstring for how they are verified).
    KnownCheckpoint(
        "vit_b_lm", f"{_MICRO_SAM}/diplomatic-bug/1.2/files/vit_b.pt", None, None, "vit_b",
        "micro_sam_vit_b_lm.pt", "micro-sam ViT-B, light microscopy (cells, nuclei)",
        xxh128="fe9252a29f3f4ea53c15a06de471e186", instance_decoder="unetr"),
    KnownCheckpoint(
        "vit_l_lm", f"{_MICRO_SAM}/idealistic-rat/1.2/files/vit_l.pt", None, None, "vit_l",
        "micro_sam_vit_l_lm.pt", "micro-sam ViT-L, light microscopy (cells, nuclei)",
        xxh128="017f20677997d628426dec80a8018f9d", instance_decoder="unetr"),
    KnownCheckpoint(
        "vit_b_em_organelles", f"{_MICRO_SAM}/noisy-ox/1.2/files/vit_b.pt", None, None, "vit_b",
        "micro_sam_vit_b_em_organelles.pt", "micro-sam ViT-B, electron microscopy organelles",
        xxh128="f3bf2ed83d691456bae2c3f9a05fb438", instance_decoder="unetr"),
)}


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
    `fetch` downloads it afresh; returns the path it had."""
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
