"""Large images: tile grid, tile embeddings cached on disk, prompts and automask across tiles.

The public names are re-exported by `napari_sam.tiling`; see docs/large_images.md.
"""

from .cache import CacheMismatchError, MemoryStore, ZarrStore, default_cache_root
from .embed import TiledEmbeddings, default_tiling
from .grid import Tile, TileGrid
from .prompts import TiledMask, TiledPredictor
from .source import ImageSource

__all__ = [
    "CacheMismatchError", "MemoryStore", "ZarrStore", "default_cache_root", "TiledEmbeddings",
    "default_tiling", "Tile", "TileGrid", "TiledMask", "TiledPredictor", "ImageSource",
]
