"""napari-sam: Segment Anything models for napari, usable without a GUI."""

__version__ = "0.1.0"
