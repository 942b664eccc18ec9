"""Side-by-side timing of two source trees of napari_sam (e.g. before / after a refactor).

Each measurement runs in a fresh child process that imports `napari_sam` from one tree; the
trees take turns (A B, B A, A B ...) so that a busy machine slows both alike. Reports the
medians and the ratio B / A per task. Same random weights, image and CPU tuning
(`tune_cpu()`) on both sides.

    git archive <old commit> napari_sam | tar -x -C /tmp/old    # the "before" tree
    .venv/bin/python benchmarks/bench_ab.py /tmp/old . --tasks encoder,automask,click
    .venv/bin/python benchmarks/bench_ab.py /tmp/old . --arch test_vit --size 256 --rounds 1  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent / "tests")


def child(args) -> None:
    sys.path.insert(0, os.path.abspath(args.src))
    sys.path.insert(1, TESTS)
    from napari_sam.runtime.cpu import tune_cpu

    tune_cpu()
    import numpy as np
    import torch
    from testing_utils import randomize_

    import napari_sam
    from napari_sam import Predictor, build_model

    assert napari_sam.__file__.startswith(os.path.abspath(args.src)), napari_sam.__file__
    model = randomize_(build_model(args.arch), seed=0).eval()
    rng = np.random.default_rng(0)
    if args.task == "automask":
        from napari_sam.training.synthetic import nuclei_image

        image, _ = nuclei_image(0, (args.size, args.size), dtype="uint8")
        image = np.repeat(image[..., None], 3, axis=-1)  # as bench_automask.py
    else:
        image = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
    times = []
    if args.task == "encoder":
        pred = Predictor(model, "cpu", "auto", diameter="off")
        for i in range(args.runs + 1):
            t0 = time.perf_counter()
            pred.set_image(image)
            times.append(time.perf_counter() - t0)
    elif args.task == "click":
        pred = Predictor(model, "cpu", "auto", diameter="off")
        pred.set_image(image)
        pts = rng.uniform(0, args.size - 1, (args.runs * 5 + 1, 2))
        for p in pts:
            t0 = time.perf_counter()
            pred.predict(points=[p])
            times.append(time.perf_counter() - t0)
    else:
        from napari_sam import AutoMaskGenerator

        gen = AutoMaskGenerator(model, points_per_side=16, points_per_batch=64, device="cpu",
                                precision="auto", min_candidate_iou=0.88,
                                min_candidate_stability=0.95, stability="lowres")
        for i in range(args.runs + 1):
            t0 = time.perf_counter()
            gen.initialize(image)
            res = gen.generate(0.88, 0.95, nms_thresh=0.7)
            times.append(time.perf_counter() - t0)
        print(f"# {len(res.records)} objects", file=sys.stderr)
    print(json.dumps({"times": times[1:], "threads": torch.get_num_threads()}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="tree A (holds napari_sam/)")
    ap.add_argument("b", help="tree B")
    ap.add_argument("--tasks", default="encoder,automask,click")
    ap.add_argument("--arch", default="vit_b")
    ap.add_argument("--size", type=int, default=0,
                    help="image side (default 1024 for encoder/click, 512 for automask)")
    ap.add_argument("--runs", type=int, default=2, help="timed runs per child (+1 warm-up)")
    ap.add_argument("--rounds", type=int, default=3, help="children per tree and task")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    print(f"load average at start: {os.getloadavg()}", flush=True)
    for task in args.tasks.split(","):
        size = args.size or (512 if task == "automask" else 1024)
        got = {"A": [], "B": []}
        for r in range(args.rounds):
            for side in (("A", "B") if r % 2 == 0 else ("B", "A")):
                src = args.a if side == "A" else args.b
                cmd = [sys.executable, __file__, args.a, args.b, "--child", "--src", src,
                       "--task", task, "--arch", args.arch, "--size", str(size),
                       "--runs", str(args.runs)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode:
                    print(out.stderr[-3000:])
                    return 1
                got[side] += json.loads(out.stdout.strip().splitlines()[-1])["times"]
        ma, mb = statistics.median(got["A"]), statistics.median(got["B"])
        unit = 1e3 if task == "click" else 1.0
        print(f"{task} ({args.arch}, {size}^2): A median {ma * unit:.3g}, B median "
              f"{mb * unit:.3g} {'ms' if unit > 1 else 's'}; B / A = {mb / ma:.3f} "
              f"(A {['%.3g' % (t * unit) for t in got['A']]}, B {['%.3g' % (t * unit) for t in got['B']]}); "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
