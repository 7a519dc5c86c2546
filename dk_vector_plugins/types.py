"""The contract's value types: what hooks receive and return, and what a store offers a plugin.

This is a leaf module: at run time it imports only ``attrs``, ``numpy``, ``pluggy`` and the
exception classes, so :mod:`dk_vector_plugins.hookspecs` (which imports only this module) has no
import cycle, also for a type checker. Everything here is re-exported from the package.

* requests and results: :class:`SearchRequest`, :class:`VectorSearchResult`,
  :class:`TextSearchRequest`, :class:`TextSearchResult`, :class:`HybridSearchConfig`,
  :class:`FusionStrategy`, :class:`HybridSearchResult`, :class:`BulkEmbedRequest`,
  :class:`BulkEmbedReport`;
* registrations: :class:`BackendSpec`, :class:`OptionSpec`, :class:`EmbedderSpec`,
  :class:`Embedder`, :class:`AnalyzerSpec`, :class:`Analyzer`;
* what a hook implementation is given as ``db``: :class:`Store` (sync) or :class:`AsyncStore`,
  both exposing the shared :class:`Core`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import attrs
import numpy as np
import numpy.typing as npt
import pluggy

from .errors import ConfigError, InvalidRequestError

if TYPE_CHECKING:  # annotations only: records and query never import this module's importers
    from .query import Expr
    from .records import Record

__all__ = [
    "Analyzer",
    "AnalyzerSpec",
    "AsyncStore",
    "BackendSpec",
    "BulkEmbedReport",
    "BulkEmbedRequest",
    "Core",
    "Embedder",
    "EmbedderSpec",
    "FusionStrategy",
    "HybridSearchConfig",
    "HybridSearchResult",
    "OptionSpec",
    "SearchRequest",
    "Secret",
    "Store",
    "TextSearchRequest",
    "TextSearchResult",
    "VectorSearchResult",
]

T = TypeVar("T")

#: One result list per query: what every search hook returns.
Results = list[list["VectorSearchResult"]]


# --- search ----------------------------------------------------------------------------------


@attrs.frozen
class SearchRequest:
    """A validated vector search (built by the store; hooks receive it).

    :ivar queries: float32 array of shape ``(b, d)``: one row per query vector. A single search
        is a batch of one; hooks always answer one result list per row.
    :ivar vector_field: the vector field to search.
    :ivar k: how many results per query (> 0; more than the store holds is fine).
    :ivar filter: the compiled filter expression, or ``None``.
    :ivar metric: ``"cosine"``, ``"euclidean"`` or ``"dot_product"``.
    :ivar batch: whether the caller asked for one list per query (the store unwraps a single
        query's list itself; hooks never look at this).
    :ivar options: extra options (``score_threshold``; plugin-specific keys).
    """

    queries: npt.NDArray[np.float32]
    vector_field: str = "embedding"
    k: int = 10
    filter: Expr | None = None
    metric: str = "cosine"
    batch: bool = False
    options: dict[str, Any] = attrs.field(factory=dict)

    @property
    def query(self) -> npt.NDArray[np.float32]:
        """The first (for a single search, the only) query vector."""
        q: npt.NDArray[np.float32] = self.queries[0]
        return q


@attrs.frozen
class VectorSearchResult:
    """One hit of a vector search.

    :ivar record: a copy of the matching record (with its vectors).
    :ivar score: higher is better for every metric (cosine similarity, dot product, or
        ``1 / (1 + distance)`` for euclidean).
    :ivar source_text: the text the vector was computed from, when the vector field names its
        ``source_field`` and the record holds it.
    :ivar vector_field: the field searched.
    :ivar metadata: extra facts: the metric, and the distance for euclidean.
    :ivar distance: the L2 distance for euclidean searches, else ``None``.
    """

    record: Record
    score: float
    source_text: str | None = None
    vector_field: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    distance: float | None = None

    @property
    def id(self) -> str | None:
        """The record's id."""
        return self.record.id

    def __lt__(self, other: object) -> bool:
        """Results order by score (``sorted(hits, reverse=True)``: best first), as in dataknobs-data."""
        if not isinstance(other, VectorSearchResult):
            return NotImplemented
        return self.score < other.score

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: id, score, distance, vector field, source text and the record's data."""
        vectors = self.record.vector_fields()
        data = {k: v for k, v in self.record.data.items() if k not in vectors}
        return {
            "id": self.record.id,
            "score": self.score,
            "distance": self.distance,
            "vector_field": self.vector_field,
            "source_text": self.source_text,
            "data": data,
        }


@attrs.frozen
class TextSearchRequest:
    """A validated full-text (BM25) search (built by the store; the text-search hooks receive it).

    :ivar queries: the query texts; a single search is a batch of one, and hooks always answer
        one result list per query.
    :ivar terms: each query's terms, as the store's analyzer made them (an engine that analyzes
        text itself may use ``queries`` instead).
    :ivar text_fields: the fields searched, as one document per record (their terms together).
    :ivar k: how many results per query (> 0).
    :ivar filter: the compiled filter expression, or ``None``: it applies before ranking.
    :ivar batch: whether the caller asked for one list per query.
    :ivar options: extra options (``score_threshold``; plugin-specific keys).
    """

    queries: tuple[str, ...]
    terms: tuple[tuple[str, ...], ...]
    text_fields: tuple[str, ...]
    k: int = 10
    filter: Expr | None = None
    batch: bool = False
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class TextSearchResult:
    """One hit of a full-text search.

    :ivar record: a copy of the matching record.
    :ivar score: its BM25 score for the query (higher is better), over the live records as one
        corpus.
    :ivar text_fields: the fields searched.
    :ivar metadata: extra facts a plugin that answers text search may add (the built-in BM25
        search adds none).
    """

    record: Record
    score: float
    text_fields: tuple[str, ...] = ()
    metadata: dict[str, Any] = attrs.field(factory=dict)

    @property
    def id(self) -> str | None:
        """The record's id."""
        return self.record.id

    def __lt__(self, other: object) -> bool:
        """Results order by score (``sorted(hits, reverse=True)``: best first)."""
        if not isinstance(other, TextSearchResult):
            return NotImplemented
        return self.score < other.score

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: id, score, the fields searched and the record's data (without vectors)."""
        vectors = self.record.vector_fields()
        data = {k: v for k, v in self.record.data.items() if k not in vectors}
        return {"id": self.record.id, "score": self.score, "text_fields": list(self.text_fields), "data": data}


class FusionStrategy(enum.Enum):
    """How :meth:`~dk_vector_plugins.SyncDatabase.hybrid_search` combines its two rankings
    (dataknobs-data's names and values)."""

    #: Reciprocal rank fusion: ``sum(weight / (rrf_k + rank))`` over the rankings a record is in.
    RRF = "rrf"
    #: Min-max normalized scores, summed with the normalized weights.
    WEIGHTED_SUM = "weighted_sum"
    #: The backend's own hybrid search: here the same as RRF (both sides are exact already).
    NATIVE = "native"


def _weight(name: str) -> Callable[[Any, Any, Any], None]:
    def check(_: Any, __: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise InvalidRequestError(f"{name} must be a number between 0 and 1, got {value!r}")

    return check


def _fusion(value: Any) -> FusionStrategy:
    if isinstance(value, FusionStrategy):
        return value
    try:
        return FusionStrategy(value.lower() if isinstance(value, str) else value)
    except ValueError:
        raise InvalidRequestError(
            f"unknown fusion strategy {value!r}; choose one of {', '.join(s.value for s in FusionStrategy)}"
        ) from None


def _rrf_k(_: Any, __: Any, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidRequestError(f"rrf_k must be a positive int, got {value!r}")


def _field_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(f, str) and f for f in value):
        raise InvalidRequestError(f"text_fields must be a non-empty list of field names, got {value!r}")
    return list(value)


@attrs.define
class HybridSearchConfig:
    """How a hybrid search weighs and fuses its text and vector rankings (dataknobs-data's
    ``HybridSearchConfig``; a bad value raises :class:`~dk_vector_plugins.InvalidRequestError`,
    a ``ValueError``).

    :ivar text_weight: weight of the text ranking, 0 to 1.
    :ivar vector_weight: weight of the vector ranking, 0 to 1.
    :ivar fusion_strategy: a :class:`FusionStrategy` (or its value, e.g. ``"rrf"``).
    :ivar rrf_k: the RRF constant (> 0).
    :ivar text_fields: the fields of the text side (``None``: the search's ``text_fields``).
    """

    text_weight: float = attrs.field(default=0.5, validator=_weight("text_weight"))
    vector_weight: float = attrs.field(default=0.5, validator=_weight("vector_weight"))
    fusion_strategy: FusionStrategy = attrs.field(default=FusionStrategy.RRF, converter=_fusion)
    rrf_k: int = attrs.field(default=60, validator=_rrf_k)
    text_fields: list[str] | None = attrs.field(default=None, converter=_field_list)

    def normalize_weights(self) -> tuple[float, float]:
        """The weights scaled to sum to 1 (both 0: half each)."""
        total = self.text_weight + self.vector_weight
        if total == 0:
            return 0.5, 0.5
        return self.text_weight / total, self.vector_weight / total


@attrs.define
class HybridSearchResult:
    """One hit of a hybrid search (dataknobs-data's ``HybridSearchResult``).

    :ivar record: a copy of the matching record.
    :ivar combined_score: the fused score (higher is better).
    :ivar text_score: its BM25 score, or ``None`` when the text side did not rank it.
    :ivar vector_score: its vector score, or ``None`` when the vector side did not rank it.
    :ivar text_rank: its 1-based rank on the text side, or ``None``.
    :ivar vector_rank: its 1-based rank on the vector side, or ``None``.
    :ivar metadata: the fusion strategy and the weights used.
    """

    record: Record
    combined_score: float
    text_score: float | None = None
    vector_score: float | None = None
    text_rank: int | None = None
    vector_rank: int | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)

    @property
    def id(self) -> str | None:
        """The record's id."""
        return self.record.id

    @property
    def score(self) -> float:
        """The combined score (the name every other result type uses)."""
        return self.combined_score

    def __lt__(self, other: object) -> bool:
        """``sorted(results)`` puts the best first, as in dataknobs-data."""
        if not isinstance(other, HybridSearchResult):
            return NotImplemented
        return self.combined_score > other.combined_score

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: id, the scores and ranks, and the record's data (without vectors)."""
        vectors = self.record.vector_fields()
        data = {k: v for k, v in self.record.data.items() if k not in vectors}
        return {
            "id": self.record.id,
            "score": self.combined_score,
            "text_score": self.text_score,
            "vector_score": self.vector_score,
            "text_rank": self.text_rank,
            "vector_rank": self.vector_rank,
            "data": data,
        }


# --- configuration and registration ------------------------------------------------------------


@attrs.frozen
class OptionSpec:
    """A configuration key: its type(s), default, and which backends accept it.

    :ivar types: accepted Python types (``None`` is always accepted for an optional key).
    :ivar backends: backend names that accept the key; ``None`` means every backend.
    :ivar convert: normalizes a value (and raises :class:`ConfigError` for a bad one).
    :ivar aliases: other spellings accepted for the key.
    :ivar implies: for a given value, defaults of *other* keys that follow from it (applied only
        where the configuration leaves those keys unset), e.g. a plugin's ``executor="dask"``
        implies ``load_vectors=False``.
    :ivar minimum: the smallest accepted number (inclusive), checked before ``convert``.
    :ivar above: numbers must be greater than this (exclusive lower bound).
    :ivar maximum: the largest accepted number (inclusive).
    :ivar choices: the accepted values (for a string key such as ``consistency``).
    :ivar secret: the value is a credential: never shown (``repr`` of the store and of its
        config, error messages, the CLI).
    """

    name: str
    types: tuple[type, ...]
    default: Any = None
    doc: str = ""
    required: bool = False
    backends: tuple[str, ...] | None = None
    convert: Callable[[Any], Any] | None = None
    aliases: tuple[str, ...] = ()
    implies: Callable[[Any], Mapping[str, Any]] | None = None
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    secret: bool = False

    def shown(self, value: Any) -> str:
        """``value`` as messages and reprs show it (``'***'`` for a secret)."""
        return "'***'" if self.secret and value is not None else repr(value)

    def check(self, value: Any, backend: str) -> Any:
        """Validate and normalize ``value``: type, range and choices, then ``convert``."""
        if value is None and not self.required:
            return None
        ok = isinstance(value, self.types) and not (
            isinstance(value, bool) and bool not in self.types and int in self.types
        )
        if not ok:
            names = " or ".join(t.__name__ for t in self.types)
            raise ConfigError(
                f"config key {self.name!r} (backend {backend!r}) must be {names}, "
                f"got {type(value).__name__} {self.shown(value)}"
            )
        if self.choices is not None and value not in self.choices:
            raise ConfigError(
                f"config key {self.name!r} must be one of {', '.join(map(repr, self.choices))}, got {self.shown(value)}"
            )
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bounds = (
                (self.minimum, value >= self.minimum if self.minimum is not None else True, ">="),
                (self.above, value > self.above if self.above is not None else True, ">"),
                (self.maximum, value <= self.maximum if self.maximum is not None else True, "<="),
            )
            for bound, ok, op in bounds:
                if not ok:
                    raise ConfigError(f"config key {self.name!r} must be {op} {bound}, got {self.shown(value)}")
        return self.convert(value) if self.convert else value


@attrs.frozen
class BackendSpec:
    """A storage backend offered by a plugin.

    :ivar name: the ``backend`` config value that selects it.
    :ivar sync_class: the class built by :class:`~dk_vector_plugins.DatabaseFactory` (called as
        ``cls(config, plugin_manager=pm)``).
    :ivar async_class: the class built by :class:`~dk_vector_plugins.AsyncDatabaseFactory`.
    :ivar options: the backend's own config keys.
    """

    name: str
    sync_class: Callable[..., Store]
    async_class: Callable[..., AsyncStore] | None = None
    options: tuple[OptionSpec, ...] = ()
    description: str = ""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors: ``embed(texts)`` returns a float32 array of shape ``(len(texts), d)``."""

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed a batch of texts."""
        ...  # pragma: no cover


@attrs.frozen
class EmbedderSpec:
    """An embedder offered by a plugin: ``factory(dimensions=..., **options)`` builds it."""

    name: str
    factory: Callable[..., Embedder]
    description: str = ""


@runtime_checkable
class Analyzer(Protocol):
    """Turns a text into the terms of the full-text index: ``analyze(text)`` returns them in
    order (a term repeated counts as often as it appears). Queries are analyzed the same way."""

    def analyze(self, text: str) -> list[str]:
        """The terms of ``text``."""
        ...  # pragma: no cover


@attrs.frozen
class AnalyzerSpec:
    """An analyzer offered by a plugin: ``factory(**options)`` builds it (a bad option raises
    :class:`~dk_vector_plugins.ConfigError`)."""

    name: str
    factory: Callable[..., Analyzer]
    description: str = ""


# --- bulk embedding --------------------------------------------------------------------------


@attrs.frozen
class BulkEmbedRequest:
    """What to embed and where to store it (see :func:`~dk_vector_plugins.hookspecs.dkv_bulk_embed`)."""

    records: Sequence[Record]
    text_field: str | Sequence[str]
    vector_field: str
    embedder: Embedder
    batch_size: int = 100
    model_name: str | None = None
    model_version: str | None = None
    field_separator: str = " "
    progress: bool | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size <= 0:
            raise InvalidRequestError(f"batch_size must be a positive int, got {self.batch_size!r}")
        fields = [self.text_field] if isinstance(self.text_field, str) else list(self.text_field)
        if not fields or not all(isinstance(f, str) and f for f in fields):
            raise InvalidRequestError(
                f"text_field must be a field name or a list of them, got {self.text_field!r}"
            )
        if not isinstance(self.vector_field, str) or not self.vector_field:
            raise InvalidRequestError(f"vector_field must be a non-empty string, got {self.vector_field!r}")


def _ids_repr(ids: list[str]) -> str:
    head = ", ".join(map(repr, ids[:3]))
    return f"[{head}{', ...' if len(ids) > 3 else ''}] ({len(ids)} ids)"


@attrs.frozen
class BulkEmbedReport:
    """What a bulk embed did: ids in input order, and counts (its repr shows the first ids only)."""

    ids: list[str] = attrs.field(repr=_ids_repr)
    embedded: int = 0
    skipped: int = 0
    batches: int = 0


# --- what a hook implementation is given -------------------------------------------------------


class Core(Protocol):
    """The shared store core (:class:`~dk_vector_plugins.core.StoreCore`), as plugins see it.

    Every built-in store runs on one; a third-party backend may too (subclass a built-in store
    class or build one), and then the default search and bulk-embed implementations serve it.
    """

    def refresh(self) -> None:
        """Bring the in-memory table up to date with its storage (one cheap check on file/S3)."""

    def vector_search(self, request: SearchRequest) -> Results:
        """The built-in exact search: one result list per query of ``request``."""

    def text_search(self, request: TextSearchRequest) -> list[list[TextSearchResult]]:
        """The built-in BM25 search: one result list per query of ``request``."""

    def read_locked(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn`` on the refreshed in-memory table (a ``RecordTable``) under the store's lock."""

    async def run_async(self, fn: Callable[..., T], *args: Any, heavy: bool = False) -> T:
        """Run core work for an async store: in a worker thread when it may block (I/O, or
        ``heavy`` CPU work), after opening the store's connection if it has one."""


class _StoreBase(Protocol):
    """What every store offers a hook implementation, sync or async."""

    @property
    def backend_name(self) -> str:
        """The backend name (``"memory"``, ``"file"``, ``"s3"``, or a plugin's)."""

    @property
    def config(self) -> Mapping[str, Any]:
        """The validated configuration (read-only)."""

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The plugin manager the store calls its hooks on."""

    @property
    def core(self) -> Core:
        """The shared store core."""

    def vector_dimension(self, vector_field: str = "embedding") -> int | None:
        """The dimension of a vector field: configured, or fixed by the first stored vector."""

    def on_close(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` when the store is closed."""


@runtime_checkable
class Store(_StoreBase, Protocol):
    """What a sync store offers the hook implementations it is passed to as ``db``."""

    def read_batch(self, ids: Iterable[str]) -> list[Record | None]:
        """Copies of the records, ``None`` for missing ids."""

    def upsert_batch(self, records: Iterable[Record]) -> list[str]:
        """Create or replace records in one write; returns their ids."""


@runtime_checkable
class AsyncStore(_StoreBase, Protocol):
    """What an async store offers the hook implementations it is passed to as ``db``."""

    def read_batch(self, ids: Iterable[str]) -> Awaitable[list[Record | None]]:
        """Copies of the records, ``None`` for missing ids."""

    def upsert_batch(self, records: Iterable[Record]) -> Awaitable[list[str]]:
        """Create or replace records in one write; returns their ids."""


# --- credentials in configuration -----------------------------------------------------------


class Secret:
    """A credential (an API key) that is never shown: its ``repr`` and ``str`` are ``'***'``.

    Give an API key in a store's config as ``embedder_options={"api_key": Secret("sk-...")}`` so
    that the store's ``repr`` hides it too; :meth:`get` returns the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        if isinstance(value, Secret):
            value = value.get()
        if not isinstance(value, str):
            raise ConfigError(f"a secret must be a string, got {type(value).__name__}")
        self._value = value

    def get(self) -> str:
        """The secret value (for the request header only)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __getstate__(self) -> str:
        return self._value

    def __setstate__(self, state: str) -> None:
        self._value = state
