"""The built-in ``file`` backend plugin: a durable log-structured table in a local directory.

``DatabaseFactory().create(backend="file", path="./store", vector_enabled=True)``.

* Commits are crash-safe: segment files and their directory are fsynced before the manifest that
  names them is created (atomically, with ``link()``); a crash at any moment leaves the last
  committed version readable.
* Concurrent writers (threads or processes) lose nothing: the loser of a race reloads and retries.
* Reopening is fast: vectors are memory-mapped ``.npy`` files, row data is parsed on first use.
* A store opened earlier sees other processes' commits on its next call (one ``stat``).
* ``FileDatabase()`` called without a path (dataknobs-data's ``SyncFileDatabase({})``) lives in a
  new temporary directory, which ``close()`` removes (``filepath`` names it). A configuration for
  the factory (``backend="file"``: ``DatabaseFactory``, the registries, ``dkv``, TOML) must give
  ``path``: there a missing path is a mistake that would lose the records on close.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

import pluggy

from ..core import StoreCore
from ..database import Call, Steps
from ..factory import merged_config
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


class _InstanceLock:
    """A store's instance lock: its core's, which every operation holds while it works on the
    table. ``with db._lock:`` holds it in the calling thread. ``async with db._lock:`` holds it
    for a task, from a helper thread (a thread's lock cannot be owned by a task); waiting for it
    does not block the event loop."""

    def __init__(self, lock: Any) -> None:
        self._lock = lock
        self._held: list[tuple[threading.Thread, threading.Event]] = []

    def __enter__(self) -> _InstanceLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    async def __aenter__(self) -> _InstanceLock:
        acquired, release = threading.Event(), threading.Event()

        def hold() -> None:
            with self._lock:
                acquired.set()
                release.wait()

        holder = threading.Thread(target=hold, name="dkv-instance-lock", daemon=True)
        holder.start()
        try:
            await asyncio.to_thread(acquired.wait)
        except BaseException:
            release.set()  # cancelled while waiting: let go as soon as it is held
            raise
        self._held.append((holder, release))
        return self

    async def __aexit__(self, *exc: object) -> None:
        holder, release = self._held.pop()
        release.set()
        await asyncio.to_thread(holder.join)


class _FileStorage:
    backend_name = "file"
    persistent: ClassVar[bool | None] = True
    #: The prefix of a store's temporary directory when it has no ``path`` (dataknobs-data's
    #: names for its temporary stores).
    _temp_prefix: ClassVar[str] = "dataknobs_sync_db_"
    config: Mapping[str, Any]
    _core: StoreCore

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        plugin_manager: pluggy.PluginManager | None = None,
        **kwargs: Any,
    ) -> None:
        merged = merged_config(config, kwargs)
        # the class called without a path (no backend named: not a factory's configuration)
        scratch = merged.get("path") is None and "backend" not in merged
        temp = tempfile.mkdtemp(prefix=self._temp_prefix) if scratch else None
        if temp is not None:
            merged["path"] = temp
        #: Whether the store lives in a temporary directory of its own (the class was called
        #: without a path), removed by :meth:`close` (dataknobs-data's name).
        self._is_temp_file = temp is not None
        self._temp_removed = False
        try:
            super().__init__(merged, plugin_manager=plugin_manager)  # type: ignore[call-arg]
        except BaseException:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
            raise

    @property
    def filepath(self) -> str:
        """The store's directory (dataknobs-data's name): ``path``, or its temporary directory."""
        return str(self.config["path"])

    @property
    def _lock(self) -> _InstanceLock:
        """The lock every operation of this store holds while it works on the table (``with`` in
        a thread, ``async with`` on an event loop); :meth:`close` waits for it before it removes a
        temporary directory."""
        return _InstanceLock(self._core.lock)

    def _after_close(self) -> Steps[None]:
        yield from super()._after_close()  # type: ignore[misc]
        if self._is_temp_file:
            yield Call(self._remove_temp, connects=False)

    def _remove_temp(self) -> None:
        """Remove the temporary directory once no operation is at work on it."""
        with self._core.lock:
            if not self._temp_removed:
                shutil.rmtree(self.filepath, ignore_errors=True)
                self._temp_removed = True

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

    _temp_prefix: ClassVar[str] = "dataknobs_async_db_"


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
