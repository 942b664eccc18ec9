"""Where tile embeddings live: in memory (`memory_store`), or on disk in a zarr directory store.

On-disk layout of a cache folder:

    signature.json   what the embeddings were computed from (image, model, tiling, contrast)
    features/        zarr array (ny, nx, C, g, g), one chunk per tile
    done/<iy>_<ix>   marker holding the tile's checksum, created atomically once that
                     tile's chunk is written

One chunk per tile: a tile is the unit of work, so each worker writes whole chunks that no
other worker touches (no locks, no read-modify-write), a tile is read back with one file
read, and an interrupted run leaves every finished tile usable. The marker is written after
the chunk (zarr itself writes chunks to a temporary file and renames it), so a tile counts
as done only when its data is complete. The marker holds a checksum (BLAKE2b) of the
tile's stored values: Blosc has none of its own, so a chunk deleted, truncated or changed
on disk would otherwise be read as zeros or as slightly wrong numbers. Reading checks it,
and a tile that fails (or whose marker has no checksum) raises `CacheCorruptError`;
`TiledEmbeddings` then recomputes the tile. float16 by default: half the disk of float32 for a
difference that moves at most a few boundary pixels of a mask (SAM's embeddings are
layer-normalised, |x| < 100; use "float32" where results must match an uncached run bit
for bit).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Set, Tuple, Union

import numpy as np

# the in-memory store lives in `memory_store`; importable from here too
from .memory_store import MemoryStore  # noqa: F401

FORMAT = 1
STORAGE_DTYPES = ("float16", "float32")


class CacheMismatchError(ValueError):
    """An embedding cache folder holds embeddings of another image, model or tiling (or
    cannot be read).

    Parameters
    ----------
    message : str
        What differs or is damaged, and what to do about it.
    """


class CacheCorruptError(CacheMismatchError):
    """A tile of an embedding cache is damaged on disk (checksum, decoding).

    Parameters
    ----------
    message : str
    index : (int, int), optional
        The damaged tile's grid index (row, col).
    """

    def __init__(self, message: str, index=None) -> None:
        super().__init__(message)
        self.index = index


def checksum(values: np.ndarray) -> str:
    """Checksum of an array's values (its dtype and bytes in C order).

    Parameters
    ----------
    values : ndarray

    Returns
    -------
    str
        "blake2b:" and 32 hex digits.
    """
    import hashlib

    a = np.ascontiguousarray(values)
    h = hashlib.blake2b(a.dtype.str.encode(), digest_size=16)
    h.update(memoryview(a).cast("B"))
    return "blake2b:" + h.hexdigest()


def _write_replace(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename (atomic on one disk)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _diff(old: dict, new: dict, prefix: str = "") -> list:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: cache has {a!r}, now {b!r}")
    return out


class ZarrStore:
    """Embeddings in a zarr directory store with a signature and per-tile done markers.

    Opening an existing folder checks its signature and raises `CacheMismatchError`, naming
    what differs, when it was made for something else. Safe for several processes writing
    different tiles at once.

    Parameters
    ----------
    path : str or Path
        The cache folder (created when missing; an existing one must be such a cache).
    signature : dict
        What the embeddings are computed from (image, model, tiling); stored with the
        format and storage dtype, and compared on opening.
    grid_shape : sequence of int
        The tile grid's (rows, cols).
    feature_shape : sequence of int
        One tile's embedding shape (C, g, g).
    dtype : str
        Storage dtype, one of `STORAGE_DTYPES` ("float16" halves the disk use).
    """

    def __init__(self, path: Union[str, Path], signature: dict, grid_shape: Sequence[int],
                 feature_shape: Sequence[int], dtype: str = "float16") -> None:
        from numcodecs import Blosc

        from ..io.zarr_arrays import open_array

        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"cache dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
        self.path = Path(path)
        # through JSON, so that what is compared is what is stored (tuples become lists)
        self.signature = json.loads(json.dumps(dict(signature, format=FORMAT, storage=dtype)))
        sig_file = self.path / "signature.json"
        if sig_file.is_file():
            self._check(sig_file)
        elif self.path.exists() and any(self.path.iterdir()):
            raise CacheMismatchError(
                f"{self.path} exists and is not a napari-sam embedding cache (no signature.json); "
                "pass an empty or new folder as the cache")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "done").mkdir(exist_ok=True)
            open_array(
                self.path / "features", mode="a",
                shape=tuple(grid_shape) + tuple(feature_shape),
                chunks=(1, 1) + tuple(feature_shape), dtype=dtype, fill_value=0,
                compressor=Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE))
            _write_replace(sig_file, json.dumps(self.signature, indent=1).encode())
        try:
            self.array = open_array(self.path / "features", mode="r+")
        except Exception as err:  # noqa: BLE001 - a garbled .zarray: JSONDecodeError, KeyError ...
            raise CacheMismatchError(
                f"the embedding cache {self.path} is damaged: its features array cannot be "
                f"opened ({type(err).__name__}: {err}). Delete {self.path} to recompute the "
                "embeddings, or pass another cache folder.") from err
        expected = tuple(grid_shape) + tuple(feature_shape)
        if tuple(self.array.shape) != expected or self.array.dtype != np.dtype(dtype):
            raise CacheMismatchError(
                f"the embedding cache {self.path} is damaged: its features array is "
                f"{self.array.shape} {self.array.dtype}, expected {expected} {dtype}. Delete "
                f"{self.path} to recompute the embeddings, or pass another cache folder.")
        self.dtype = np.dtype(self.array.dtype)

    def _check(self, sig_file: Path) -> None:
        try:
            old = json.loads(sig_file.read_text())
        except (OSError, ValueError) as err:
            raise CacheMismatchError(
                f"the embedding cache {self.path} is unreadable ({err}); delete that folder "
                "to start afresh") from err
        if old != self.signature:
            what = "; ".join(_diff(old, self.signature))
            raise CacheMismatchError(
                f"the embedding cache {self.path} was made for something else ({what}). "
                f"Delete {self.path} to recompute the embeddings, or pass another cache folder.")

    def done(self) -> Set[Tuple[int, int]]:
        """The tiles with a done marker.

        Returns
        -------
        set of (int, int)
            Their grid indices (row, col).
        """
        out = set()
        for name in os.listdir(self.path / "done"):
            parts = name.split("_")
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                out.add((int(parts[0]), int(parts[1])))
        return out

    def has(self, index) -> bool:
        """Whether a tile has a done marker (its values are not checked here).

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).

        Returns
        -------
        bool
        """
        return (self.path / "done" / f"{index[0]}_{index[1]}").is_file()

    def _marker(self, index) -> Path:
        return self.path / "done" / f"{index[0]}_{index[1]}"

    def _damaged(self, index, why: str) -> CacheCorruptError:
        return CacheCorruptError(
            f"tile {tuple(index)} of the embedding cache {self.path} is damaged ({why}); it is "
            f"recomputed when read through TiledEmbeddings, or delete {self.path} to "
            "recompute every tile", tuple(index))

    def get(self, index) -> np.ndarray:
        """A done tile's features, checked against the checksum in its marker.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).

        Returns
        -------
        ndarray (C, g, g) float32
            KeyError if the tile is not done; `CacheCorruptError` if its stored values fail
            their checksum or cannot be decoded.
        """
        try:
            recorded = self._marker(index).read_text().strip()
        except FileNotFoundError:
            raise KeyError(f"tile {tuple(index)} is not in the cache {self.path}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise self._damaged(index, f"unreadable marker: {err}") from err
        if not recorded.startswith("blake2b:"):
            raise self._damaged(index, "its done marker holds no checksum")
        try:
            stored = np.asarray(self.array[index[0], index[1]])
        except Exception as err:  # noqa: BLE001 - blosc/zarr raise RuntimeError, ValueError ...
            raise self._damaged(index, f"{type(err).__name__}: {err}") from err
        if checksum(stored.astype(self.dtype, copy=False)) != recorded:
            raise self._damaged(index, "its stored values do not match their checksum")
        return stored.astype(np.float32)

    def discard(self, index) -> None:
        """Forget a tile (remove its done marker), so it is computed again.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).
        """
        try:
            self._marker(index).unlink()
        except FileNotFoundError:
            pass

    def put(self, index, features: np.ndarray) -> None:
        """Store a tile's features, then its done marker with their checksum.

        Parameters
        ----------
        index : (int, int)
            The tile's grid index (row, col).
        features : ndarray (C, g, g)
            Converted to the storage dtype; ValueError if they overflow it.
        """
        f = np.ascontiguousarray(np.asarray(features).astype(self.dtype))
        if not np.isfinite(f).all():
            raise ValueError("embedding values overflow the cache's float16; "
                             "use cache dtype 'float32' for this model")
        self.array[index[0], index[1]] = f
        _write_replace(self._marker(index), checksum(f).encode())


def default_cache_root() -> Path:
    """The per-user cache folder for embeddings (platformdirs).

    Returns
    -------
    Path
    """
    import platformdirs

    return Path(platformdirs.user_cache_dir("napari-sam")) / "embeddings"


def resolve_cache_dir(cache, image_path: Optional[Path], key: str, image_key: str
                      ) -> Optional[Path]:
    """The cache folder for `cache`.

    Parameters
    ----------
    cache : None, False, str or Path
        None/False: none (embeddings in memory); a path: exactly that folder; "beside":
        `<image>.sam-cache/<key>` next to the image file; "user":
        `<user cache>/napari-sam/embeddings/<image_key>-<key>`; "auto": beside when the image
        is a file in a writable folder, else user.
    image_path : Path, optional
        The image file (None: an array; then "beside" raises ValueError).
    key, image_key : str
        `key` names the model and tiling, so one image can hold caches of several models;
        `image_key` names the image.

    Returns
    -------
    Path or None
    """
    if cache is None or cache is False:
        return None
    if isinstance(cache, (str, Path)) and str(cache) not in ("beside", "user", "auto"):
        return Path(cache)
    if cache == "auto":
        ok = image_path is not None and os.access(Path(image_path).parent, os.W_OK)
        cache = "beside" if ok else "user"
    if cache == "beside":
        if image_path is None:
            raise ValueError("cache='beside' needs an image file; give the image as a path, "
                             "or use cache='user' or a folder")
        return Path(str(image_path) + ".sam-cache") / key
    return default_cache_root() / f"{image_key}-{key}"
