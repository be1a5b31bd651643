"""The HDF5 heatmap store: content-addressed verified shards, a virtual-dataset index, locking and reuse."""
from .digests import load_digests, save_digests
from .lock import ReadOnlyFolder, StoreLock, StoreLocked
from .shard import CorruptShard, ShardData, read_shard, verify_shard, write_shard
from .store import (
    Finalized,
    HeatmapStore,
    Selection,
    ShardSpec,
    StoreIncomplete,
    StoreWriter,
    check_manifest,
    identity_key,
    store_content,
)

__all__ = ["CorruptShard", "Finalized", "HeatmapStore", "ReadOnlyFolder", "Selection", "ShardData", "ShardSpec",
           "StoreIncomplete", "StoreLock", "StoreLocked", "StoreWriter", "check_manifest", "identity_key",
           "load_digests", "read_shard", "save_digests", "store_content", "verify_shard", "write_shard"]
