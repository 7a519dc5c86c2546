"""The names-only shim's map: dataknobs-data 0.11 module paths and names -> dk_vector_plugins names.

Read by ``run_dataknobs_suite.py``, which generates a fake ``dataknobs_data`` package from it (one
module per key of ``NAME_MAP``, each only ``from <ours> import <name> as <dataknobs name>``) and
puts that package first on ``sys.path`` for the run against dk_vector_plugins. The shim adds no
behaviour: every name below is one of ours, unchanged (a class keeps its own ``__name__`` and
``__module__``).

* ``NAME_MAP``: ``{dataknobs module: {dataknobs name: "our.module:OurName"}}``. A module listed
  here exists in the shim; a dataknobs name that is not listed is absent (``ImportError``, as a
  user switching imports would get), except in the diagnostic ``--shim stub`` mode, where it is a
  placeholder that raises ``NotImplementedError`` when used (see ``SHIM_SUPPORT`` in the runner).
* ``UNMAPPED``: dataknobs names that the selected tests import and that have no counterpart in
  dk_vector_plugins (documentation and the report; the shim does nothing with this list).
* ``OUT_OF_SCOPE``: backend modules of dataknobs-data that dk_vector_plugins does not re-do (SQL,
  DuckDB, Postgres, Elasticsearch). Several selected test files import them at module level for
  lanes that the runner deselects; the shim gives each such class as an empty class that raises
  ``NotImplementedError`` when instantiated, only so that those files import. No selected test
  uses them (every test that would is deselected in both runs).
"""

from __future__ import annotations

_TOP = "dk_vector_plugins"
_MEM = "dk_vector_plugins.backends.memory"
_FILE = "dk_vector_plugins.backends.file"
_S3 = "dk_vector_plugins.backends.s3"

# the names shared by dataknobs_data and several of its submodules
_DATABASE = {"AsyncDatabase": f"{_TOP}:AsyncDatabase", "SyncDatabase": f"{_TOP}:SyncDatabase"}
_QUERY = {n: f"{_TOP}:{n}" for n in ("Filter", "Operator", "Query", "SortOrder", "SortSpec")}
_QUERY_LOGIC = {
    n: f"{_TOP}:{n}"
    for n in ("ComplexQuery", "FilterCondition", "LogicCondition", "LogicOperator", "QueryBuilder")
}
_STREAMING = {n: f"{_TOP}:{n}" for n in ("ConflictPolicy", "StreamConfig", "StreamResult")}
_REG = "dk_vector_plugins.registry"
_FACTORY = {
    **{n: f"{_TOP}:{n}" for n in ("AsyncDatabaseFactory", "DatabaseFactory")},
    "database_factory": f"{_REG}:database_factory",
    "async_database_factory": f"{_REG}:async_database_factory",
}
_CONTENT = {
    n: f"dk_vector_plugins.content:{n}"
    for n in ("CONTENT_HASH_KEY", "FIELD_SEPARATOR_KEY", "SOURCE_FIELDS_KEY", "compute_content_hash")
}
_ERRORS = {
    "DataknobsDataError": f"{_TOP}:DkvError",
    "ConfigurationError": f"{_TOP}:ConfigError",
    "DuplicateRecordError": f"{_TOP}:DuplicateRecordError",
    "RecordNotFoundError": f"{_TOP}:RecordNotFoundError",
}
_OPS = "dk_vector_plugins.vector_ops"
_VECTOR_TYPES = {n: f"{_OPS}:{n}" for n in ("VectorConfig", "VectorIndexConfig", "VectorMetadata")}
_VECTOR_OPS = {
    n: f"{_OPS}:{n}"
    for n in (
        "batch_compute_distances",
        "compute_distance",
        "compute_similarity",
        "normalize_vector",
        "validate_vector_dimensions",
    )
}
_EMBEDDING_FN = {
    n: f"dk_vector_plugins.embedding_fn:{n}" for n in ("call_embedding_fn", "call_embedding_fn_batch")
}
_VECTOR_ERRORS = {
    "VectorDimensionError": f"{_TOP}:DimensionMismatchError",
    "VectorValidationError": f"{_TOP}:InvalidVectorError",
}

