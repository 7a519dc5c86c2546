"""What the file and S3 stores share: a store core over a :class:`~dk_vector_plugins.storage.driver.TableStorage`.

Both backends keep the same log-structured table (see :mod:`dk_vector_plugins.storage.log_format`);
they differ only in the object store underneath.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from ..core import StoreCore
from ..database import AsyncDatabase, Call, Steps, SyncDatabase, operation
from ..errors import ConfigError
from ..memtable import RecordTable
from ..storage.driver import TableStorage
from ..storage.log_format import TableOptions
from ..types import OptionSpec

__all__ = ["TABLE_OPTIONS", "AsyncTableDatabase", "TableDatabase", "local_path", "table_options"]

T = TypeVar("T")


def local_path(key: str) -> Callable[[Any], str]:
    """A converter for a config key naming a local directory: a non-empty path without NUL."""

    def convert(value: Any) -> str:
        path: str | bytes = os.fspath(value)
        if isinstance(path, bytes):
            raise ConfigError(f"config key {key!r} must be a text path, got bytes {path!r}")
        if not path or "\0" in path:
            raise ConfigError(
                f"config key {key!r} must name a directory (non-empty, without NUL characters), got {path!r}"
            )
        return path

    return convert


def TABLE_OPTIONS(backend: str) -> tuple[OptionSpec, ...]:
    """The table-format keys of a backend."""
    b = (backend,)
    return (
        OptionSpec(
            "max_segments",
            (int,),
            32,
            "compact automatically above this many segments",
            backends=b,
            minimum=0,
        ),
        OptionSpec(
            "keep_versions",
            (int,),
            10,
            "clean-up keeps what the newest N manifests name",
            backends=b,
            minimum=0,
        ),
        OptionSpec(
            "grace_s",
            (int, float),
            3600.0,
            "clean-up never deletes objects younger than this",
            backends=b,
            minimum=0,
        ),
        OptionSpec(
            "load_vectors",
            (bool,),
            None,
            "read vectors on open (True), or when first needed (False: for stores whose searches "
            "run elsewhere); default True, unless a plugin's option implies otherwise "
            "(executor='dask' implies False)",
            backends=b,
        ),
        OptionSpec(
            "merge_fan",
            (int,),
            8,
            "merge the newest segments into one once this many of them are small (size-tiered, "
            "bounded work per commit; 0: never, only the max_segments compaction)",
            backends=b,
            minimum=0,
        ),
        OptionSpec(
            "inline_bytes",
            (int,),
            64 * 1024,
            "a commit whose segment objects total at most this many bytes keeps them inside its "
            "manifest: one durable write per small commit (0: every segment on its own objects)",
            backends=b,
            minimum=0,
        ),
        OptionSpec(
            "commit_retries",
            (int,),
            20,
            "lost commit races before a delete or clear gives up with ConflictError (writes that only "
            "append are planned again on the winner's version instead)",
            backends=b,
            minimum=0,
        ),
    )


def table_options(config: Mapping[str, Any], lazy_rows: bool) -> TableOptions:
    """TableOptions from a validated config."""
    load = config.get("load_vectors")
    return TableOptions(
        max_segments=int(config["max_segments"]),
        keep_versions=max(1, int(config["keep_versions"])),
        grace_s=float(config["grace_s"]),
        lazy_rows=lazy_rows,
        load_vectors=True if load is None else bool(load),
        inline_max_bytes=int(config["inline_bytes"]),
        merge_fan=int(config["merge_fan"]),
    )


class _TableMixin:
    def _make_storage(self) -> TableStorage:
        raise NotImplementedError  # pragma: no cover - each backend supplies its storage

    def _make_core(self: Any) -> StoreCore:
        storage = self._make_storage()
        storage.logic.schema = self._schema  # adopted from the table's manifests, written into new ones
        core = StoreCore(
            RecordTable(self.config.get("vector_dimensions")), storage, max_retries=int(self.config["commit_retries"])
        )
        if not self._is_async:
            core.refresh()  # sync stores load at once (errors surface here); async ones on first call
        return core

    @property
    def storage(self: Any) -> TableStorage:
        """The table storage (manifest state, statistics)."""
        return self._core.storage  # type: ignore[no-any-return]

    @property
    def version(self) -> int:
        """The committed table version this store has loaded."""
        return self.storage.state.version

    @operation
    def verify(self: Any) -> Steps[dict[str, Any]]:
        """Integrity check of the newest committed version; raises :class:`StorageError` if broken."""
        return (yield Call(self._locked, (self.storage.verify,)))  # type: ignore[no-any-return]

    @operation
    def vacuum(self: Any, grace_s: float | None = None) -> Steps[int]:
        """Delete objects that no recent version names (older than ``grace_s``); returns how many."""
        return (yield Call(self._locked, (self.storage.gc, grace_s)))  # type: ignore[no-any-return]

    def _locked(self: Any, fn: Callable[..., T], *args: Any) -> T:
        with self._core.lock:
            return fn(*args)


class TableDatabase(_TableMixin, SyncDatabase):
    """A sync store over a log-structured table."""


class AsyncTableDatabase(_TableMixin, AsyncDatabase):
    """An async store over a log-structured table; all table work runs off the event loop."""

    _io_bound: ClassVar[bool] = True
