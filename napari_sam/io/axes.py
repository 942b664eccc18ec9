"""Axes of images and stacks: what each dimension of an array is, in one place.

Canonical order is `CANONICAL` ("TZYXC": time, depth, rows, columns, channels last).
Files say their axes (TIFF metadata) or get them from `guess_file_axes` (PNG, JPEG);
arrays without metadata get them from `guess_axes`. `canonical_layout` maps a file's axes to
canonical ones and `to_canonical` applies that to the data; `as_slices` flattens a stack's
leading axes into a sequence of 2D images.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

CANONICAL = "TZYXC"


def guess_axes(shape: Sequence[int]) -> str:
    """Axes of an array without metadata: (Y, X), (Y, X, 3|4) colour, else (N..., Y, X).

    Parameters
    ----------
    shape : sequence of int
        The array's shape.

    Returns
    -------
    str
        "YX", "YXC", or "Z" for each leading dim followed by "YX".
    """
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3 and shape[-1] in (3, 4):
        return "YXC"
    return "Z" * (len(shape) - 2) + "YX"


def guess_file_axes(shape: Sequence[int]) -> str:
    """Axes for formats without axis metadata (PNG, JPEG, GIF).

    Parameters
    ----------
    shape : sequence of int
        The decoded image's shape, 2 to 4 dims.

    Returns
    -------
    str
        tifffile-style axes: "YX", "YXS" (samples <= 4), "QYX" or "QYXS" (Q: frames).
    """
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXS" if shape[-1] <= 4 else "QYX"
    if len(shape) == 4:
        return "QYXS"
    raise ValueError(f"unsupported image shape {tuple(shape)}")


def override_axes(s, axes):
    """The axes to read a tifffile series with: the user's, checked, else the file's.

    Parameters
    ----------
    s : tifffile.TiffPageSeries
        A series (or pyramid level) with `.axes` and `.shape`.
    axes : str or None
        The user's axes, one letter per dim of `s` (any case); None keeps `s.axes`.

    Returns
    -------
    str
        The axes, upper case.
    """
    if axes is None:
        return s.axes
    if len(axes) != len(s.shape):
        raise ValueError(f"axes={axes!r} has {len(axes)} letters but the file's data has "
                         f"shape {tuple(s.shape)} (tifffile axes {s.axes!r})")
    return axes.upper()


def canonical_layout(file_axes: str, shape: Sequence[int]):
    """Map a file's axes to canonical ones.

    Parameters
    ----------
    file_axes : str
        The file's axes (tifffile letters; S counts as C, unknown letters become Z or T).
    shape : sequence of int
        The file's shape, one dim per letter.

    Returns
    -------
    letters : list of str or None
        letters[i] is the canonical letter of file dim i, or None for a length-1 dim that
        is dropped (indexed at 0).
    perm : list of int
        The kept file dims in canonical order.
    axes : str
        The canonical axes string, a subsequence of "TZYXC".
    """
    file_axes = file_axes.upper()
    if len(file_axes) != len(shape):
        raise ValueError(f"axes {file_axes!r} do not match the shape {tuple(shape)}")
    letters: List[Optional[str]] = [None] * len(shape)
    used = set()
    unnamed = []
    for i, (a, n) in enumerate(zip(file_axes, shape)):
        letter = {"Y": "Y", "X": "X", "C": "C", "S": "C", "T": "T", "Z": "Z"}.get(a)
        if letter is None:
            if n != 1:
                unnamed.append(i)
            continue
        if n == 1 and letter not in "YX":
            continue
        if letter in used:
            raise ValueError(
                f"axes {file_axes!r} with shape {tuple(shape)} have two {letter} axes; pass "
                "axes= (the file's axes, e.g. 'ZCYX') to say which is which")
        used.add(letter)
        letters[i] = letter
    for i in unnamed:
        free = [c for c in "ZT" if c not in used]
        if not free:
            raise ValueError(
                f"cannot place axis {file_axes[i]!r} of {file_axes!r} {tuple(shape)}: only "
                "T, Z, Y, X and channels are supported; pass axes= to name them")
        letters[i] = free[0]
        used.add(free[0])
    if not {"Y", "X"} <= used:
        raise ValueError(f"axes {file_axes!r} have no Y and X axes")
    perm = sorted((i for i, c in enumerate(letters) if c is not None),
                  key=lambda i: CANONICAL.index(letters[i]))
    return letters, perm, "".join(letters[i] for i in perm)


def to_canonical(array, letters, perm):
    """Index dropped dims at 0 and transpose to canonical order (a view for numpy arrays).

    Parameters
    ----------
    array : ndarray or array-like
        Data in the file's axis order.
    letters, perm : list
        From `canonical_layout`.

    Returns
    -------
    ndarray
        The data in canonical (T, Z, Y, X, C) order, dims that were dropped left out.
    """
    index = tuple(0 if c is None else slice(None) for c in letters)
    array = array[index]
    kept = [i for i, c in enumerate(letters) if c is not None]
    return np.transpose(array, [kept.index(i) for i in perm])


def as_slices(image: np.ndarray, axes: Optional[str] = None) -> Tuple[np.ndarray, tuple, str]:
    """Flatten an image's leading axes into a sequence of 2D images.

    Parameters
    ----------
    image : ndarray
        (..., Y, X[, C]), any dtype; the channel axis may be anywhere if `axes` says so.
    axes : str, optional
        One letter per dim ("S" counts as "C"); None guesses with `guess_axes`.

    Returns
    -------
    slices : ndarray
        (N, Y, X) or (N, Y, X, C), same dtype (a view where numpy can).
    lead : tuple of int
        The leading shape N was flattened from (() for a 2D image).
    axes : str
        The normalised axes, channels last.
    """
    if 0 in image.shape:
        raise ValueError(f"the image is empty (shape {tuple(image.shape)}); there is nothing "
                         "to segment: check the file")
    axes = (axes or guess_axes(image.shape)).upper().replace("S", "C")
    if len(axes) != image.ndim or "Y" not in axes or "X" not in axes:
        raise ValueError(f"axes {axes!r} do not describe an array of shape {image.shape}")
    if "C" in axes and axes[-1] != "C":
        image = np.moveaxis(image, axes.index("C"), -1)
        axes = axes.replace("C", "") + "C"
    core = "YXC" if axes.endswith("C") else "YX"
    if not axes.endswith(core):
        raise ValueError(f"axes {axes!r}: Y and X must come after the stack axes")
    lead = image.shape[: image.ndim - len(core)]
    return image.reshape((-1,) + image.shape[len(lead):]), tuple(lead), axes
