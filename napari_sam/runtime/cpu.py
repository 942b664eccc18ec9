"""Opt-in tuning of this process for CPU inference: `tune_cpu()`.

napari-sam's library code never changes the process it runs in: importing `napari_sam`
and creating or using a `Predictor` leave `os.environ`, torch's thread count and the C
allocator as they were (`tests/test_cpu_tuning.py`). What makes CPU inference faster but
reaches beyond napari-sam is collected here and applied only on request:

- **OpenMP wait policy.** `OMP_WAIT_POLICY=PASSIVE`: a worker thread that waits at the end
  of a parallel region sleeps instead of spinning. With libgomp's spinning default, a
  process that shares its cores with other work (napari, a training run, a browser) stalls
  at every barrier until the spinning thread's time slice ends: measured on a busy 2-core
  machine, the bundled model's 512 x 512 embedding took 0.65-2.0 s on 2 threads instead of
  0.07-0.10 s. libgomp reads the setting once, when it is loaded (with torch), so it can be
  set only before that; an OMP_WAIT_POLICY or GOMP_SPINCOUNT the user set always wins.
- **Threads.** torch starts with one thread per physical core; `device.configure_threads`
  uses every CPU the process may run on, unless the user chose a count
  (NAPARI_SAM_NUM_THREADS, OMP_NUM_THREADS, MKL_NUM_THREADS or `torch.set_num_threads`).
- **Allocator.** glibc keeps large freed blocks for reuse (`allocator.tune`; off with
  NAPARI_SAM_MALLOC_TUNING=0).

Who calls it: the `napari-sam` command line (first thing in `cli.main`) and the benchmark
scripts; the napari plugin only when NAPARI_SAM_TUNE_CPU=1. NAPARI_SAM_TUNE_CPU=0 keeps the
command line and the benchmarks from tuning (`tuning_requested`). Scripts call `tune_cpu()`
themselves, before importing torch for the wait policy to take effect.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Optional

ENV = "NAPARI_SAM_TUNE_CPU"
_OPENMP_LIBS = ("libgomp", "libiomp", "libomp")


@dataclass(frozen=True)
class CpuTuning:
    """What `tune_cpu` found and did.

    Parameters
    ----------
    threads : int
        torch's intra-op thread count afterwards.
    allocator : bool
        Whether glibc's allocator thresholds were raised.
    wait_policy : str
        The OpenMP wait policy in the environment ("PASSIVE" when `tune_cpu` set it, ""
        when none is set and libgomp spins by default).
    wait_policy_set : bool
        Whether `tune_cpu` set it (early enough to take effect).
    """

    threads: int
    allocator: bool
    wait_policy: str
    wait_policy_set: bool

    def describe(self) -> str:
        """The tuning on one line, for logs and the CLI.

        Returns
        -------
        str
        """
        policy = self.wait_policy or "unset (libgomp spins)"
        return (f"{self.threads} threads, allocator tuned: {self.allocator}, "
                f"OMP_WAIT_POLICY {policy}"
                + (" (set by tune_cpu)" if self.wait_policy_set else ""))


def openmp_loaded() -> bool:
    """Whether an OpenMP runtime is already loaded into this process (then it has read its
    wait policy): from /proc/self/maps on Linux, else whether torch is imported.

    Returns
    -------
    bool
    """
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "torch" in sys.modules
    return any(lib in maps for lib in _OPENMP_LIBS) or "torch" in sys.modules


def set_wait_policy(policy: str = "PASSIVE") -> bool:
    """Set OMP_WAIT_POLICY to `policy` if that can still take effect (no OpenMP runtime
    loaded yet) and the user set neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT.

    Parameters
    ----------
    policy : {"PASSIVE", "ACTIVE"}

    Returns
    -------
    bool
        True when it was set.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    if openmp_loaded():
        return False
    os.environ["OMP_WAIT_POLICY"] = policy
    return True


def tune_cpu(num_threads: Optional[int] = None, *, wait_policy: bool = True,
             threads: bool = True, allocator: bool = True) -> CpuTuning:
    """Tune this process for CPU inference (see the module's docstring); safe to call again.

    Parameters
    ----------
    num_threads : int, optional
        torch's intra-op thread count; None: $NAPARI_SAM_NUM_THREADS, else every available
        CPU unless the user chose a count (`device.configure_threads`).
    wait_policy, threads, allocator : bool
        Which of the three settings to apply.

    Returns
    -------
    CpuTuning
        The state afterwards.
    """
    policy_set = set_wait_policy() if wait_policy else False
    from .. import allocator as _allocator  # imports nothing heavy
    from ..device import configure_threads  # imports torch

    import torch

    n = configure_threads(num_threads) if threads else torch.get_num_threads()
    tuned = _allocator.tune() if allocator else _allocator.tuned()
    return CpuTuning(n, tuned, os.environ.get("OMP_WAIT_POLICY", ""), policy_set)


def tuning_requested(default: bool) -> bool:
    """$NAPARI_SAM_TUNE_CPU as a yes/no (1/0, true/false, yes/no, on/off).

    Parameters
    ----------
    default : bool
        The answer when it is unset or empty: True from the command line and the
        benchmarks, False from the napari plugin.

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        For any other value.
    """
    value = os.environ.get(ENV, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{ENV}={os.environ[ENV]!r}: use 1 (tune the process for CPU "
                     "inference) or 0 (leave it as it is)")


def tune_cpu_if_requested(default: bool) -> Optional[CpuTuning]:
    """`tune_cpu()` when `tuning_requested(default)`, else nothing.

    Parameters
    ----------
    default : bool
        As for `tuning_requested`: True from the command line and the benchmarks, False
        from the napari widgets.

    Returns
    -------
    CpuTuning or None
        None when nothing was tuned.
    """
    return tune_cpu() if tuning_requested(default) else None
