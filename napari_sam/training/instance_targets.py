"""Training targets for instance heads: foreground, centre and boundary distances.

For each object of a label image (Y, X) uint:
- centre distance: Euclidean distance to the object's centre -- its most interior pixel,
  the maximum of the distance to the edge, which stays inside non-convex objects -- over
  the largest such distance in the object (0 at the centre, 1 at the farthest pixel);
- boundary distance: 1 - (distance to the edge / its maximum in the object) (0 deepest
  inside, near 1 at the edge).
Background pixels get 0 foreground and 1 for both distances. These are the meanings of
micro-sam's decoder outputs, so the same seeded watershed serves both.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def instance_targets(labels: np.ndarray) -> np.ndarray:
    """(Y, X) integer labels -> (3, Y, X) float32: foreground, centre and boundary distances.

    Parameters
    ----------
    labels : ndarray, (Y, X) int
        Instance labels, 0 for background.

    Returns
    -------
    ndarray, (3, Y, X) float32
        Channel 0 the foreground (1 inside objects), 1 the normalised distance to the object's
        centre, 2 the boundary distance (see the module docstring); 1 in both for background.
    """
    labels = np.asarray(labels)
    out = np.ones((3,) + labels.shape, dtype=np.float32)
    out[0] = labels > 0
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        # one pixel of margin so the edge distance counts the object's border
        r0, c0 = max(sl[0].start - 1, 0), max(sl[1].start - 1, 0)
        r1 = min(sl[0].stop + 1, labels.shape[0])
        c1 = min(sl[1].stop + 1, labels.shape[1])
        obj = labels[r0:r1, c0:c1] == i
        edt = ndi.distance_transform_edt(np.pad(obj, 1))[1:-1, 1:-1]
        inner = edt[obj]
        if inner.size == 0:
            continue
        peak = np.unravel_index(np.argmax(np.where(obj, edt, -1)), obj.shape)
        rr, cc = np.nonzero(obj)
        d_centre = np.hypot(rr - peak[0], cc - peak[1])
        out[1, r0:r1, c0:c1][obj] = d_centre / max(d_centre.max(), 1.0)
        out[2, r0:r1, c0:c1][obj] = 1.0 - inner / max(inner.max(), 1.0)
    return out