NAME_MAP: dict[str, dict[str, str]] = {
    "dataknobs_data": {
        **_DATABASE,
        "Record": f"{_TOP}:Record",
        "Field": f"{_TOP}:Field",
        "VectorField": f"{_TOP}:VectorField",
        "FieldType": f"{_TOP}:FieldType",
        **_QUERY,
        **_QUERY_LOGIC,
        "ConflictPolicy": f"{_TOP}:ConflictPolicy",
        "StreamConfig": f"{_TOP}:StreamConfig",
        "StreamResult": f"{_TOP}:StreamResult",
        **_FACTORY,
        **_ERRORS,
    },
    "dataknobs_data.database": dict(_DATABASE),
    "dataknobs_data.records": {"Record": f"{_TOP}:Record"},
    "dataknobs_data.fields": {
        "Field": f"{_TOP}:Field",
        "FieldType": f"{_TOP}:FieldType",
        "VectorField": f"{_TOP}:VectorField",
    },
    "dataknobs_data.query": {
        **_QUERY,
        "VectorQuery": f"{_TOP}:VectorQuery",
        "coerce_operator": f"{_TOP}:coerce_operator",
        "coerce_sort_order": f"{_TOP}:coerce_sort_order",
    },
    "dataknobs_data.query_logic": {
        **_QUERY_LOGIC,
        "Condition": "dk_vector_plugins.query_logic:Condition",
        "condition_from_dict": "dk_vector_plugins.query_logic:condition_from_dict",
    },
    "dataknobs_data.streaming": {
        **_STREAMING,
        "resolve_conflict_write": "dk_vector_plugins.streaming:resolve_conflict_write",
    },
    "dataknobs_data.factory": dict(_FACTORY),
    "dataknobs_data.exceptions": dict(_ERRORS),
    "dataknobs_data.backends": {
        "sync_backends": f"{_REG}:sync_backends",
        "async_backends": f"{_REG}:async_backends",
        "SyncMemoryDatabase": f"{_MEM}:MemoryDatabase",
        "AsyncMemoryDatabase": f"{_MEM}:AsyncMemoryDatabase",
    },
    "dataknobs_data.backends.memory": {
        "SyncMemoryDatabase": f"{_MEM}:MemoryDatabase",
        "AsyncMemoryDatabase": f"{_MEM}:AsyncMemoryDatabase",
    },
    "dataknobs_data.backends.file": {
        "SyncFileDatabase": f"{_FILE}:FileDatabase",
        "AsyncFileDatabase": f"{_FILE}:AsyncFileDatabase",
    },
    "dataknobs_data.backends.s3": {"SyncS3Database": f"{_S3}:S3Database"},
    "dataknobs_data.backends.s3_async": {"AsyncS3Database": f"{_S3}:AsyncS3Database"},
    "dataknobs_data.vector": {
        "DistanceMetric": f"{_TOP}:DistanceMetric",
        "VectorField": f"{_TOP}:VectorField",
        "VectorSearchResult": f"{_TOP}:VectorSearchResult",
        "FusionStrategy": f"{_TOP}:FusionStrategy",
        "HybridSearchConfig": f"{_TOP}:HybridSearchConfig",
        "HybridSearchResult": f"{_TOP}:HybridSearchResult",
        **_VECTOR_ERRORS,
        **_VECTOR_TYPES,
        **_VECTOR_OPS,
        **_EMBEDDING_FN,
        "VectorTextSynchronizer": "dk_vector_plugins.vector_sync:VectorTextSynchronizer",
        "IncrementalVectorizer": "dk_vector_plugins.vector_sync:IncrementalVectorizer",
    },
    "dataknobs_data.vector.types": {
        "DistanceMetric": f"{_TOP}:DistanceMetric",
        "VectorSearchResult": f"{_TOP}:VectorSearchResult",
        **_VECTOR_TYPES,
    },
    "dataknobs_data.vector.operations": dict(_VECTOR_OPS),
    "dataknobs_data.vector.embedding_fn": dict(_EMBEDDING_FN),
    "dataknobs_data.vector.sync": {
        "VectorTextSynchronizer": "dk_vector_plugins.vector_sync:VectorTextSynchronizer"
    },
    "dataknobs_data.vector.migration": {
        "IncrementalVectorizer": "dk_vector_plugins.vector_sync:IncrementalVectorizer"
    },
    "dataknobs_data.vector.exceptions": dict(_VECTOR_ERRORS),
    "dataknobs_data.vector.hybrid": {
        "FusionStrategy": f"{_TOP}:FusionStrategy",
        "HybridSearchConfig": f"{_TOP}:HybridSearchConfig",
        "HybridSearchResult": f"{_TOP}:HybridSearchResult",
        "reciprocal_rank_fusion": "dk_vector_plugins.search:reciprocal_rank_fusion",
        "weighted_score_fusion": "dk_vector_plugins.search:weighted_score_fusion",
    },
    "dataknobs_data.vector.content": dict(_CONTENT),
    "dataknobs_data.vector.bulk_embed_mixin": {"BulkEmbedMixin": f"{_TOP}:BulkEmbedMixin"},
    "dataknobs_data.testing": {"DeterministicEmbedder": "dk_vector_plugins.testing:DeterministicEmbedder"},
}

# Our class names that differ from dataknobs's: test ids built from ``cls.__name__`` (parametrize
# ids) are translated back to dataknobs's spelling when the two runs are compared.
CLASS_RENAMES: dict[str, str] = {
    "MemoryDatabase": "SyncMemoryDatabase",
    "FileDatabase": "SyncFileDatabase",
    "S3Database": "SyncS3Database",
}

UNMAPPED: dict[str, list[str]] = {
    "dataknobs_data.backends.file": ["CSVFormat", "FileFormat", "FileLock", "JSONFormat", "ParquetFormat"],
    "dataknobs_data.vector": [
        "AsyncVectorOperationsMixin",
        "ChangeTracker",
        "SyncVectorOperationsMixin",
        "VectorOperationsMixin",
    ],
}

OUT_OF_SCOPE: dict[str, list[str]] = {
    "dataknobs_data.backends.sqlite": ["SyncSQLiteDatabase"],
    "dataknobs_data.backends.sqlite_async": ["AsyncSQLiteDatabase"],
    "dataknobs_data.backends.duckdb": ["SyncDuckDBDatabase", "AsyncDuckDBDatabase"],
    "dataknobs_data.backends.postgres": ["SyncPostgresDatabase", "AsyncPostgresDatabase"],
    "dataknobs_data.backends.elasticsearch": ["SyncElasticsearchDatabase"],
    "dataknobs_data.backends.elasticsearch_async": ["AsyncElasticsearchDatabase"],
}
