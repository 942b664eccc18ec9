"""A generated georeferenced scene: fields and buildings in a UTM zone, with the truth.

    scene = GeoScene((512, 512), seed=0)
    scene.labels()            # uint32 (Y, X) truth: fields 1.., buildings after them
    scene.image()             # uint16 (Y, X, 4): red, green, blue, near-infrared (0 = nodata)
    scene.polygons()          # {id: shapely Polygon in map coordinates (EPSG:32633)}
    scene.write_geotiff(path) # tiled GeoTIFF with GeoTIFF tags, GDAL nodata and band names

Every object is a union of axis-aligned rectangles whose corners lie on pixel edges, so
its true outline is known exactly: fields (some L-shaped) separated by roads, with
buildings inside some of them (a building is its own object and a hole in its field). A
strip of `nodata_border` pixels on the left and top edges is nodata (all bands 0). Objects
stay clear of it. Pixels are generated tile by tile, so a large scene is written in
bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..io.georef import GeoRef

CRS = "EPSG:32633"                     # WGS 84 / UTM zone 33N
TRANSFORM = (10.0, 0.0, 500_000.0, 0.0, -10.0, 5_300_000.0)  # 10 m pixels
BANDS = ("red", "green", "blue", "nir")
# reflectance x 10,000 per band (R, G, B, NIR): roads, crops, buildings
ROAD = (1400, 1300, 1200, 1800)
CROPS = ((500, 900, 450, 3800), (1800, 1500, 1000, 2400), (700, 1100, 600, 3000),
         (2200, 1900, 1500, 2600), (400, 700, 350, 4500))
ROOF = (3200, 3000, 2900, 3300)


@dataclass
class GeoScene:
    """See the module docstring. shape: (rows, cols); `field_size` the mean field side.

    Parameters
    ----------
    shape : tuple of int
        The scene's (rows, cols) = (Y, X) size in pixels.
    seed : int
        The layout and the pixels are a pure function of it.
    field_size : int
        The mean side of a field in pixels.
    road : int
        The road width between fields in pixels.
    nodata_border : int
        The width of the nodata strip along the top and left edges in pixels.
    georef : GeoRef
        CRS and affine pixel-to-map transform (default: 10 m pixels in EPSG:32633).
    """

    shape: Tuple[int, int]
    seed: int = 0
    field_size: int = 96
    road: int = 6
    nodata_border: int = 12
    georef: GeoRef = field(default_factory=lambda: GeoRef(CRS, TRANSFORM))
    objects: List[dict] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        h, w = self.shape
        lo = self.nodata_border + self.road

        def cuts(n):
            out, pos = [lo], lo
            while True:
                pos += int(rng.integers(self.field_size * 2 // 3, self.field_size * 4 // 3))
                if pos > n - self.road - 8:
                    break
                out.append(pos)
            return out

        fields, buildings = [], []
        rows, cols = cuts(h), cuts(w)
        for r0, r1 in zip(rows[:-1], rows[1:]):
            for c0, c1 in zip(cols[:-1], cols[1:]):
                rr, cc = r1 - self.road, c1 - self.road
                rects = [(r0, c0, rr, cc)]
                if rng.random() < 0.3:  # an L: cut a corner off
                    cr = r0 + (rr - r0) // 2
                    cc2 = c0 + (cc - c0) // 2
                    rects = [(r0, c0, cr, cc), (cr, c0, rr, cc2)]
                fid = len(fields) + 1
                fields.append({"id": fid, "kind": "field", "rects": rects, "holes": [],
                               "crop": int(rng.integers(len(CROPS)))})
                if rng.random() < 0.5 and rects[0][2] - rects[0][0] > 30:
                    br, bc = rects[0][0] + 8, rects[0][1] + 8
                    bh, bw = int(rng.integers(8, 18)), int(rng.integers(8, 22))
                    if br + bh < rects[0][2] - 8 and bc + bw < rects[0][3] - 8:
                        buildings.append({"kind": "building", "rects": [(br, bc, br + bh,
                                                                          bc + bw)],
                                          "holes": [], "field": fid})
                        fields[-1]["holes"].append((br, bc, br + bh, bc + bw))
        for k, b in enumerate(buildings):
            b["id"] = len(fields) + k + 1
        self.objects = fields + buildings
        boxes = [np.min([r[:2] for r in o["rects"]], 0).tolist() +
                 np.max([r[2:] for r in o["rects"]], 0).tolist() for o in self.objects]
        self._boxes = np.array(boxes, np.int64).reshape(-1, 4)

    # ---- pixels ----------------------------------------------------------------------
    def labels(self, window: Optional[Tuple[int, int, int, int]] = None) -> np.ndarray:
        """uint32 truth labels of `window` (row0, col0, row1, col1; default: all).

        Parameters
        ----------
        window : tuple of int or None
            (row0, col0, row1, col1), ends exclusive; None: the whole scene.

        Returns
        -------
        ndarray, (row1 - row0, col1 - col0) uint32
            Field ids 1.., building ids after them, 0 for roads and the border.
        """
        r0, c0, r1, c1 = window or (0, 0) + tuple(self.shape)
        out = np.zeros((r1 - r0, c1 - c0), np.uint32)
        b = self._boxes
        hit = np.flatnonzero((b[:, 0] < r1) & (b[:, 2] > r0) & (b[:, 1] < c1) & (b[:, 3] > c0))
        for i in hit:  # fields come first, so buildings paint over them
            for (a0, b0, a1, b1) in self.objects[i]["rects"]:
                out[max(a0 - r0, 0):max(a1 - r0, 0), max(b0 - c0, 0):max(b1 - c0, 0)] = \
                    self.objects[i]["id"]
        return out

    def valid(self, window=None) -> np.ndarray:
        """bool mask of pixels with data (False in the nodata border).

        Parameters
        ----------
        window : tuple of int or None
            (row0, col0, row1, col1), ends exclusive; None: the whole scene.

        Returns
        -------
        ndarray, (row1 - row0, col1 - col0) bool
        """
        r0, c0, r1, c1 = window or (0, 0) + tuple(self.shape)
        rows = np.arange(r0, r1)[:, None] >= self.nodata_border
        cols = np.arange(c0, c1)[None, :] >= self.nodata_border
        return rows & cols

    def image(self, window=None) -> np.ndarray:
        """uint16 (h, w, 4) reflectance x 10,000 (R, G, B, NIR); 0 in the nodata border.

        Parameters
        ----------
        window : tuple of int or None
            (row0, col0, row1, col1), ends exclusive; None: the whole scene.

        Returns
        -------
        ndarray, (row1 - row0, col1 - col0, 4) uint16
            Values 1..10000 inside the data area (noise depends on the position only).
        """
        r0, c0, r1, c1 = window or (0, 0) + tuple(self.shape)
        lab = self.labels((r0, c0, r1, c1))
        lut = np.array([ROAD] + [ROOF if o["kind"] == "building" else CROPS[o["crop"]]
                                 for o in self.objects], np.float32)
        img = lut[lab] + _noise(self.seed, r0, c0, lab.shape)
        img = np.clip(img, 1, 10_000).astype(np.uint16)
        img[~self.valid((r0, c0, r1, c1))] = 0
        return img

    # ---- truth -----------------------------------------------------------------------
    def polygons(self, map_units: bool = True) -> Dict[int, object]:
        """{id: shapely Polygon/MultiPolygon}: map coordinates, or pixel-edge (x=col,
        y=row) ones with map_units=False.

        Parameters
        ----------
        map_units : bool
            True: map coordinates (x = easting, y = northing) of `georef`; False: pixel-edge
            coordinates (x = col, y = row).

        Returns
        -------
        dict of int to shapely geometry
            {object id: normalized Polygon or MultiPolygon}, buildings cut out of fields.
        """
        import shapely
        from shapely.geometry import box

        out = {}
        for o in self.objects:
            g = shapely.union_all([box(c0, r0, c1, r1) for r0, c0, r1, c1 in o["rects"]])
            if o["holes"]:
                g = g.difference(shapely.union_all([box(c0, r0, c1, r1)
                                                    for r0, c0, r1, c1 in o["holes"]]))
            if map_units:
                a, b, c, d, e, f = self.georef.transform
                g = shapely.affinity.affine_transform(g, [a, b, d, e, c, f])
            out[o["id"]] = shapely.normalize(g)
        return out

    def write_geotiff(self, path, tile: int = 256, overwrite: bool = False):
        """Write the image as a tiled, zlib-compressed GeoTIFF (pixels made tile by tile).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write (atomically).
        tile : int
            The TIFF tile side in pixels.
        overwrite : bool
            Replace an existing file (else FileExistsError).

        Returns
        -------
        str or os.PathLike
            `path`.
        """
        import tifffile

        from ..io.atomic import atomic_path
        from ..io.georef import georef_to_tags
        from ..io.labels import _geo_extratags

        h, w = self.shape
        meta = ("<GDALMetadata>" + "".join(
            f'<Item name="DESCRIPTION" sample="{i}" role="description">{n}</Item>'
            for i, n in enumerate(BANDS)) + "</GDALMetadata>")
        extratags = _geo_extratags(georef_to_tags(self.georef)) + [
            (42113, "s", 0, "0", True), (42112, "s", 0, meta, True)]

        def tiles():
            for r in range(0, h, tile):
                for c in range(0, w, tile):
                    part = self.image((r, c, min(r + tile, h), min(c + tile, w)))
                    yield np.pad(part, ((0, tile - part.shape[0]), (0, tile - part.shape[1]),
                                        (0, 0)))

        with atomic_path(path, overwrite) as tmp:
            tifffile.imwrite(tmp, tiles(), shape=(h, w, 4), dtype=np.uint16,
                             tile=(tile, tile), photometric="minisblack", planarconfig="contig",
                             compression="zlib", bigtiff=h * w * 8 > 2 ** 31,
                             extrasamples=(0, 0, 0), extratags=extratags, software="napari-sam")
        return path


def _noise(seed: int, r0: int, c0: int, shape) -> np.ndarray:
    """float32 (h, w, 4) noise in about +-100, a function of the pixel position alone (so
    any window of the scene gets the same pixels)."""
    r = np.arange(r0, r0 + shape[0], dtype=np.uint64)[:, None, None]
    c = np.arange(c0, c0 + shape[1], dtype=np.uint64)[None, :, None]
    b = np.arange(4, dtype=np.uint64)[None, None, :]
    x = (r * np.uint64(73856093)) ^ (c * np.uint64(19349663)) ^ \
        (b * np.uint64(83492791)) ^ np.uint64(seed * 2654435761 % 2 ** 32)
    x = (x ^ (x >> np.uint64(13))) * np.uint64(0x5BD1E995)
    x = x ^ (x >> np.uint64(15))
    return ((x % np.uint64(201)).astype(np.float32) - 100.0)
