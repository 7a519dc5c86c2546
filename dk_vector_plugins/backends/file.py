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

import os
from collections.abc import Mapping
from typing import Any

from ..hookspecs import hookimpl
from ..storage.driver import TableStorage, sync_runner
from ..storage.local import LocalObjectStore
from ..types import BackendSpec, OptionSpec
from .tabled import TABLE_OPTIONS, AsyncTableDatabase, TableDatabase, local_path, table_options

__all__ = ["AsyncFileDatabase", "FileDatabase"]

_OPTIONS = (
    OptionSpec(
        "path",
        (str, os.PathLike),
        None,
        "directory of the table (created if missing)",
        required=True,
        backends=("file",),
        convert=local_path("path"),
    ),
    OptionSpec("fsync", (bool,), True, "fsync files and directories before each commit", backends=("file",)),
    OptionSpec(
        "lazy_rows", (bool,), True, "parse row data on first use (vectors load at once)", backends=("file",)
    ),
    *TABLE_OPTIONS("file"),
)


class _FileStorage:
    backend_name = "file"
    config: Mapping[str, Any]

    def _make_storage(self) -> TableStorage:
        store = LocalObjectStore(self.config["path"], fsync=self.config["fsync"])
        run, close = sync_runner(store)
        options = table_options(self.config, self.config["lazy_rows"])
        options.lazy_ids = True  # a local read costs little when a result first needs the ids
        options.latest_every = 16  # a reader's look for the next manifest is a failed open()
        # the table maps the vector files it writes (the page cache holds them): no second copy
        return TableStorage(run, store.describe, options, close, adopts_written=True)


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
