"""Regenerate the module map of docs/architecture.md (and docs/layers.png) from the code.

    python docs/gen_architecture.py            # rewrite the map between the markers
    python docs/gen_architecture.py --check    # exit 1 when the map is out of date
    python docs/gen_architecture.py --picture  # also redraw docs/layers.png (matplotlib)

Each module is listed with the first sentence of its docstring, packages with their modules
indented below them. The layers (which package may import which)
are the `LAYERS` table below; `tests/test_packaging.py` checks that no module imports a
layer above its own.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "napari_sam"
DOC = ROOT / "docs" / "architecture.md"
BEGIN, END = "<!-- module map: begin -->", "<!-- module map: end -->"

# top to bottom: a module may import from its own layer and the layers below it
LAYERS = [
    ("adapters", ["_napari", "cli", "__main__", "commands"]),
    ("workflows", ["automask", "volume", "batch", "training", "vector_segment",
                   "video_predictor", "onnx_export"]),
    ("inference", ["predictor", "predictor_lowres", "prompt_check", "prompt_convert", "prompts",
                   "scale", "size_probe", "zoom_plan", "instance_labels",
                   "watershed", "tiled"]),
    ("models", ["model"]),
    ("foundations", ["io", "transforms", "runtime", "device", "allocator", "progress",
                     "weights", "data"]),
]


def summary(path: Path) -> str:
    """The first sentence of a module's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    if ". " in first:
        first = first.split(". ")[0] + "."
    first = first.rstrip(":")
    return first if len(first) <= 100 else first[:97].rsplit(" ", 1)[0] + " ..."


def entries(folder: Path, depth: int = 0):
    """(indent, name, lines, summary) for the modules and packages under `folder`."""
    rows = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("__pycache__") or p.name.startswith("."):
            continue
        if p.is_dir() and (p / "__init__.py").exists():
            lines = sum(len(f.read_text().splitlines()) for f in p.rglob("*.py"))
            rows.append((depth, p.name + "/", lines, summary(p / "__init__.py")))
            rows += entries(p, depth + 1)
        elif p.suffix == ".py" and p.name != "__init__.py":
            rows.append((depth, p.name, len(p.read_text().splitlines()), summary(p)))
    return rows


def module_map() -> str:
    out = ["```", "napari_sam/"]
    for depth, name, lines, text in entries(PACKAGE):
        label = "  " * (depth + 1) + name
        out.append(f"{label:<26} {text}".rstrip())
    out.append("```")
    return "\n".join(out)


def layer_of(top: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    raise KeyError(top)


def upward_imports():
    """(module, imported) pairs where a module imports from a layer above its own."""
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).parts
        if rel[0] == "__init__.py":
            continue
        own = layer_of(rel[0].removesuffix(".py"))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(rel[:-1])[: len(rel) - node.level]
                target = (base + (node.module or "").split("."))[0] if (
                    base or node.module) else None
                if not target:
                    continue
                try:
                    level = layer_of(target.removesuffix(".py"))
                except KeyError:
                    continue
                if level < own:
                    bad.append(("/".join(rel), target))
    return bad


def draw(path: Path) -> None:
    """The layers as a picture (Pillow): one band per layer, top to bottom."""
    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=15)
        bold = ImageFont.load_default(size=18)
    except TypeError:  # Pillow < 10.1
        font = bold = ImageFont.load_default()
    w, band, pad = 1000, 64, 12
    img = Image.new("RGB", (w, pad + len(LAYERS) * band + 40), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, 8), "napari_sam layers: imports go down only; napari and Qt only in _napari",
           fill="black", font=bold)
    for i, (name, members) in enumerate(LAYERS):
        y = 40 + i * band
        shade = 235 - 22 * i
        d.rectangle((pad, y, w - pad, y + band - 8), fill=(shade, shade + 10 if shade < 245 else 255, 255),
                    outline=(90, 110, 150))
        d.text((pad + 10, y + 18), name, fill="black", font=bold)
        names = [m + ("/" if (PACKAGE / m).is_dir() else "") for m in members]
        lines = [""]  # wrapped to the band's width (two lines at most fit)
        for m in names:
            trial = (lines[-1] + "  " + m).strip()
            if lines[-1] and d.textlength(trial, font=font) > w - 2 * pad - 200:
                lines.append(m)
            else:
                lines[-1] = trial
        top = y + 20 - 10 * (len(lines) - 1)
        for k, line in enumerate(lines):
            d.text((pad + 190, top + 20 * k), line, fill=(20, 20, 60), font=font)
    img.save(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--picture", action="store_true")
    a = ap.parse_args(argv)
    text = DOC.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    new = f"{head}{BEGIN}\n{module_map()}\n{END}{tail}"
    if a.check:
        if new != text:
            print("docs/architecture.md is out of date: run python docs/gen_architecture.py")
            return 1
        return 0
    DOC.write_text(new)
    if a.picture:
        draw(DOC.parent / "layers.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
