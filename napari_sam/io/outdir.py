"""The output folder of a batch: created or refused with a clear error, and cleared of the
temporary files that killed writes left in it."""

from __future__ import annotations

from pathlib import Path
from typing import List

from .atomic import stale_partial_files


def prepare_outdir(outdir) -> Path:
    """Create the output folder `outdir` (and its parents) or raise a ValueError that names it:
    an existing file, a path under a file, a folder that cannot be created.

    Parameters
    ----------
    outdir : str or os.PathLike
        The folder; "~" is expanded.

    Returns
    -------
    pathlib.Path
        The (now existing) folder.
    """
    outdir = Path(outdir).expanduser()
    if outdir.exists() and not outdir.is_dir():
        raise ValueError(f"the output {outdir} is a file, not a folder; -o/--output takes a "
                         "folder (it is created if missing): choose another name")
    for parent in outdir.parents:
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"the output folder {outdir} cannot be created: {parent} is a "
                             "file; choose a folder path for -o/--output")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"the output folder {outdir} cannot be created ({err.strerror or err}); "
                         "choose another -o/--output") from err
    return outdir


def remove_stale_partials(outdir: Path) -> List[Path]:
    """Remove temporary files that killed writes left in `outdir` (see
    `io.atomic.stale_partial_files`: files a live writer holds are kept); returns them.

    Parameters
    ----------
    outdir : pathlib.Path
        The output folder (not searched recursively).

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    removed = []
    for p in stale_partial_files(outdir):
        try:
            p.unlink()
            removed.append(p)
        except OSError:  # gone meanwhile, or not ours to remove
            pass
    return removed
