"""Vector indexes: the backend protocol (`IndexBackend`, `open_index`), the embedded backend (`Index`) and the
Milvus backend (`mmserve.index.milvus.MilvusIndex`, imported only when a location names Milvus).

The embedded backend keeps a directory on this machine and is split by
concern: `generations` (atomic saves on disk), `metadata` (SQLite), `ann`
(the usearch HNSW graph) and `exact` (the plain matrix: exact scans and
re-ranking). Search, folder indexing and the CLI use only the protocol.
"""

from mmserve.index.backend import IndexBackend, IndexUnavailableError, index_exists, open_index
from mmserve.index.embedded import EXACT_SCAN_LIMIT, Index
from mmserve.index.exact import Storage
from mmserve.index.generations import IndexLockedError
from mmserve.index.records import MAIN_SPACE, MODALITIES, Hit, ItemMetadata, Record, SpaceMismatchError

__all__ = ["EXACT_SCAN_LIMIT", "MAIN_SPACE", "MODALITIES", "Hit", "Index", "IndexBackend", "IndexLockedError",
           "IndexUnavailableError", "ItemMetadata", "Record", "SpaceMismatchError", "Storage", "index_exists",
           "open_index"]
