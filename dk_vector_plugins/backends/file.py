"""The built-in ``file`` backend plugin: a durable log-structured table in a local directory.

``DatabaseFactory().create(backend="file", path="./store", vector_enabled=True)``.

* Commits are crash-safe: segment files and their directory are fsynced before the manifest that
  names them is created (atomically, with ``link()``); a crash at any moment leaves the last
  committed version readable.
* Concurrent writers (threads or processes) lose nothing: the loser of a race reloads and retries.
* Reopening is fast: vectors are memory-mapped ``.npy`` files, row data is parsed on first use.
* A store opened earlier sees other processes' commits on its next call (one ``stat``).
"""

from __future__ import annotations

from typing import Any

from ..database import default_search, default_search_async
from ..embed import BulkEmbedRequest, run_bulk_embed, run_bulk_embed_async
from ..factory import BackendSpec, OptionSpec
from ..hookspecs import hookimpl
from ..search import SearchRequest
from ..storage.driver import TableStorage, sync_runner
from ..storage.local import LocalObjectStore
from .tabled import TABLE_OPTIONS, AsyncTableDatabase, TableDatabase, table_options

__all__ = ["AsyncFileDatabase", "FileDatabase"]

_OPTIONS = (
    OptionSpec(
        "path",
        (str, __import__("os").PathLike),
        None,
        "directory of the table (created if missing)",
        required=True,
        backends=("file",),
        convert=__import__("os").fspath,
    ),
    OptionSpec("fsync", (bool,), True, "fsync files and directories before each commit", backends=("file",)),
    OptionSpec(
        "lazy_rows", (bool,), True, "parse row data on first use (vectors load at once)", backends=("file",)
    ),
    *TABLE_OPTIONS("file"),
)


class _FileStorage:
    backend_name = "file"
    config: Any

    def _make_storage(self) -> TableStorage:
        store = LocalObjectStore(self.config["path"], fsync=self.config["fsync"])
        run, close = sync_runner(store)
        options = table_options(self.config, self.config["lazy_rows"])
        options.lazy_ids = True  # a local read costs little when a result first needs the ids
        # the table maps the vector files it writes (the page cache holds them): no second copy
        return TableStorage(run, store.describe, options, close, adopt_written=True)


class FileDatabase(_FileStorage, TableDatabase):
    """A store in a local directory, sync API."""


class AsyncFileDatabase(_FileStorage, AsyncTableDatabase):
    """A store in a local directory, async API (file I/O runs in worker threads)."""


@hookimpl
def dkv_register_backends() -> list[BackendSpec]:
    """The ``file`` backend."""
    return [
        BackendSpec(
            name="file",
            sync_class=FileDatabase,
            async_class=AsyncFileDatabase,
            options=_OPTIONS,
            description="durable log-structured table in a local directory",
        )
    ]


@hookimpl(trylast=True)
def dkv_vector_search(db: Any, request: SearchRequest) -> Any:
    """Exact search for file stores; declines for others."""
    return default_search(db, request) if isinstance(db, FileDatabase) else None


@hookimpl(trylast=True)
def dkv_vector_search_async(db: Any, request: SearchRequest) -> Any:
    """Exact search for async file stores; declines for others."""
    return default_search_async(db, request) if isinstance(db, AsyncFileDatabase) else None


@hookimpl(trylast=True)
def dkv_bulk_embed(db: Any, request: BulkEmbedRequest) -> Any:
    """Batched embed-and-store for file stores (one commit per batch); declines for others."""
    return run_bulk_embed(db, request) if isinstance(db, FileDatabase) else None


@hookimpl(trylast=True)
def dkv_bulk_embed_async(db: Any, request: BulkEmbedRequest) -> Any:
    """Batched embed-and-store for async file stores; declines for others."""
    return run_bulk_embed_async(db, request) if isinstance(db, AsyncFileDatabase) else None
