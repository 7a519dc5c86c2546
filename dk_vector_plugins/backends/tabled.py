"""What the file and S3 stores share: a store core over a :class:`~dk_vector_plugins.storage.driver.TableStorage`.

Both backends keep the same log-structured table (see :mod:`dk_vector_plugins.storage.log_format`);
they differ only in the object store underneath.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from ..core import StoreCore
from ..database import Apply, AsyncDatabase, Call, Steps, SyncDatabase, _Base, operation
from ..errors import ConfigError, InvalidRequestError
from ..memtable import RecordTable
from ..storage.driver import TableStorage
from ..storage.log_format import LOAD_VECTORS, TableOptions
from ..types import OptionSpec

__all__ = ["TABLE_OPTIONS", "AsyncTableDatabase", "TableDatabase", "local_path", "table_options"]

T = TypeVar("T")

#: How many read-only stores of earlier versions (``as_of=`` searches) a store keeps open.
_AS_OF_KEEP = 4


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
            "retention: clean-up never deletes objects younger than this many seconds (what a "
            "reader of an older version, or another process's commit in flight, may still need; "
            "vacuum(grace_s=0) only while no other process writes)",
            backends=b,
            minimum=0,
            aliases=("keep_for",),
        ),
        OptionSpec(
            "gc_every",
            (int,),
            64,
            "clean up automatically every this many versions, by the retention policy "
            "(keep_versions, grace_s, tags); 0: only vacuum()",
            backends=b,
            minimum=0,
        ),
        OptionSpec(
            "load_vectors",
            (bool, str),
            None,
            "read vectors on open (True), or when first needed (False: for stores whose searches "
            "run elsewhere), or 'codes': read on open the int8 codes of the segments that store "
            "them (a quarter of the vectors' bytes) and, by ranged reads, only the rows a search "
            "re-ranks; default True, unless a plugin's option implies otherwise (executor='dask' "
            "implies False)",
            backends=b,
            choices=LOAD_VECTORS,
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
            "maintenance",
            (str,),
            "background",
            "where merges of small segments and automatic clean-ups run: 'background' (a thread "
            "of the writing store, beside its commits, which take a merged segment along in their "
            "manifest) or 'inline' (in the commit that makes them due)",
            backends=b,
            choices=("background", "inline"),
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
        load_vectors=True if load is None else load,
        inline_max_bytes=int(config["inline_bytes"]),
        merge_fan=int(config["merge_fan"]),
        gc_every=int(config["gc_every"]),
        maintenance=config["maintenance"],
    )


class _TableMixin:
    def _make_storage(self) -> TableStorage:
        raise NotImplementedError  # pragma: no cover - each backend supplies its storage

    def _make_core(self: Any) -> StoreCore:
        storage = self._make_storage()
        storage.logic.schema = self._schema  # adopted from the table's manifests, written into new ones
        storage.state.pinned = getattr(self, "_pinned_version", None)  # a checkout
        core = StoreCore(
            RecordTable(self.config.get("vector_dimensions")), storage, max_retries=int(self.config["commit_retries"])
        )
        storage.attach(core)  # maintenance off the commit path takes the store's lock
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
        """Delete objects that no recent version names (older than ``grace_s``); returns how many.
        A merge under way in the background finishes first (what it replaces can then go too)."""
        yield Call(self.storage.settle)
        return (yield Call(self._locked, (self.storage.gc, grace_s)))  # type: ignore[no-any-return]

    # -- versions -------------------------------------------------------------------------------
    @operation
    def versions(self: Any) -> Steps[list[dict[str, Any]]]:
        """Every committed version still stored, oldest first: ``version``, ``created`` (Unix
        time), ``operation`` (``write``, ``delete``, ``merge``, ``compact``, ``clear``,
        ``schema``, ``restore``), ``rows`` (stored, dead included), ``segments``, ``added`` and
        ``deleted`` (by that commit), ``tags``. Clean-up keeps the last ``keep_versions`` and the
        tagged ones."""
        return (yield Call(self.storage.run, (self.storage.logic.versions(),)))  # type: ignore[no-any-return]

    @operation
    def tags(self: Any) -> Steps[dict[str, int]]:
        """Tag name -> version."""
        return (yield Call(self.storage.run, (self.storage.logic.tags(),)))  # type: ignore[no-any-return]

    @operation
    def tag(self: Any, name: str, version: int | None = None, *, move: bool = False) -> Steps[int]:
        """Name ``version`` (default: the newest): clean-up keeps a tagged version and all it
        names, and :meth:`checkout` and :meth:`restore` take the name. Returns the version.

        A name that already names another version is refused (:class:`InvalidRequestError`)
        unless ``move=True``: the version it named then loses that tag, and with it the
        protection from clean-up. Tagging the version a name already names again is a no-op.
        Names are ``[A-Za-z0-9._-]`` (up to 128, starting alphanumeric), not digits only.
        :meth:`tags` lists them, :meth:`untag` removes one."""
        yield Call(self._core.refresh)
        v = self.version if version is None else version
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise InvalidRequestError(f"version must be a committed version number, got {v!r}")
        yield Call(self.storage.run, (self.storage.logic.tag(name, v, move),))
        return int(v)

    @operation
    def untag(self: Any, name: str) -> Steps[bool]:
        """Remove a tag; ``False`` when there was none."""
        return bool((yield Call(self.storage.run, (self.storage.logic.untag(name),))))

    def _version_of(self: Any, version: int | str) -> Steps[int]:
        if isinstance(version, str):
            tags = yield Call(self.storage.run, (self.storage.logic.tags(),))
            if version not in tags:
                raise InvalidRequestError(f"no tag {version!r}; tags: {', '.join(sorted(tags)) or 'none'}")
            return int(tags[version])
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidRequestError(f"version must be a version number or a tag, got {version!r}")
        if version <= 0:
            raise InvalidRequestError(f"versions start at 1, got {version!r}")
        return version

    @operation
    def checkout(self: Any, version: int | str) -> Steps[Any]:
        """A read-only store of the table as of ``version`` (a number or a tag): search, read,
        count and filter as then. Writes to it raise :class:`StorageError`; a version that does
        not exist (or was cleaned up) is one when the store loads (at once for a sync store, on
        its first call for an async one). Close it when done."""
        v = yield from self._version_of(version)
        return self._pinned_store(v)

    def _pinned_store(self: Any, version: int) -> SyncDatabase | AsyncDatabase:
        """A new read-only store of the table at ``version``, of this store's class (a sync one
        has loaded the version; an async one loads it on its first call)."""
        given = {k: val for k, val in self._config.items() if k in self._config.given}
        cls: Any = type(self)
        old = cls.__new__(cls)
        old._pinned_version = version
        cls.__init__(old, {**given, "backend": self.backend_name}, plugin_manager=self._plugin_manager)
        pinned: SyncDatabase | AsyncDatabase = old
        return pinned

    def _at_version(self: Any, as_of: int | str) -> Steps[SyncDatabase | AsyncDatabase]:
        """The read-only store a search ``as_of`` a version (a number or a tag) runs on; the
        last few are kept open (versions never change) and closed with this store."""
        v = yield from self._version_of(as_of)
        kept: dict[int, SyncDatabase | AsyncDatabase] = self.__dict__.setdefault("_as_of_stores", {})
        users: dict[int, int] = self.__dict__.setdefault("_as_of_users", {})  # by id(store)
        retired: list[SyncDatabase | AsyncDatabase] = self.__dict__.setdefault("_as_of_retired", [])
        old = kept.pop(v, None)
        fresh = old is None
        if old is None:
            old = self._pinned_store(v)
            while len(kept) >= _AS_OF_KEEP:
                gone = kept.pop(next(iter(kept)))
                if users.get(id(gone)):  # a search still runs on it: closed when it is done
                    retired.append(gone)
                else:
                    yield Apply(gone.close)
        kept[v] = old  # the newest last
        users[id(old)] = users.get(id(old), 0) + 1  # (before the load: other tasks may evict meanwhile)
        if fresh:  # loaded now (an async one connects first): a search reads its schema
            try:
                yield Apply(old.count)
            except BaseException:
                yield from self._done_with(old)
                raise
        return old

    def _done_with(self: Any, target: _Base | None) -> Steps[None]:
        """An ``as_of=`` search on ``target`` is over: a store retired from the kept few while
        searches ran on it is closed once the last of them is done."""
        if target is None:
            return
        users: dict[int, int] = self.__dict__.setdefault("_as_of_users", {})
        left = users.get(id(target), 1) - 1
        if left > 0:
            users[id(target)] = left
            return
        users.pop(id(target), None)
        retired: list[SyncDatabase | AsyncDatabase] = self.__dict__.setdefault("_as_of_retired", [])
        done = [r for r in retired if r is target]
        if done:
            retired[:] = [r for r in retired if r is not target]
            yield Apply(done[0].close)

    def _after_close(self: Any) -> Steps[None]:
        kept: dict[int, SyncDatabase | AsyncDatabase] = self.__dict__.get("_as_of_stores") or {}
        retired: list[SyncDatabase | AsyncDatabase] = self.__dict__.get("_as_of_retired") or []
        while kept:
            yield Apply(kept.pop(next(iter(kept))).close)
        while retired:
            yield Apply(retired.pop().close)
        yield from super()._after_close()  # type: ignore[misc]

    @operation
    def restore(self: Any, version: int | str) -> Steps[int]:
        """Make the table what it was at ``version`` (a number or a tag), as a new commit (later
        versions stay, and can be restored in turn). Returns the new version.

        Raises :class:`StorageError` when a clean-up of another store, running at the same time,
        deleted objects the old version's segments are stored in: the table is then as it was
        before the restore (a further commit holds it again)."""
        v = yield from self._version_of(version)
        yield Call(self._core.restore, (v,))
        yield Call(self._core.refresh)  # the table becomes the restored version
        return int(self.version)

    def _locked(self: Any, fn: Callable[..., T], *args: Any) -> T:
        with self._core.lock:
            return fn(*args)


class TableDatabase(_TableMixin, SyncDatabase):
    """A sync store over a log-structured table."""


class AsyncTableDatabase(_TableMixin, AsyncDatabase):
    """An async store over a log-structured table; all table work runs off the event loop."""

    _io_bound: ClassVar[bool] = True
