"""napari-sam: Segment Anything models for napari, usable without a GUI.

    from napari_sam import load_model, Predictor
    pred = Predictor(load_model("bundled"))
    pred.set_image(image)
    masks, scores, logits = pred.predict(points=[[row, col]], point_labels=[1])

Importing this package imports neither Qt, napari nor torch, and changes nothing in the
process: the public names below load their module on first use. CPU tuning of the process
is opt-in: `napari_sam.tune_cpu()` (`runtime/cpu.py`).
"""

import importlib as _importlib
import types as _types

__version__ = "0.1.0"

# public name -> the submodule that defines it (loaded on first access, PEP 562)
_EXPORTS = {
    "build_model": "model", "load_model": "model",
    "Predictor": "predictor", "ImageEmbedding": "predictor",
    "automask": "automask", "AutoMaskGenerator": "automask", "AutoMaskResult": "automask",
    "AutoSegmenter": "automask", "estimate_diameter": "scale",
    "instance_maps": "automask.ais",
    "annotate": "_napari.launch",  # napari is imported only when annotate() is called
    "TiledPredictor": "tiled", "tiled_automask": "automask.tiled",  # zarr and dask
    "tune_cpu": "runtime.cpu",
    # volumes and time-lapses
    "segment_volume": "volume", "automask_volume": "volume", "track": "volume",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(_importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value
        return value
    try:  # `import napari_sam; napari_sam.io...`: submodules load on first use as well
        return _importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """`napari_sam.automask` is the function `automask`, as it always was: loading the
    submodule of the same name (which sets the package's attribute) keeps the function."""

    def __setattr__(self, name, value):
        if (isinstance(value, _types.ModuleType) and _EXPORTS.get(name) == name
                and value.__name__ == f"{__name__}.{name}"):
            package, value = value, getattr(value, name)
            # the function's attributes are the package's names, so that
            # `import napari_sam.automask.ais as ais` finds the submodule through it
            # (its name, docstring and signature are the function's own)
            value.__dict__ = vars(package)
        super().__setattr__(name, value)


__import__("sys").modules[__name__].__class__ = _Package
