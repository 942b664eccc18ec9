"""Volumes and time-lapses: one object through the slices, automatic 3D, tracking.

    from napari_sam.volume import segment_volume, automask_volume, track
"""

from .embeddings import SliceEmbeddings
from .propagate import segment_volume
from .stops import Cancelled, PropagationInfo, StopRules
from .link import link_labels
from .track import TrackResult, track
from .ctc import read_ctc, tracks_data, write_ctc

__all__ = ["SliceEmbeddings", "Cancelled", "PropagationInfo", "StopRules", "segment_volume",
           "automask_volume", "link_labels", "track", "TrackResult", "write_ctc",
           "read_ctc", "tracks_data"]


def __getattr__(name):
    # `automask.volume` imports this package's submodules: loading it on first use lets
    # either package be imported first without an import circle
    if name == "automask_volume":
        from ..automask.volume import automask_volume

        globals()[name] = automask_volume
        return automask_volume
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
