"""Packaging: every third-party module the package imports is declared in setup.cfg, which
holds all the metadata, and the napari manifest carries the distribution's name."""

from __future__ import annotations

import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "napari_sam"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _declared(cfg) -> dict:
    """Canonical distribution name -> where it is declared (install_requires or an extra)."""
    out = {}
    sections = {"install_requires": cfg["options"]["install_requires"]}
    sections.update({f"[{k}]": v for k, v in cfg["options.extras_require"].items()})
    for where, text in sections.items():
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                out.setdefault(_canonical(re.split(r"[\s<>=!~\[;]", line, 1)[0]), where)
    return out


def _imported_modules() -> dict:
    """Top-level third-party modules imported anywhere in the package -> the files."""
    found: dict = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in ("napari_sam", "__future__"):
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_module_is_declared():
    declared = _declared(_setup_cfg())
    dists = packages_distributions()
    missing = []
    for module, files in sorted(_imported_modules().items()):
        names = [_canonical(d) for d in dists.get(module, [])]
        if not names:
            missing.append(f"{module} (imported by {sorted(files)[0]}) is not installed here")
        elif not any(n in declared for n in names):
            missing.append(f"{module} (distribution {names[0]}, imported by "
                           f"{sorted(files)[0]}) is not in setup.cfg")
    assert not missing, ("declare these in setup.cfg (install_requires, or an extra when the "
                         "import is optional):\n" + "\n".join(missing))
    for dist in ("scipy", "pandas", "imageio", "pillow", "numcodecs", "torch"):
        assert declared.get(dist) == "install_requires", dist


def test_metadata_in_setup_cfg_and_build_settings_in_pyproject():
    cfg = _setup_cfg()
    name = cfg["metadata"]["name"]
    assert name == "napari-sam-suite"  # "napari-sam" on PyPI is another project
    assert "[project]" not in (ROOT / "pyproject.toml").read_text()
    entry = cfg["options.entry_points"]["napari.manifest"].split("=")[0].strip()
    assert entry == name
    manifest = (PACKAGE / "napari.yaml").read_text()
    assert re.search(rf"^name: {re.escape(name)}$", manifest, re.M)
    ids = re.findall(r"^\s*- id: (\S+)$", manifest, re.M)
    assert ids and all(i.startswith(f"{name}.") for i in ids)
    assert "ruff" in _declared(cfg) and _declared(cfg)["ruff"] == "[testing]"


def _architecture():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_architecture",
                                                  ROOT / "docs" / "gen_architecture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_architecture_map_is_generated_from_the_code():
    """docs/architecture.md's module map is what docs/gen_architecture.py makes now."""
    assert _architecture().main(["--check"]) == 0, "run: python docs/gen_architecture.py"


def test_no_module_imports_a_layer_above_its_own():
    gen = _architecture()
    assert gen.upward_imports() == []
    # every top-level module or package has a layer
    for p in (ROOT / "napari_sam").iterdir():
        name = p.name.removesuffix(".py")
        if name.startswith("__pycache__") or name == "__init__" or name.endswith(".yaml"):
            continue
        gen.layer_of(name)


def test_public_names_import_first_in_a_fresh_process():
    """Each subpackage's public names load in a fresh interpreter whichever is imported
    first (`automask.volume` and the `volume` package import each other's modules)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    for package in ("automask", "volume", "tiled", "model"):
        code = ("import importlib\n"
                f"p = importlib.import_module('napari_sam.{package}')\n"
                "for name in p.__all__:\n"
                "    assert getattr(p, name) is not None, name\n")
        done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    for module in ("napari_sam.automask.volume", "napari_sam.volume.track"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=root,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]


def test_automask_is_the_function_and_its_submodules_import_with_as():
    """`napari_sam.automask` stays the function whatever loads first, and every import
    form reaches the package's submodules (`import a.b.c as d` goes through attributes)."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    code = ("import napari_sam.automask.ais as ais\n"
            "import napari_sam.automask.amg as amg\n"
            "from napari_sam.automask import tiled\n"
            "import napari_sam, inspect\n"
            "f = napari_sam.automask\n"
            "assert inspect.isfunction(f) and f.__name__ == 'automask', f\n"
            "assert 'image' in inspect.signature(f).parameters\n"
            "assert f.__doc__.startswith('Segment everything')\n"
            "assert ais.__name__ == 'napari_sam.automask.ais' and f.ais is ais\n"
            "from napari_sam import automask\n"
            "assert automask is f\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr[-2000:]
