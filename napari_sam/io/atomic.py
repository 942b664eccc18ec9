"""Atomic file writes: a reader never sees a half-written file under the final name.

Data goes to a temporary file in the destination folder (`.<name>.<random>.partial<suffix>`,
hidden, same filesystem so the final rename is atomic), is flushed and fsync'ed, and only
then renamed over the final name. On any exception, KeyboardInterrupt included, the temporary
file is removed and the destination is left exactly as it was (absent, or the old file).

While it is written, the temporary file is held with an advisory lock (POSIX `flock`), so
`stale_partial_files` can tell the leftovers of a killed writer (no lock) from the file of a
writer still at work, and a batch may remove only the former.

An existing destination is refused with `FileExistsError` unless `overwrite=True`. Without
overwrite the final step is a hard link, which fails if another process created the file in
the meantime, so two writers never silently replace each other's output.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator, Union

PathLike = Union[str, "os.PathLike[str]"]

PARTIAL = ".partial"


def _exists_message(path: Path) -> str:
    return (f"{path} already exists; pass --overwrite (or overwrite=True) to replace it, "
            "or choose another output")


def check_writable(path: PathLike, overwrite: bool = False) -> Path:
    """Raise `FileExistsError` if `path` exists and `overwrite` is false; return it as a Path.

    Parameters
    ----------
    path : str or os.PathLike
        The output file; its folder must exist and it must not be a directory.
    overwrite : bool
        Allow an existing file.

    Returns
    -------
    pathlib.Path
        `path`.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a file name")
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, _exists_message(path), str(path))
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"the folder {path.parent} does not exist",
                                str(path.parent))
    return path


def _umask() -> int:
    try:  # Linux: read it without changing it
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _lock(fd: int) -> bool:
    """Take an exclusive, non-blocking advisory lock on `fd`; False if another holds it.

    A writer holds the lock on its temporary file until the file is renamed or removed, so
    a temporary file nobody holds was left by a writer that was killed (`stale_partial_files`).
    Where advisory locks do not exist (Windows), True: age decides there."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _new_temp(path: Path):
    """-> (temporary file name, an open descriptor holding its lock, or None without
    advisory locks)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL + path.suffix,
                               dir=path.parent)
    try:
        import fcntl  # noqa: F401
        _lock(fd)
    except ImportError:  # pragma: no cover - Windows: an open handle would block the rename
        os.close(fd)
        fd = None
    # mkstemp makes the file private (0600); give it the permissions a plain open() would
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp, fd


def _fsync_file(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform (Windows); the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: str, path: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)  # fails if `path` appeared meanwhile: never clobber
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, _exists_message(path), str(path)) from None
        except OSError:  # filesystem without hard links (FAT, some network shares)
            check_writable(path, overwrite=False)
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


@contextmanager
def atomic_path(path: PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary file name beside `path` for libraries that want a file name.

    The name keeps `path`'s suffix (libraries choose formats by it). The file exists (empty)
    when yielded; write it completely inside the block. On success it is fsync'ed and renamed
    to `path`; on any exception it is removed and `path` is untouched.

        with atomic_path("out_labels.tif", overwrite=True) as tmp:
            tifffile.imwrite(tmp, labels)

    Parameters
    ----------
    path : str or os.PathLike
        The final file name.
    overwrite : bool
        Replace an existing `path` (else `FileExistsError`).

    Yields
    ------
    str
        The temporary file name to write to.
    """
    path = check_writable(path, overwrite)
    tmp, lock_fd = _new_temp(path)
    try:
        yield tmp
        if not os.path.isfile(tmp):
            raise FileNotFoundError(errno.ENOENT, "nothing was written to the temporary file",
                                    tmp)
        _fsync_file(tmp)
        _commit(tmp, path, overwrite)
    except BaseException:
        _discard(tmp)
        raise
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


@contextmanager
def atomic_write(path: PathLike, overwrite: bool = False, mode: str = "wb",
                 **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; rename it to `path` on success.

    `mode` is a write mode ("wb", "w", "wt", "xb", ...); `open_kwargs` go to `open()` (e.g.
    `encoding="utf-8"`, `newline=""` for the csv module). Raises `FileExistsError` (naming
    `--overwrite`) if `path` exists and `overwrite` is false.

        with atomic_write("out.json", mode="w", encoding="utf-8") as f:
            json.dump(obj, f)

    Parameters
    ----------
    path : str or os.PathLike
        The final file name.
    overwrite : bool
        Replace an existing `path`.
    mode : str
        A write mode for `open()`.
    **open_kwargs
        Passed to `open()`.

    Yields
    ------
    file object
        The open temporary file.
    """
    if not set(mode) & {"w", "x"} or set(mode) & {"r", "a", "+"}:
        raise ValueError(f"atomic_write needs a write mode such as 'wb' or 'w', got {mode!r}")
    mode = mode.replace("x", "w")
    with atomic_path(path, overwrite) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def partial_files(folder: PathLike) -> list:
    """Temporary files left in `folder` by writes that were killed (SIGKILL, power loss).

    Ordinary failures clean up after themselves; this is for a resumable batch that wants
    to report or remove leftovers of hard kills. Only names this module creates match.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to look in (not recursively).

    Returns
    -------
    list of pathlib.Path
        Sorted by name.
    """
    return sorted(p for p in Path(folder).glob(".*" + PARTIAL + "*")
                  if p.is_file() and PARTIAL in p.name)


STALE_AFTER_S = 2.0  # a fresh temporary file may not be locked yet (mkstemp, then flock)
STALE_UNLOCKED_AFTER_S = 24 * 3600.0  # where there are no advisory locks (Windows)


def stale_partial_files(folder: PathLike) -> list:
    """The `partial_files` of `folder` that no live writer holds: left by killed writes.

    A writer holds an advisory lock on its temporary file (see `_lock`); a file whose lock
    can be taken, older than a couple of seconds, belongs to no running process, so a batch
    may remove it even while another batch writes into the same folder. Without advisory
    locks (Windows) only files older than a day count as stale.

    Parameters
    ----------
    folder : str or os.PathLike
        The folder to look in (not recursively).

    Returns
    -------
    list of pathlib.Path
        The stale temporary files, sorted by name.
    """
    import time

    try:
        import fcntl  # noqa: F401
        age = STALE_AFTER_S
    except ImportError:  # pragma: no cover - Windows
        age = STALE_UNLOCKED_AFTER_S
    now = time.time()
    out = []
    for p in partial_files(folder):
        try:
            if now - p.stat().st_mtime < age:
                continue
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd):
                out.append(p)
        finally:
            os.close(fd)
    return out
