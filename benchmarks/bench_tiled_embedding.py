"""Tiled embedding of a large image: napari-sam against the reference encoder, tile by tile.

The case is micro-sam's `precompute_image_embeddings(..., tile_shape=(512, 512),
halo=(64, 64))` on a 2048 x 2048 image with a random-weight ViT-B: 16 windows of 640 x 640
(512 plus a 64-pixel halo on each side), each resized to 1024 and encoded. napari-sam runs
the same windows (`tile_size=640, overlap=128`) through `TiledEmbeddings` into its zarr
cache; the reference runs Meta's `segment_anything` predictor (`set_image`) on each window.
Both include reading, resizing and normalisation; napari-sam also writes its cache.
micro-sam itself is not installed here (its dependencies need the real torchvision); it was
measured on this kind of machine at 219 s for this case.

    python benchmarks/bench_tiled_embedding.py                    # ViT-B, 2048, minutes
    python benchmarks/bench_tiled_embedding.py --arch test_vit --size 512 --tile 128 --halo 32

Also reported: napari-sam's own default tiling for the model (tiles of the model's input
size at native resolution, e.g. 1024/128 for ViT-B: 9 tiles on 2048 x 2048 instead of 16
upsampled ones), which is what `napari-sam automask` would do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def ours(model, image, tile, overlap, precision, cache_dir):
    from napari_sam.tiled import TiledEmbeddings

    warm = TiledEmbeddings(model, image[:tile, :tile], tile_size=tile, overlap=overlap,
                           precision=precision)
    warm.encode([warm.grid[0, 0]])  # warm-up (first-call kernel set-up), not timed
    t = time.perf_counter()
    emb = TiledEmbeddings(model, image, tile_size=tile, overlap=overlap, cache=cache_dir,
                          precision=precision)
    n = emb.compute()
    return time.perf_counter() - t, n, emb


def reference(model, image, emb, limit=None):
    """segment_anything's SamPredictor on each of `emb`'s windows (same pixels, uint8)."""
    import reference_stub

    reference_stub.install()  # a torchvision stand-in: the reference imports it
    from segment_anything import SamPredictor

    ref = reference_stub.build_reference(model.config)
    missing = ref.load_state_dict(model.state_dict(), strict=False)
    same_weights = not missing.missing_keys and not missing.unexpected_keys
    pred = SamPredictor(ref)
    tiles = list(emb.grid)[:limit]
    pred.set_image(np.zeros(emb.grid[0, 0].shape + (3,), np.uint8))  # warm-up, not timed
    t = time.perf_counter()
    first = None
    for tile in tiles:
        px = emb.source.pixels(tile.window, emb.value_range)
        pred.set_image(np.round(px).astype(np.uint8))
        if first is None:
            first = pred.get_image_embedding()[0].numpy()
    return time.perf_counter() - t, len(tiles), first, same_weights


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="vit_b")
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--tile", type=int, default=512, help="micro-sam tile_shape")
    ap.add_argument("--halo", type=int, default=64, help="micro-sam halo")
    ap.add_argument("--precision", nargs="+", default=["fp32", "auto"])
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--no-default-tiling", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from napari_sam import build_model
    from napari_sam.tiled import default_tiling
    from napari_sam.training.synthetic import nuclei_image

    torch.manual_seed(0)
    model = build_model(a.arch)
    image, _ = nuclei_image(0, size=(a.size, a.size))
    win, ov = a.tile + 2 * a.halo, 2 * a.halo
    print(f"{a.arch} (random weights), {a.size} x {a.size} uint16, windows {win} "
          f"(tile {a.tile} + halo {a.halo}), {torch.get_num_threads()} threads", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        emb = None
        for prec in a.precision:
            s, n, e = ours(model, image, win, ov, prec, Path(tmp) / f"c-{prec}")
            emb = emb or e
            rows.append((f"napari-sam {prec}, micro-sam windows", n, s))
            print(f"  napari-sam {prec:>4}: {n} tiles in {s:7.1f} s", flush=True)
        if not a.no_default_tiling:
            t0, o0 = default_tiling(model)
            s, n, _ = ours(model, image, t0, o0, a.precision[-1], Path(tmp) / "c-default")
            rows.append((f"napari-sam {a.precision[-1]}, default tiling {t0}/{o0}", n, s))
            print(f"  napari-sam default tiling {t0}/{o0}: {n} tiles in {s:7.1f} s", flush=True)
        if not a.no_reference:
            s, n, first, same = reference(model, image, emb)
            rows.append(("reference segment_anything fp32, same windows", n, s))
            print(f"  reference fp32: {n} tiles in {s:7.1f} s", flush=True)
            if same:
                ours_first = emb.store.get(emb.grid[0, 0].index)
                err = float(np.abs(ours_first - first).max() / (np.abs(first).max() + 1e-12))
                print(f"  first tile, napari-sam cache vs reference: max rel. diff {err:.1e}")
    base = next((r for r in rows if r[0].startswith("reference")), None)
    print("\n| run | tiles | seconds | reference / this |\n|---|---|---|---|")
    for name, n, s in rows:
        ratio = f"{base[2] / s:.2f}" if base else "-"
        print(f"| {name} | {n} | {s:.1f} | {ratio} |")
    if a.arch == "vit_b" and a.size == 2048 and a.tile == 512 and a.halo == 64:
        print("| micro-sam precompute_image_embeddings (measured here earlier) | 16 | 219 | "
              f"{(base[2] / 219):.2f} |" if base else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
