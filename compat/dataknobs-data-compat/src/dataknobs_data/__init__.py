"""dataknobs-data 0.11's ``dataknobs_data`` names, on dk_vector_plugins (names only).

Installed by the optional distribution ``dk-vector-plugins-dataknobs-compat``. Every name here
is a dk_vector_plugins object; see ``docs/COMPATIBILITY.md`` of dk_vector_plugins for what
differs from dataknobs-data.
"""

from __future__ import annotations

from dk_vector_plugins import (
    AsyncDatabase,
    AsyncDatabaseFactory,
    ComplexQuery,
    ConflictPolicy,
    DatabaseFactory,
    DuplicateRecordError,
    Field,
    FieldType,
    Filter,
    FilterCondition,
    LogicCondition,
    LogicOperator,
    Operator,
    Query,
    QueryBuilder,
    Record,
    RecordNotFoundError,
    SortOrder,
    SortSpec,
    StreamConfig,
    StreamResult,
    SyncDatabase,
    VectorField,
)
from dk_vector_plugins import ConfigError as ConfigurationError
from dk_vector_plugins import DkvError as DataknobsDataError
from dk_vector_plugins.registry import async_database_factory, database_factory

__all__ = [
    "AsyncDatabase",
    "AsyncDatabaseFactory",
    "ComplexQuery",
    "ConfigurationError",
    "ConflictPolicy",
    "DataknobsDataError",
    "DatabaseFactory",
    "DuplicateRecordError",
    "Field",
    "FieldType",
    "Filter",
    "FilterCondition",
    "LogicCondition",
    "LogicOperator",
    "Operator",
    "Query",
    "QueryBuilder",
    "Record",
    "RecordNotFoundError",
    "SortOrder",
    "SortSpec",
    "StreamConfig",
    "StreamResult",
    "SyncDatabase",
    "VectorField",
    "async_database_factory",
    "database_factory",
]
