"""Large images: the tile grid, tile embeddings (cached on disk), prompts answered across
tiles, and the stitching of per-tile labels. Automask tile by tile is
`napari_sam.automask.tiled` (`tiled_automask`); see docs/large_images.md.
"""

from .cache import CacheMismatchError, MemoryStore, ZarrStore, default_cache_root
from .embed import TiledEmbeddings, default_tiling
from .grid import Tile, TileGrid
from .prompts import TiledMask, TiledPredictor
from .source import ImageSource
from .stitch import stitch

__all__ = [
    "stitch",
    "CacheMismatchError", "MemoryStore", "ZarrStore", "default_cache_root", "TiledEmbeddings",
    "default_tiling", "Tile", "TileGrid", "TiledMask", "TiledPredictor", "ImageSource",
]
