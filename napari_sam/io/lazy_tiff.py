"""`LazyTiff`: an array-like over one level of a TIFF that decodes only what is indexed.

Split out of `images.py`; `images.open_lazy` decides when to use it.
"""

from __future__ import annotations

import itertools
import operator
import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .axes import canonical_layout, override_axes


class LazyTiff:
    """Read-only array-like over one level of a TIFF series, in canonical axes.

    Indexing with integers, slices (any step) and Ellipsis reads and decodes only the tiles
    or strips that overlap the request (a file stored as one compressed strip per plane is
    decoded a plane at a time: nothing finer exists). `np.asarray(lazy)` reads everything.
    Thread-safe (file reads are serialised, decoding is not) and picklable (the file is
    reopened in the receiving process), so it can back a dask array.

    Parameters
    ----------
    path : str or os.PathLike
        The TIFF file.
    series : int
        tifffile series index.
    level : int
        Pyramid level, 0 = full resolution.
    axes : str, optional
        The file's own axes, overriding tifffile's (see `napari_sam.io.axes`).
    channels : int or sequence of int, optional
        0-based channels to offer; an int drops the C axis.
    """

    def __init__(self, path, series: int = 0, level: int = 0, axes: Optional[str] = None,
                 channels: Optional[Sequence[int]] = None):
        self.path = str(path)
        self._series_index, self.level = series, level
        self._file_axes, self._channels_arg = axes, channels
        self._lock = threading.RLock()
        self._tif = None
        self._setup()

    # -- state ---------------------------------------------------------------------------
    def _open(self):
        if self._tif is None:
            import tifffile

            self._tif = tifffile.TiffFile(self.path)
        return self._tif

    def _series(self):
        s = self._open().series[self._series_index]
        if not 0 <= self.level < len(s.levels):
            raise ValueError(f"{self.path}: level {self.level} requested, the file has "
                             f"{len(s.levels)} level(s)")
        return s.levels[self.level]

    def _setup(self):
        s = self._series()
        kf = s.keyframe
        fshape = tuple(int(n) for n in s.shape)
        file_axes = override_axes(s, self._file_axes)
        self._letters, self._perm, _ = canonical_layout(file_axes, fshape)
        # file dims = frame dims (-> page number) + page dims (-> the page's 5D "shaped")
        size, split = 1, None
        for i in range(len(fshape) - 1, -1, -1):
            size *= fshape[i]
            if size == kf.size:
                split = i
                break
        if split is None or kf.dtype is None:
            raise NotImplementedError(f"unsupported TIFF layout {s.axes} {fshape}")
        self._fshape, self._split = fshape, split
        shaped = tuple(int(n) for n in kf.shaped)
        page_dims = fshape[split:]
        to5: List[Optional[int]] = [None] * len(page_dims)
        i, j = len(page_dims) - 1, 4
        while i >= 0:
            if j >= 0 and shaped[j] == page_dims[i]:
                to5[i] = j
                i, j = i - 1, j - 1
            elif j >= 0 and shaped[j] == 1:
                j -= 1
            elif page_dims[i] == 1:
                i -= 1
            else:
                raise NotImplementedError(f"page shape {shaped} does not match {page_dims}")
        self._to5, self._shaped = to5, shaped
        if int(np.prod(fshape[:split])) > len(s.pages):
            raise NotImplementedError("fewer pages than the series shape needs")
        self._tiled = bool(kf.is_tiled)
        if self._tiled:
            self._seg = (max(kf.tiledepth, 1), kf.tilelength, kf.tilewidth)
        else:
            if shaped[1] != 1:
                raise NotImplementedError("strips with ImageDepth > 1")
            self._seg = (1, min(kf.rowsperstrip, shaped[2]) or shaped[2], shaped[3])
        self._nseg = tuple(-(-shaped[k + 1] // self._seg[k]) for k in range(3))
        self.dtype = np.dtype(kf.dtype)
        self._fchan = None  # file indices of the channels on offer, or None for all
        self._squeeze_c = False  # one channel chosen by an int: the C axis disappears
        cdim = self._cdim()
        if cdim is None and self._channels_arg is not None and np.ndim(self._channels_arg) <= 1 \
                and list(np.atleast_1d(self._channels_arg)) in ([0], [-1]):
            self._channels_arg = None  # a grayscale image is its own channel 0
        if self._channels_arg is not None:
            if cdim is None:
                raise ValueError(f"{self.path}: channels given, but the image has no channel "
                                 "axis")
            n = fshape[cdim]
            self._squeeze_c = isinstance(self._channels_arg, (int, np.integer))
            chosen = ([int(self._channels_arg)] if self._squeeze_c
                      else [int(c) for c in self._channels_arg])
            if not chosen or any(not -n <= c < n for c in chosen):
                raise ValueError(f"channels={self._channels_arg!r}: the image has {n} "
                                 f"channels (0 to {n - 1})")
            self._fchan = np.array([c % n for c in chosen])
        # the dims seen by users: kept file dims in canonical order, minus a squeezed C
        self._view = [i for i in self._perm if not (self._squeeze_c and i == cdim)]
        self.axes = "".join(self._letters[i] for i in self._view)
        self.shape = tuple(
            len(self._fchan) if (self._fchan is not None and i == cdim) else fshape[i]
            for i in self._view)

    def _cdim(self):
        return next((i for i, c in enumerate(self._letters) if c == "C"), None)

    def __getstate__(self):
        return {"path": self.path, "series": self._series_index, "level": self.level,
                "axes": self._file_axes, "channels": self._channels_arg}

    def __setstate__(self, state):
        self.__init__(state["path"], state["series"], state["level"], state["axes"],
                      state["channels"])

    def close(self) -> None:
        """Close the file (indexing again reopens it)."""
        with self._lock:

            if self._tif is not None:
                self._tif.close()
                self._tif = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- array protocol ------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return (f"LazyTiff({self.path!r}, level={self.level}, axes={self.axes!r}, "
                f"shape={self.shape}, dtype={self.dtype})")

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)

    @property
    def chunksize(self) -> Tuple[int, ...]:
        """Shape of one stored tile/strip in canonical axes (a good chunk for dask)."""
        per5 = (1,) + self._seg + (self._shaped[4],)
        sizes = [1] * len(self._fshape)
        for i, j in enumerate(self._to5):
            if j is not None:
                sizes[self._split + i] = min(per5[j], self._fshape[self._split + i])
        return tuple(self.shape[v] if self._letters[i] == "C" else sizes[i]
                     for v, i in enumerate(self._view))

    def __getitem__(self, key):
        sel = _normalize_key(key, self.shape)
        # per file dim: wanted file indices (int array) and whether the dim is dropped
        want: List[np.ndarray] = []
        drop: List[bool] = []
        cdim = self._cdim()
        for i, letter in enumerate(self._letters):
            if letter is None:
                want.append(np.zeros(1, np.int64))
                drop.append(True)
                continue
            if i == cdim and self._squeeze_c:
                idx, is_int = self._fchan, True
            else:
                idx, is_int = sel[self._view.index(i)]
                if i == cdim and self._fchan is not None:
                    idx = self._fchan[idx]
            want.append(idx)
            drop.append(is_int)
        lo = [int(w.min()) if w.size else 0 for w in want]
        hi = [int(w.max()) + 1 if w.size else 0 for w in want]
        box = self._read_box(lo, hi)
        for d, w in enumerate(want):  # steps, reversals, channel picks
            local = w - lo[d]
            if not (local.size == box.shape[d] and np.array_equal(local, np.arange(local.size))):
                box = np.take(box, local, axis=d)
        box = box[tuple(0 if dr else slice(None) for dr in drop)]
        kept = [i for i in range(len(drop)) if not drop[i]]
        order = [kept.index(i) for i in self._perm if i in kept]
        out = np.transpose(box, order)
        if out.ndim == 0:
            return out[()]  # all integers: a numpy scalar, as numpy gives
        return out if out.flags.c_contiguous else out.copy()

    # -- reading -------------------------------------------------------------------------
    def _read_box(self, lo, hi) -> np.ndarray:
        """File-order array for the half-open box [lo, hi) of file dims."""
        out = np.zeros([b - a for a, b in zip(lo, hi)], self.dtype)
        if out.size == 0:
            return out
        split = self._split
        fr_shape = self._fshape[:split]
        win5 = [[0, 1] for _ in range(5)]
        for i, j in enumerate(self._to5):
            if j is not None:
                win5[j] = [lo[split + i], hi[split + i]]
        for frame in itertools.product(*(range(lo[d], hi[d]) for d in range(split))):
            pageno = int(np.ravel_multi_index(frame, fr_shape)) if split else 0
            block = self._read_page_window(pageno, win5)
            local = tuple(f - lo[d] for d, f in enumerate(frame))
            out[local] = block.reshape(out.shape[split:])
        return out

    def _read_page_window(self, pageno: int, win5) -> np.ndarray:
        shape5 = [b - a for a, b in win5]
        out = np.zeros(shape5, self.dtype)
        with self._lock:
            s = self._series()
            page = s[pageno]
            if page is None:
                return out  # missing page: zeros, as tifffile fills
            kf = s.keyframe
            offsets, counts = page.dataoffsets, page.databytecounts
        (s0, s1), (d0, d1), (l0, l1), (w0, w1), _ = win5
        sd, sl, sw = self._seg
        nd, nl, nw = self._nseg
        per_sample = nd * nl * nw
        samples = range(s0, s1) if self._shaped[0] > 1 else range(1)
        wanted = []
        for sp in samples:
            for td in range(d0 // sd, (d1 - 1) // sd + 1):
                for tl in range(l0 // sl, (l1 - 1) // sl + 1):
                    for tw in range(w0 // sw, (w1 - 1) // sw + 1):
                        wanted.append(sp * per_sample + (td * nl + tl) * nw + tw)
        chunks = []
        with self._lock:
            fh = self._open().filehandle
            for index in wanted:
                if index >= len(offsets) or not offsets[index] or not counts[index]:
                    continue
                fh.seek(offsets[index])
                chunks.append((index, fh.read(counts[index])))
        jpegtables = getattr(page, "jpegtables", None) or kf.jpegtables
        decode = kf.decode
        for index, data in chunks:
            # a segment comes as (depth, length, width, contig samples); tiles at the
            # image's edge may be padded to the full tile size
            seg, pos, _ = decode(data, index, jpegtables=jpegtables, jpegheader=kf.jpegheader)
            if seg is None:
                continue
            seg = seg.reshape((1,) * (5 - seg.ndim) + seg.shape)
            start = (pos[0], pos[1], pos[2], pos[3], 0)
            src, dst = [], []
            for k in range(5):
                a = max(start[k], win5[k][0])
                b = min(start[k] + seg.shape[k], win5[k][1], self._shaped[k])
                if b <= a:
                    break
                src.append(slice(a - start[k], b - start[k]))
                dst.append(slice(a - win5[k][0], b - win5[k][0]))
            else:
                out[tuple(dst)] = seg[tuple(src)]
        return out


def _normalize_key(key, shape):
    """[(indices along the dim, is_int)] for a key of ints, slices and one Ellipsis."""
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if Ellipsis in key:
        i = next(n for n, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - len(key) + 1) + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices for an array of shape {shape}")
    key = key + (slice(None),) * (len(shape) - len(key))
    out = []
    for k, n in zip(key, shape):
        if isinstance(k, slice):
            out.append((np.arange(*k.indices(n)), False))
            continue
        try:
            i = operator.index(k)
        except TypeError:
            raise TypeError(
                f"LazyTiff takes integers, slices and '...', not {type(k).__name__}; read a "
                "region first, then index the numpy array") from None
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of bounds for an axis of size {n}")
        out.append((np.array([i % n]), True))
    return out
