"""Progress reporting shared by scripts, the command line and napari workers.

Long computations take `progress(done, total, message)`; the default does nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

ProgressCallback = Callable[[int, int, str], None]


def null_progress(done: int, total: int, message: str = "") -> None:
    """The default: report nothing.

    Parameters
    ----------
    done : int
        Steps done.
    total : int
        Steps in all.
    message : str
        What is being done.
    """


def tqdm_progress(desc: str = "", disable: Optional[bool] = None) -> ProgressCallback:
    """A callback that drives a tqdm bar on stderr (for the command line).

    Parameters
    ----------
    desc : str
        The bar's label.
    disable : bool, optional
        As tqdm's `disable` (None: off when stderr is not a terminal).

    Returns
    -------
    callable
        `progress(done, total, message="")`; the bar closes when done reaches total.
    """
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


def plain_progress(desc: str = "", every_s: float = 5.0, file: Optional[TextIO] = None,
                   clock=time.monotonic) -> ProgressCallback:
    """A callback that prints plain lines ("automask: 3/10 (30%) cells.tif"), for logs.

    A line is printed for the first call, when the message names another item (a new image
    or tile stage), at the end, and otherwise at most once every `every_s` seconds, so a
    long run leaves a readable log without carriage returns. `file` defaults to stderr.

    Parameters
    ----------
    desc : str
        The lines' prefix.
    every_s : float
        Least seconds between two lines of the same item.
    file : text file, optional
        Where the lines go (None: stderr).
    clock : callable
        Returns the time in seconds (for tests).

    Returns
    -------
    callable
        `progress(done, total, message="")`.
    """
    last = {"t": None, "msg": None, "done": None}

    def update(done: int, total: int, message: str = "") -> None:
        now = clock()
        head = message.split(":")[0].split(" ")[0] if message else ""
        due = (last["t"] is None or now - last["t"] >= every_s or head != last["msg"]
               or (total and done >= total))
        if not due or (done, head) == (last["done"], last["msg"]):
            return
        last.update(t=now, msg=head, done=done)
        pct = f" ({100 * done // total}%)" if total else ""
        out = file or sys.stderr
        print(f"{desc + ': ' if desc else ''}{done}/{total}{pct} {message}".rstrip(),
              file=out, flush=True)

    return update


def cli_progress(desc: str = "", file: Optional[TextIO] = None) -> ProgressCallback:
    """The command line's progress: a tqdm bar on a terminal, `plain_progress` lines when
    stderr is a file or a pipe (a log of a long run).

    Parameters
    ----------
    desc : str
        The bar's label or the lines' prefix.
    file : text file, optional
        Where plain lines go (None: stderr).

    Returns
    -------
    callable
        `progress(done, total, message="")`.
    """
    out = file or sys.stderr
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    return tqdm_progress(desc) if tty else plain_progress(desc, file=out)
