"""The plugin's config keys, and which stores it serves (those that ask for ``executor="dask"``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...core import StoreCore
from ...errors import ConfigError
from ...storage.driver import TableStorage
from ...types import AsyncStore, OptionSpec, Store

__all__ = [
    "DEFAULT_SHARD_ROWS",
    "EXECUTORS",
    "OPTIONS",
    "TABLE_BACKENDS",
    "require_distributed",
    "shard_rows",
    "table_core",
    "wants_dask",
]

EXECUTORS = ("local", "dask")
#: Backends whose stores the plugin can distribute (the log-structured table).
TABLE_BACKENDS = ("file", "s3")
#: Default rows of one part: a segment above this is searched as several parts.
DEFAULT_SHARD_ROWS = 262_144


def _executor_implies(v: Any) -> dict[str, Any]:
    # searches run on the workers: the client needs no vectors in memory
    return {"load_vectors": False} if v == "dask" else {}


OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "executor",
        (str,),
        "local",
        "where vector search and bulk embedding run: 'local' (this process) or 'dask' (a Dask "
        "cluster; file and s3 stores)",
        choices=EXECUTORS,
        implies=_executor_implies,
    ),
    OptionSpec(
        "scheduler_address",
        (str,),
        None,
        "executor='dask': address of a running Dask scheduler (e.g. tcp://host:8786); "
        "default: start a local cluster",
    ),
    OptionSpec(
        "n_workers",
        (int,),
        None,
        "executor='dask' without scheduler_address: worker processes of the local cluster "
        "(default: one per core)",
        above=0,
    ),
    OptionSpec(
        "threads_per_worker",
        (int,),
        1,
        "executor='dask' without scheduler_address: threads of each local worker process",
        above=0,
    ),
    OptionSpec(
        "shard_rows",
        (int,),
        DEFAULT_SHARD_ROWS,
        "executor='dask': segments larger than this are searched as several parts of at most this many rows",
        above=0,
    ),
)


def wants_dask(db: Store | AsyncStore) -> bool:
    """Whether ``db`` is configured for Dask; a clear error when it is but cannot be."""
    config = getattr(db, "config", None)
    if not isinstance(config, Mapping) or config.get("executor") != "dask":
        return False
    backend = getattr(db, "backend_name", None)
    if backend not in TABLE_BACKENDS:
        raise ConfigError(
            f"executor='dask' distributes the segments of a file or s3 store; backend {backend!r} has "
            "no segments: use backend='file' or 's3', or executor='local'"
        )
    require_distributed()
    return True


def require_distributed() -> Any:
    """The ``distributed`` module, or :class:`ConfigError` naming the extra to install."""
    try:
        import distributed
    except ImportError as e:
        raise ConfigError(
            "executor='dask' needs dask.distributed: install it with  pip install 'dk_vector_plugins[dask]'"
        ) from e
    return distributed


def table_core(db: Store | AsyncStore) -> tuple[StoreCore, TableStorage]:
    """The core of a Dask-configured store and its table storage (segments, versions)."""
    core = db.core
    if not isinstance(core, StoreCore) or not isinstance(core.storage, TableStorage):
        raise ConfigError(
            f"executor='dask' needs a store on the log-structured table; the {db.backend_name!r} store "
            f"{type(db).__name__} has none"
        )
    return core, core.storage


def shard_rows(config: Mapping[str, Any]) -> int:
    """Rows of one part (``shard_rows``)."""
    return int(config.get("shard_rows") or DEFAULT_SHARD_ROWS)
