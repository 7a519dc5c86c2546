"""The built-in plugin ``defaults``: exact vector search, BM25 text search and batched bulk embedding for every store on the shared core.

A backend plugin registers only its :class:`~dk_vector_plugins.BackendSpec`; whatever store it
builds on :class:`~dk_vector_plugins.core.StoreCore` (every built-in one, and a third-party store
that subclasses one) is served by these ``trylast=True`` implementations, so an installed
override (``tryfirst=True``, or any plain implementation) answers first, and a store that is not
built on the core is declined (``None``) for its own plugin to answer.

Like every plugin it is registered through its entry point (``defaults`` in the group
``dk_vector_plugins``), listed by ``dkv plugins --all``, and can be blocked (then a store whose
searches no other plugin answers raises :class:`~dk_vector_plugins.PluginError`).
"""

from __future__ import annotations

from collections.abc import Awaitable

from .core import StoreCore
from .embed import run_bulk_embed, run_bulk_embed_async
from .hookspecs import hookimpl
from .types import (
    AsyncStore,
    BulkEmbedReport,
    BulkEmbedRequest,
    SearchRequest,
    Store,
    TextSearchRequest,
    TextSearchResult,
    VectorSearchResult,
)

__all__ = [
    "dkv_bulk_embed",
    "dkv_bulk_embed_async",
    "dkv_text_search",
    "dkv_text_search_async",
    "dkv_vector_search",
    "dkv_vector_search_async",
]


def _core_of(db: Store | AsyncStore) -> StoreCore | None:
    core = getattr(db, "core", None)
    return core if isinstance(core, StoreCore) else None


@hookimpl(trylast=True)
def dkv_vector_search(db: Store, request: SearchRequest) -> list[list[VectorSearchResult]] | None:
    """Exact search (the kernel over the store's in-memory table, refreshed first)."""
    core = _core_of(db)
    return None if core is None else core.vector_search(request)


@hookimpl(trylast=True)
def dkv_vector_search_async(
    db: AsyncStore, request: SearchRequest
) -> Awaitable[list[list[VectorSearchResult]]] | None:
    """Exact search for async stores (a large one in a worker thread)."""
    core = _core_of(db)
    return None if core is None else core.vector_search_async(request)


@hookimpl(trylast=True)
def dkv_text_search(db: Store, request: TextSearchRequest) -> list[list[TextSearchResult]] | None:
    """BM25 over the store's text index (refreshed first; fields not indexed yet are indexed)."""
    core = _core_of(db)
    return None if core is None else core.text_search(request)


@hookimpl(trylast=True)
def dkv_text_search_async(
    db: AsyncStore, request: TextSearchRequest
) -> Awaitable[list[list[TextSearchResult]]] | None:
    """BM25 for async stores (a large table's search in a worker thread)."""
    core = _core_of(db)
    return None if core is None else core.text_search_async(request)


@hookimpl(trylast=True)
def dkv_bulk_embed(db: Store, request: BulkEmbedRequest) -> BulkEmbedReport | None:
    """Batched embed-and-store: one ``upsert_batch`` (one commit on file and S3) per batch."""
    return None if _core_of(db) is None else run_bulk_embed(db, request)


@hookimpl(trylast=True)
def dkv_bulk_embed_async(db: AsyncStore, request: BulkEmbedRequest) -> Awaitable[BulkEmbedReport] | None:
    """The async twin: a sync embedder runs in a worker thread, an async one is awaited."""
    return None if _core_of(db) is None else run_bulk_embed_async(db, request)
