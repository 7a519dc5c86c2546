"""The plugin contract: one hook specification per hook, each documented where it is declared.

A plugin is any object or module with functions marked by :data:`hookimpl` whose names are the
hooks below. It is found through an entry point in the group ``dk_vector_plugins``, or registered
explicitly with ``DatabaseFactory(plugins=[...])``.

Implementations may accept a subset of a hook's arguments (pluggy passes them by name), so new
arguments can be added to a hook without breaking existing plugins.

Dispatch order: among implementations of a ``firstresult`` hook, ``tryfirst=True`` ones run
first, then the others (last registered first), then ``trylast=True`` ones. The built-in plugin
``defaults`` (:mod:`dk_vector_plugins.defaults`) implements search and bulk embedding with
``trylast=True`` for every store built on the shared core, so an installed override
(``tryfirst=True``) always wins, and instrumentation is a ``wrapper=True`` implementation around
any of them. Backend plugins register only their :class:`~dk_vector_plugins.BackendSpec`.

The types named here live in :mod:`dk_vector_plugins.types`, the one module this one imports.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence

import pluggy

from .types import (
    AnalyzerSpec,
    AsyncStore,
    BackendSpec,
    BulkEmbedReport,
    BulkEmbedRequest,
    EmbedderSpec,
    OptionSpec,
    SearchRequest,
    Store,
    TextSearchRequest,
    TextSearchResult,
    VectorSearchResult,
)

#: The project name shared by the hook markers and the entry-point group.
PROJECT_NAME = "dk_vector_plugins"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# --- registration ----------------------------------------------------------------------------


@hookspec
def dkv_register_backends() -> Sequence[BackendSpec]:
    """Return the storage backends this plugin provides.

    :returns: a sequence of :class:`~dk_vector_plugins.BackendSpec` (name such as ``"memory"``,
        ``"file"`` or ``"s3"``, the sync class, the async class, the backend's own config keys).
        Every plugin's results are collected; two plugins providing one name is a
        :class:`~dk_vector_plugins.PluginError` when that backend is asked for.
    """


@hookspec
def dkv_register_embedders() -> Sequence[EmbedderSpec]:
    """Return the embedders this plugin provides.

    :returns: a sequence of :class:`~dk_vector_plugins.EmbedderSpec`: a name (chosen with the
        ``embedder`` config key or ``embedding_fn="name"``) and a factory called as
        ``factory(dimensions=..., **options)`` that returns an object with
        ``embed(texts: Sequence[str]) -> numpy.ndarray`` (float32, shape ``(len(texts), d)``).
    """


@hookspec
def dkv_register_options() -> Sequence[OptionSpec]:
    """Return extra configuration keys this plugin understands (an addition to the core contract).

    An override plugin configured per store (``index="hnsw"``, ``executor="dask"``) declares its
    keys here so that the factory accepts and type-checks them instead of rejecting them as
    unknown.

    :returns: a sequence of :class:`~dk_vector_plugins.OptionSpec`.
    """


@hookspec
def dkv_register_analyzers() -> Sequence[AnalyzerSpec]:
    """Return the text analyzers this plugin provides (config key ``analyzer``).

    :returns: a sequence of :class:`~dk_vector_plugins.AnalyzerSpec`: a name, a factory called
        with the store's ``analyzer_options`` as keyword arguments that returns an
        :class:`~dk_vector_plugins.Analyzer` (``analyze(text) -> list[str]``), and a
        description. Every plugin's results are collected; the last registered wins a name
        clash. The built-in plugin ``analyzers`` offers ``standard`` and ``whitespace``.
    """


# --- vector search ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def dkv_vector_search(db: Store, request: SearchRequest) -> list[list[VectorSearchResult]] | None:
    """Answer an exact (or, for an override, approximate) vector search on ``db``.

    :param db: the sync store (a :class:`~dk_vector_plugins.types.Store`): ``backend_name``,
        ``config`` (a read-only mapping) and ``core``, whose ``vector_search`` is the built-in
        exact search.
    :param request: a validated :class:`~dk_vector_plugins.SearchRequest`: ``queries`` (a
        float32 array of shape ``(b, d)``; a single search is a batch of one), ``vector_field``,
        ``k``, ``filter`` (a compiled expression or ``None``), ``metric`` and ``options``.
    :returns: one list of :class:`~dk_vector_plugins.VectorSearchResult` per query (best first),
        also for a single query (a list holding one list); the store alone unwraps it for its
        caller. ``None`` declines and lets the next implementation answer. Stops at the first
        non-None result.
    """


@hookspec(firstresult=True)
def dkv_vector_search_async(
    db: AsyncStore, request: SearchRequest
) -> Awaitable[list[list[VectorSearchResult]]] | None:
    """The async twin of :func:`dkv_vector_search`, for the async store classes.

    ``db`` is an :class:`~dk_vector_plugins.types.AsyncStore`; core work that may block runs
    through ``await db.core.run_async(fn, *args)``. Implement it as a plain (not ``async``)
    function that returns ``None`` to decline or an awaitable (e.g. a coroutine) of one result
    list per query, which the host awaits. Stops at the first non-None result.
    """


# --- full-text search ------------------------------------------------------------------------


@hookspec(firstresult=True)
def dkv_text_search(db: Store, request: TextSearchRequest) -> list[list[TextSearchResult]] | None:
    """Answer a full-text search on ``db`` (the built-in: BM25 over the store's text index).

    :param db: the sync store (a :class:`~dk_vector_plugins.types.Store`); ``core.text_search``
        is the built-in BM25 search.
    :param request: a validated :class:`~dk_vector_plugins.TextSearchRequest`: ``queries`` (the
        texts), ``terms`` (their terms by the store's analyzer), ``text_fields``, ``k``,
        ``filter`` (a compiled expression or ``None``) and ``options``.
    :returns: one list of :class:`~dk_vector_plugins.TextSearchResult` per query (best first),
        also for a single query; ``None`` declines. Stops at the first non-None result. A plugin
        that routes text search to an external engine (Elasticsearch, tantivy, ...) answers
        here with ``tryfirst=True``; hybrid search then fuses its ranking with the vector one.
    """


@hookspec(firstresult=True)
def dkv_text_search_async(
    db: AsyncStore, request: TextSearchRequest
) -> Awaitable[list[list[TextSearchResult]]] | None:
    """The async twin of :func:`dkv_text_search`: return ``None`` or an awaitable of one result
    list per query. Stops at the first non-None result."""


# --- bulk embedding --------------------------------------------------------------------------


@hookspec(firstresult=True)
def dkv_bulk_embed(db: Store, request: BulkEmbedRequest) -> BulkEmbedReport | None:
    """Embed the texts of many records and store them with their vectors.

    :param db: the sync store (a :class:`~dk_vector_plugins.types.Store`).
    :param request: a :class:`~dk_vector_plugins.BulkEmbedRequest`: the records, ``text_field``,
        ``vector_field``, the embedder, ``batch_size``, ``model_name`` and ``progress``.
    :returns: a :class:`~dk_vector_plugins.BulkEmbedReport` (ids in input order, counts of
        embedded and skipped records, batches committed), or ``None`` to decline. Stops at the
        first non-None result.
    """


@hookspec(firstresult=True)
def dkv_bulk_embed_async(db: AsyncStore, request: BulkEmbedRequest) -> Awaitable[BulkEmbedReport] | None:
    """The async twin of :func:`dkv_bulk_embed`: return ``None`` or an awaitable of the report.

    Stops at the first non-None result.
    """
