"""The plugin module the entry point ``usearch`` (group ``dk_vector_plugins``) names.

Three hook implementations:

* ``dkv_register_options`` declares ``index`` and the ``hnsw_*`` keys for every backend, so
  ``DatabaseFactory().create(backend="s3", ..., index="hnsw")`` is accepted and type-checked;
* ``dkv_vector_search`` (``tryfirst=True``) answers searches of stores configured with
  ``index="hnsw"`` from a usearch HNSW index, and returns ``None`` (declines) for every other
  store, so the built-in exact search answers those;
* ``dkv_vector_search_async``, its async twin.
"""

from __future__ import annotations

from collections.abc import Awaitable

from dk_vector_plugins import (
    AsyncStore,
    OptionSpec,
    SearchRequest,
    Store,
    VectorSearchResult,
    apply_threshold,
    hookimpl,
)

from .hnsw import Settings, answer

#: One list of results per query: what a search hook answers.
Results = list[list[VectorSearchResult]]

__all__ = ["OPTIONS", "dkv_register_options", "dkv_vector_search", "dkv_vector_search_async"]


#: The configuration keys this plugin adds to every backend.
OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "index",
        (str,),
        None,
        "'hnsw': answer vector searches from a usearch HNSW index (dkv-usearch-override); "
        "anything else: the exact search",
    ),
    OptionSpec(
        "hnsw_connectivity", (int,), 16, "HNSW graph degree (M)", minimum=2
    ),
    OptionSpec(
        "hnsw_ef_construction",
        (int,),
        128,
        "HNSW search width while building (efConstruction)",
        minimum=1,
    ),
    OptionSpec(
        "hnsw_ef",
        (int,),
        64,
        "HNSW search width per query (ef): recall vs speed",
        minimum=1,
    ),
    OptionSpec(
        "hnsw_min_rows",
        (int,),
        0,
        "answer exactly while a field holds fewer vectors than this",
        minimum=0,
    ),
    OptionSpec(
        "hnsw_min_selectivity",
        (int, float),
        0.05,
        "answer exactly when a filter keeps less than this fraction of the rows",
        minimum=0.0,
        maximum=1.0,
        convert=float,
    ),
    OptionSpec(
        "hnsw_threads",
        (int,),
        0,
        "usearch worker threads (0: all cores)",
        minimum=0,
    ),
)


@hookimpl
def dkv_register_options() -> tuple[OptionSpec, ...]:
    """``index`` and the ``hnsw_*`` keys, for every backend."""
    return OPTIONS


def _settings(db: Store | AsyncStore) -> Settings | None:
    if getattr(db, "core", None) is None:  # a third-party store without the shared core
        return None
    return Settings.from_config(db.config)


@hookimpl(tryfirst=True)
def dkv_vector_search(db: Store, request: SearchRequest) -> Results | None:
    """HNSW search for stores configured with ``index="hnsw"``; ``None`` (decline) for the rest."""
    settings = _settings(db)
    if settings is None:
        return None
    core = db.core
    results = core.read_locked(lambda table: answer(core, table, request, settings))
    if results is None:
        return None  # e.g. a very selective filter: the built-in exact search answers
    return apply_threshold(results, request)


@hookimpl(tryfirst=True)
def dkv_vector_search_async(db: AsyncStore, request: SearchRequest) -> Awaitable[Results] | None:
    """The async twin: decides from the config at once, searches in a worker thread.

    An async implementation cannot decline once it has returned its awaitable, so when the
    index declines after looking at the table (a very selective filter), this one awaits the
    built-in exact search (``db.core.vector_search``) instead.
    """
    settings = _settings(db)
    if settings is None:
        return None
    return _search_async(db, request, settings)


async def _search_async(db: AsyncStore, request: SearchRequest, settings: Settings) -> Results:
    core = db.core  # run_async opens an async S3 store's client first, and runs in a thread
    results = await core.run_async(core.read_locked, lambda table: answer(core, table, request, settings), heavy=True)
    if results is None:  # declined after looking at the table: the exact search answers
        return await core.run_async(core.vector_search, request, heavy=True)
    return apply_threshold(results, request)
