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
import itertools
import time
import types
from collections import OrderedDict
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, TypeVar, overload

import attrs
import numpy as np
import numpy.typing as npt
import pluggy

from .content import assemble_source_text, compute_content_hash, content_hash_metadata
from .core import StoreCore
from .embed import FunctionEmbedder, batch_slices, embed_texts, embed_texts_async, progress_bar
from .errors import (
    DuplicateRecordError,
    InvalidRequestError,
    InvalidVectorError,
    PluginError,
    RecordNotFoundError,
    SchemaMismatchError,
)
from .memtable import RecordTable
from .query import Expr, Query, compile_filter
from .records import Record, VectorField, new_id
from .schema import PROBE_TEXT, EmbedderRef, FieldSchema, StoreSchema, TextSchema, fingerprint_of, text_fields
from .search import build_search_request, build_text_request, fuse, hybrid_fetch_k, text_field_names
from .streaming import ConflictPolicy, StreamConfig, StreamResult
from .textindex import TextSettings
from .types import (
    BulkEmbedReport,
    BulkEmbedRequest,
    Embedder,
    HybridSearchConfig,
    HybridSearchResult,
    SearchRequest,
    TextSearchRequest,
    TextSearchResult,
    VectorSearchResult,
)
from .vectors import as_vector_batch, as_vector_batch_with_norms

__all__ = [
    "Apply",
    "AsyncDatabase",
    "Batch",
    "BulkEmbedMixin",
    "Call",
    "Close",
    "Embed",
    "Emit",
    "Hook",
    "Pull",
    "SyncDatabase",
    "operation",
    "stream_operation",
]

P = ParamSpec("P")
R = TypeVar("R")
R2 = TypeVar("R2")
StoreT = TypeVar("StoreT", bound="_Base")


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
    store) with ``db=`` the store and ``request``; the answer is the first non-``None`` one.

    ``builtin=False`` asks every plugin but the built-in ``defaults``: the answer is ``None``
    when none of them answers (the built-in implementation would). ``store``: the store the hook
    is called for, when not this one (a read-only store of an earlier version, for ``as_of=``).
    """

    name: str
    request: Any
    builtin: bool = True
    store: _Base | None = None


@attrs.frozen
class Embed:
    """A step of an operation: embed ``texts`` with ``embedder`` (awaited, or in a worker thread,
    on an async store); the answer is the embedder's raw output."""

    embedder: Embedder
    texts: list[str]


@attrs.frozen
class Close:
    """A step of an operation: release the core's storage (and, on an async store, what it
    opened on the event loop)."""


@attrs.frozen
class Pull:
    """A step of an operation: up to ``n`` more items of ``source`` (an iterator; on an async
    store an async iterator too), fewer only when it is exhausted; the answer is their list."""

    source: Iterator[Any] | AsyncIterator[Any]
    n: int


