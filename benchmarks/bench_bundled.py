"""The bundled model: embedding a 512 x 512 image and one click, against its goals
(embed < 0.5 s, click < 50 ms) and side by side with MobileSAM's reference code.

The model is `napari_sam/weights/bundled.pt` when it is there, otherwise the bundled
architecture with random weights (the script says which). The image is a synthetic
fluorescence nuclei field (`napari_sam.training.synthetic.nuclei_image`); clicks go to the
centres of its nuclei, so the masks have realistic sizes when the trained weights are used.
Both sides see the same uint8 RGB pixels; ours is also timed on the uint16 grayscale
original (percentile normalisation included), the way microscopy images arrive.

The reference is MobileSAM's TinyViT / decoder (package `mobile_sam`, through the test
stand-ins for torchvision and timm) with our weights loaded strictly: its own forward
hard-codes a 64 x 64 grid, so its features come from the same line-by-line helper the parity
tests use, and its `SamPredictor.predict` answers the clicks. Skipped when mobile_sam is
missing.

    .venv/bin/python benchmarks/bench_bundled.py
"""

from __future__ import annotations

import _common as C  # first: sets up paths and tunes the CPU before torch  # noqa: I001
import argparse
import statistics
import sys
import time

import numpy as np
import torch



def reference_side(model, image_rgb):
    """(embed_fn, click_fn) of MobileSAM's implementation with `model`'s weights, or None."""
    try:
        import conftest

        conftest.reference_stub.install()
        try:
            import timm.models.layers  # noqa: F401
        except ImportError:
            conftest._install_timm_shim()
        import mobile_sam  # noqa: F401
        from mobile_sam import SamPredictor
        from test_parity import build_mobile_reference, reference_tiny_vit_features
    except ImportError as err:
        print(f"reference skipped: {err}")
        return None
    cfg = model.config
    ref = build_mobile_reference(sys.modules["mobile_sam"], cfg)
    # MobileSAM derives each stage's grid from its own stride pattern (2, 2, 1); the bundled
    # model's merges are (2, 1, 1): give every block and merge its real input grid
    g = cfg.image_size // 4
    for i, layer in enumerate(ref.image_encoder.layers):
        for blk in getattr(layer, "blocks", []):
            if hasattr(blk, "input_resolution"):
                blk.input_resolution = (g, g)
        if getattr(layer, "downsample", None) is not None:
            layer.downsample.input_resolution = (g, g)
            if i < len(cfg.encoder.merge_strides):
                g //= cfg.encoder.merge_strides[i]
    # MobileSAM always builds the classifier's norm (`norm_head`), unused for features; the
    # bundled config has no classifier, so exactly those two keys may be missing
    missing, unexpected = ref.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("image_encoder.norm_head.") for k in missing):
        raise RuntimeError(f"state dict mismatch: {missing} {unexpected}")
    ref.eval()
    rp = SamPredictor(ref)

    from napari_sam.transforms import resize_for_model

    def embed():
        # SamPredictor.set_image, with the encoder call replaced by the grid-aware helper;
        # the resized pixels are ours (its PIL resize through the test stand-in differs from
        # our antialiased one), so that both sides see the same model input
        t = resize_for_model(image_rgb.astype(np.float32), cfg.image_size)
        rp.reset_image()
        rp.original_size = image_rgb.shape[:2]
        rp.input_size = tuple(t.shape[-2:])
        rp.features = reference_tiny_vit_features(ref.image_encoder, ref.preprocess(t),
                                                  cfg.embed_grid)
        rp.is_image_set = True

    def click(pt):
        return rp.predict(point_coords=np.array([[pt[1], pt[0]]]), point_labels=np.array([1]),
                          multimask_output=True)[0]

    return embed, click


