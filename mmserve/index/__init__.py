"""Vector indexes: the backend protocol (`IndexBackend`, `open_index`) and the embedded backend (`Index`).

The embedded backend keeps a directory on this machine and is split by
concern: `generations` (atomic saves on disk), `metadata` (SQLite), `ann`
(the usearch HNSW graph) and `exact` (the plain matrix: exact scans and
re-ranking). Search, folder indexing and the CLI use only the protocol.
"""

from mmserve.index.backend import IndexBackend, index_exists, open_index
from mmserve.index.embedded import EXACT_SCAN_LIMIT, Index
from mmserve.index.exact import Storage
from mmserve.index.generations import IndexLockedError
from mmserve.index.records import MAIN_SPACE, MODALITIES, Hit, ItemMetadata, Record, SpaceMismatchError

__all__ = ["EXACT_SCAN_LIMIT", "MAIN_SPACE", "MODALITIES", "Hit", "Index", "IndexBackend", "IndexLockedError",
           "ItemMetadata", "Record", "SpaceMismatchError", "Storage", "index_exists", "open_index"]
