"""The plugin contract: one hook specification per hook, each documented where it is declared.

A plugin is any object or module with functions marked by :data:`hookimpl` whose names are the
hooks below. It is found through an entry point in the group ``dk_vector_plugins``, or registered
explicitly with ``DatabaseFactory(plugins=[...])``.

Implementations may accept a subset of a hook's arguments (pluggy passes them by name), so new
arguments can be added to a hook without breaking existing plugins.

Dispatch order: among implementations of a ``firstresult`` hook, ``tryfirst=True`` ones run
first, then the others (last registered first), then ``trylast=True`` ones. The built-in backends
implement their default search and bulk embedding with ``trylast=True`` and return ``None`` for a
store that is not theirs, so an installed override (``tryfirst=True``) always wins, and
instrumentation is a ``wrapper=True`` implementation around any of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from .embed import BulkEmbedReport, BulkEmbedRequest, EmbedderSpec
    from .factory import BackendSpec, OptionSpec
    from .records import VectorSearchResult
    from .search import SearchRequest

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


# --- vector search ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def dkv_vector_search(db: Any, request: SearchRequest) -> list[VectorSearchResult] | None:
    """Answer an exact (or, for an override, approximate) vector search on ``db``.

    :param db: the sync store; it exposes ``backend_name`` and ``config`` (a read-only mapping).
    :param request: a validated :class:`~dk_vector_plugins.SearchRequest`: ``queries`` (a
        float32 array of shape ``(b, d)``), ``vector_field``, ``k``, ``filter`` (a compiled
        expression or ``None``), ``metric``, ``batch`` (whether a list of lists is expected) and
        ``options``.
    :returns: a list of :class:`~dk_vector_plugins.VectorSearchResult` best first (for a batch
        request, a list of such lists, one per query), or ``None`` to decline and let the next
        implementation answer. Stops at the first non-None result.
    """


@hookspec(firstresult=True)
def dkv_vector_search_async(db: Any, request: SearchRequest) -> Awaitable[list[VectorSearchResult]] | None:
    """The async twin of :func:`dkv_vector_search`, for the async store classes.

    Implement it as a plain (not ``async``) function that returns ``None`` to decline or an
    awaitable (e.g. a coroutine) that the host awaits. Stops at the first non-None result.
    """


# --- bulk embedding --------------------------------------------------------------------------


@hookspec(firstresult=True)
def dkv_bulk_embed(db: Any, request: BulkEmbedRequest) -> BulkEmbedReport | None:
    """Embed the texts of many records and store them with their vectors.

    :param db: the sync store.
    :param request: a :class:`~dk_vector_plugins.BulkEmbedRequest`: the records, ``text_field``,
        ``vector_field``, the embedder, ``batch_size``, ``model_name`` and ``progress``.
    :returns: a :class:`~dk_vector_plugins.BulkEmbedReport` (ids in input order, counts of
        embedded and skipped records, batches committed), or ``None`` to decline. Stops at the
        first non-None result.
    """


@hookspec(firstresult=True)
def dkv_bulk_embed_async(db: Any, request: BulkEmbedRequest) -> Awaitable[BulkEmbedReport] | None:
    """The async twin of :func:`dkv_bulk_embed`: return ``None`` or an awaitable of the report.

    Stops at the first non-None result.
    """
