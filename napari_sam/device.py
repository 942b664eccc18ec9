"""Choosing the compute device and numeric precision."""

from __future__ import annotations

import contextlib
import os
from typing import Optional, Union

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# torch's intra-op thread count when this module was imported: if it differs later, the user
# (or the host application) chose a count and `configure_threads` leaves it alone
_STARTUP_THREADS = torch.get_num_threads()
_THREAD_ENV = ("NAPARI_SAM_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def resolve_device(device: Union[str, torch.device, None] = "auto") -> torch.device:
    """"auto" picks cuda, then mps, then cpu; anything else is passed to torch.device.

    Parameters
    ----------
    device : str, torch.device or None
        "auto" or None to choose; "cpu", "cuda", "cuda:1", "mps", ... or a torch.device.

    Returns
    -------
    torch.device
        The device (ValueError for "cuda" without a CUDA GPU).
    """
    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is available; use 'cpu'")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """True when oneDNN can run bf16 matmuls natively (AMX or AVX-512 bf16).

    Returns
    -------
    bool
        Whether this CPU has AMX or AVX-512 bf16.
    """
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        return False
    if "AMX" in cap.upper():
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The image encoder's dtype: "fp32", "bf16", "fp16" as named; "auto" picks bf16 on CUDA
    (fp16 where bf16 is unsupported) and on CPUs with AMX / AVX-512 bf16, else fp32. The
    decoder's dtype may differ under "auto": see `resolve_decoder_precision`.

    Parameters
    ----------
    precision : str
        One of `PRECISIONS`.
    device : torch.device
        Where the encoder runs.

    Returns
    -------
    torch.dtype
        torch.float32, torch.bfloat16 or torch.float16.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


# "auto" on CPU runs the mask decoder in bf16 only when its image tokens (embedding grid^2 x
# channels) number at least this many: SAM ViT-B/L/H and MobileSAM (64^2 x 256 = 2^20), where
# bf16 halves the click time. Smaller decoders (the bundled model: 32^2 x 128 = 2^17) spend
# their time in per-op overhead, run as fast in fp32 (9 ms vs 11 ms per click) and agree with
# the fp32 reference far better: bf16 in the decoder caused most of the bf16-vs-fp32 mask
# disagreement of the bundled model (benchmarks/README.md).
DECODER_BF16_MIN_TOKENS = 2 ** 19


def resolve_decoder_precision(precision: str, device: torch.device, config) -> torch.dtype:
    """The mask decoder's dtype for `precision` and a model `config` (`SamConfig`).

    "fp32", "bf16", "fp16": that dtype, as for the encoder. "auto": the encoder's dtype
    (`resolve_precision`), except on CPU where a decoder with fewer image-token elements
    than `DECODER_BF16_MIN_TOKENS` runs in fp32.

    Parameters
    ----------
    precision : str
        One of `PRECISIONS`.
    device : torch.device
        Where the decoder runs.
    config : SamConfig
        The model's configuration (its `image_token_values`).

    Returns
    -------
    torch.dtype
        torch.float32, torch.bfloat16 or torch.float16.
    """
    dtype = resolve_precision(precision, device)
    if precision == "auto" and device.type == "cpu" and dtype != torch.float32:
        if config.image_token_values < DECODER_BF16_MIN_TOKENS:
            return torch.float32
    return dtype


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed-precision context for `dtype`, a no-op for fp32.

    Parameters
    ----------
    device : torch.device
        Where the computation runs.
    dtype : torch.dtype
        The autocast dtype (torch.float32: none).

    Returns
    -------
    context manager
        `torch.autocast(device.type, dtype)`, or a null context for fp32.
    """
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask), at least 1.

    Returns
    -------
    int
        The number of usable CPUs, at least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _physical_cores() -> int:
    """Physical cores (Linux /proc/cpuinfo), else the CPU count."""
    try:
        with open("/proc/cpuinfo") as f:
            ids, phys = set(), "0"
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":", 1)[1].strip()
                elif line.startswith("core id"):
                    ids.add((phys, line.split(":", 1)[1].strip()))
        if ids:
            return len(ids)
    except OSError:
        pass
    return os.cpu_count() or 1