def precision_label(pred) -> str:
    """"bfloat16", or "bfloat16, decoder float32" where the decoder runs in another dtype."""
    enc, dec = (str(d).replace("torch.", "") for d in (pred.dtype, pred.decoder_dtype))
    return enc if dec == enc else f"{enc}, decoder {dec}"

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=5, help="timed embeddings per side")
    ap.add_argument("--click-runs", type=int, default=10, help="timed clicks per point and side")
    ap.add_argument("--points", type=int, default=8)
    ap.add_argument("--precisions", default="auto,fp32")
    ap.add_argument("--threads", type=int, default=0,
                    help="0: tune_cpu()'s count (all CPUs), or torch's if untuned")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--save", default="bundled")
    args = ap.parse_args(argv)

    from testing_utils import randomize_

    from napari_sam.model import build_model, load_model
    from napari_sam.model.registry import BUNDLED_PATH
    from napari_sam.predictor import Predictor
    from napari_sam.training.synthetic import nuclei_image

    C.set_threads(args.threads)
    if BUNDLED_PATH.is_file():
        model, weights = load_model("bundled"), f"trained weights ({BUNDLED_PATH.name})"
    else:
        model = randomize_(build_model("bundled"), seed=args.seed).eval()
        weights = "RANDOM weights: napari_sam/weights/bundled.pt is missing"
    gray, labels = nuclei_image(args.seed, (args.size, args.size), dtype="uint16")
    lo, hi = np.percentile(gray, (0.5, 99.8))
    rgb = np.repeat((np.clip((gray - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)[..., None],
                    3, axis=-1)
    ids = [i for i in np.unique(labels) if i][: args.points]
    points = [np.argwhere(labels == i).mean(0) for i in ids]
    m = C.machine()
    print(f"bundled model benchmark: {weights}; image {args.size}^2, {len(points)} clicks on "
          f"nuclei; {C.describe(m)}", flush=True)

    embeds, clicks, preds = [], {}, {}
    for prec in args.precisions.split(","):
        p = preds[prec] = Predictor(model, "cpu", prec, diameter="off")
        name = f"ours {prec} ({precision_label(p)})"
        embeds.append(C.Timer(name, lambda p=p: p.set_image(rgb)))
        embeds.append(C.Timer(name + " uint16 gray", lambda p=p: p.set_image(gray)))
        clicks[name] = lambda pt, p=p: p.predict(points=[pt], point_labels=[1])[0]
    ref = None if args.skip_reference else reference_side(model, rgb)
    if ref is not None:
        embeds.append(C.Timer("reference", ref[0]))
        clicks["reference"] = ref[1]
    with torch.inference_mode():
        C.alternate(embeds, args.runs)
        wall = {k: [] for k in clicks}
        for name, p in preds.items():
            p.set_image(rgb)
        if ref is not None:
            ref[0]()
        masks = {k: [fn(pt) for pt in points] for k, fn in clicks.items()}  # warm-up too
        for _ in range(args.click_runs):
            for pt in points:
                for k, fn in clicks.items():
                    t0 = time.perf_counter()
                    fn(pt)
                    wall[k].append(time.perf_counter() - t0)

    result = {"weights": weights, "size": args.size, "machine": m,
              "machine_after": C.machine(), "embed": {}, "click": {}, "agreement": {}}
    ref_e = embeds[-1] if ref is not None else None
    for t in embeds:
        s = t.summary()
        line = f"embed  {t.name:34s} median {C.fmt_s(t.median)} (cpu {C.fmt_s(t.median_cpu)})"
        if ref_e is not None and t is not ref_e:
            s["speedup_wall"] = ref_e.median / t.median
            line += f"  reference/ours = {s['speedup_wall']:.2f}x"
        if t is not ref_e:
            line += "  goal < 0.5 s: " + ("met" if t.median < 0.5 else "NOT met")
        result["embed"][t.name] = s
        print(line)
    ref_c = statistics.median(wall["reference"]) if "reference" in wall else None
    for k, ts in wall.items():
        med = statistics.median(ts)
        s = {"median_s": med, "p90_s": float(np.percentile(ts, 90)), "n": len(ts)}
        line = f"click  {k:34s} median {C.fmt_s(med)} (p90 {C.fmt_s(s['p90_s'])})"
        if ref_c is not None and k != "reference":
            s["speedup_wall"] = ref_c / med
            line += f"  reference/ours = {ref_c / med:.2f}x"
        if k != "reference":
            line += "  goal < 50 ms: " + ("met" if med < 0.05 else "NOT met")
        result["click"][k] = s
        print(line)
    if ref is not None:
        for k in clicks:
            if k == "reference":
                continue
            ious = []
            for a, b in zip(masks[k], masks["reference"]):
                for i in range(a.shape[0]):
                    u = np.logical_or(a[i], b[i]).sum()
                    ious.append(np.logical_and(a[i], b[i]).sum() / u if u else 1.0)
            result["agreement"][k] = {"mean_iou": float(np.mean(ious)), "min_iou": float(min(ious))}
            print(f"{k} vs reference masks: mean IoU {np.mean(ious):.5f}, min {min(ious):.5f}")
    print(f"saved {C.save(args.save, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
