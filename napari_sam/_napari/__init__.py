"""napari adapters (the only package that imports napari, qtpy or magicgui)."""