@attrs.frozen
class Apply:
    """A step of an operation: ``fn(*args)``, a caller's function (on an async store its result
    is awaited when it is awaitable; a sync store refuses an awaitable result)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@attrs.frozen
class Emit:
    """What a stream operation (:class:`stream_operation`) hands its consumer: ``items``, in
    order, before its next step is performed."""

    items: Sequence[Any]


Step = Call | Hook | Embed | Close | Pull | Apply
#: What an operation's generator is: it yields steps and returns the operation's result.
Steps = Generator[Step, Any, R]
#: What a stream operation's generator is: it yields steps and what it emits.
StreamSteps = Generator["Step | Emit", Any, None]


#: How many recent embeddings a store keeps (by embedder and content hash).
_CACHE_SIZE = 4096
#: Vector metadata key: which embedder (name, options, fingerprint) made the vector.
_EMBEDDER_KEY = "dkv_embedder"


def _identity(key: tuple[Any, ...]) -> str:
    """A stable id of an embedder (name, options, fingerprint) from its cache key."""
    return compute_content_hash(repr(key[2:]))[:16]


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


class stream_operation(Generic[P]):
    """Declares a store operation that streams records, once for both facades.

    The generator method yields steps (as an :class:`operation` does) and :class:`Emit` items for
    its consumer. ``db.op(...)`` on a :class:`SyncDatabase` is an iterator, which performs the
    steps as the consumer reads; on an :class:`AsyncDatabase` it is an async iterator (``async
    for``). The work starts with the first item read, and stops when the consumer stops (closing
    the iterator, or leaving its loop, ends the operation's generator).
    """

    def __init__(self, fn: Callable[Concatenate[Any, P], StreamSteps]) -> None:
        self.fn = fn
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__module__ = fn.__module__
        self.__doc__ = fn.__doc__
        sig = inspect.signature(fn)

        def run_sync(db: SyncDatabase, /, *args: Any, **kwargs: Any) -> Iterator[Any]:
            yield from db._stream(fn(db, *args, **kwargs))

        async def run_async(db: AsyncDatabase, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            stream = db._stream(fn(db, *args, **kwargs))  # closed here: the consumer may stop early
            try:
                async for item in stream:
                    yield item
            finally:
                await stream.aclose()

        for runner, returns in ((run_sync, "Iterator[Record]"), (run_async, "AsyncIterator[Record]")):
            functools.update_wrapper(runner, fn)
            setattr(runner, "__signature__", sig.replace(return_annotation=returns))  # noqa: B010
        self._sync: Callable[..., Any] = run_sync
        self._async: Callable[..., Any] = run_async

    @overload
    def __get__(self, db: None, owner: type | None = None) -> stream_operation[P]: ...

    @overload
    def __get__(self, db: SyncDatabase, owner: type | None = None) -> Callable[P, Iterator[Any]]: ...

    @overload
    def __get__(self, db: AsyncDatabase, owner: type | None = None) -> Callable[P, AsyncIterator[Any]]: ...

    def __get__(self, db: Any, owner: type | None = None) -> Any:
        if db is None:
            if owner is not None and owner is not _Base and issubclass(owner, _Base):
                return self._async if owner._is_async else self._sync
            return self
        return types.MethodType(self._async if db._is_async else self._sync, db)


def _stream_config(config: Any) -> StreamConfig:
    """``config`` of a stream operation: a :class:`StreamConfig`, or ``None`` for the defaults."""
    if config is None:
        return StreamConfig()
    if not isinstance(config, StreamConfig):
        raise InvalidRequestError(f"config must be a StreamConfig (or None), got {type(config).__name__}")
    return config


def _record_source(records: Any) -> Iterator[Any] | AsyncIterator[Any]:
    """The iterator (or async iterator) of what ``stream_write`` is given."""
    if isinstance(records, AsyncIterable):
        return aiter(records)
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
        raise InvalidRequestError(
            f"stream_write takes an iterable of records (an async one on an async store), got {type(records).__name__}"
        )
    return iter(records)


def _present(table: RecordTable, ids: Sequence[str]) -> list[bool]:
    """Whether each of ``ids`` is stored."""
    return [rid in table for rid in ids]


class _Base:
    """What the sync and async facades share: config, plugins, request building, operations."""

    #: The backend name this class serves (``"memory"``, ``"file"``, ``"s3"``).
    backend_name: ClassVar[str] = ""
    #: Whether the operations return coroutines.
    _is_async: ClassVar[bool] = False
    #: Async stores only: whether every core call may do I/O (file, S3), so that it always runs
    #: in a worker thread.
    _io_bound: ClassVar[bool] = False
    #: Whether the backend keeps its records after the store is closed (``None``: the class does
    #: not say); what ``DatabaseFactory.get_backend_info`` reports as ``persistent``.
    persistent: ClassVar[bool | None] = None

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
        self._config = resolve_config(pm, merged)
        #: Vector fields: given settings, then (file, S3) the table's stored ones.
        self._schema = StoreSchema(self._config, self._config.given)
        #: Built embedders per vector field, with the schema generation they were built for.
        self._embedders: dict[str, tuple[tuple[Any, ...], Embedder]] = {}
        #: Recent embeddings by (embedder, content hash): unchanged text is not embedded twice.
        self._embedded: OrderedDict[tuple[Any, ...], npt.NDArray[np.float32]] = OrderedDict()
        self._closed = False
        self._close_callbacks: list[Callable[[], Any]] = []
        #: The analyzer and BM25 settings of full-text search, built for this text schema.
        self._text: tuple[TextSchema, TextSettings] | None = None
        if self._config.given & {"analyzer", "analyzer_options"}:
            self._text_settings()  # an unknown analyzer or a bad option fails here, not later
        self._core = self._make_core()
        self._core.io_bound = self._is_async and self._io_bound
        self._core.table.text_provider = self._text_settings
        # a plain list of numbers in the store's vector field is a vector too (dataknobs-data
        # searches one); the record keeps the list as it was given
        self._core.table.list_vector_fields = frozenset({self._schema.default_field})

    def _make_core(self) -> StoreCore:
        raise NotImplementedError  # pragma: no cover - each backend supplies its core

    def _text_settings(self) -> TextSettings:
        """The analyzer and BM25 settings for the schema's text index (rebuilt when the schema
        changes: a stored analyzer adopted on open)."""
        ts = self._schema.text
        held = self._text
        if held is not None and (held[0].analyzer, held[0].options, held[0].fields) == (ts.analyzer, ts.options, ts.fields):
            return held[1]  # (compared field by field in C: this runs for every text search)
        from .factory import make_analyzer

        analyzer = make_analyzer(self._plugin_manager, ts.analyzer, ts.options)
        settings = TextSettings(
            analyzer,
            ts.key(),
            ts.fields,
            float(self._config.get("bm25_k1", 1.5)),
            float(self._config.get("bm25_b", 0.75)),
        )
        self._text = (TextSchema(ts.analyzer, dict(ts.options), ts.fields), settings)
        return settings

    @property
    def config(self) -> Mapping[str, Any]:
        """The validated configuration, defaults filled in (read-only); the settings of the
        vector field are the table's stored ones once it is loaded (at once for a sync store;
        after :meth:`connect` or the first call for an async one)."""
        if self._schema.stored_at is None and not self._schema.generation:
            return self._config
        return self._config.updated(self._schema.config_values())

    @property
    def schema(self) -> StoreSchema:
        """The store's vector fields: dimensions, metric, source text and embedder (stored with
        the table on file and S3)."""
        return self._schema

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

    def vector_dimension(self, vector_field: str | None = None) -> int | None:
        """The dimension of a vector field (default: the store's ``vector_field``): configured,
        stored, or fixed by the first stored vector."""
        name = vector_field or self._schema.default_field
        dim: int | None = self._core.table.vector_dimension(name)
        field = self._schema.field(name)
        return dim or (field.dim if field is not None else None)

    def _field(self, vector_field: str | None) -> str:
        if vector_field is None:
            return self._schema.default_field
        if not isinstance(vector_field, str) or not vector_field:
            raise InvalidRequestError(f"vector_field must be a non-empty string, got {vector_field!r}")
        return vector_field

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
            default_metric=self._schema.metric(vector_field),
            dimension=self.vector_dimension(vector_field),
            batch=batch,
            options=options,
        )

    def _embedder(self, embedding_fn: Any, vector_field: str, model_name: str | None) -> Embedder:
        from .factory import make_embedder

        if embedding_fn is None or isinstance(embedding_fn, str):
            field = self._schema.field(vector_field)
            ref = field.embedder if field is not None else None
            if ref is not None and embedding_fn in (None, ref.name):  # the store's own embedder
                name, options = ref.name, ref.build_options()
            else:
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

    @staticmethod
    def _embed_source(embedding_fn: Any, embedder: Any) -> Any:
        """The one embedding source of a bulk embed: ``embedding_fn=`` or dataknobs-data's
        ``embedder=``, never both."""
        if embedding_fn is not None and embedder is not None:
            raise InvalidRequestError("bulk_embed_and_store: pass embedding_fn or embedder, not both")
        return embedder if embedder is not None else embedding_fn

    def _has_own_embedder(self, field: str) -> bool:
        """Whether the store embeds ``field`` with an embedder of its own when none is given: it
        was created with vector settings, or its table records an embedder for the field."""
        fs = self._schema.field(field)
        if fs is not None and fs.embedder is not None:
            return True
        settings = ("vector_enabled", "vector_dimensions", "embedder", "embedder_options", "text_field")
        return any(k in self._config.given for k in settings)

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

    # -- text in, text out (steps shared by the operations) ---------------------------------------
    def _opened(self) -> Steps[None]:
        """Load the table once before the schema is used (async stores load on first call)."""
        if not self._core.opened:
            yield Call(self._core.refresh)

    def _field_embedder(self, field: str) -> Steps[tuple[tuple[Any, ...], Embedder]]:
        """The embedder of a vector field and its cache key, built once per schema; the first
        build in a process checks (or records) the stored fingerprint."""
        fs = self._schema.field(field)
        if fs is None or fs.embedder is None:
            raise InvalidRequestError(
                f"vector field {field!r} of this store has no embedder, so it cannot embed text: create "
                "the store with text_field=... (and embedder=..., default 'hashing'), or pass a vector"
            )
        key = (self._schema.generation, field, fs.embedder.name, repr(sorted(fs.embedder.options.items())))
        cached = self._embedders.get(field)
        if cached is not None and cached[0][:-1] == key:
            return cached[0], cached[1]
        built = yield from self._build_embedder(field, fs.embedder, key, self.vector_dimension(field))
        if fs.embedder.fingerprint is None:
            model = getattr(built[1], "model_name", None)
            self._schema.set_fingerprint(field, list(built[0][-1]), model if isinstance(model, str) else None)
        self._embedders[field] = built
        return built

    def _build_embedder(
        self, field: str, ref: EmbedderRef, key: tuple[Any, ...], dimensions: int | None
    ) -> Steps[tuple[tuple[Any, ...], Embedder]]:
        """Build the embedder ``ref`` names and check its fingerprint against the stored one;
        returns its cache key (``key`` plus the fingerprint: the vectors' identity) and it."""
        from .factory import make_embedder

        embedder = make_embedder(self._plugin_manager, ref.name, dimensions, ref.build_options())
        probe = as_vector_batch((yield Embed(embedder, [PROBE_TEXT])), None, what="embedder output")
        fingerprint = fingerprint_of(probe[0])
        if not ref.matches(fingerprint):
            raise SchemaMismatchError(
                f"embedder {ref.describe()} of vector field {field!r} now embeds differently from the one "
                "that wrote the store (its fingerprint changed: a different model behind the same name); "
                "re-embed the store with db.reembed(...) or open it with the original model"
            )
        return (*key, tuple(ref.fingerprint or fingerprint)), embedder

    def _embed_texts(
        self, field: str, texts: Sequence[str], built: tuple[tuple[Any, ...], Embedder] | None = None
    ) -> Steps[npt.NDArray[np.float32]]:
        """Vectors of ``texts`` from the field's embedder (or ``built``: a key and an embedder),
        unique texts once, recent ones cached."""
        key, embedder = built if built is not None else (yield from self._field_embedder(field))
        hashes = [compute_content_hash(t) for t in texts]
        todo = list(dict.fromkeys(h for h in hashes if (key, h) not in self._embedded))
        if todo:
            text_of = dict(zip(hashes, texts))
            raw = yield Embed(embedder, [text_of[h] for h in todo])
            mat = as_vector_batch(raw, None if built else self.vector_dimension(field), what="embedder output")
            if mat.shape[0] != len(todo):
                raise InvalidRequestError(f"the embedder returned {mat.shape[0]} vectors for {len(todo)} texts")
            for h, vec in zip(todo, mat):
                self._embedded[(key, h)] = vec
        rows = []
        for h in hashes:
            self._embedded.move_to_end((key, h))
            rows.append(self._embedded[(key, h)])
        while len(self._embedded) > _CACHE_SIZE:
            self._embedded.popitem(last=False)
        return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)

    def _with_vectors(self, records: list[Any], mode: str) -> Steps[list[Any]]:
        """Records with the vectors of every field embedded from source text filled in: a record
        that gives its text but not the vector is embedded (a stored vector of the same text and
        embedder is reused); one with neither is rejected (its vector would be lost)."""
        yield from self._opened()
        fields = self._schema.embedding_fields()
        if not fields:
            return records
        out = [r.copy(deep=False) if isinstance(r, Record) else r for r in records]
        for name, fs in fields:
            assert fs.source is not None and fs.embedder is not None
            need: list[tuple[int, str]] = []
            for i, rec in enumerate(out):
                if not isinstance(rec, Record):
                    continue
                text = assemble_source_text(rec.data, fs.source, fs.separator)
                if rec.get(name) is not None:
                    held = rec.fields.get(name)
                    made_from = held.metadata.get("content_hash") if isinstance(held, VectorField) else None
                    if made_from is None or (text and compute_content_hash(text) == made_from):
                        continue  # the caller's own vector, or one made from this very text
                    if not text:
                        raise InvalidRequestError(
                            f"record {rec.id!r} holds a vector {name!r} embedded from text that it no "
                            f"longer has in {', '.join(map(repr, fs.source))}: give the text, or drop the vector"
                        )
                    # a vector embedded from other text (a stored record read, changed and written
                    # back): stale, so the new text is embedded
                if not text:
                    who = f"record {rec.id!r}" if rec.id is not None else f"records[{i}] (no id yet)"
                    raise InvalidRequestError(
                        f"{who} has neither text in {', '.join(map(repr, fs.source))} nor a "
                        f"vector {name!r}: the store embeds {name!r} from that text; give one of them"
                    )
                need.append((i, text))
            if not need:
                continue
            key, _ = yield from self._field_embedder(name)
            identity = _identity(key)
            hashes = [compute_content_hash(t) for _, t in need]
            reuse: dict[str, Any] = {}
            if mode != "create":
                ids = [out[i].id for i, _ in need if out[i].id is not None]
                stored = (yield Call(self._core.read, (ids,))) if ids else []
                for rec in stored:
                    vf = rec.fields.get(name) if rec is not None else None
                    if isinstance(vf, VectorField) and vf.metadata.get(_EMBEDDER_KEY) == identity:
                        reuse[str(rec.id)] = (vf.metadata.get("content_hash"), vf.value)
            todo = [
                (i, t, h) for (i, t), h in zip(need, hashes) if reuse.get(str(out[i].id), (None,))[0] != h
            ]
            mat = (yield from self._embed_texts(name, [t for _, t, _ in todo])) if todo else None
            fresh = {i: mat[j] for j, (i, _, _) in enumerate(todo)} if mat is not None else {}
            model = fs.embedder.model or fs.embedder.name
            for (i, _), h in zip(need, hashes):
                vec = fresh[i] if i in fresh else reuse[str(out[i].id)][1]
                meta = {**content_hash_metadata(fs.source, fs.separator, h), _EMBEDDER_KEY: identity}
                out[i][name] = VectorField(
                    vec,
                    name=name,
                    source_field=fs.source[0] if len(fs.source) == 1 else None,
                    model_name=model,
                    metadata=meta,
                )
        return out

    def _query_vectors(self, query: Any, field: str) -> Steps[Any]:
        """A text query (a string, or a list of strings) as the field's embedding; else as given.
        A blank text is refused."""
        texts = isinstance(query, str) or (
            isinstance(query, (list, tuple)) and bool(query) and all(isinstance(q, str) for q in query)
        )
        fs = self._schema.field(field)
        if texts and (fs is None or fs.embedder is None):
            raise InvalidVectorError(
                f"the query is text, but vector field {field!r} of this store has no embedder: pass a "
                "vector, or create the store with text_field=... (and embedder=..., default 'hashing')"
            )
        if not texts:
            return query
        given = [query] if isinstance(query, str) else list(query)
        for q in given:
            if not q.strip():
                raise InvalidRequestError(f"a text query must not be empty, got {q!r}")
        vectors = yield from self._embed_texts(field, given)
        return vectors[0] if isinstance(query, str) else vectors

    def _search_request(
        self, given: Any, query: Any, field: str, k: Any, filter: Any, metric: Any, batch: bool | None, options: dict[str, Any]
    ) -> SearchRequest:
        """:meth:`_request` for a query ``given`` as text or vectors and embedded as ``query``: a
        text that embeds to a zero vector, which cosine cannot rank by, is named."""
        try:
            return self._request(query, field, k, filter, metric, batch, options)
        except InvalidVectorError as e:
            texts = [given] if isinstance(given, str) else list(given) if isinstance(given, (list, tuple)) else []
            if not texts or not all(isinstance(t, str) for t in texts):
                raise  # vectors given: the request's own error
            rows = np.asarray(query, dtype=np.float64).reshape(len(texts), -1)  # embedded: one row each
            zero = [t for t, row in zip(texts, rows) if not row.any()]
            if not zero:
                raise
            raise InvalidVectorError(
                f"the query text {zero[0]!r} embeds to a zero vector (its embedder found nothing to embed "
                f"in it), which gives cosine similarity no direction to rank by"
            ) from e

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

    def _call_hook(self, name: str, request: Any, builtin: bool = True, store: _Base | None = None) -> Any:
        pm = self._plugin_manager
        db = self if store is None else store
        defaults = None if builtin else pm.get_plugin("defaults")
        if defaults is not None:  # every plugin but the built-in one: None when none answers
            return pm.subset_hook_caller(name, remove_plugins=[defaults])(db=db, request=request)
        answer = getattr(pm.hook, name)(db=db, request=request)  # (blocked built-in: no None)
        if answer is None:
            raise PluginError(
                f"no plugin answered {name} for backend {self.backend_name!r}: its plugin may be blocked"
            )
        return answer

    @staticmethod
    def _checked(hook: str, results: Any, request: Any) -> Any:
        """The search hooks' contract: one list of results per query (a plugin's mistake is named)."""
        if isinstance(request, SearchRequest):
            b, kind = request.queries.shape[0], "VectorSearchResult"
        elif isinstance(request, TextSearchRequest):
            b, kind = len(request.queries), "TextSearchResult"
        else:
            return results
        if not isinstance(results, list) or len(results) != b or not all(isinstance(r, list) for r in results):
            raise PluginError(
                f"{hook} answered {type(results).__name__} where one list of results per query "
                f"({b}) is due: a search hook returns list[list[{kind}]]"
            )
        return results

    def _as_of(self, options: dict[str, Any]) -> Steps[_Base | None]:
        """The store a search with ``options`` runs on: this one (``None``), or, for ``as_of=``
        (taken out of ``options``), a read-only store of the table at that version, loaded (a
        search reads its schema: field names, embedder, metric and dimensions as then)."""
        as_of = options.pop("as_of", None)
        if as_of is None:
            return None
        return (yield from self._at_version(as_of))

    def _done_with(self, target: _Base | None) -> Steps[None]:
        """An ``as_of=`` search on ``target`` (from :meth:`_as_of`) is over."""
        return
        yield  # pragma: no cover - a generator

    def _at_version(self, as_of: int | str) -> Steps[_Base]:
        """A read-only store of the table at version ``as_of`` (stores that keep versions)."""
        raise InvalidRequestError(
            f"as_of={as_of!r}: a {self.backend_name} store keeps no earlier versions (file and s3 stores do)"
        )
        yield  # pragma: no cover - a generator

    def _text_request(
        self, query_text: Any, text_fields: Any, k: Any, filter: Any, batch: bool, options: dict[str, Any]
    ) -> Steps[TextSearchRequest]:
        """Validate a text search; the fields default to ``text_search_fields``, else the default
        vector field's source text, else every field holding text."""
        fields = text_field_names(text_fields)
        settings = self._text_settings()
        if fields is None:
            source = (self._schema.field() or FieldSchema()).source
            fields = settings.fields or source or tuple((yield Call(self._core.string_fields)))
        return build_text_request(
            query_text,
            text_fields=fields,
            k=k,
            filter=filter,
            batch=batch,
            options=options,
            analyze=settings.analyzer.analyze,
        )

    # -- the operations: each written once, for both facades ------------------------------------
    @operation
    def create(self, record: Record) -> Steps[str]:
        """Store a new record; returns its id (a fresh UUID when it has none).

        Raises :class:`DuplicateRecordError` when the id exists.
        """
        recs = yield from self._with_vectors([record], "create")
        ids = yield Call(self._core.put, (recs, "create"))
        return str(ids[0])

    @operation
    def create_batch(self, records: Iterable[Record]) -> Steps[list[str]]:
        """Store new records in one write, all or nothing; returns their ids."""
        recs = yield from self._with_vectors(list(records), "create")
        ids = yield Call(self._core.put, (recs, "create"), heavy=True)
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
    def update(
        self,
        id: str | None = None,
        record: Record | None = None,
        *,
        filter: Any = None,
        values: Mapping[str, Any] | None = None,
    ) -> Steps[Any]:
        """Replace the record ``id``; ``False`` (and nothing stored) when it does not exist.

        ``update(filter=..., values={...})`` instead sets ``values`` on every record matching the
        filter (a Query, Filter or dict), in one write, and returns how many it changed (records
        whose source text changes are embedded again).
        """
        if filter is not None or values is not None:
            if id is not None or record is not None or filter is None or not isinstance(values, Mapping):
                raise InvalidRequestError("update(filter=..., values={...}) takes a filter and a mapping of values only")
            matching: list[Record] = yield Call(self._core.search, (None, self._filter_of(filter)[1]), heavy=True)
            for rec in matching:
                for key, value in values.items():
                    rec[key] = value
            recs = yield from self._with_vectors(matching, "update")
            done = yield Call(self._core.put, (recs, "update"), heavy=True)
            return sum(1 for d in done if d)
        if id is None or record is None:
            raise InvalidRequestError("update(id, record) needs an id and a record")
        recs = yield from self._with_vectors([self._replaced(id, record)], "update")
        done = yield Call(self._core.put, (recs, "update"))
        return bool(done[0])

    @operation
    def update_batch(self, records: Iterable[Record]) -> Steps[list[bool]]:
        """Replace existing records (by their ids) in one write; one bool per record."""
        recs = yield from self._with_vectors(list(records), "update")
        done = yield Call(self._core.put, (recs, "update"), heavy=True)
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
        recs = yield from self._with_vectors([rec], "upsert")
        ids = yield Call(self._core.put, (recs, "upsert"))
        return str(ids[0])

    @operation
    def upsert_batch(self, records: Iterable[Record]) -> Steps[list[str]]:
        """Create or replace records in one write; returns their ids."""
        recs = yield from self._with_vectors(list(records), "upsert")
        ids = yield Call(self._core.put, (recs, "upsert"), heavy=True)
        return [str(x) for x in ids]

    @operation
    def delete(self, id: str | None = None, *, filter: Any = None) -> Steps[Any]:
        """Delete a record; ``False`` when it did not exist.

        ``delete(filter=...)`` instead deletes every record matching the filter (a Query, Filter
        or dict) in one write, and returns how many.
        """
        if filter is not None:
            if id is not None:
                raise InvalidRequestError("delete takes an id or filter=..., not both")
            return int((yield Call(self._core.delete_where, (self._filter_of(filter)[1],))))
        if id is None:
            raise InvalidRequestError("delete(id) needs an id (or filter=... to delete by filter)")
        done = yield Call(self._core.delete, ([id],))
        return bool(done[0])

    def batch(self) -> Batch:
        """Group writes into one commit: ``with db.batch() as b:`` (``async with`` on an async
        store), then ``b.create(record)``, ``b.update(id, record)``, ``b.upsert(record)``,
        ``b.delete(id)``. They are applied in order when the block ends without an exception,
        all in one write (visible at once, all or nothing); an exception in the block, or a
        write that fails (a duplicate ``create``), stores none of them. ``b.results`` then holds
        what each call would have returned on its own.
        """
        return Batch(self)

    def _batch_steps(self, ops: list[tuple[str, Any]]) -> Steps[list[Any]]:
        records = yield from self._with_vectors([arg for kind, arg in ops if kind != "delete"], "upsert")
        given = iter(records)
        ops = [(kind, arg if kind == "delete" else next(given)) for kind, arg in ops]
        return (yield Call(self._core.apply_ops, (ops,), heavy=True))  # type: ignore[no-any-return]

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

    @operation
    def list_all(self) -> Steps[list[str]]:
        """The id of every record (dataknobs-data's ``list_all``)."""
        return list((yield Call(self._core.read_locked, (_live_ids,))))

    @operation
    def _count_all(self) -> Steps[int]:
        """How many records there are (dataknobs-data's ``_count_all``; same as ``count()``)."""
        return int((yield Call(self._core.count, (None,))))

    # -- streaming (dataknobs-data's stream_read / stream_write / stream_transform) ---------------
    def _stream_steps(self, query: Any, config: StreamConfig | None, transform: Callable[[Record], Any] | None) -> StreamSteps:
        """Records matching ``query``, read one batch at a time, each passed through ``transform``
        (its ``None`` drops the record)."""
        cfg = _stream_config(config)
        q, expr = self._filter_of(query)
        fields = q.fields if q is not None else None
        yield from self._opened()
        # the ids (and their order) when the stream starts; each batch's records when it is read
        ids: list[str] = yield Call(
            self._core.read_locked, (functools.partial(_query_ids, query=q, expr=expr),), heavy=True
        )
        for sl in batch_slices(len(ids), cfg.batch_size):
            read = functools.partial(_records_of, ids=ids[sl], expr=expr, fields=fields)
            records: list[Any] = yield Call(self._core.read_locked, (read,), heavy=True)
            if transform is not None:
                mapped = []
                for rec in records:
                    out = yield Apply(transform, (rec,))
                    if out is not None:
                        mapped.append(out)
                records = mapped
            if records:
                yield Emit(records)

    @stream_operation
    def stream_read(self, query: Any = None, config: StreamConfig | None = None) -> StreamSteps:
        """Every record matching ``query``, read from the store ``config.batch_size`` at a time.

        An iterator of records (an async iterator on an async store: ``async for r in
        db.stream_read(...)``), as in dataknobs-data. Only one batch of records is held at a time:
        the matching ids (in the query's order, after its offset and limit) are taken when the
        stream starts, and each batch is read when the consumer reaches it. A record deleted
        before its batch is read is not yielded; one changed comes in its new state, unless it no
        longer matches the query.

        :param query: a Query (filters, sort, offset, limit, select), a filter dict or Filter, or
            ``None`` for every record.
        :param config: a :class:`StreamConfig`; its ``batch_size`` is used (``prefetch`` and
            ``timeout`` are accepted and unused, as in dataknobs-data's stores).
        """
        yield from self._stream_steps(query, config, None)

    @stream_operation
    def stream_transform(
        self,
        query: Any = None,
        transform: Callable[[Record], Any] | None = None,
        config: StreamConfig | None = None,
    ) -> StreamSteps:
        """:meth:`stream_read`, each record passed through ``transform(record)``: what it returns
        is yielded, ``None`` drops the record (no ``transform``: the records themselves). On an
        async store ``transform`` may be async (its result is awaited)."""
        yield from self._stream_steps(query, config, transform)

    @operation
    def stream_write(
        self,
        records: Iterable[Record] | AsyncIterable[Record],
        config: StreamConfig | None = None,
        progress: bool | None = None,
    ) -> Steps[StreamResult]:
        """Write records from an iterable, ``config.batch_size`` at a time; returns a
        :class:`StreamResult` (dataknobs-data's ``stream_write``).

        Only one batch is held at a time. Each batch is one write (one commit on file and S3), by
        ``config.on_conflict``: ``INSERT`` creates (an existing id fails), ``UPSERT`` creates or
        replaces, ``SKIP`` creates the records whose id is not stored yet and counts the others
        (and an id repeated in the batch) as skipped. A batch that fails is written again record
        by record, to say which record failed: a failure is counted, given to
        ``config.on_error(error, record)``, and ends the write unless that returns true (without
        ``on_error``, the first failure ends it). Text of a store with an embedder is embedded as
        ``create`` does.

        :param records: an iterable of records; on an async store an async iterable too.
        :param config: a :class:`StreamConfig` (``batch_size``, ``on_conflict``, ``on_error``).
        :param progress: show a progress bar of the records written (default: when stderr is a
            terminal).
        """
        cfg = _stream_config(config)
        source = _record_source(records)
        yield from self._opened()
        result = StreamResult()
        start = time.monotonic()
        try:
            with progress_bar(progress, None, "writing") as bar:
                for index in itertools.count():
                    batch: list[Any] = yield Pull(source, cfg.batch_size)
                    if not batch:
                        break
                    go_on = yield from self._write_stream_batch(batch, cfg, result, index)
                    bar.update(len(batch))
                    if not go_on or len(batch) < cfg.batch_size:
                        break
        finally:
            result.duration = time.monotonic() - start
        return result

    def _write_stream_batch(
        self, batch: list[Any], cfg: StreamConfig, result: StreamResult, index: int
    ) -> Steps[bool]:
        """One batch of :meth:`stream_write`: one write, else record by record; ``False`` to stop."""
        result.total_batches += 1
        mode = "upsert" if cfg.on_conflict is ConflictPolicy.UPSERT else "create"
        todo, skipped = batch, 0
        if cfg.on_conflict is ConflictPolicy.SKIP:  # stored ids, and an id's repeats, are left alone
            given = [r.id for r in batch if isinstance(r, Record) and r.id is not None]
            stored: list[bool] = yield Call(self._core.read_locked, (functools.partial(_present, ids=given),))
            seen = {rid for rid, there in zip(given, stored) if there}
            todo = []
            for rec in batch:
                rid = rec.id if isinstance(rec, Record) else None
                if rid is not None and rid in seen:
                    skipped += 1
                    continue
                if rid is not None:
                    seen.add(rid)
                todo.append(rec)
        written: list[Any] | None
        try:
            recs = yield from self._with_vectors(todo, mode)
            written = (yield Call(self._core.put, (recs, mode), heavy=True)) if recs else []
        except Exception:  # which record failed is found record by record, below
            written = None
        if written is not None:
            result.successful += len(written)
            result.skipped += skipped
            result.total_processed += len(batch)
            return True
        for i, rec in enumerate(batch):
            try:
                one = yield from self._with_vectors([rec], mode)
                yield Call(self._core.put, (one, mode))
            except Exception as e:
                result.total_processed += 1
                if cfg.on_conflict is ConflictPolicy.SKIP and isinstance(e, DuplicateRecordError):
                    result.skipped += 1
                    continue
                result.failed += 1
                result.add_error(rec.id if isinstance(rec, Record) else None, e, index * cfg.batch_size + i)
                if cfg.on_error is None or not cfg.on_error(e, rec):
                    return False
            else:
                result.total_processed += 1
                result.successful += 1
        return True

    # -- vectors --------------------------------------------------------------------------------
    @operation
    def add_vectors(
        self,
        vectors: npt.ArrayLike,
        ids: Sequence[str] | None = None,
        metadata: Sequence[Mapping[str, Any]] | None = None,
        vector_field: str | None = None,
    ) -> Steps[list[str]]:
        """Upsert records made of a vector and optional metadata fields; returns their ids.

        An existing record keeps its other fields; ``metadata`` fields are merged into it.
        ``vector_field`` defaults to the store's (config key ``vector_field``, ``"embedding"``).
        """
        yield from self._opened()
        args = self._vector_args(vectors, ids, metadata, self._field(vector_field))
        return (yield Call(self._core.put_vectors, args, heavy=True))  # type: ignore[no-any-return]

    @operation
    def vector_search(
        self,
        /,
        query_vector: npt.ArrayLike | VectorField | str,
        vector_field: str | None = None,
        k: int = 10,
        filter: Any = None,
        metric: str | None = None,
        **options: Any,
    ) -> Steps[list[VectorSearchResult]]:
        """Exact top-``k`` records nearest to ``query_vector``, best first.

        :param query_vector: a 1-D vector, or a text that the field's embedder embeds (a store
            with ``text_field``/``embedder`` settings). (A 2-D array or a list of texts searches
            each and returns one list per query, as :meth:`vector_search_batch` does, which says
            so in its type.)
        :param vector_field: the field to search (default: the store's ``vector_field``).
        :param k: results wanted (> 0); fewer come back when fewer records match.
        :param filter: a Query, Filter, dict shorthand or list of these, applied before top-k.
        :param metric: override the store's ``vector_metric``.
        :param options: ``score_threshold`` (drop weaker hits); ``include_source`` is accepted;
            ``as_of`` (a version number or a tag of a file or S3 store) searches the table as it
            was then (see :meth:`checkout`).
        :returns: list of :class:`VectorSearchResult`.
        """
        yield from self._opened()
        target = yield from self._as_of(options)
        try:
            at = self if target is None else target  # (a text is embedded as that version's field was)
            field = at._field(vector_field)
            query = yield from at._query_vectors(query_vector, field)
            batch = True if isinstance(query_vector, (list, tuple)) and query is not query_vector else None
            request = at._search_request(query_vector, query, field, k, filter, metric, batch, options)
            results = yield Hook("dkv_vector_search", request, store=target)
        finally:
            yield from self._done_with(target)
        return results if request.batch else results[0]  # type: ignore[no-any-return]

    @operation
    def vector_search_batch(
        self,
        /,
        query_vectors: npt.ArrayLike | Sequence[str],
        vector_field: str | None = None,
        k: int = 10,
        filter: Any = None,
        metric: str | None = None,
        **options: Any,
    ) -> Steps[list[list[VectorSearchResult]]]:
        """One search per query vector (rows of a 2-D array, or texts the field's embedder
        embeds), answered with one matrix product."""
        yield from self._opened()
        target = yield from self._as_of(options)
        try:
            at = self if target is None else target
            field = at._field(vector_field)
            queries = yield from at._query_vectors(query_vectors, field)
            request = at._search_request(query_vectors, queries, field, k, filter, metric, True, options)
            return (yield Hook("dkv_vector_search", request, store=target))  # type: ignore[no-any-return]
        finally:
            yield from self._done_with(target)

    @operation
    def text_search(
        self,
        /,
        query_text: str,
        k: int = 10,
        text_fields: str | Sequence[str] | None = None,
        filter: Any = None,
        **options: Any,
    ) -> Steps[list[TextSearchResult]]:
        """Full-text search: the top-``k`` records by BM25 score for ``query_text``, best first.

        Scores are BM25 over the live records as one corpus (see
        :mod:`dk_vector_plugins.textindex`); only records holding at least one query term
        match, and ties are broken by id.

        :param query_text: the query; the store's analyzer (config key ``analyzer``) makes its
            terms. An empty text is refused; a text of stop words only matches nothing.
        :param k: results wanted (> 0).
        :param text_fields: the field(s) searched, as one document per record (default: the
            configured ``text_search_fields``, else ``text_field``, else every field holding text).
        :param filter: a Query, Filter, dict shorthand or list of these, applied before ranking:
            ``min(k, matching records)`` results come back.
        :param options: ``score_threshold`` (drop weaker hits); ``as_of`` (a version number or
            a tag of a file or S3 store) searches the table as it was then.
        :returns: list of :class:`TextSearchResult`.
        """
        yield from self._opened()
        target = yield from self._as_of(options)
        try:
            request = yield from self._text_request(query_text, text_fields, k, filter, False, options)
            results = yield Hook("dkv_text_search", request, store=target)
        finally:
            yield from self._done_with(target)
        return results[0]  # type: ignore[no-any-return]

    @operation
    def text_search_batch(
        self,
        /,
        query_texts: Sequence[str],
        k: int = 10,
        text_fields: str | Sequence[str] | None = None,
        filter: Any = None,
        **options: Any,
    ) -> Steps[list[list[TextSearchResult]]]:
        """One :meth:`text_search` per query text (one snapshot, corpus statistics computed once)."""
        yield from self._opened()
        target = yield from self._as_of(options)
        try:
            request = yield from self._text_request(query_texts, text_fields, k, filter, True, options)
            return (yield Hook("dkv_text_search", request, store=target))  # type: ignore[no-any-return]
        finally:
            yield from self._done_with(target)

    @operation
    def hybrid_search(
        self,
        /,
        query_text: str,
        query_vector: npt.ArrayLike | VectorField | None = None,
        text_fields: str | Sequence[str] | None = None,
        vector_field: str | None = None,
        k: int = 10,
        config: HybridSearchConfig | None = None,
        filter: Any = None,
        metric: str | None = None,
    ) -> Steps[list[HybridSearchResult]]:
        """Text (BM25) and exact vector search, fused into one ranking (dataknobs-data's signature).

        Each side ranks its top ``max(k, min(3k, 100))`` records that satisfy ``filter`` (the
        text side: those holding a query term), then ``config.fusion_strategy`` fuses them:
        ``RRF`` (default; ``NATIVE`` is the same here) or ``WEIGHTED_SUM`` of min-max normalized
        scores. Ties are broken by id.

        :param query_text: the text query.
        :param query_vector: the vector query; ``None`` embeds ``query_text`` with the store's
            embedder (a store with ``text_field``/``embedder`` settings).
        :param text_fields: the text side's fields (``config.text_fields`` wins; default as in
            :meth:`text_search`).
        :param vector_field: the vector side's field (default: the store's ``vector_field``).
        :param k: results wanted (> 0).
        :param config: a :class:`HybridSearchConfig` (weights, fusion strategy, ``rrf_k``).
        :param filter: applied before ranking on both sides.
        :param metric: override the store's ``vector_metric``.
        :returns: list of :class:`HybridSearchResult`, best first.
        """
        yield from self._opened()
        if config is None:
            config = HybridSearchConfig()
        elif not isinstance(config, HybridSearchConfig):
            raise InvalidRequestError(f"config must be a HybridSearchConfig, got {type(config).__name__}")
        if not isinstance(query_text, str):
            raise InvalidRequestError(f"query_text must be a string, got {type(query_text).__name__}")
        field = self._field(vector_field)
        fetch = hybrid_fetch_k(k) if isinstance(k, int) and not isinstance(k, bool) and k > 0 else k
        text_request = yield from self._text_request(
            query_text, config.text_fields or text_fields, fetch, filter, False, {}
        )
        query = yield from self._query_vectors(query_text if query_vector is None else query_vector, field)
        try:
            vector_request = self._request(query, field, fetch, filter, metric, False, {})
        except InvalidVectorError:
            if query_vector is not None or np.any(query):
                raise
            # the text embeds to a zero vector, which cosine cannot rank by: the text side alone
            text_only = yield Hook("dkv_text_search", text_request)
            return fuse(text_only[0], [], config, int(k))
        # a plugin that answers either side answers it; when none does, the built-in search
        # answers both in one pass (one snapshot, and only the fused hits' records built). (With
        # the built-in plugin blocked, these steps ask every plugin and never answer None.)
        text = yield Hook("dkv_text_search", text_request, builtin=False)
        vector = yield Hook("dkv_vector_search", vector_request, builtin=False)
        if text is None and vector is None:
            return (  # type: ignore[no-any-return]
                yield Call(self._core.hybrid_search, (text_request, vector_request, config, int(k)), heavy=True)
            )
        if text is None:
            text = yield Hook("dkv_text_search", text_request)
        if vector is None:
            vector = yield Hook("dkv_vector_search", vector_request)
        return fuse(text[0], vector[0], config, int(k))

    @operation
    def _text_search_for_hybrid(
        self,
        query_text: str,
        text_fields: str | Sequence[str] | None = None,
        k: int = 10,
        filter: Any = None,
    ) -> Steps[list[tuple[Record, float]]]:
        """The text side of a hybrid search as dataknobs-data's vector mixin asks for it (a hook
        its ``hybrid_search`` calls; code written against that mixin may call or override it):
        ``(record, score)`` pairs, best first, from :meth:`text_search` (BM25, not a ``LIKE``
        scan)."""
        yield from self._opened()
        request = yield from self._text_request(query_text, text_fields, k, filter, False, {})
        results = yield Hook("dkv_text_search", request)
        return [(hit.record, hit.score) for hit in results[0]]

    @operation
    def _supports_native_hybrid(self) -> Steps[bool]:
        """Whether the store answers ``FusionStrategy.NATIVE`` itself (dataknobs-data's vector
        mixin asks before its ``hybrid_search``): always, :meth:`hybrid_search` is the store's
        own (NATIVE is RRF over its exact rankings)."""
        yield from ()
        return True

    @operation
    def bulk_embed(
        self,
        records: Iterable[Record | Mapping[str, Any]],
        text_field: str | Sequence[str] | None = None,
        vector_field: str | None = None,
        embedding_fn: Callable[[list[str]], Any] | Embedder | str | None = None,
        batch_size: int = 100,
        model_name: str | None = None,
        model_version: str | None = None,
        field_separator: str = " ",
        progress: bool | None = None,
        embedder: Embedder | Callable[[list[str]], Any] | str | None = None,
    ) -> Steps[BulkEmbedReport]:
        """Like :meth:`bulk_embed_and_store`, returning the full :class:`BulkEmbedReport`."""
        embedding_fn = self._embed_source(embedding_fn, embedder)
        yield from self._opened()
        field = self._field(vector_field)
        if embedding_fn is None and not self._has_own_embedder(field):
            raise InvalidRequestError(
                "bulk_embed_and_store: embedding_fn or embedder is required (this store has no "
                "embedder of its own: create it with vector_enabled=True or embedder=... to embed "
                "with that one)"
            )
        fs = self._schema.field(field)
        if text_field is None:
            if fs is None or fs.source is None:
                raise InvalidRequestError(
                    "bulk_embed_and_store needs text_field= (this store has no text_field setting)"
                )
            text_field = list(fs.source)
        request = BulkEmbedRequest(
            records=list(records),  # type: ignore[arg-type]
            text_field=text_field,
            vector_field=field,
            embedder=self._embedder(embedding_fn, field, model_name),
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
        an embedder object, or the name of a registered embedder (default: the store's own, as
        stored with its table, else its ``embedder`` config, ``"hashing"``; a store created with
        no vector settings at all has none, and then one is required). ``embedder=`` is
        dataknobs-data's keyword for the same (give one of the two, not both). Each vector's
        metadata describes its source text (``content_source_fields``, its separator and content
        hash). ``text_field`` defaults to the store's. A progress bar shows when stderr is a
        terminal (``progress=False`` hides it).
        """,
        returns="list[str]",
    )

    @operation
    def reembed(
        self,
        embedder: str | None = None,
        embedder_options: Mapping[str, Any] | None = None,
        text_field: str | Sequence[str] | None = None,
        vector_field: str | None = None,
        batch_size: int = 256,
        progress: bool | None = None,
    ) -> Steps[BulkEmbedReport]:
        """Re-embed every record of a vector field from its source text, and make that embedder
        (and source) the field's, stored with the table.

        This is the way to change a store's embedder or its options (opening the store with other
        ones is a :class:`SchemaMismatchError`). Each batch of ``batch_size`` records is one
        write; a record whose vector the new embedder already made from the same text is
        skipped, so running it again after an interruption resumes where it stopped. The schema
        changes with the last write; until then searches use the old embedder for text queries.
        Run it while no other process writes the store.

        :param embedder: the registered embedder (default: the field's current one).
        :param embedder_options: its options (default: the current ones if the name is the same).
        :param text_field: the source field(s) (default: the field's current source).
        :param vector_field: the field to (re-)embed (default: the store's). A new field name
            embeds into a new field, e.g. for an embedder of another dimension.
        :param progress: show a progress bar (default: when stderr is a terminal).
        :returns: a :class:`BulkEmbedReport` (ids, embedded, skipped, batches).
        """
        from .schema import public_options, secret_options

        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise InvalidRequestError(f"batch_size must be a positive int, got {batch_size!r}")
        yield from self._opened()
        field = self._field(vector_field)
        # a new field starts from the default field's settings (source, metric, embedder)
        old = self._schema.field(field) or attrs.evolve(self._schema.fields[self._schema.default_field], dim=None)
        source = text_fields(text_field) if text_field is not None else old.source
        if source is None:
            raise InvalidRequestError(f"vector field {field!r} has no source text field: pass text_field=...")
        current = old.embedder
        name = embedder or (current.name if current is not None else str(self._config["embedder"]))
        if embedder_options is None:
            options: Mapping[str, Any] = current.build_options() if current and current.name == name else {}
        else:
            options = embedder_options
        ref = EmbedderRef(name, public_options(options), secret_options(options))
        key = (-1, field, ref.name, repr(sorted(ref.options.items())))
        built = yield from self._build_embedder(field, ref, key, options.get("dimensions"))
        new = FieldSchema(metric=old.metric, source=source, separator=old.separator, embedder=ref)
        new.embedder.fingerprint = list(built[0][-1])  # type: ignore[union-attr]
        model = getattr(built[1], "model_name", None)
        new.embedder.model = model if isinstance(model, str) else None  # type: ignore[union-attr]
        identity = _identity(built[0])
        ids: list[str] = yield Call(self._core.read_locked, (_live_ids,))
        embedded = skipped = batches = 0
        with progress_bar(progress, len(ids), desc="re-embedding") as bar:
            for sl in batch_slices(len(ids), batch_size):
                stored: list[Record | None] = yield Call(self._core.read, (ids[sl],))
                todo: list[tuple[Record, str, str]] = []
                for rec in stored:
                    if rec is None:  # deleted meanwhile
                        continue
                    text = assemble_source_text(rec.data, source, new.separator)
                    if not text:
                        raise InvalidRequestError(
                            f"record {rec.id!r} has no text in {', '.join(map(repr, source))} to re-embed "
                            f"{field!r} from; give it text (or delete it) and run reembed again to resume"
                        )
                    h = compute_content_hash(text)
                    vf = rec.fields.get(field)
                    meta = vf.metadata if isinstance(vf, VectorField) else {}
                    if meta.get(_EMBEDDER_KEY) == identity and meta.get("content_hash") == h:
                        skipped += 1
                        continue
                    todo.append((rec, text, h))
                if todo:
                    mat = yield from self._embed_texts(field, [t for _, t, _ in todo], built)
                    if mat.shape[0] and (dim := self._core.table.vector_dimension(field)) and mat.shape[1] != dim:
                        raise InvalidRequestError(
                            f"embedder {ref.describe()} makes {mat.shape[1]}-dimensional vectors, field "
                            f"{field!r} holds {dim}-dimensional ones: re-embed into a new vector field "
                            f"(vector_field='{field}_{mat.shape[1]}') or a new store"
                        )
                    for (rec, _, h), vec in zip(todo, mat):
                        rec[field] = VectorField(
                            vec,
                            name=field,
                            source_field=source[0] if len(source) == 1 else None,
                            model_name=new.embedder.model or name,  # type: ignore[union-attr]
                            metadata={**content_hash_metadata(source, new.separator, h), _EMBEDDER_KEY: identity},
                        )
                    yield Call(self._core.put, ([r for r, _, _ in todo], "update"), heavy=True)
                    embedded += len(todo)
                    batches += 1
                bar.update(sl.stop - sl.start)
        self._schema.replace_field(field, new)
        self._embedders.pop(field, None)
        yield Call(self._core.touch)  # store the new schema (even when every record was done)
        return BulkEmbedReport(ids, embedded, skipped, batches)

    # -- dataknobs-data's vector-index methods and constructors -----------------------------------
    @classmethod
    def from_config(cls: type[StoreT], config: Mapping[str, Any] | None = None) -> StoreT:
        """The store of this class built from ``config`` (dataknobs-data's ``from_config``): the
        same as ``cls(config)``."""
        return cls(config)

    @operation
    def update_vector(
        self,
        record_id: str,
        vector_field: str,
        vector: npt.ArrayLike,
        metadata: Mapping[str, Any] | None = None,
    ) -> Steps[bool]:
        """Set one record's vector in ``vector_field`` (with ``metadata`` on the vector); the
        record's other fields stay. ``False`` when the record does not exist (or is deleted
        before the write lands)."""
        field = self._field(vector_field)
        got = yield Call(self._core.read, ([record_id],))
        rec = got[0]
        if rec is None:
            return False
        rec[field] = VectorField(vector, name=field, metadata=metadata)
        recs = yield from self._with_vectors([rec], "update")
        done = yield Call(self._core.put, (recs, "update"))
        return bool(done[0])

    @operation
    def delete_from_index(self, record_id: str, vector_field: str = "embedding") -> Steps[bool]:
        """Remove a record from vector search: as in dataknobs-data, the record is deleted;
        ``False`` when it did not exist."""
        self._field(vector_field)
        done = yield Call(self._core.delete, ([record_id],))
        return bool(done[0])

    @operation
    def create_vector_index(
        self,
        /,
        vector_field: str = "embedding",
        dimensions: int | None = None,
        metric: Any = "cosine",
        index_type: str = "auto",
        **kwargs: Any,
    ) -> Steps[bool]:
        """Accepted for dataknobs-data compatibility: every search here is exact, so there is no
        index to build; returns ``True``. ``dimensions`` that disagree with the field's raise
        :class:`DimensionMismatchError`."""
        from .errors import DimensionMismatchError

        yield from self._opened()
        field = self._field(vector_field)
        dim = self.vector_dimension(field)
        if dimensions is not None and dim is not None and dimensions != dim:
            raise DimensionMismatchError(f"vector field {field!r} has {dim} dimensions, not {dimensions}")
        return True

    @staticmethod
    def _vector_count(table: Any, field: str) -> int:
        """How many live records of a table hold a vector in ``field``."""
        index = table.indexes.get(field)
        if index is None:
            return 0
        return int(np.count_nonzero(index.present & table.mask(None)[: index.nrows]))

    @operation
    def drop_vector_index(self, vector_field: str = "embedding") -> Steps[bool]:
        """Accepted for dataknobs-data compatibility (there is no index to drop; the vectors stay
        searchable); returns ``True``."""
        yield from self._opened()
        self._field(vector_field)
        return True

    @operation
    def get_vector_index_stats(self, vector_field: str = "embedding") -> Steps[dict[str, Any]]:
        """What the store holds of a vector field: ``field``, ``indexed`` (``False``: searches are
        exact scans, no approximate index), ``index_type`` (``"exact"``), ``vector_count`` (live
        records with a vector), ``dimensions`` and ``metric``."""
        yield from self._opened()
        field = self._field(vector_field)
        count: int = yield Call(self._core.read_locked, (functools.partial(self._vector_count, field=field),))
        return {
            "field": field,
            "indexed": False,
            "index_type": "exact",
            "vector_count": count,
            "dimensions": self.vector_dimension(field),
            "metric": self._schema.metric(field),
        }

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
        """Open what the store connects to now and load its table (the first call does it
        otherwise; a no-op for stores that are ready when created, as sync ones are). After it,
        an async store's ``config`` and ``schema`` show the table's stored settings."""
        yield Call(_nothing)
        yield from self._opened()

    @operation
    def close(self) -> Steps[None]:
        """Release the store's resources (and whatever plugins registered with :meth:`on_close`)."""
        if not self._closed:
            self._closed = True
            try:
                yield Call(self._run_close_callbacks, heavy=True, connects=False)
            finally:
                yield Close()
        yield from self._after_close()

    disconnect = close

    def _after_close(self) -> Steps[None]:
        """What a backend releases once its storage is closed (a file store without a path: its
        temporary directory). Run by every :meth:`close`, so a close that was interrupted (a
        cancelled task) finishes with the next; it must be idempotent."""
        yield from ()


def _nothing() -> None:
    return None


class BulkEmbedMixin:
    """dataknobs-data's sync ``bulk_embed_and_store`` (``dataknobs_data.vector.bulk_embed_mixin``)
    for a store class of one's own: mixed into a class with ``exists(id)``, ``update(id,
    record)`` and ``create(record)``, it embeds records' text and writes each record through
    those methods, one at a time. Our stores have their own ``bulk_embed_and_store`` (batched,
    one write per batch, resumable); this is for classes that are not our stores.
    """

    def bulk_embed_and_store(
        self,
        records: Sequence[Record],
        text_field: str | Sequence[str],
        vector_field: str = "embedding",
        embedding_fn: Callable[[list[str]], Any] | None = None,
        batch_size: int = 100,
        model_name: str | None = None,
        model_version: str | None = None,
        field_separator: str = " ",
    ) -> list[str]:
        """Embed each record's text (``text_field``: one field or several, joined on
        ``field_separator``) with ``embedding_fn`` (texts -> one vector each), ``batch_size`` texts
        per call, and put the vector in ``vector_field`` (described by its content hash, source
        fields and separator) of the record itself; then ``update`` a record whose id exists, or
        ``create`` it. Returns the ids, in order.

        :raises ValueError: without ``embedding_fn``, or when it answers the wrong number of vectors.
        """
        if embedding_fn is None:
            raise InvalidRequestError("embedding_fn is required for bulk_embed_and_store")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise InvalidRequestError(f"batch_size must be a positive int, got {batch_size!r}")
        fields = list(text_fields(text_field) or ())
        source = fields[0] if len(fields) == 1 else ",".join(fields)  # dataknobs-data's scalar key
        embedder = FunctionEmbedder(embedding_fn, model_name)
        me: Any = self
        ids: list[str] = []
        for sl in batch_slices(len(records), batch_size):
            batch = list(records[sl])
            texts = [assemble_source_text(rec, fields, field_separator) for rec in batch]  # type: ignore[arg-type]
            mat = as_vector_batch(embed_texts(embedder, texts), None, what="embedding_fn output")
            if mat.shape[0] != len(batch):
                raise InvalidVectorError(f"embedding_fn returned {mat.shape[0]} vectors for {len(batch)} texts")
            for rec, vec, text in zip(batch, mat, texts):
                rec[vector_field] = VectorField(
                    vec,
                    name=vector_field,
                    source_field=source,
                    model_name=model_name,
                    model_version=model_version,
                    metadata=content_hash_metadata(fields, field_separator, compute_content_hash(text)),
                )
                if rec.id is not None and me.exists(rec.id):
                    me.update(rec.id, rec)
                    ids.append(str(rec.id))
                else:
                    ids.append(me.create(rec))
        return ids


class Batch:
    """Writes collected by :meth:`SyncDatabase.batch` and committed together when the block ends.

    The calls only record what to do (they return at once, on sync and async stores alike):
    ``create`` and ``upsert`` return the record's id (a new one when it has none).
    """

    def __init__(self, db: _Base) -> None:
        self._db = db
        self._ops: list[tuple[str, Any]] = []
        #: What each call returns on its own (ids, or bools for updates and deletes), in call
        #: order; set when the batch is committed.
        self.results: list[Any] | None = None

    def _record(self, kind: str, record: Record, id: str | None = None) -> str:
        if not isinstance(record, Record):
            raise InvalidRequestError(f"batch.{kind} takes a Record, got {type(record).__name__}")
        rec = record.copy(deep=False)
        if id is not None:
            rec.id = id
        elif rec.id is None:
            rec.id = new_id()
        self._ops.append((kind, rec))
        return str(rec.id)

    def create(self, record: Record) -> str:
        """Create ``record`` (a :class:`DuplicateRecordError` at commit if its id exists)."""
        return self._record("create", record)

    def upsert(self, id_or_record: str | Record, record: Record | None = None) -> str:
        """Create or replace: ``upsert(record)`` or ``upsert(id, record)``."""
        if isinstance(id_or_record, Record):
            return self._record("upsert", id_or_record)
        if record is None:
            raise InvalidRequestError("upsert(id, record) needs a record")
        return self._record("upsert", record, id_or_record)

    def update(self, id: str, record: Record) -> None:
        """Replace record ``id`` if it exists at commit time (its result says whether it did)."""
        self._record("update", record, id)

    def delete(self, id: str) -> None:
        """Delete record ``id`` (its result says whether it existed)."""
        self._ops.append(("delete", id))

    def __len__(self) -> int:
        return len(self._ops)

    def _steps(self) -> Steps[list[Any]]:
        return self._db._batch_steps(self._ops)

    def __enter__(self) -> Batch:
        if self._db._is_async:
            raise InvalidRequestError("an async store's batch is used with `async with db.batch() as b:`")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None and self._ops:
            self.results = self._db._drive(self._steps())  # type: ignore[attr-defined]

    async def __aenter__(self) -> Batch:
        if not self._db._is_async:
            raise InvalidRequestError("a sync store's batch is used with `with db.batch() as b:`")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is None and self._ops:
            self.results = await self._db._drive(self._steps())  # type: ignore[attr-defined]


def _live_ids(table: Any) -> list[str]:
    """The live ids of a table."""
    return table.ids()  # type: ignore[no-any-return]


def _query_ids(table: RecordTable, query: Query | None, expr: Expr | None) -> list[str]:
    """The ids a query answers, in its order."""
    return table.query_ids(query, expr)


def _records_of(table: RecordTable, ids: Sequence[str], expr: Expr | None, fields: Sequence[str] | None) -> list[Record]:
    """The records of ``ids`` still stored and still matching ``expr``."""
    return table.records_of(ids, expr, fields)


class SyncDatabase(_Base):
    """The synchronous store API (thread-safe)."""

    @classmethod
    def from_backend(cls, backend: str, config: Mapping[str, Any] | None = None) -> SyncDatabase:
        """A connected store of the installed backend ``backend`` (dataknobs-data's
        ``from_backend``): built by the factory of :data:`~dk_vector_plugins.registry.sync_backends`
        (any case; dataknobs-data's aliases such as ``"mem"``). An unknown backend or config key
        is a :class:`ConfigError` (a ``ValueError``)."""
        from .registry import sync_backends

        store = sync_backends.create(backend, config)
        store.connect()
        return store

    def _perform(self, step: Step | Emit) -> Any:
        """Perform one step in the calling thread; returns its answer."""
        if isinstance(step, Call):
            return step.fn(*step.args)
        if isinstance(step, Hook):
            answer = self._call_hook(step.name, step.request, step.builtin, step.store)
            return None if answer is None else self._checked(step.name, answer, step.request)
        if isinstance(step, Embed):
            return embed_texts(step.embedder, step.texts)
        if isinstance(step, Pull):
            if isinstance(step.source, AsyncIterator):
                raise InvalidRequestError(
                    "a sync store's stream_write takes an iterable of records, not an async iterable "
                    "(use the async store, or give the records as a list or generator)"
                )
            return list(itertools.islice(step.source, step.n))
        if isinstance(step, Apply):
            out = step.fn(*step.args)
            if inspect.isawaitable(out):
                if inspect.iscoroutine(out):
                    out.close()
                raise InvalidRequestError(
                    f"{getattr(step.fn, '__name__', step.fn)!r} returned an awaitable: a sync store calls "
                    "it and uses what it returns (an async function needs the async store)"
                )
            return out
        if isinstance(step, Close):
            self._core.close()
            return None
        raise InvalidRequestError(f"an operation yielded {step!r}, which is not a step")  # pragma: no cover

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
                value = self._perform(step)
            except BaseException as e:  # the operation sees it where it yielded (try/finally)
                error = e

    def _stream(self, steps: StreamSteps) -> Iterator[Any]:
        """Run a stream operation's steps as the consumer reads what it emits."""
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = steps.send(value) if error is None else steps.throw(error)
                except StopIteration:
                    return
                value, error = None, None
                if isinstance(step, Emit):
                    yield from step.items
                    continue
                try:
                    value = self._perform(step)
                except BaseException as e:  # the operation sees it where it yielded
                    error = e
        finally:
            steps.close()


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

    @classmethod
    async def from_backend(cls, backend: str, config: Mapping[str, Any] | None = None) -> AsyncDatabase:
        """A connected store of the installed backend ``backend`` (dataknobs-data's
        ``from_backend``), built as :meth:`SyncDatabase.from_backend` builds one, through
        :data:`~dk_vector_plugins.registry.async_backends`; ``connect()`` is awaited."""
        from .registry import async_backends

        store = async_backends.create(backend, config)
        await store.connect()
        return store

    async def _perform(self, step: Step | Emit) -> Any:
        """Perform one step: core work off the event loop when it may block, hooks' ``_async``
        twins, embedders awaited; returns its answer."""
        core = self._core
        if isinstance(step, Call):
            return await core.run_async(step.fn, *step.args, heavy=step.heavy, connect=step.connects)
        if isinstance(step, Hook):
            name = f"{step.name}_async"
            answer = self._call_hook(name, step.request, step.builtin, step.store)
            return None if answer is None else self._checked(name, await answer, step.request)
        if isinstance(step, Embed):
            return await embed_texts_async(step.embedder, step.texts)
        if isinstance(step, Pull):
            source = step.source
            if isinstance(source, AsyncIterator):
                items: list[Any] = []
                while len(items) < step.n:
                    try:
                        items.append(await anext(source))
                    except StopAsyncIteration:
                        break
                return items
            return list(itertools.islice(source, step.n))
        if isinstance(step, Apply):
            out = step.fn(*step.args)
            return (await out) if inspect.isawaitable(out) else out
        if isinstance(step, Close):
            await core.close_async()
            return None
        raise InvalidRequestError(f"an operation yielded {step!r}, which is not a step")  # pragma: no cover

    async def _drive(self, steps: Steps[R]) -> R:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = await self._perform(step)
            except BaseException as e:  # the operation sees it where it yielded (try/finally)
                error = e

    async def _stream(self, steps: StreamSteps) -> AsyncGenerator[Any, None]:
        """Run a stream operation's steps as the consumer reads what it emits."""
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = steps.send(value) if error is None else steps.throw(error)
                except StopIteration:
                    return
                value, error = None, None
                if isinstance(step, Emit):
                    for item in step.items:
                        yield item
                    continue
                try:
                    value = await self._perform(step)
                except BaseException as e:  # the operation sees it where it yielded
                    error = e
        finally:
            steps.close()

    async def __aenter__(self) -> AsyncDatabase:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