def _torch_default_threads() -> int:
    """The intra-op thread count torch starts with when nobody chose one: one per physical
    core (capped by the CPUs this process may use)."""
    return max(1, min(_physical_cores(), available_cores()))


def configure_threads(num_threads: Optional[int] = None) -> int:
    """Set torch's intra-op threads and return the count in use.

    `num_threads` given: use it. Otherwise $NAPARI_SAM_NUM_THREADS when set; otherwise, unless
    the user chose a count (OMP_NUM_THREADS / MKL_NUM_THREADS set, or
    `torch.set_num_threads` called -- seen as a count other than torch's default of one per
    physical core), every CPU the process may run on. torch's own default is the number of
    physical cores, which leaves the second hardware thread of each core idle. Inter-op
    threads are left alone: napari-sam runs no inter-op parallel work, and they can only be
    set before any such work has started.

    Parameters
    ----------
    num_threads : int, optional
        The thread count to use (None: chosen as above).

    Returns
    -------
    int
        torch's intra-op thread count after the call.
    """
    if num_threads is None and os.environ.get("NAPARI_SAM_NUM_THREADS", "").strip():
        num_threads = int(os.environ["NAPARI_SAM_NUM_THREADS"])
    if num_threads is not None:
        n = max(1, int(num_threads))
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        return n
    user_set = (any(os.environ.get(v, "").strip() for v in _THREAD_ENV[1:])
                or torch.get_num_threads() != _STARTUP_THREADS
                or _STARTUP_THREADS != _torch_default_threads())
    if not user_set and torch.get_num_threads() < available_cores():
        torch.set_num_threads(available_cores())
        globals()["_STARTUP_THREADS"] = torch.get_num_threads()  # ours, not the user's
    return torch.get_num_threads()


# On CPU every prompt carries its own (hw, C) copy of the image tokens through the decoder,
# and how many prompts one call should take depends on what a fresh tensor costs. With
# glibc's default thresholds every tensor above its mmap threshold (at most 32 MiB) is a new
# mmap that is page-faulted in, and calls whose copies stay below it win (ViT-B, automask
# 16 x 16 points on 2 cores: 2.9 s of decoding with 8 prompts per call, 4.8 s with 64). With
# the allocator tuned (`tune_cpu`, `allocator`) freed blocks are reused and larger calls
# amortise the per-call work a little (whole automask run: 3.71 s with 8 per call, 3.43 s
# with 32, 3.47 s with 64). The default ("auto") is the value that is safe either way and
# depends on the model only; `cpu_decode_chunk(config, tuned_allocator=True)` is there for
# a caller that tuned the allocator and says so.
# Prompts per call: this many image-token values in all (8 or 32 for SAM's 64^2 x 256
# tokens, 64 for the bundled model's 32^2 x 128), at most 64.
DECODE_CHUNK_VALUES = 2 ** 23
DECODE_CHUNK_VALUES_TUNED = 2 ** 25


def cpu_decode_chunk(config, tuned_allocator: bool = False) -> int:
    """Prompts decoded per model call on CPU for a model `config` (`SamConfig`): the value
    for glibc's default allocator settings, or for the tuned ones (`tuned_allocator`).

    Parameters
    ----------
    config : SamConfig
        The model's configuration (its `image_token_values`).
    tuned_allocator : bool
        The caller has tuned glibc's allocator (`allocator.tune`).

    Returns
    -------
    int
        Prompts per decoder call, 1 to 64.
    """
    values = DECODE_CHUNK_VALUES_TUNED if tuned_allocator else DECODE_CHUNK_VALUES
    return max(1, min(64, values // config.image_token_values))
