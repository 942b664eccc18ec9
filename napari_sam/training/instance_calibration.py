"""Choosing the instance head's parameters and automatic mode on synthetic validation images.

`calibrate` tries the watershed parameters of `PARAM_GRID` (`ais.watershed_from_maps`) on
the instance maps of validation images (seeds from `CALIBRATION_SEED`, apart from the
training and held-out test seeds); `compare_modes` scores AIS against AMG on held-out
images. `train_instance` uses both when it exports, and re-exports these names.
"""

from __future__ import annotations

import numpy as np

from ..model import Sam

CALIBRATION_SEED = 20_000_003  # as train.CALIBRATION_SEED: apart from training and test seeds


def validation_sets(n: int):
    """The calibration images: `n` of the synthetic mix and `n` fluorescence nuclei fields.

    Parameters
    ----------
    n : int
        Images per set.

    Returns
    -------
    dict of str to list
        {"mix": [(image, labels)], "nuclei": [(image, labels)]}: images (256, 256) uint16,
        or (256, 256, 3) uint8 for RGB scenes; labels (256, 256) uint32.
    """
    from .evaluate import heldout_set
    from .synthetic import nuclei_image

    return {"mix": heldout_set(n, seed=CALIBRATION_SEED),
            "nuclei": [nuclei_image(CALIBRATION_SEED + i, (256, 256)) for i in range(n)]}


def validation_maps(model: Sam, sets: dict) -> dict:
    """The instance maps of every validation image (CPU, bf16, no zoom).

    Parameters
    ----------
    model : Sam
        A model with an instance head.
    sets : dict of str to list
        As `validation_sets` returns.

    Returns
    -------
    dict of str to list
        Per set, [(maps, labels)]: maps {"foreground", "center_distances",
        "boundary_distances"} of (Y, X) float32 in 0..1, labels (Y, X) uint32.
    """
    from ..predictor import Predictor

    pred = Predictor(model, device="cpu", precision="bf16", diameter="off")
    out = {}
    for name, pairs in sets.items():
        out[name] = []
        for image, labels in pairs:
            pred.set_image(image)
            out[name].append((pred.instance_maps(), labels))
    return out


def score(maps_by_set: dict, **params) -> dict:
    """Mean F1 per set of the watershed of the maps (`ais.watershed_from_maps`).

    Parameters
    ----------
    maps_by_set : dict of str to list
        As `validation_maps` returns.
    **params
        Watershed parameters (the keys of `PARAM_GRID`).

    Returns
    -------
    dict
        "<set> f1@0.5" and "<set> f1@0.75": float means, 4 decimals.
    """
    from ..automask.ais import watershed_from_maps
    from .evaluate import match_f1

    res = {}
    for name, items in maps_by_set.items():
        f = [match_f1(watershed_from_maps(**m, **params), lab) for m, lab in items]
        for t in ("0.5", "0.75"):
            res[f"{name} f1@{t}"] = round(float(np.mean([x[f"f1@{t}"] for x in f])), 4)
    return res


PARAM_GRID = {"center_distance_threshold": (0.4, 0.5, 0.6),
              "boundary_distance_threshold": (0.4, 0.5, 0.6),
              "foreground_threshold": (0.4, 0.5),
              "distance_smoothing": (1.0, 1.6)}


def calibrate(model: Sam, n: int) -> dict:
    """AIS parameters with the best summed F1@0.5 (then F1@0.75) on validation images.

    Parameters
    ----------
    model : Sam
        A model with an instance head.
    n : int
        Images per validation set.

    Returns
    -------
    dict
        "ais" (the chosen parameters) and "ais_calibration" (images, seed, F1 figures).
    """
    import itertools

    maps = validation_maps(model, validation_sets(n))
    best = None
    for values in itertools.product(*PARAM_GRID.values()):
        params = dict(zip(PARAM_GRID, values))
        res = score(maps, **params)
        key = (sum(v for k, v in res.items() if k.endswith("@0.5")),
               sum(v for k, v in res.items() if k.endswith("@0.75")))
        if best is None or key > best[0]:
            best = (key, params, res)
    print(f"AIS parameters {best[1]} (validation: {best[2]})", flush=True)
    return {"ais": best[1], "ais_calibration": {"images": n, "seed": CALIBRATION_SEED, **best[2]}}


def compare_modes(model: Sam, n: int, log=print) -> dict:
    """Held-out F1@0.5 / 0.75 of AIS and AMG on `n` images of the synthetic mix and `n`
    fluorescence nuclei fields (held-out seeds, not the calibration ones), both at the
    model's native scale (256-pixel images, diameter "off": one embedding each, so the
    comparison is cheap) -> {"ais": {...}, "amg": {...}, "best": "ais" | "amg"}.

    Parameters
    ----------
    model : Sam
        A model with an instance head.
    n : int
        Images per set.
    log : callable
        Called with each mode's figures.

    Returns
    -------
    dict
        "ais" and "amg": {"<set> f1@0.5", "<set> f1@0.75"}; "best": the mode with the
        higher sum.
    """
    from ..automask.segmenter import automask
    from .evaluate import heldout_set, match_f1
    from .synthetic import nuclei_image

    sets = {"mix": heldout_set(n),
            "nuclei": [nuclei_image(10_000_019 + i, (256, 256)) for i in range(n)]}
    out = {}
    for mode in ("ais", "amg"):
        res = {}
        for name, pairs in sets.items():
            f = [match_f1(automask(img, model, mode=mode, diameter="off"), lab)
                 for img, lab in pairs]
            for t in ("0.5", "0.75"):
                res[f"{name} f1@{t}"] = round(float(np.mean([x[f"f1@{t}"] for x in f])), 4)
        out[mode] = res
        log(f"held-out {mode}: {res}")
    total = {m: sum(out[m].values()) for m in out}
    out["best"] = max(total, key=total.get)
    return out
