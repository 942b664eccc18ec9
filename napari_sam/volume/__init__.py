"""Volumes and time-lapses: one object through the slices, automatic 3D, tracking.

    from napari_sam.volume import segment_volume, automask_volume, track
"""

from .embeddings import SliceEmbeddings
from .propagate import Cancelled, PropagationInfo, StopRules, segment_volume

__all__ = ["SliceEmbeddings", "Cancelled", "PropagationInfo", "StopRules", "segment_volume"]

from ..automask.volume import automask_volume  # noqa: E402
from .link import link_labels  # noqa: E402
from .track import TrackResult, track  # noqa: E402
from .ctc import read_ctc, tracks_data, write_ctc  # noqa: E402

__all__ += ["automask_volume", "link_labels", "track", "TrackResult", "write_ctc",
            "read_ctc", "tracks_data"]
