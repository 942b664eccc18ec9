"""Shared helpers of the benchmark scripts: paths, machine description, timing, results.

Every comparison runs ours and the reference in one process on the same inputs with the
same (random) weights, warms both up, then alternates timed runs of the two sides so that
a change of machine load hits both alike; it reports medians and their ratio. Besides wall
time each run records the process CPU time: on a machine shared with other work the wall
time stretches with the load, the CPU time much less.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
for p in (str(ROOT), str(ROOT / "tests")):  # the package; reference_stub, testing_utils
    if p not in sys.path:
        sys.path.insert(0, p)

# Before torch is imported: the benchmarks run in a process tuned for CPU inference
# (`napari_sam.tune_cpu()`: OpenMP wait policy, threads, allocator), as the command line
# runs, unless NAPARI_SAM_TUNE_CPU=0 (an untouched process, as a library user's or the
# napari plugin's by default). Both sides of a comparison run under the same settings;
# `machine()` records which.
from napari_sam.runtime.cpu import tune_cpu_if_requested  # noqa: E402

CPU_TUNING = tune_cpu_if_requested(default=True)


def cpu_tuning() -> str:
    """"tune_cpu(): <what it set>" or "none (untouched process)"."""
    return (f"tune_cpu(): {CPU_TUNING.describe()}" if CPU_TUNING is not None
            else "none (untouched process)")


def set_threads(n: int) -> None:
    """torch's thread count `n` for this run (0: leave it as the tuning, or torch, set it)."""
    import torch

    if n:
        torch.set_num_threads(n)


def machine() -> dict:
    """CPU model, cores, load average, torch version and threads, GPU (if any)."""
    import torch

    model = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from napari_sam.device import cpu_has_fast_bf16

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "fast_bf16": cpu_has_fast_bf16(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(libgomp default: spin)"),
        "cpu_tuning": cpu_tuning(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def describe(m: dict) -> str:
    return (f"{m['cpu']}, {m['cores']} CPUs, torch {m['torch']}, {m['threads']} threads, "
            f"OMP_WAIT_POLICY {m.get('omp_wait_policy')}, CPU tuning {m.get('cpu_tuning')}, "
            f"load average {m['load_avg'][0]:.2f} {m['load_avg'][1]:.2f} {m['load_avg'][2]:.2f}"
            + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"))


class Timer:
    """Wall and process-CPU seconds of each call."""

    def __init__(self, name: str, fn) -> None:
        self.name, self.fn = name, fn
        self.wall: list = []
        self.cpu: list = []
        self.out = None

    def __call__(self, record: bool = True):
        c0, t0 = time.process_time(), time.perf_counter()
        self.out = self.fn()
        t1, c1 = time.perf_counter(), time.process_time()
        if record:
            self.wall.append(t1 - t0)
            self.cpu.append(c1 - c0)
        return self.out

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

    def summary(self) -> dict:
        return {"median_s": self.median, "median_cpu_s": self.median_cpu,
                "runs_s": [round(t, 4) for t in self.wall],
                "cpu_s": [round(t, 4) for t in self.cpu]}


def alternate(timers, runs: int, warmup: int = 1, runs_of=None) -> None:
    """Warm every timer up, then run them in turn `runs` times (`runs_of[name]` overrides
    the count of one side, e.g. a slow reference)."""
    runs_of = runs_of or {}
    for t in timers:
        for _ in range(warmup):
            t(record=False)
    for i in range(max([runs] + list(runs_of.values()))):
        for t in timers:
            if i < runs_of.get(t.name, runs):
                t()


def fmt_s(s: float) -> str:
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    return path


def agreement(a, b, threshold: float = 0.0) -> dict:
    """Correlation, max |a - b| relative to max |b|, and IoU of `> threshold` of two arrays."""
    import torch

    a, b = torch.as_tensor(a).double().flatten(), torch.as_tensor(b).double().flatten()
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    ma, mb = a > threshold, b > threshold
    union = (ma | mb).sum().item()
    return {"corr": corr, "max_rel_diff": ((a - b).abs().max() / b.abs().max()).item(),
            "mask_iou": (ma & mb).sum().item() / union if union else 1.0}


def make_image(size: int, seed: int = 0):
    """uint8 RGB (size, size, 3) with smooth structure and noise; the same for every side."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = 127 + 60 * np.sin(xx / 37.0) * np.cos(yy / 23.0)
    img = base[..., None] + rng.normal(0, 20, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)
