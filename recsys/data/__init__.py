"""Data layer: id maps, interactions, readers, splits and dataset downloads."""

from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.data.io import read_atomic, read_events, read_movielens, read_table
from recsys.data.split import Split, leave_last_out, random_split, split, temporal_split

__all__ = [
    "IdMap", "Interactions", "Split", "leave_last_out", "random_split", "read_atomic",
    "read_events", "read_movielens", "read_table", "split", "temporal_split",
]
