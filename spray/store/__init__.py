"""The HDF5 heatmap store: verified shards, a virtual-dataset index, locking and resume."""
from .lock import StoreLock, StoreLocked
from .shard import CorruptShard, ShardData, read_shard, verify_shard, write_shard
from .store import HeatmapStore, ShardSpec, StoreIncomplete, StoreWriter

__all__ = ["CorruptShard", "HeatmapStore", "ShardData", "ShardSpec", "StoreIncomplete", "StoreLock", "StoreLocked",
           "StoreWriter", "read_shard", "verify_shard", "write_shard"]
