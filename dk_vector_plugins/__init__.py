"""dk_vector_plugins: records with metadata and embeddings, exact vector search, pluggable backends.

Start here::

    from dk_vector_plugins import DatabaseFactory, Record, VectorField

    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    db.create(Record({"text": "hello", "embedding": VectorField([0.1, 0.2, 0.3])}))
    hits = db.vector_search([0.1, 0.2, 0.25], k=5)
"""

from __future__ import annotations

from .core import StoreCore, WriteBatch
from .database import AsyncDatabase, BulkEmbedMixin, SyncDatabase
from .embed import FunctionEmbedder, HashingEmbedder
from .errors import (
    ConfigError,
    ConflictError,
    DimensionMismatchError,
    DkvError,
    DkvPerformanceWarning,
    DuplicateRecordError,
    FilterError,
    InvalidRequestError,
    InvalidVectorError,
    PluginError,
    RecordNotFoundError,
    SchemaMismatchError,
    StorageError,
    VersionNotFoundError,
)
from .factory import AsyncDatabaseFactory, DatabaseFactory
from .hookspecs import hookimpl, hookspec
from .host import PluginLoadWarning, list_plugins, make_plugin_manager
from .query import (
    DistanceMetric,
    Filter,
    Operator,
    Query,
    SortOrder,
    SortSpec,
    VectorQuery,
    coerce_operator,
    coerce_sort_order,
    compile_filter,
)
from .query_logic import ComplexQuery, FilterCondition, LogicCondition, LogicOperator, QueryBuilder
from .records import Field, FieldType, Record, VectorField
from .search import apply_threshold
from .streaming import ConflictPolicy, StreamConfig, StreamResult
from .types import (
    Analyzer,
    AnalyzerSpec,
    AsyncStore,
    BackendSpec,
    BulkEmbedReport,
    BulkEmbedRequest,
    Embedder,
    EmbedderSpec,
    FusionStrategy,
    HybridSearchConfig,
    HybridSearchResult,
    OptionSpec,
    SearchRequest,
    Store,
    TextSearchRequest,
    TextSearchResult,
    VectorSearchResult,
)
from .vectors import METRICS, normalize_metric

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("dk_vector_plugins")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+source"

__all__ = [
    "METRICS",
    "Analyzer",
    "AnalyzerSpec",
    "AsyncDatabase",
    "AsyncDatabaseFactory",
    "AsyncStore",
    "BackendSpec",
    "BulkEmbedMixin",
    "BulkEmbedReport",
    "BulkEmbedRequest",
    "ComplexQuery",
    "ConfigError",
    "ConflictError",
    "ConflictPolicy",
    "DatabaseFactory",
    "DimensionMismatchError",
    "DistanceMetric",
    "DkvError",
    "DkvPerformanceWarning",
    "DuplicateRecordError",
    "Embedder",
    "EmbedderSpec",
    "Field",
    "FieldType",
    "Filter",
    "FilterCondition",
    "FilterError",
    "FunctionEmbedder",
    "FusionStrategy",
    "HashingEmbedder",
    "HybridSearchConfig",
    "HybridSearchResult",
    "InvalidRequestError",
    "InvalidVectorError",
    "LogicCondition",
    "LogicOperator",
    "Operator",
    "OptionSpec",
    "PluginError",
    "PluginLoadWarning",
    "Query",
    "QueryBuilder",
    "Record",
    "RecordNotFoundError",
    "SchemaMismatchError",
    "SearchRequest",
    "SortOrder",
    "SortSpec",
    "Store",
    "StorageError",
    "StoreCore",
    "StreamConfig",
    "StreamResult",
    "SyncDatabase",
    "TextSearchRequest",
    "TextSearchResult",
    "VersionNotFoundError",
    "VectorField",
    "VectorQuery",
    "VectorSearchResult",
    "WriteBatch",
    "__version__",
    "apply_threshold",
    "coerce_operator",
    "coerce_sort_order",
    "compile_filter",
    "hookimpl",
    "hookspec",
    "list_plugins",
    "make_plugin_manager",
    "normalize_metric",
]
