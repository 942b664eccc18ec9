"""Two or more checkpoints side by side on the default automask path.

`AutoSegmenter(model)` with nothing else given (diameter estimated and checked by the model,
zoom, the model's automatic mode) on generated nuclei and touching cells of 8-150 px
(`training.multiscale.scaled_sample`, the given seeds) and on held-out 512 px fluorescence
nuclei fields (`synthetic.nuclei_image`, seeds 10,000,019 + i); F1@0.5 / F1@0.75 per image,
then means per kind and per diameter. Used to decide whether a retrained head ships.

    python benchmarks/bench_checkpoints.py --models napari_sam/weights/bundled.pt,NEW.pt \
        --seeds 8000,8001 --heldout 3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_sam import AutoSegmenter, load_model  # noqa: E402
from napari_sam.training.evaluate import match_f1  # noqa: E402
from napari_sam.training.multiscale import scaled_sample  # noqa: E402
from napari_sam.training.synthetic import nuclei_image  # noqa: E402

DIAMETERS = (8, 16, 24, 32, 48, 64, 100, 150)


def image_side(diameter: float) -> int:
    """About 12 diameters, 256 to 2,048 px."""
    return int(np.clip(2 ** np.ceil(np.log2(12 * diameter)), 256, 2048))


def scores(models: dict, image, labels) -> dict:
    out = {}
    for name, model in models.items():
        f = match_f1(AutoSegmenter(model)(image).labels, labels)
        out[name] = (round(f["f1@0.5"], 3), round(f["f1@0.75"], 3))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", required=True, help="comma-separated names or files")
    ap.add_argument("--seeds", default="8000,8001")
    ap.add_argument("--heldout", type=int, default=3)
    a = ap.parse_args(argv)
    names = a.models.split(",")
    models = {n: load_model(n) for n in names}
    rows = []
    for kind in ("nuclei", "cells"):
        for d in DIAMETERS:
            for seed in (int(s) for s in a.seeds.split(",")):
                side = image_side(d)
                image, labels = scaled_sample(kind, d, (side, side), seed)
                rows.append({"kind": kind, "diameter": d, "seed": seed,
                             **scores(models, image, labels)})
                print(json.dumps(rows[-1]), flush=True)
    for i in range(a.heldout):
        image, labels = nuclei_image(10_000_019 + i, (512, 512))
        rows.append({"kind": "heldout nuclei", "diameter": 0, "seed": i,
                     **scores(models, image, labels)})
        print(json.dumps(rows[-1]), flush=True)
    print("mean F1@0.5 / F1@0.75")
    for kind in ("nuclei", "cells", "heldout nuclei"):
        for n in names:
            v = np.array([r[n] for r in rows if r["kind"] == kind]).mean(0)
            print(f"  {kind:15s} {n}: {v[0]:.3f} / {v[1]:.3f}")
    for d in DIAMETERS:
        cells = [f"{n}: " + " / ".join(f"{x:.3f}" for x in
                                       np.array([r[n] for r in rows if r["diameter"] == d]).mean(0))
                 for n in names]
        print(f"  {d:4d} px  " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
