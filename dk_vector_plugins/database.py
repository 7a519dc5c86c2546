"""The public store classes: one sync and one async facade over a :class:`~dk_vector_plugins.core.StoreCore`.

Backends subclass :class:`SyncDatabase` / :class:`AsyncDatabase` and supply the core (memory: a
table and no storage; file and S3: a table and their storage). Method names and signatures follow
dataknobs-data 0.11. ``vector_search`` and ``bulk_embed_and_store`` are thin: they build and
validate a request, call the plugin hook, and return what the first implementation answers.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar

import numpy.typing as npt

from .core import StoreCore
from .embed import BulkEmbedReport, BulkEmbedRequest, FunctionEmbedder
from .engine import as_vector_batch_with_norms
from .errors import InvalidRequestError, PluginError, RecordNotFoundError
from .query import Expr, Query, compile_filter
from .records import Record, VectorField, VectorSearchResult
from .search import SearchRequest, build_search_request

__all__ = ["AsyncDatabase", "SyncDatabase"]

# Async searches over more than this many floats run in a worker thread (BLAS releases the GIL).
_THREAD_THRESHOLD = 2_000_000


class _Base:
    """What the sync and async facades share: config, plugins, request building."""

    #: The backend name this class serves (``"memory"``, ``"file"``, ``"s3"``).
    backend_name: ClassVar[str] = ""

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        plugin_manager: Any = None,
        **kwargs: Any,
    ) -> None:
        from .factory import resolve_config
        from .host import ensure_hookspecs, make_plugin_manager

        pm = ensure_hookspecs(plugin_manager) if plugin_manager is not None else make_plugin_manager()
        merged = {**dict(config or {}), **kwargs}
        merged.setdefault("backend", self.backend_name)
        self.plugin_manager = pm
        self.config: Mapping[str, Any] = MappingProxyType(resolve_config(pm, merged))
        self._core = self._make_core()
        self._closed = False
        self._close_callbacks: list[Callable[[], Any]] = []

    def _make_core(self) -> StoreCore:
        raise NotImplementedError  # pragma: no cover - each backend supplies its core

    def on_close(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` when the store is closed (plugins release what they opened for it)."""
        self._close_callbacks.append(callback)

    def _run_close_callbacks(self) -> None:
        errors = []
        while self._close_callbacks:
            try:
                self._close_callbacks.pop()()
            except Exception as e:  # every callback runs; the first error is raised after
                errors.append(e)
        if errors:
            raise errors[0]

    # -- helpers --------------------------------------------------------------------------------
    @property
    def core(self) -> StoreCore:
        """The store core (for plugins that answer hooks for this store)."""
        return self._core

    def vector_dimension(self, vector_field: str = "embedding") -> int | None:
        """The dimension of a vector field: configured, or fixed by the first stored vector."""
        return self._core.table.vector_dimension(vector_field) or self.config.get("vector_dimensions")

    def _request(
        self,
        query_vector: Any,
        vector_field: str,
        k: Any,
        filter: Any,
        metric: Any,
        batch: bool | None,
        options: dict[str, Any],
    ) -> SearchRequest:
        return build_search_request(
            query_vector,
            vector_field=vector_field,
            k=k,
            filter=filter,
            metric=metric,
            default_metric=self.config["vector_metric"],
            dimension=self.vector_dimension(vector_field),
            vector_enabled=self.config["vector_enabled"],
            batch=batch,
            options=options,
        )

    def _embed_request(
        self,
        records: Iterable[Any],
        text_field: str | Sequence[str],
        vector_field: str,
        embedding_fn: Any,
        batch_size: int,
        model_name: str | None,
        model_version: str | None,
        field_separator: str,
        progress: bool | None,
    ) -> BulkEmbedRequest:
        return BulkEmbedRequest(
            records=list(records),
            text_field=text_field,
            vector_field=vector_field,
            embedder=self._embedder(embedding_fn, vector_field, model_name),
            batch_size=batch_size,
            model_name=model_name,
            model_version=model_version,
            field_separator=field_separator,
            progress=progress,
        )

    def _embedder(self, embedding_fn: Any, vector_field: str, model_name: str | None) -> Any:
        from .factory import make_embedder

        if embedding_fn is None or isinstance(embedding_fn, str):
            name = embedding_fn or self.config["embedder"]
            options = dict(self.config.get("embedder_options") or {})
            return make_embedder(self.plugin_manager, name, self.vector_dimension(vector_field), options)
        if hasattr(embedding_fn, "embed"):
            return embedding_fn
        if callable(embedding_fn):
            return FunctionEmbedder(embedding_fn, model_name)
        raise InvalidRequestError(
            f"embedding_fn must be a callable, an object with embed(), or an embedder name; got {embedding_fn!r}"
        )

    def _vector_args(
        self,
        vectors: Any,
        ids: Sequence[str] | None,
        metadata: Sequence[Mapping[str, Any]] | None,
        vector_field: str,
    ) -> tuple[Any, ...]:
        """Validate ``add_vectors``' arguments for :meth:`StoreCore.put_vectors`."""
        # stores that keep the vectors they write (memory maps of their files) need no copy
        keeps_written = getattr(getattr(self, "core", None), "storage", None)
        copy = not getattr(keeps_written, "adopt_written", False)
        mat, norms = as_vector_batch_with_norms(
            vectors, self.vector_dimension(vector_field), what="vectors", copy=copy
        )
        n = mat.shape[0]
        if ids is not None and len(ids) != n:
            raise InvalidRequestError(f"got {n} vectors but {len(ids)} ids")
        if metadata is not None and len(metadata) != n:
            raise InvalidRequestError(f"got {n} vectors but {len(metadata)} metadata entries")
        if ids is not None and not (set(map(type, ids)) <= {str} and "" not in ids):
            for i, rid in enumerate(ids):  # the slow path only to name the bad id
                if not isinstance(rid, (str, int)) or isinstance(rid, bool) or rid == "":
                    raise InvalidRequestError(f"ids[{i}] must be a non-empty string, got {rid!r}")

        def merge(positions: list[int], table: Any) -> list[Record]:
            # an existing record keeps its other fields; metadata fields and the vector replace theirs
            out = []
            for i in positions:
                rec = table.get(str(ids[i]))  # type: ignore[index]
                for key, value in (metadata[i] if metadata is not None else {}).items():
                    rec[key] = value
                rec[vector_field] = VectorField(mat[i], name=vector_field)
                out.append(rec)
            return out

        return ids, mat, metadata, vector_field, merge, norms

    @staticmethod
    def _query_parts(query: Any) -> tuple[Query | None, Expr | None]:
        if query is None or isinstance(query, Query):
            return query, None
        return None, compile_filter(query)

    @staticmethod
    def _single(results: list[list[VectorSearchResult]], request: SearchRequest) -> Any:
        return results if request.batch else results[0]

    def _no_plugin(self, hook: str) -> PluginError:
        return PluginError(
            f"no plugin answered {hook} for backend {self.backend_name!r}: its plugin may be blocked"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self.config)!r})"


