"""Tile embeddings of one large image: computed once, on demand, into a cache.

    emb = TiledEmbeddings(load_model("bundled"), "slide.tif", cache="beside")
    emb.compute()                          # every tile (automask), resumable
    emb.compute(emb.grid.intersecting(box))  # only the tiles a prompt needs
    pred = emb.predictor(tile)             # a Predictor holding that tile's embedding

Contrast: one (low, high) range for the whole image, from a subsample, so every tile is
scaled alike (a per-tile range would make a dim tile look like a bright one).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import OrderedDict
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np
import torch

from ..device import autocast, resolve_device, resolve_precision
from ..model import Sam, is_model, load_model
from ..predictor import ImageEmbedding, Predictor
from ..runtime.session import InferenceSession
from ..transforms import resize_for_model, zoomed_shape
from ..progress import null_progress
from .cache import CacheCorruptError, MemoryStore, ZarrStore, resolve_cache_dir
from .grid import Tile, TileGrid
from .source import ImageSource


def default_tiling(model: Sam):
    """The default tiling for a model: tiles of the model's input size, so pixels reach the
    encoder at native resolution; overlap 1/4 of a 256-pixel tile and 1/8 of a 1024-pixel
    tile (docs/large_images.md).

    Parameters
    ----------
    model : Sam or Sam2

    Returns
    -------
    (tile, overlap) : (int, int)
        In image pixels.
    """
    size = model.image_size
    return size, (size // 4 if size <= 512 else size // 8)


def _short_hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


class TiledEmbeddings:
    """The tiles of one image and their embeddings.

    Parameters
    ----------
    model : Sam, str, path or None
        The model, or a name/path for `load_model` (None: the bundled model).
    image : array-like, str, path or ImageSource
        Numpy, memmap, zarr or dask, (Y, X) or (Y, X, C), or an image file.
    tile_size, overlap : int, optional
        Tile side and minimum overlap in image pixels (defaults from `default_tiling`).
    channels : sequence of int, optional
        Up to three channel indices (`transforms.select_channels`).
    cache : None, str or path
        None (memory), a folder, "beside", "user" or "auto" (`cache.resolve_cache_dir`).
    cache_dtype : str
        "float16" or "float32" on disk.
    device, precision : str or torch.device
        Where and in which dtype the encoder runs ("auto": chosen for the machine).
    batch_size : int, optional
        Tiles per encoder call (default 1 on CPU, 4 on a GPU).
    memory_tiles : int
        Tile features kept on the device for reuse (least recently used dropped).
    session : InferenceSession, optional
        The session of the model calls (default a new one), shared with `predictor`.
    tile_input : int, optional
        A whole tile's side in model-input pixels (default the model's `image_size`); a
        larger one (a multiple of 64) only for a model with `flexible_input`, for the
        instance maps (`automask.ais.tile_maps`): fewer, larger tiles waste less on the
        overlaps, but prompts cannot be answered on them (`predictor` refuses).
    """

    def __init__(self, model: Union[Sam, str, None], image, *, tile_size: Optional[int] = None,
                 overlap: Optional[int] = None, channels: Optional[Sequence[int]] = None,
                 cache=None, cache_dtype: str = "float16", device="auto", precision="auto",
                 batch_size: Optional[int] = None, memory_tiles: int = 16,
                 session: Optional[InferenceSession] = None,
                 tile_input: Optional[int] = None) -> None:
        self.device = resolve_device(device)
        self.model = (model.to(self.device) if is_model(model)
                      else load_model(model, self.device))
        self.model.eval()
        self.session = (session if session is not None and session.model is self.model
                        else InferenceSession(self.model))
        self.dtype = resolve_precision(precision, self.device)  # the encoder's
        self.precision = precision  # as given: "auto" may decode in another dtype (Predictor)
        self.source = image if isinstance(image, ImageSource) else ImageSource(image, channels)
        t0, o0 = default_tiling(self.model)
        self.grid = TileGrid(self.source.shape2d, tile_size or t0, o0 if overlap is None else overlap)
        self.value_range = self.source.value_range()
        self.batch_size = batch_size or (1 if self.device.type == "cpu" else 4)
        cfg = self.model.config
        self.tile_input = (cfg.image_size if tile_input in (None, cfg.image_size)
                           else self.model.input_side(tile_input))
        c, g, _ = self.model.embedding_shape
        g = g * self.tile_input // cfg.image_size
        self.feature_shape = (c, g, g)
        tiling = {"tile": self.grid.tile, "overlap": self.grid.overlap}
        if self.tile_input != cfg.image_size:
            tiling["input"] = self.tile_input
        self.signature = {
            "image": self.source.fingerprint(),
            "model": {"name": cfg.name, "signature": self.model.signature()},
            "tiling": tiling,
            "normalisation": {"channels": self.source.channels,
                              "value_range": self.value_range},
        }
        key = f"{cfg.name}-{self.model.signature()[:8]}-t{self.grid.tile}-o{self.grid.overlap}"
        if "input" in tiling:
            key += f"-i{self.tile_input}"
        self.cache_dir = resolve_cache_dir(cache, self.source.path, key,
                                           _short_hash(self.signature["image"]))
        if self.cache_dir is None:
            self.store = MemoryStore(self.signature, self.grid.grid_shape, self.feature_shape)
        else:
            self.store = ZarrStore(self.cache_dir, self.signature, self.grid.grid_shape,
                                   self.feature_shape, cache_dtype)
        self._memory: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
        self._memory_tiles = memory_tiles
        self._predictor: Optional[Predictor] = None
        self._last_input: Optional[tuple] = None

    # ---- computing -------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        """Model-input pixels per image pixel, the same for every tile (a tile smaller than
        the tile size, at the image's edge, is not enlarged more than the others)."""
        return self.tile_input / self.grid.tile

    @property
    def size_kw(self) -> dict:
        """The `size` keyword of the model's `encode` / `instance_logits` for these tiles
        (empty at the model's own input size)."""
        return {} if self.tile_input == self.model.image_size else {"size": self.tile_input}

    def input_size(self, tile: Tile):
        """A tile's size in the model's input frame.

        Parameters
        ----------
        tile : Tile

        Returns
        -------
        (int, int)
            (h, w) of the tile in model-input pixels, scaled by `zoom`.
        """
        return zoomed_shape(*tile.shape, self.zoom, self.tile_input)

    def model_input(self, tile: Tile) -> torch.Tensor:
        """A tile's pixels as the encoder gets them (the last tile's are kept: the instance
        head reads them again right after the encoder).

        Parameters
        ----------
        tile : Tile

        Returns
        -------
        Tensor (1, 3, h, w) float
            0-255, scaled with the image's contrast range and resized by `zoom`, on the
            device.
        """
        last = self._last_input
        if last is not None and last[0] == tile.window:
            return last[1]
        x = resize_for_model(self.source.pixels(tile.window, self.value_range),
                             self.tile_input, self.device, self.zoom)
        self._last_input = (tile.window, x)
        return x

    def missing(self, tiles: Optional[Iterable[Tile]] = None) -> List[Tile]:
        """The tiles whose embedding is not yet stored.

        Parameters
        ----------
        tiles : iterable of Tile, optional
            The tiles to look at (None: the whole grid).

        Returns
        -------
        list of Tile
            In the order given.
        """
        done = self.store.done()
        return [t for t in (self.grid if tiles is None else tiles) if t.index not in done]

    @torch.no_grad()
    def encode(self, tiles: Sequence[Tile]) -> np.ndarray:
        """Run the encoder on some tiles, without storing anything.

        Parameters
        ----------
        tiles : sequence of Tile
            B tiles, all of one shape.

        Returns
        -------
        ndarray (B, C, g, g) float32
        """
        xs = [self.model_input(t) for t in tiles]
        self.session.refresh()
        with self.session, autocast(self.device, self.dtype):
            feats = self.model.encode(torch.cat(xs), **self.size_kw)
        return feats.float().cpu().numpy()

    def compute(self, tiles: Optional[Iterable[Tile]] = None, progress=null_progress) -> int:
        """Embed and store the tiles that the cache lacks, `batch_size` at a time.

        Parameters
        ----------
        tiles : iterable of Tile, optional
            The tiles wanted (None: the whole grid).
        progress : callable
            `progress(done, total, message)`.

        Returns
        -------
        int
            How many tiles were embedded.
        """
        todo = self.missing(tiles)
        progress(0, len(todo), "embedding tiles")
        for i in range(0, len(todo), self.batch_size):
            batch = todo[i:i + self.batch_size]
            for t, f in zip(batch, self.encode(batch)):
                self.store.put(t.index, f)
            progress(min(i + self.batch_size, len(todo)), len(todo), "embedding tiles")
        return len(todo)

    # ---- reading ---------------------------------------------------------------------
    def features(self, tile: Tile, keep: bool = True) -> torch.Tensor:
        """A tile's features, computed first if needed.

        Parameters
        ----------
        tile : Tile
        keep : bool
            False: a missing tile is computed without storing it (automask without a
            cache).

        Returns
        -------
        Tensor (1, C, g, g) float32
            On the device.
        """
        key = tile.index
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.store.has(key):
            f = torch.from_numpy(self._stored(tile))[None].to(self.device)
        elif keep:
            self.compute([tile])
            f = torch.from_numpy(self.store.get(key))[None].to(self.device)
        else:
            return torch.from_numpy(self.encode([tile]))[0:1].to(self.device)
        self._memory[key] = f
        while len(self._memory) > self._memory_tiles:
            self._memory.popitem(last=False)
        return f

    def _stored(self, tile: Tile) -> np.ndarray:
        """A done tile's features from the store; a damaged tile (`CacheCorruptError`) is
        recomputed, with a warning naming the cache."""
        try:
            return self.store.get(tile.index)
        except CacheCorruptError as err:
            warnings.warn(f"{err}; recomputing it", RuntimeWarning, stacklevel=3)
            self.store.discard(tile.index)
            self.compute([tile])
            return self.store.get(tile.index)

    def embedding(self, tile: Tile, keep: bool = True) -> ImageEmbedding:
        """A tile's embedding as a `Predictor` takes it.

        Parameters
        ----------
        tile : Tile
        keep : bool
            As in `features`.

        Returns
        -------
        ImageEmbedding
            The features with the tile's (h, w) and its size in the model's input.
        """
        return ImageEmbedding(self.features(tile, keep), tile.shape, self.input_size(tile),
                              self.model.signature())

    def predictor(self, tile: Tile) -> Predictor:
        """A Predictor (shared, reused) holding a tile's embedding; ValueError for tiles
        larger than the model's input (`tile_input`).

        Parameters
        ----------
        tile : Tile

        Returns
        -------
        Predictor
            Prompts go in the tile's pixel coordinates, not the image's.
        """
        if self.tile_input != self.model.image_size:
            raise ValueError(f"tiles of {self.tile_input} model pixels have instance maps only; "
                             f"prompts need tiles of the model's input ({self.model.image_size})")
        if self._predictor is None:
            self._predictor = Predictor(self.model, self.device, self.precision,
                                        session=self.session)
        self._predictor.set_embedding(self.embedding(tile))
        return self._predictor
