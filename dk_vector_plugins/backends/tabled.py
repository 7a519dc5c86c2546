"""What the file and S3 stores share: a store core over a :class:`~dk_vector_plugins.storage.driver.TableStorage`.

Both backends keep the same log-structured table (see :mod:`dk_vector_plugins.storage.table`);
they differ only in the object store underneath.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..core import StoreCore
from ..database import AsyncDatabase, SyncDatabase
from ..factory import OptionSpec
from ..storage.driver import TableStorage
from ..storage.table import TableOptions
from ..table import RecordTable

__all__ = ["TABLE_OPTIONS", "AsyncTableDatabase", "TableDatabase", "table_options"]


def _nonneg(name: str) -> Any:
    def convert(v: Any) -> Any:
        if v < 0:
            from ..errors import ConfigError

            raise ConfigError(f"config key {name!r} must be >= 0, got {v}")
        return v

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
            convert=_nonneg("max_segments"),
        ),
        OptionSpec(
            "keep_versions",
            (int,),
            10,
            "clean-up keeps what the newest N manifests name",
            backends=b,
            convert=_nonneg("keep_versions"),
        ),
        OptionSpec(
            "grace_s",
            (int, float),
            3600.0,
            "clean-up never deletes objects younger than this",
            backends=b,
            convert=_nonneg("grace_s"),
        ),
        OptionSpec(
            "load_vectors",
            (bool,),
            None,
            "read vectors on open (True), or when first needed (False: for stores whose searches "
            "run elsewhere); default: False with executor='dask', else True",
            backends=b,
        ),
        OptionSpec(
            "commit_retries",
            (int,),
            20,
            "commit attempts before ConflictError",
            backends=b,
            convert=_nonneg("commit_retries"),
        ),
    )


def table_options(config: Any, lazy_rows: bool) -> TableOptions:
    """TableOptions from a validated config."""
    load = config.get("load_vectors")
    if load is None:  # searches that run on other processes need no vectors here
        load = config.get("executor") in (None, "local")
    return TableOptions(
        max_segments=int(config["max_segments"]),
        keep_versions=max(1, int(config["keep_versions"])),
        grace_s=float(config["grace_s"]),
        lazy_rows=lazy_rows,
        load_vectors=bool(load),
    )


class _TableMixin:
    config: Any
    _core: StoreCore

    def _make_storage(self) -> TableStorage:
        raise NotImplementedError  # pragma: no cover - each backend supplies its storage

    def _make_core(self) -> StoreCore:
        storage = self._make_storage()
        core = StoreCore(
            RecordTable(self.config.get("vector_dimensions")),
            storage,
            max_retries=int(self.config["commit_retries"]),
            auto_compact=False,
        )
        if not getattr(self, "_io_bound", False):
            core.refresh()  # sync stores load at once (errors surface here); async ones on first call
        return core

    @property
    def storage(self) -> TableStorage:
        """The table storage (manifest state, statistics)."""
        return self._core.storage  # type: ignore[return-value]

    @property
    def version(self) -> int:
        """The committed table version this store has loaded."""
        return self.storage.state.version


class TableDatabase(_TableMixin, SyncDatabase):
    """A sync store over a log-structured table."""

    def verify(self) -> dict[str, Any]:
        """Integrity check of the newest committed version; raises :class:`StorageError` if broken."""
        with self._core.lock:
            return self.storage.verify()

    def vacuum(self, grace_s: float | None = None) -> int:
        """Delete objects that no recent version names (older than ``grace_s``); returns how many."""
        with self._core.lock:
            return self.storage.gc(grace_s)


class AsyncTableDatabase(_TableMixin, AsyncDatabase):
    """An async store over a log-structured table; all table work runs off the event loop."""

    _io_bound: ClassVar[bool] = True

    async def verify(self) -> dict[str, Any]:
        """See :meth:`TableDatabase.verify`."""
        return await self._run(self.storage.verify)  # type: ignore[no-any-return]

    async def vacuum(self, grace_s: float | None = None) -> int:
        """See :meth:`TableDatabase.vacuum`."""
        return await self._run(self.storage.gc, grace_s)  # type: ignore[no-any-return]