class SyncDatabase(_Base):
    """The synchronous store API (thread-safe)."""

    # -- CRUD -----------------------------------------------------------------------------------
    def create(self, record: Record) -> str:
        """Store a new record; returns its id (a fresh UUID when it has none).

        Raises :class:`DuplicateRecordError` when the id exists.
        """
        return str(self._core.put([record], "create")[0])

    def create_batch(self, records: Iterable[Record]) -> list[str]:
        """Store new records in one write, all or nothing; returns their ids."""
        return [str(x) for x in self._core.put(list(records), "create")]

    def read(self, id: str) -> Record | None:
        """A copy of the record, or ``None``."""
        return self._core.read([id])[0]

    def read_batch(self, ids: Iterable[str]) -> list[Record | None]:
        """Copies of the records, ``None`` for missing ids."""
        return self._core.read(list(ids))

    def get(self, id: str) -> Record:
        """The record, or :class:`RecordNotFoundError`."""
        rec = self.read(id)
        if rec is None:
            raise RecordNotFoundError(f"no record with id {id!r}")
        return rec

    def update(self, id: str, record: Record) -> bool:
        """Replace the record ``id``; ``False`` (and nothing stored) when it does not exist."""
        rec = record.copy(deep=False)
        rec.id = id
        return bool(self._core.put([rec], "update")[0])

    def update_batch(self, records: Iterable[Record]) -> list[bool]:
        """Replace existing records (by their ids) in one write; one bool per record."""
        return [bool(x) for x in self._core.put(list(records), "update")]

    def upsert(self, id_or_record: str | Record, record: Record | None = None) -> str:
        """Create or replace: ``upsert(record)`` or ``upsert(id, record)``; returns the id."""
        if isinstance(id_or_record, Record):
            rec = id_or_record
        else:
            if record is None:
                raise InvalidRequestError("upsert(id, record) needs a record")
            rec = record.copy(deep=False)
            rec.id = id_or_record
        return str(self._core.put([rec], "upsert")[0])

    def upsert_batch(self, records: Iterable[Record]) -> list[str]:
        """Create or replace records in one write; returns their ids."""
        return [str(x) for x in self._core.put(list(records), "upsert")]

    def delete(self, id: str) -> bool:
        """Delete a record; ``False`` when it did not exist."""
        return self._core.delete([id])[0]

    def delete_batch(self, ids: Iterable[str]) -> list[bool]:
        """Delete records in one write; one bool per id."""
        return self._core.delete(list(ids))

    def exists(self, id: str) -> bool:
        """Whether a record with this id is stored."""
        return self._core.exists(id)

    def count(self, query: Any = None) -> int:
        """How many records match ``query`` (a Query, dict or Filter; all when ``None``)."""
        q, expr = self._query_parts(query)
        return self._core.count(q.expression() if q is not None else expr)

    def search(self, query: Any = None) -> list[Record]:
        """Records matching ``query`` (a Query with sort/limit/offset/select, or a filter dict)."""
        q, expr = self._query_parts(query)
        return self._core.search(q, expr)

    def all(self) -> list[Record]:
        """Every record."""
        return self.search(None)

    def clear(self) -> int:
        """Delete every record; returns how many there were."""
        return self._core.clear()

    # -- vectors --------------------------------------------------------------------------------
    def add_vectors(
        self,
        vectors: Any,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        vector_field: str = "embedding",
    ) -> list[str]:
        """Upsert records made of a vector and optional metadata fields; returns their ids.

        An existing record keeps its other fields; ``metadata`` fields are merged into it.
        """
        args = self._vector_args(vectors, ids, metadata, vector_field)
        return self._core.put_vectors(*args)

    def vector_search(
        self,
        query_vector: npt.ArrayLike | VectorField,
        vector_field: str = "embedding",
        k: int = 10,
        filter: Any = None,
        metric: str | None = None,
        **options: Any,
    ) -> Any:
        """Exact top-``k`` records nearest to ``query_vector``, best first.

        :param query_vector: a 1-D vector; a 2-D array searches each row (see
            :meth:`vector_search_batch`) and returns one list per row.
        :param vector_field: the field to search.
        :param k: results wanted (> 0); fewer come back when fewer records match.
        :param filter: a Query, Filter, dict shorthand or list of these, applied before top-k.
        :param metric: override the store's ``vector_metric``.
        :param options: ``score_threshold`` (drop weaker hits); ``include_source`` is accepted.
        :returns: list of :class:`VectorSearchResult`.
        """
        request = self._request(query_vector, vector_field, k, filter, metric, None, options)
        return self._single(self._dispatch(request), request)

    def vector_search_batch(
        self,
        query_vectors: Any,
        vector_field: str = "embedding",
        k: int = 10,
        filter: Any = None,
        metric: str | None = None,
        **options: Any,
    ) -> list[list[VectorSearchResult]]:
        """One search per query vector, answered with a single matrix product."""
        request = self._request(query_vectors, vector_field, k, filter, metric, True, options)
        return self._dispatch(request)

    def _dispatch(self, request: SearchRequest) -> list[list[VectorSearchResult]]:
        result = self.plugin_manager.hook.dkv_vector_search(db=self, request=request)
        if result is None:
            raise self._no_plugin("dkv_vector_search")
        return _as_batch(result, request)

    def bulk_embed_and_store(
        self,
        records: Iterable[Record | Mapping[str, Any]],
        text_field: str | Sequence[str],
        vector_field: str = "embedding",
        embedding_fn: Callable[[list[str]], Any] | str | None = None,
        batch_size: int = 100,
        model_name: str | None = None,
        model_version: str | None = None,
        field_separator: str = " ",
        progress: bool | None = None,
    ) -> list[str]:
        """Embed the text of each record and store it with its vector; returns the ids.

        Batches of ``batch_size`` are embedded and written one write each; records whose stored
        copy already holds ``vector_field`` for the same text are skipped, so a re-run resumes.
        ``embedding_fn`` is a callable ``texts -> array``, an embedder object, or the name of a
        registered embedder (default: the store's ``embedder`` config, ``"hashing"``). A progress
        bar shows when stderr is a terminal (``progress=False`` hides it).
        """
        return self.bulk_embed(
            records,
            text_field,
            vector_field,
            embedding_fn,
            batch_size,
            model_name,
            model_version,
            field_separator,
            progress,
        ).ids

    def bulk_embed(self, *args: Any, **kwargs: Any) -> BulkEmbedReport:
        """Like :meth:`bulk_embed_and_store`, returning the full :class:`BulkEmbedReport`."""
        request = self._embed_request(*_embed_args(args, kwargs))
        report = self.plugin_manager.hook.dkv_bulk_embed(db=self, request=request)
        if report is None:
            raise self._no_plugin("dkv_bulk_embed")
        return report  # type: ignore[no-any-return]

    # -- lifecycle ------------------------------------------------------------------------------
    def compact(self) -> None:
        """Reclaim space held by deleted and replaced records."""
        self._core.compact()

    def refresh(self) -> None:
        """See other writers' commits now (reads do this on their own)."""
        self._core.refresh()

    def connect(self) -> None:
        """Accepted for dataknobs-data compatibility; stores are ready when created."""

    def close(self) -> None:
        """Release the store's resources (and whatever plugins registered with :meth:`on_close`)."""
        if not self._closed:
            self._closed = True
            try:
                self._run_close_callbacks()
            finally:
                self._core.storage.close()

    disconnect = close

    def __enter__(self) -> SyncDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncDatabase(_Base):
    """The asyncio store API: the same operations as :class:`SyncDatabase`, awaitable.

    The core is shared with the sync API; work that could hold the event loop (large searches,
    embedding) runs in a worker thread.
    """

    #: Whether every core call may do I/O (file, S3): then it always runs in a worker thread.
    _io_bound: ClassVar[bool] = False

    async def _run(self, fn: Callable[..., Any], *args: Any, heavy: bool = False) -> Any:
        if heavy or self._io_bound:
            return await asyncio.to_thread(fn, *args)
        return fn(*args)

    async def create(self, record: Record) -> str:
        """See :meth:`SyncDatabase.create`."""
        return str((await self._run(self._core.put, [record], "create"))[0])

    async def create_batch(self, records: Iterable[Record]) -> list[str]:
        """See :meth:`SyncDatabase.create_batch`."""
        return [str(x) for x in await self._run(self._core.put, list(records), "create", heavy=True)]

    async def read(self, id: str) -> Record | None:
        """See :meth:`SyncDatabase.read`."""
        return (await self._run(self._core.read, [id]))[0]  # type: ignore[no-any-return]

    async def read_batch(self, ids: Iterable[str]) -> list[Record | None]:
        """See :meth:`SyncDatabase.read_batch`."""
        return await self._run(self._core.read, list(ids))  # type: ignore[no-any-return]

    async def get(self, id: str) -> Record:
        """See :meth:`SyncDatabase.get`."""
        rec = await self.read(id)
        if rec is None:
            raise RecordNotFoundError(f"no record with id {id!r}")
        return rec

    async def update(self, id: str, record: Record) -> bool:
        """See :meth:`SyncDatabase.update`."""
        rec = record.copy(deep=False)
        rec.id = id
        return bool((await self._run(self._core.put, [rec], "update"))[0])

    async def update_batch(self, records: Iterable[Record]) -> list[bool]:
        """See :meth:`SyncDatabase.update_batch`."""
        return [bool(x) for x in await self._run(self._core.put, list(records), "update", heavy=True)]

    async def upsert(self, id_or_record: str | Record, record: Record | None = None) -> str:
        """See :meth:`SyncDatabase.upsert`."""
        if isinstance(id_or_record, Record):
            rec = id_or_record
        else:
            if record is None:
                raise InvalidRequestError("upsert(id, record) needs a record")
            rec = record.copy(deep=False)
            rec.id = id_or_record
        return str((await self._run(self._core.put, [rec], "upsert"))[0])

    async def upsert_batch(self, records: Iterable[Record]) -> list[str]:
        """See :meth:`SyncDatabase.upsert_batch`."""
        return [str(x) for x in await self._run(self._core.put, list(records), "upsert", heavy=True)]

    async def delete(self, id: str) -> bool:
        """See :meth:`SyncDatabase.delete`."""
        return (await self._run(self._core.delete, [id]))[0]  # type: ignore[no-any-return]

    async def delete_batch(self, ids: Iterable[str]) -> list[bool]:
        """See :meth:`SyncDatabase.delete_batch`."""
        return await self._run(self._core.delete, list(ids))  # type: ignore[no-any-return]

    async def exists(self, id: str) -> bool:
        """See :meth:`SyncDatabase.exists`."""
        return await self._run(self._core.exists, id)  # type: ignore[no-any-return]

    async def count(self, query: Any = None) -> int:
        """See :meth:`SyncDatabase.count`."""
        q, expr = self._query_parts(query)
        return await self._run(self._core.count, q.expression() if q is not None else expr)  # type: ignore[no-any-return]

    async def search(self, query: Any = None) -> list[Record]:
        """See :meth:`SyncDatabase.search`."""
        q, expr = self._query_parts(query)
        return await self._run(self._core.search, q, expr, heavy=True)  # type: ignore[no-any-return]

    async def all(self) -> list[Record]:
        """See :meth:`SyncDatabase.all`."""
        return await self.search(None)

    async def clear(self) -> int:
        """See :meth:`SyncDatabase.clear`."""
        return await self._run(self._core.clear)  # type: ignore[no-any-return]

    async def add_vectors(
        self,
        vectors: Any,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        vector_field: str = "embedding",
    ) -> list[str]:
        """See :meth:`SyncDatabase.add_vectors`."""
        args = self._vector_args(vectors, ids, metadata, vector_field)
        return await self._run(self._core.put_vectors, *args, heavy=True)  # type: ignore[no-any-return]

    async def vector_search(
        self,
        query_vector: npt.ArrayLike | VectorField,
        vector_field: str = "embedding",
        k: int = 10,
        filter: Any = None,
        metric: str | None = None,
        **options: Any,
    ) -> Any:
        """See :meth:`SyncDatabase.vector_search`."""
        request = self._request(query_vector, vector_field, k, filter, metric, None, options)
        return self._single(await self._dispatch(request), request)

    async def vector_search_batch(
        self,
        query_vectors: Any,
        vector_field: str = "embedding",
        k: int = 10,
        filter: Any = None,
        metric: str | None = None,
        **options: Any,
    ) -> list[list[VectorSearchResult]]:
        """See :meth:`SyncDatabase.vector_search_batch`."""
        request = self._request(query_vectors, vector_field, k, filter, metric, True, options)
        return await self._dispatch(request)

    async def _dispatch(self, request: SearchRequest) -> list[list[VectorSearchResult]]:
        awaitable = self.plugin_manager.hook.dkv_vector_search_async(db=self, request=request)
        if awaitable is None:
            raise self._no_plugin("dkv_vector_search_async")
        result = await awaitable if inspect.isawaitable(awaitable) else awaitable
        return _as_batch(result, request)

    async def default_vector_search(self, request: SearchRequest) -> list[list[VectorSearchResult]]:
        """The built-in exact search (what the built-in hook implementations await)."""
        table = self._core.table
        heavy = table.nrows * (table.vector_dimension(request.vector_field) or 0) * len(request.queries)
        return await self._run(self._core.vector_search, request, heavy=heavy > _THREAD_THRESHOLD)  # type: ignore[no-any-return]

    async def bulk_embed_and_store(
        self,
        records: Iterable[Record | Mapping[str, Any]],
        text_field: str | Sequence[str],
        vector_field: str = "embedding",
        embedding_fn: Callable[[list[str]], Any] | str | None = None,
        batch_size: int = 100,
        model_name: str | None = None,
        model_version: str | None = None,
        field_separator: str = " ",
        progress: bool | None = None,
    ) -> list[str]:
        """See :meth:`SyncDatabase.bulk_embed_and_store` (``embedding_fn`` may be async)."""
        report = await self.bulk_embed(
            records,
            text_field,
            vector_field,
            embedding_fn,
            batch_size,
            model_name,
            model_version,
            field_separator,
            progress,
        )
        return report.ids

    async def bulk_embed(self, *args: Any, **kwargs: Any) -> BulkEmbedReport:
        """See :meth:`SyncDatabase.bulk_embed`."""
        request = self._embed_request(*_embed_args(args, kwargs))
        awaitable = self.plugin_manager.hook.dkv_bulk_embed_async(db=self, request=request)
        if awaitable is None:
            raise self._no_plugin("dkv_bulk_embed_async")
        return await awaitable  # type: ignore[no-any-return]

    async def compact(self) -> None:
        """See :meth:`SyncDatabase.compact`."""
        await self._run(self._core.compact, heavy=True)

    async def refresh(self) -> None:
        """See :meth:`SyncDatabase.refresh`."""
        await self._run(self._core.refresh)

    async def connect(self) -> None:
        """Accepted for dataknobs-data compatibility."""

    async def close(self) -> None:
        """See :meth:`SyncDatabase.close`."""
        if not self._closed:
            self._closed = True
            try:
                await asyncio.to_thread(self._run_close_callbacks)
            finally:
                self._core.storage.close()

    disconnect = close

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_EMBED_PARAMS = (
    "records",
    "text_field",
    "vector_field",
    "embedding_fn",
    "batch_size",
    "model_name",
    "model_version",
    "field_separator",
    "progress",
)
_EMBED_DEFAULTS: dict[str, Any] = {
    "vector_field": "embedding",
    "embedding_fn": None,
    "batch_size": 100,
    "model_name": None,
    "model_version": None,
    "field_separator": " ",
    "progress": None,
}


