"""The public store classes: one sync and one async facade, both driven by one table of operations.

Every operation of a store is written once, as a generator method decorated with
:class:`operation`: it validates its arguments in the caller, then ``yield``\\ s the steps that do
the work — a :class:`Call` of the shared :class:`~dk_vector_plugins.core.StoreCore` or a
:class:`Hook` (a plugin hook such as ``dkv_vector_search``) — and returns the result. The sync
facade (:class:`SyncDatabase`) runs the steps in the calling thread; the async facade
(:class:`AsyncDatabase`) awaits them (core work off the event loop when it may block, the
``*_async`` twin of each hook). Adding an operation is one method; the two APIs cannot drift.

Backends subclass :class:`SyncDatabase` / :class:`AsyncDatabase` only to supply their core
(memory: a table and no storage; file and S3: a table and their storage). Method names and
signatures follow dataknobs-data 0.11. ``vector_search`` and ``bulk_embed_and_store`` are thin:
they build and validate a request, call the plugin hook, and return what the first
implementation answers (a search hook answers one list per query; the facade alone unwraps the
single query's list).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar, overload

import attrs
import numpy.typing as npt
import pluggy

from .core import StoreCore
from .embed import FunctionEmbedder
from .errors import InvalidRequestError, PluginError, RecordNotFoundError
from .query import Expr, Query, compile_filter
from .records import Record, VectorField
from .search import build_search_request
from .types import BulkEmbedReport, BulkEmbedRequest, Embedder, SearchRequest, VectorSearchResult
from .vectors import as_vector_batch_with_norms

__all__ = ["AsyncDatabase", "Call", "Hook", "SyncDatabase", "operation"]

P = ParamSpec("P")
R = TypeVar("R")
R2 = TypeVar("R2")


@attrs.frozen
class Call:
    """A step of an operation: run ``fn(*args)`` on the store core.

    ``heavy`` marks CPU work long enough to move off an event loop even for a store that does
    no I/O (a big batch, a large search); ``connects=False`` runs it without first opening the
    store's connection (closing a store that never connected).
    """

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    heavy: bool = False
    connects: bool = True


@attrs.frozen
class Hook:
    """A step of an operation: call the plugin hook ``name`` (its ``_async`` twin on an async
    store) with ``db=`` the store and ``request``; the answer is the first non-``None`` one."""

    name: str
    request: Any


@attrs.frozen
class Close:
    """A step of an operation: release the core's storage (and, on an async store, what it
    opened on the event loop)."""


Step = Call | Hook | Close
#: What an operation's generator is: it yields steps and returns the operation's result.
Steps = Generator[Step, Any, R]


class operation(Generic[P, R]):
    """Declares a store operation once, for both facades.

    ``db.op(...)`` on a :class:`SyncDatabase` runs the steps and returns the result; on an
    :class:`AsyncDatabase` it returns a coroutine. The signature and docstring are the
    generator method's.
    """

    def __init__(self, fn: Callable[Concatenate[Any, P], Steps[R]], doc: str | None = None) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__module__ = fn.__module__
        self.__doc__ = fn.__doc__ if doc is None else doc
        # the signature users see: the generator's, returning what the operation returns
        sig = inspect.signature(fn)
        ret = sig.return_annotation
        if isinstance(ret, str) and ret.startswith("Steps[") and ret.endswith("]"):
            sig = sig.replace(return_annotation=ret[len("Steps[") : -1])
        self.__signature__ = sig

        def run_sync(db: SyncDatabase, /, *args: Any, **kwargs: Any) -> Any:
            return db._drive(fn(db, *args, **kwargs))

        async def run_async(db: AsyncDatabase, /, *args: Any, **kwargs: Any) -> Any:
            return await db._drive(fn(db, *args, **kwargs))

        for runner in (run_sync, run_async):
            functools.update_wrapper(runner, fn)
            runner.__doc__ = self.__doc__
            setattr(runner, "__signature__", sig)  # noqa: B010
        self._sync: Callable[..., Any] = run_sync
        self._async: Callable[..., Any] = run_async

    def then(self, after: Callable[[R], R2], doc: str, returns: str) -> operation[P, R2]:
        """The same operation (same parameters) with ``after`` applied to its result, which is
        of the type named ``returns``."""
        fn = self.fn

        def mapped(db: Any, /, *args: P.args, **kwargs: P.kwargs) -> Steps[R2]:
            return after((yield from fn(db, *args, **kwargs)))

        functools.update_wrapper(mapped, fn)
        mapped.__signature__ = self.__signature__.replace(return_annotation=f"Steps[{returns}]")  # type: ignore[attr-defined]
        return operation(mapped, doc)

    def __call__(self, db: Any, /, *args: Any, **kwargs: Any) -> Any:
        """``SyncDatabase.create(db, record)``: the operation called through the class."""
        return self.__get__(db, type(db))(*args, **kwargs)

    @overload
    def __get__(self, db: None, owner: type | None = None) -> operation[P, R]: ...

    @overload
    def __get__(self, db: SyncDatabase, owner: type | None = None) -> Callable[P, R]: ...

    @overload
    def __get__(
        self, db: AsyncDatabase, owner: type | None = None
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    def __get__(self, db: Any, owner: type | None = None) -> Any:
        if db is None:
            # through a facade class: its plain function (``AsyncDatabase.create`` is a coroutine
            # function, as a method written by hand would be); through the base: the operation
            if owner is not None and owner is not _Base and issubclass(owner, _Base):
                return self._async if owner._is_async else self._sync
            return self
        return types.MethodType(self._async if db._is_async else self._sync, db)


class _Base:
    """What the sync and async facades share: config, plugins, request building, operations."""

    #: The backend name this class serves (``"memory"``, ``"file"``, ``"s3"``).
    backend_name: ClassVar[str] = ""
    #: Whether the operations return coroutines.
    _is_async: ClassVar[bool] = False
    #: Async stores only: whether every core call may do I/O (file, S3), so that it always runs
    #: in a worker thread.
    _io_bound: ClassVar[bool] = False

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        plugin_manager: pluggy.PluginManager | None = None,
        **kwargs: Any,
    ) -> None:
        from .factory import merged_config, resolve_config
        from .host import ensure_hookspecs, make_plugin_manager

        pm = ensure_hookspecs(plugin_manager) if plugin_manager is not None else make_plugin_manager()
        merged = merged_config(config, kwargs)
        merged.setdefault("backend", self.backend_name)
        self._plugin_manager = pm
        self._config: Mapping[str, Any] = resolve_config(pm, merged)
        self._closed = False
        self._close_callbacks: list[Callable[[], Any]] = []
        self._core = self._make_core()
        self._core.io_bound = self._is_async and self._io_bound

    def _make_core(self) -> StoreCore:
        raise NotImplementedError  # pragma: no cover - each backend supplies its core

    @property
    def config(self) -> Mapping[str, Any]:
        """The validated configuration, defaults filled in (read-only)."""
        return self._config

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The plugin manager whose hooks this store calls."""
        return self._plugin_manager

    @property
    def core(self) -> StoreCore:
        """The store core (for plugins that answer hooks for this store)."""
        return self._core

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

    def vector_dimension(self, vector_field: str = "embedding") -> int | None:
        """The dimension of a vector field: configured, or fixed by the first stored vector."""
        dim: int | None = self._core.table.vector_dimension(vector_field)
        return dim or self._config.get("vector_dimensions")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config!r})"  # secrets shown as '***'


    # -- argument handling (in the caller, before any step) ---------------------------------------
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
            default_metric=self._config["vector_metric"],
            dimension=self.vector_dimension(vector_field),
            vector_enabled=self._config["vector_enabled"],
            batch=batch,
            options=options,
        )

    def _embedder(self, embedding_fn: Any, vector_field: str, model_name: str | None) -> Embedder:
        from .factory import make_embedder

        if embedding_fn is None or isinstance(embedding_fn, str):
            name = embedding_fn or self._config["embedder"]
            options = dict(self._config.get("embedder_options") or {})
            return make_embedder(self._plugin_manager, name, self.vector_dimension(vector_field), options)
        if isinstance(embedding_fn, Embedder):
            embedder: Embedder = embedding_fn
            return embedder
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
        mat, norms = as_vector_batch_with_norms(
            vectors,
            self.vector_dimension(vector_field),
            what="vectors",
            copy=not self._core.storage.adopts_written,
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
    def _filter_of(query: Any) -> tuple[Query | None, Expr | None]:
        if query is None or isinstance(query, Query):
            return query, (query.expression() if query is not None else None)
        return None, compile_filter(query)

    @staticmethod
    def _replaced(id: str, record: Record) -> Record:
        rec = record.copy(deep=False)
        rec.id = id
        return rec

    def _call_hook(self, name: str, request: Any) -> Any:
        answer = getattr(self._plugin_manager.hook, name)(db=self, request=request)
        if answer is None:
            raise PluginError(
                f"no plugin answered {name} for backend {self.backend_name!r}: its plugin may be blocked"
            )
        return answer

    @staticmethod
    def _checked(hook: str, results: Any, request: Any) -> Any:
        """The search hooks' contract: one list of results per query (a plugin's mistake is named)."""
        if not isinstance(request, SearchRequest):
            return results
        b = request.queries.shape[0]
        if not isinstance(results, list) or len(results) != b or not all(isinstance(r, list) for r in results):
            raise PluginError(
                f"{hook} answered {type(results).__name__} where one list of results per query "
                f"({b}) is due: a search hook returns list[list[VectorSearchResult]]"
            )
        return results

    # -- the operations: each written once, for both facades ------------------------------------
    @operation
    def create(self, record: Record) -> Steps[str]:
        """Store a new record; returns its id (a fresh UUID when it has none).

        Raises :class:`DuplicateRecordError` when the id exists.
        """
        ids = yield Call(self._core.put, ([record], "create"))
        return str(ids[0])

    @operation
    def create_batch(self, records: Iterable[Record]) -> Steps[list[str]]:
        """Store new records in one write, all or nothing; returns their ids."""
        ids = yield Call(self._core.put, (list(records), "create"), heavy=True)
        return [str(x) for x in ids]

    @operation
    def read(self, id: str) -> Steps[Record | None]:
        """A copy of the record, or ``None``."""
        got = yield Call(self._core.read, ([id],))
        return got[0]  # type: ignore[no-any-return]

    @operation
    def read_batch(self, ids: Iterable[str]) -> Steps[list[Record | None]]:
        """Copies of the records, ``None`` for missing ids."""
        return (yield Call(self._core.read, (list(ids),)))  # type: ignore[no-any-return]

    @operation
    def get(self, id: str) -> Steps[Record]:
        """The record, or :class:`RecordNotFoundError`."""
        got = yield Call(self._core.read, ([id],))
        if got[0] is None:
            raise RecordNotFoundError(f"no record with id {id!r}")
        return got[0]  # type: ignore[no-any-return]

    @operation
    def update(self, id: str, record: Record) -> Steps[bool]:
        """Replace the record ``id``; ``False`` (and nothing stored) when it does not exist."""
        done = yield Call(self._core.put, ([self._replaced(id, record)], "update"))
        return bool(done[0])

    @operation
    def update_batch(self, records: Iterable[Record]) -> Steps[list[bool]]:
        """Replace existing records (by their ids) in one write; one bool per record."""
        done = yield Call(self._core.put, (list(records), "update"), heavy=True)
        return [bool(x) for x in done]

    @operation
    def upsert(self, id_or_record: str | Record, record: Record | None = None) -> Steps[str]:
        """Create or replace: ``upsert(record)`` or ``upsert(id, record)``; returns the id."""
        if isinstance(id_or_record, Record):
            rec = id_or_record
        elif record is None:
            raise InvalidRequestError("upsert(id, record) needs a record")
        else:
            rec = self._replaced(id_or_record, record)
        ids = yield Call(self._core.put, ([rec], "upsert"))
        return str(ids[0])

    @operation
    def upsert_batch(self, records: Iterable[Record]) -> Steps[list[str]]:
        """Create or replace records in one write; returns their ids."""
        ids = yield Call(self._core.put, (list(records), "upsert"), heavy=True)
        return [str(x) for x in ids]

    @operation
    def delete(self, id: str) -> Steps[bool]:
        """Delete a record; ``False`` when it did not exist."""
        done = yield Call(self._core.delete, ([id],))
        return bool(done[0])

    @operation
    def delete_batch(self, ids: Iterable[str]) -> Steps[list[bool]]:
        """Delete records in one write; one bool per id."""
        return (yield Call(self._core.delete, (list(ids),)))  # type: ignore[no-any-return]

    @operation
    def exists(self, id: str) -> Steps[bool]:
        """Whether a record with this id is stored."""
        return bool((yield Call(self._core.exists, (id,))))

    @operation
    def count(self, query: Any = None) -> Steps[int]:
        """How many records match ``query`` (a Query, dict or Filter; all when ``None``)."""
        return int((yield Call(self._core.count, (self._filter_of(query)[1],))))

    @operation
    def search(self, query: Any = None) -> Steps[list[Record]]:
        """Records matching ``query`` (a Query with sort/limit/offset/select, or a filter dict)."""
        q, expr = self._filter_of(query)
        return (yield Call(self._core.search, (q, None if q is not None else expr), heavy=True))  # type: ignore[no-any-return]

    @operation
    def all(self) -> Steps[list[Record]]:
        """Every record."""
        return (yield Call(self._core.search, (None, None), heavy=True))  # type: ignore[no-any-return]

    @operation
    def clear(self) -> Steps[int]:
        """Delete every record; returns how many there were."""
        return int((yield Call(self._core.clear)))

    # -- vectors --------------------------------------------------------------------------------
    @operation
    def add_vectors(
        self,
        vectors: npt.ArrayLike,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        vector_field: str = "embedding",
    ) -> Steps[list[str]]:
        """Upsert records made of a vector and optional metadata fields; returns their ids.

        An existing record keeps its other fields; ``metadata`` fields are merged into it.
        """
        args = self._vector_args(vectors, ids, metadata, vector_field)
        return (yield Call(self._core.put_vectors, args, heavy=True))  # type: ignore[no-any-return]

    @operation
    def vector_search(
        self,
        /,
        query_vector: npt.ArrayLike | VectorField,
        vector_field: str = "embedding",
        k: int = 10,
        filter: Any = None,
        metric: str | None = None,
        **options: Any,
    ) -> Steps[list[VectorSearchResult]]:
        """Exact top-``k`` records nearest to ``query_vector``, best first.

        :param query_vector: a 1-D vector. (A 2-D array searches each row and returns one list
            per row, as :meth:`vector_search_batch` does, which says so in its type.)
        :param vector_field: the field to search.
        :param k: results wanted (> 0); fewer come back when fewer records match.
        :param filter: a Query, Filter, dict shorthand or list of these, applied before top-k.
        :param metric: override the store's ``vector_metric``.
        :param options: ``score_threshold`` (drop weaker hits); ``include_source`` is accepted.
        :returns: list of :class:`VectorSearchResult`.
        """
        request = self._request(query_vector, vector_field, k, filter, metric, None, options)
        results = yield Hook("dkv_vector_search", request)
        return results if request.batch else results[0]  # type: ignore[no-any-return]

    @operation
    def vector_search_batch(
        self,
        /,
        query_vectors: npt.ArrayLike,
        vector_field: str = "embedding",
        k: int = 10,
        filter: Any = None,
        metric: str | None = None,
        **options: Any,
    ) -> Steps[list[list[VectorSearchResult]]]:
        """One search per query vector (rows of a 2-D array), answered with one matrix product."""
        request = self._request(query_vectors, vector_field, k, filter, metric, True, options)
        return (yield Hook("dkv_vector_search", request))  # type: ignore[no-any-return]

    @operation
    def bulk_embed(
        self,
        records: Iterable[Record | Mapping[str, Any]],
        text_field: str | Sequence[str],
        vector_field: str = "embedding",
        embedding_fn: Callable[[list[str]], Any] | Embedder | str | None = None,
        batch_size: int = 100,
        model_name: str | None = None,
        model_version: str | None = None,
        field_separator: str = " ",
        progress: bool | None = None,
    ) -> Steps[BulkEmbedReport]:
        """Like :meth:`bulk_embed_and_store`, returning the full :class:`BulkEmbedReport`."""
        request = BulkEmbedRequest(
            records=list(records),  # type: ignore[arg-type]
            text_field=text_field,
            vector_field=vector_field,
            embedder=self._embedder(embedding_fn, vector_field, model_name),
            batch_size=batch_size,
            model_name=model_name,
            model_version=model_version,
            field_separator=field_separator,
            progress=progress,
        )
        return (yield Hook("dkv_bulk_embed", request))  # type: ignore[no-any-return]

    bulk_embed_and_store = bulk_embed.then(
        lambda report: report.ids,
        """Embed the text of each record and store it with its vector; returns the ids.

        Batches of ``batch_size`` are embedded and written one write each; records whose stored
        copy already holds ``vector_field`` for the same text are skipped, so a re-run resumes.
        ``embedding_fn`` is a callable ``texts -> array`` (on an async store it may be async),
        an embedder object, or the name of a registered embedder (default: the store's
        ``embedder`` config, ``"hashing"``). A progress bar shows when stderr is a terminal
        (``progress=False`` hides it).
        """,
        returns="list[str]",
    )

    # -- lifecycle ------------------------------------------------------------------------------
    @operation
    def compact(self) -> Steps[None]:
        """Reclaim space held by deleted and replaced records."""
        yield Call(self._core.compact, heavy=True)

    @operation
    def refresh(self) -> Steps[None]:
        """See other writers' commits now (reads do this on their own)."""
        yield Call(self._core.refresh)

    @operation
    def connect(self) -> Steps[None]:
        """Open what the store connects to now (the first call does it otherwise; a no-op for
        stores that are ready when created). Accepted for dataknobs-data compatibility."""
        yield Call(_nothing)

    @operation
    def close(self) -> Steps[None]:
        """Release the store's resources (and whatever plugins registered with :meth:`on_close`)."""
        if self._closed:
            return
        self._closed = True
        try:
            yield Call(self._run_close_callbacks, heavy=True, connects=False)
        finally:
            yield Close()

    disconnect = close


def _nothing() -> None:
    return None


class SyncDatabase(_Base):
    """The synchronous store API (thread-safe)."""

    def _drive(self, steps: Steps[R]) -> R:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(step, Call):
                    value = step.fn(*step.args)
                elif isinstance(step, Hook):
                    answer = self._call_hook(step.name, step.request)
                    value = self._checked(step.name, answer, step.request)
                else:
                    self._core.close()
            except BaseException as e:  # the operation sees it where it yielded (try/finally)
                error = e


    def __enter__(self) -> SyncDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncDatabase(_Base):
    """The asyncio store API: the same operations as :class:`SyncDatabase`, awaitable.

    The core is shared with the sync API; work that could hold the event loop (I/O on file and
    S3, large searches, embedding) runs in a worker thread.
    """

    _is_async = True

    async def _drive(self, steps: Steps[R]) -> R:
        value: Any = None
        error: BaseException | None = None
        core = self._core
        while True:
            try:
                step = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(step, Call):
                    value = await core.run_async(step.fn, *step.args, heavy=step.heavy, connect=step.connects)
                elif isinstance(step, Hook):
                    name = f"{step.name}_async"
                    value = self._checked(name, await self._call_hook(name, step.request), step.request)
                else:
                    await core.close_async()
            except BaseException as e:  # the operation sees it where it yielded (try/finally)
                error = e

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
