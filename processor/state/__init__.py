"""State for windows and deduplication: the per-partition window state and its local store;
imports numpy, the standard library, processor.errors and processor.messages only (and the
local store, ``store``, rocksdict: RocksDB on the pod's volume)."""
