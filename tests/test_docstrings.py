"""The public API documents its arguments and returns in numpydoc sections.

Every callable in `napari_sam.__all__`, and every public function and class defined in any
module of the package (the private napari adapters `_napari` aside), with the public methods
of those classes, has a
"Parameters" and a "Returns" (or "Yields") section (no Returns when annotated `-> None`,
none of either without arguments); a class has "Parameters" on itself or
on its `__init__`. A section counts only with its dashed underline, as numpydoc writes it.
"""

from __future__ import annotations

import inspect
import re

import pytest

import napari_sam

SECTION = re.compile(r"^\s*(\w[\w ]*)\n\s*-{3,}\s*$", re.M)


def sections(obj) -> set:
    return set(SECTION.findall(inspect.getdoc(obj) or ""))


def _documented(func, where: str) -> list:
    found = sections(func)
    missing = [] if "Parameters" in found or not _takes_arguments(func) else ["Parameters"]
    if not found & {"Returns", "Yields"} and not _returns_none(func):
        missing.append("Returns")
    return [f"{where}: no {name} section" for name in missing]


def _returns_none(func) -> bool:
    """Annotated `-> None` (numpydoc leaves out the Returns section then)."""
    return inspect.signature(func).return_annotation in (None, "None")


def _takes_arguments(func) -> bool:
    params = list(inspect.signature(func).parameters)
    return bool(params[1:] if params and params[0] in ("self", "cls") else params)


def _public_methods(cls):
    """Public methods defined by the class or by its napari_sam bases (mixins)."""
    seen = set()
    for klass in cls.__mro__:
        if klass is not cls and not klass.__module__.startswith("napari_sam"):
            continue
        for name, member in vars(klass).items():
            if name in seen or (name.startswith("_") and name != "__call__"):
                continue
            seen.add(name)
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if inspect.isfunction(member):
                yield name, member


def problems(name: str, obj) -> list:
    if inspect.isclass(obj):
        own = sections(obj) | (sections(obj.__init__) if "__init__" in vars(obj) else set())
        out = [] if "Parameters" in own else [f"{name}: no Parameters section"]
        for method, func in _public_methods(obj):
            out += _documented(func, f"{name}.{method}")
        return out
    return _documented(obj, name)


PUBLIC = [name for name in napari_sam.__all__ if callable(getattr(napari_sam, name))]


def _module_members():
    """Functions and classes defined in every module of the package, except the napari
    adapters (`_napari`, private) and `__main__` (which runs the command line on import)."""
    import importlib
    import pkgutil

    out = []
    for info in pkgutil.walk_packages(napari_sam.__path__, "napari_sam."):
        if "._" in info.name:  # _napari, __main__ and any other private module
            continue
        module = importlib.import_module(info.name)
        name = info.name[len("napari_sam."):]
        out += [(f"{name}.{n}", f) for n, f in vars(module).items()
                if not n.startswith("_") and getattr(f, "__module__", "") == module.__name__]
    return out


MODULE_FUNCTIONS = [(name, f) for name, f in _module_members() if inspect.isfunction(f)]
MODULE_CLASSES = [(name, c) for name, c in _module_members() if inspect.isclass(c)]


def test_the_public_api_is_large_enough_to_check():
    assert {"Predictor", "automask", "load_model", "TiledPredictor", "track"} <= set(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_public_docstrings_have_parameters_and_returns(name):
    assert problems(name, getattr(napari_sam, name)) == []


def test_the_module_functions_include_the_subpackages():
    names = {name for name, _ in MODULE_FUNCTIONS}
    assert {"automask.grid.point_grid", "model.checkpoints.read_checkpoint", "tiled.stitch.stitch",
            "volume.link.link_labels", "zoom_plan.plan_zoom", "instance_labels.watershed_from_maps",
            "size_probe.refine_diameter",
            "runtime.cpu.tuning_requested", "automask.tile_jobs.run_tiles",
            "automask.tile_jobs.map_tiles", "automask.tiled.automask_files",
            "io.coco.write_coco", "training.synthetic.nuclei_image", "model.hub.fetch",
            "commands.automask.run", "volume.ctc.write_ctc"} <= names
    assert not [name for name in names if name.startswith("_napari")]


def test_the_module_classes_include_the_subpackages():
    names = {name for name, _ in MODULE_CLASSES}
    assert {"model.sam.Sam", "tiled.grid.TileGrid", "tiled.embed.TiledEmbeddings", "tiled.source.ImageSource",
            "volume.track.TrackResult", "automask.tile_segmenters.AutomaskSegmenter",
            "automask.tile_jobs.TileJob", "automask.tile_segmenters.APGSegmenter"} <= names


@pytest.mark.parametrize("name, func", MODULE_FUNCTIONS, ids=[n for n, _ in MODULE_FUNCTIONS])
def test_module_function_docstrings_have_parameters_and_returns(name, func):
    assert problems(name, func) == []


@pytest.mark.parametrize("name, cls", MODULE_CLASSES, ids=[n for n, _ in MODULE_CLASSES])
def test_module_class_docstrings_have_parameters_and_returns(name, cls):
    assert problems(name, cls) == []


def test_the_check_fails_on_a_docstring_without_sections():
    def prose(image, model=None):
        """Segment `image` with `model` and return the labels (Y, X) uint32."""

    def numpydoc(image):
        """Segment.

        Parameters
        ----------
        image : ndarray, (Y, X)

        Returns
        -------
        labels : ndarray, (Y, X) uint32
        """

    class Bare:
        def __init__(self, x):
            """x: a number."""

        def run(self) -> int:
            """Yields
            ------
            int
            """

    assert problems("prose", prose) == ["prose: no Parameters section",
                                        "prose: no Returns section"]
    assert problems("numpydoc", numpydoc) == []
    assert problems("Bare", Bare) == ["Bare: no Parameters section"]

    def closes(path) -> None:
        """Parameters
        ----------
        path : str
        """

    def opens(path):
        """Parameters
        ----------
        path : str
        """

    class Mixin:
        def run(self, x):
            """x: a number."""

    Mixin.__module__ = "napari_sam.example"

    class Child(Mixin):
        """Parameters
        ----------
        y : int
        """

    assert problems("closes", closes) == []
    assert problems("Child", Child) == ["Child.run: no Parameters section",
                                        "Child.run: no Returns section"]
    assert problems("opens", opens) == ["opens: no Returns section"]
