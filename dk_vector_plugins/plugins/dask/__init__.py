"""The ``dask`` plugin: exact vector search, BM25 text search and bulk embedding of file and S3 stores on a Dask cluster.

A store opts in with ``executor="dask"`` (config dict, keywords or TOML, like every other key)::

    DatabaseFactory().create(backend="s3", bucket="b", prefix="docs", vector_enabled=True,
                             executor="dask", scheduler_address="tcp://scheduler:8786")

Without ``scheduler_address`` the plugin starts a local cluster of ``n_workers`` processes with
``threads_per_worker`` threads each. Needs the ``dask`` extra (``pip install
'dk_vector_plugins[dask]'``); this package imports without it and only a store that asks for
``executor="dask"`` needs it.

**Search** (``dkv_vector_search`` / ``dkv_vector_search_async``, ``tryfirst``; declines for
stores not configured for Dask). The unit of distribution is the immutable segment of the
log-structured table, cut into parts of at most ``shard_rows`` rows (:mod:`.plan`). The client
plans under the store lock, from a snapshot of the version it has loaded
(:func:`dk_vector_plugins.storage.segments.snapshot`); parts go to workers by a stable assignment
(:mod:`.cluster`); one task per worker searches that worker's parts, which it loads once through a
read-only :class:`~dk_vector_plugins.storage.segments.SegmentReader` and keeps (:mod:`.worker`);
the client merges the per-worker top-``k`` lists in the kernel's order (:mod:`.merge`) and builds
the results from its table, bit for bit those of the single-process search (:mod:`.dispatch`).
The request's ``exact`` option (``"auto"``, ``"int8"``, ``"float32"``) reaches every part's
kernel; a part of a segment that stores int8 codes reads those of its rows for the int8 scan
instead of quantizing them, and the results' metadata shows ``reranked`` (summed over the parts)
and ``exact`` as a single process's does.

A worker lost mid-query makes the scheduler run its task again on another worker (up to Dask's
``distributed.scheduler.allowed-failures``); a search that still cannot finish raises
:class:`ClusterError`, never a partial top-``k``.

The client store opens with ``load_vectors=False`` unless told otherwise (the ``executor`` key
implies it): it holds ids, tombstones and row data, and reads only the vectors of the records a
search returns.

**Text search** (``dkv_text_search`` / ``dkv_text_search_async``, ``tryfirst``): BM25 on the
workers in two rounds over the same parts. Each part reports its corpus statistics of the query
terms (live rows, total length, document frequencies, and per term the shortest row for each
frequency); the client merges them exactly; then each part scores its rows with the merged
statistics (postings read from the segment when it stores them, else built from its rows once)
and returns its top ``k``. Scores and order are those of the single-process search, bit for bit
(:mod:`dk_vector_plugins.textindex`: ``part_stats``, ``merge_stats``). Hybrid search uses both.

**Bulk embedding** (``dkv_bulk_embed`` / ``dkv_bulk_embed_async``, ``tryfirst``): batches are
embedded on the workers and committed in input order (:mod:`.embed`).

Modules: :mod:`.options` (config keys), :mod:`.cluster` (client lifecycle, worker assignment),
:mod:`.plan`, :mod:`.worker`, :mod:`.merge`, :mod:`.dispatch`, :mod:`.embed`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

from ...hookspecs import hookimpl
from ...storage.segments import StoreSpec
from ...types import (
    AsyncStore,
    BulkEmbedReport,
    BulkEmbedRequest,
    OptionSpec,
    SearchRequest,
    Store,
    TextSearchRequest,
    TextSearchResult,
    VectorSearchResult,
)
from .cluster import ClusterError, assign, client_for, close_client
from .dispatch import search, search_async, text_search, text_search_async
from .embed import bulk_embed, bulk_embed_async, embed_texts, portable
from .merge import Hits, merge_hits
from .options import OPTIONS, wants_dask
from .worker import cached_parts

__all__ = [
    "OPTIONS",
    "ClusterError",
    "Hits",
    "StoreSpec",
    "assign",
    "cached_parts",
    "client_for",
    "close_client",
    "embed_texts",
    "merge_hits",
    "portable",
]


@hookimpl
def dkv_register_options() -> Sequence[OptionSpec]:
    """The ``executor`` key and the Dask keys, for every backend (only file and s3 can use them)."""
    return OPTIONS


@hookimpl(tryfirst=True)
def dkv_vector_search(db: Store, request: SearchRequest) -> list[list[VectorSearchResult]] | None:
    """Exact search on the Dask cluster for stores with ``executor="dask"``; declines for others."""
    if not wants_dask(db):
        return None
    return search(db, request)


@hookimpl(tryfirst=True)
def dkv_vector_search_async(
    db: AsyncStore, request: SearchRequest
) -> Awaitable[list[list[VectorSearchResult]]] | None:
    """Async exact search on the Dask cluster for stores with ``executor="dask"``; declines for others."""
    if not wants_dask(db):
        return None
    return search_async(db, request)


@hookimpl(tryfirst=True)
def dkv_text_search(db: Store, request: TextSearchRequest) -> list[list[TextSearchResult]] | None:
    """BM25 search on the Dask cluster for stores with ``executor="dask"`` (corpus statistics
    merged exactly from every part); declines for others."""
    if not wants_dask(db):
        return None
    return text_search(db, request)


@hookimpl(tryfirst=True)
def dkv_text_search_async(
    db: AsyncStore, request: TextSearchRequest
) -> Awaitable[list[list[TextSearchResult]]] | None:
    """Async BM25 search on the Dask cluster for stores with ``executor="dask"``; declines for others."""
    if not wants_dask(db):
        return None
    return text_search_async(db, request)


@hookimpl(tryfirst=True)
def dkv_bulk_embed(db: Store, request: BulkEmbedRequest) -> BulkEmbedReport | None:
    """Bulk embedding on the Dask cluster for stores with ``executor="dask"``; declines for others."""
    if not wants_dask(db):
        return None
    return bulk_embed(db, request)


@hookimpl(tryfirst=True)
def dkv_bulk_embed_async(db: AsyncStore, request: BulkEmbedRequest) -> Awaitable[BulkEmbedReport] | None:
    """Async bulk embedding on the Dask cluster for stores with ``executor="dask"``; declines for others."""
    if not wants_dask(db):
        return None
    return bulk_embed_async(db, request)
