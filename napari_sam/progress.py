"""Progress reporting shared by scripts, the command line and napari workers.

Long computations take `progress(done, total, message)`; the default does nothing.
"""

from __future__ import annotations

from typing import Callable, Optional

ProgressCallback = Callable[[int, int, str], None]


def null_progress(done: int, total: int, message: str = "") -> None:
    """The default: report nothing."""


def tqdm_progress(desc: str = "", disable: Optional[bool] = None) -> ProgressCallback:
    """A callback that drives a tqdm bar on stderr (for the command line)."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int, message: str = "") -> None:
        nonlocal bar
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=desc, disable=disable, leave=True)
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if done >= total:
            bar.close()

    return update
