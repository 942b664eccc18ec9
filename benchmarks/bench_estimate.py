"""Diameter estimate against the truth, on generated nuclei and touching cells.

For each kind, diameter and seed: the true median diameter of `scaled_sample`'s labels, the
estimate (`scale.estimate_diameter`), their ratio, the confidence and polarity; then per
kind the median and largest |ratio - 1| and how many images are off by more than 20 %.
Seeds default to 3000-3002 (apart from training 0-3, the object-size benchmark's 1000+ and
the held-out 10,000,019+). Image side: about 12 diameters, 256 to 2,048 px.

    python benchmarks/bench_estimate.py --seeds 3000,3001,3002
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_sam.scale import estimate_diameter  # noqa: E402
from napari_sam.training.multiscale import median_diameter, scaled_sample  # noqa: E402


def image_side(diameter: float) -> int:
    """Image side for objects of `diameter` px: about 12 diameters, 256 to 2,048 px."""
    return int(np.clip(2 ** np.ceil(np.log2(12 * diameter)), 256, 2048))


def ratios(kinds, diameters, seeds, verbose: bool = True) -> dict:
    """{(kind, diameter, seed): estimated / true median diameter}."""
    out = {}
    for kind in kinds:
        for d in diameters:
            side = image_side(d)
            for seed in seeds:
                image, labels = scaled_sample(kind, d, (side, side), seed)
                true, est = median_diameter(labels), estimate_diameter(image)
                out[(kind, d, seed)] = est.diameter / true
                if verbose:
                    print(f"{kind:6s} d={d:5g} side={side:4d} seed={seed} true={true:6.1f} "
                          f"est={est.diameter:6.1f} ratio={est.diameter / true:5.2f} "
                          f"conf={est.confidence:.2f} pol={est.polarity:+d}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default="nuclei,cells")
    ap.add_argument("--diameters", default="8,12,16,24,32,48,64,100,150")
    ap.add_argument("--seeds", default="3000,3001,3002")
    a = ap.parse_args(argv)
    kinds = a.kinds.split(",")
    r = ratios(kinds, [float(v) for v in a.diameters.split(",")],
               [int(v) for v in a.seeds.split(",")])
    for kind in kinds:
        err = np.array([abs(v - 1) for k, v in r.items() if k[0] == kind])
        print(f"{kind}: median |ratio - 1| {np.median(err):.3f}, largest {err.max():.3f}, "
              f"off by > 20 %: {(err > 0.2).sum()} / {len(err)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
