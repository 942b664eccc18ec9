"""Large images: tile grid, tile embeddings cached on disk, prompts and automask across tiles.

The public names are re-exported by `napari_sam.tiling`; see docs/large_images.md.
"""

from .automask import AutomaskSegmenter, TiledAutomaskResult, tiled_automask
from .cache import CacheMismatchError, MemoryStore, ZarrStore, default_cache_root
from .embed import TiledEmbeddings, default_tiling
from .grid import Tile, TileGrid
from .prompts import TiledMask, TiledPredictor
from .source import ImageSource
from .stitch import stitch

__all__ = [
    "AutomaskSegmenter", "TiledAutomaskResult", "tiled_automask", "stitch",
    "CacheMismatchError", "MemoryStore", "ZarrStore", "default_cache_root", "TiledEmbeddings",
    "default_tiling", "Tile", "TileGrid", "TiledMask", "TiledPredictor", "ImageSource",
]