def _embed_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    unknown = set(kwargs) - set(_EMBED_PARAMS)
    if unknown:
        raise TypeError(f"bulk_embed got unexpected argument(s): {', '.join(sorted(unknown))}")
    values = dict(zip(_EMBED_PARAMS, args))
    for key, value in kwargs.items():
        if key in values:
            raise TypeError(f"bulk_embed got multiple values for {key!r}")
        values[key] = value
    for key in ("records", "text_field"):
        if key not in values:
            raise TypeError(f"bulk_embed missing required argument {key!r}")
    return [values.get(p, _EMBED_DEFAULTS.get(p)) for p in _EMBED_PARAMS]


def _as_batch(result: Any, request: SearchRequest) -> list[list[VectorSearchResult]]:
    """Accept a plugin's answer as a list (single query) or a list of lists (batch)."""
    result = list(result)
    if request.batch or (result and isinstance(result[0], list)):
        return [list(r) for r in result]
    return [result]


def default_search(db: SyncDatabase, request: SearchRequest) -> Any:
    """The built-in exact search of a core-backed sync store, shaped as the hook spec says."""
    results = db.core.vector_search(request)
    return results if request.batch else results[0]


async def default_search_async(db: AsyncDatabase, request: SearchRequest) -> Any:
    """The async twin of :func:`default_search`."""
    results = await db.default_vector_search(request)
    return results if request.batch else results[0]


__all__ += ["default_search", "default_search_async"]
