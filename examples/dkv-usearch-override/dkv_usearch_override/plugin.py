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

import asyncio
from typing import Any

from dk_vector_plugins import ConfigError, OptionSpec, SearchRequest, hookimpl

from .hnsw import Settings, answer

__all__ = ["OPTIONS", "dkv_register_options", "dkv_vector_search", "dkv_vector_search_async"]


def _at_least(name: str, low: float) -> Any:
    def convert(value: Any) -> Any:
        if value < low:
            raise ConfigError(f"config key {name!r} must be >= {low}, got {value!r}")
        return value

    return convert


def _fraction(value: Any) -> Any:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"config key 'hnsw_min_selectivity' must be between 0 and 1, got {value!r}")
    return float(value)


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
        "hnsw_connectivity", (int,), 16, "HNSW graph degree (M)", convert=_at_least("hnsw_connectivity", 2)
    ),
    OptionSpec(
        "hnsw_ef_construction",
        (int,),
        128,
        "HNSW search width while building (efConstruction)",
        convert=_at_least("hnsw_ef_construction", 1),
    ),
    OptionSpec(
        "hnsw_ef",
        (int,),
        64,
        "HNSW search width per query (ef): recall vs speed",
        convert=_at_least("hnsw_ef", 1),
    ),
    OptionSpec(
        "hnsw_min_rows",
        (int,),
        0,
        "answer exactly while a field holds fewer vectors than this",
        convert=_at_least("hnsw_min_rows", 0),
    ),
    OptionSpec(
        "hnsw_min_selectivity",
        (int, float),
        0.05,
        "answer exactly when a filter keeps less than this fraction of the rows",
        convert=_fraction,
    ),
    OptionSpec(
        "hnsw_threads",
        (int,),
        0,
        "usearch worker threads (0: all cores)",
        convert=_at_least("hnsw_threads", 0),
    ),
)


@hookimpl
def dkv_register_options() -> tuple[OptionSpec, ...]:
    """``index`` and the ``hnsw_*`` keys, for every backend."""
    return OPTIONS


def _settings(db: Any) -> Settings | None:
    if getattr(db, "core", None) is None:  # a third-party store without the shared core
        return None
    return Settings.from_config(db.config)


@hookimpl(tryfirst=True)
def dkv_vector_search(db: Any, request: SearchRequest) -> Any:
    """HNSW search for stores configured with ``index="hnsw"``; ``None`` (decline) for the rest."""
    settings = _settings(db)
    if settings is None:
        return None
    core = db.core
    results = core.read_locked(lambda table: answer(core, table, request, settings))
    if results is None:
        return None  # e.g. a very selective filter: the built-in exact search answers
    return _shape(results, request)


@hookimpl(tryfirst=True)
def dkv_vector_search_async(db: Any, request: SearchRequest) -> Any:
    """The async twin: decides from the config at once, searches in a worker thread.

    An async implementation cannot decline once it has returned its awaitable, so when the
    index declines after looking at the table (a very selective filter), this one awaits the
    store's own exact search (``db.default_vector_search``) instead.
    """
    settings = _settings(db)
    if settings is None:
        return None
    return _search_async(db, request, settings)


async def _search_async(db: Any, request: SearchRequest, settings: Settings) -> Any:
    await db.connect()  # opens the aioboto3 client of an async S3 store; a no-op elsewhere
    core = db.core
    results = await asyncio.to_thread(core.read_locked, lambda table: answer(core, table, request, settings))
    if results is None:
        results = await db.default_vector_search(request)
    return _shape(results, request)


def _shape(results: list[list[Any]], request: SearchRequest) -> Any:
    thr = request.options.get("score_threshold")
    if thr is not None:
        results = [[h for h in hits if h.score >= thr] for hits in results]
    return results if request.batch else results[0]
