#!/usr/bin/env python3
"""Group the tests that pass on dataknobs-data but not on dk_vector_plugins by root cause.

Input: the ``--json`` outputs of two runs of ``run_dataknobs_suite.py``: ``--shim strict`` (the
headline: a missing name is an ``ImportError``) and ``--shim stub`` (a missing name is a
placeholder, so the tests behind it run on until their first real failure)::

    python3 compat/run_dataknobs_suite.py --json strict.json
    python3 compat/run_dataknobs_suite.py --keep --shim stub --json stub.json
    python3 compat/gaps.py strict.json stub.json [--tests] [--json OUT]

The first file may also be a ``--shim package`` run (``gaps.py pkg.json stub.json``): the same
causes, for the tests that fail with the compatibility distribution.

Each test that passes on dataknobs-data and not on ours (strict) gets one cause: when it passes in
the stub run, the names its file imports at module level (``import``); otherwise the first rule
of ``RULES`` whose pattern matches its stub-run failure message (a test can fail for further
reasons once its first cause is fixed). Prints the causes sorted by count, each with one
representative message; ``--tests`` adds every test under its cause. See compat/GAPS.md.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from name_map import NAME_MAP, OUT_OF_SCOPE  # noqa: E402

# (cause id, pattern on "<nodeid> | <message>" of the stub run, title). First match wins; the
# order puts specific patterns before general ones.
RULES: list[tuple[str, str, str]] = [
    # --- names and modules with no counterpart, met when a test uses them (stub placeholders)
    (
        "helper-deterministic-embedder",
        r"testing\.DeterministicEmbedder has no counterpart",
        "test helper dataknobs_data.testing.DeterministicEmbedder (an async TextEmbedder)",
    ),
    (
        "query-logic",
        r"(QueryBuilder|ComplexQuery|LogicOperator|FilterCondition|LogicCondition)\b.*no counterpart",
        "boolean queries: query_logic.ComplexQuery / QueryBuilder / LogicOperator / FilterCondition / LogicCondition",
    ),
    (
        "embedding-fn-sync-migration",
        r"(call_embedding_fn|VectorTextSynchronizer|IncrementalVectorizer|BulkEmbedMixin|ChangeTracker)\b.*no counterpart",
        "embedding helpers: vector.embedding_fn.call_embedding_fn, VectorTextSynchronizer, IncrementalVectorizer, BulkEmbedMixin",
    ),
    ("field-type", r"FieldType\b.*no counterpart", "fields.FieldType enum (Field(name, value, type=...))"),
    ("distance-metric", r"DistanceMetric\b.*no counterpart", "vector.types.DistanceMetric enum"),
    (
        "vector-types",
        r"(VectorIndexConfig|VectorMetadata|VectorConfig|normalize_vector|validate_vector_dimensions|"
        r"compute_distance|compute_similarity)\b.*no counterpart",
        "vector helpers: VectorConfig, VectorIndexConfig, VectorMetadata, normalize_vector, validate_vector_dimensions, compute_*",
    ),
    ("vector-query", r"VectorQuery\b.*no counterpart", "query.VectorQuery"),
    (
        "vector-mixins",
        r"(Sync|Async)?VectorOperationsMixin|VectorOperationsMixin'> is",
        "vector.SyncVectorOperationsMixin / AsyncVectorOperationsMixin (VectorOperationsMixin = the async one)",
    ),
    (
        "coerce",
        r"coerce_(operator|sort_order)\b.*no counterpart",
        "query.coerce_operator / coerce_sort_order",
    ),
    (
        "conflict-policy",
        r"ConflictPolicy\b.*no counterpart",
        "streaming.ConflictPolicy / StreamConfig / resolve_conflict_write",
    ),
    (
        "database-factory-instance",
        r"database_factory\b.*no counterpart",
        "module-level factory instances dataknobs_data.database_factory / async_database_factory",
    ),
    (
        "file-formats-lock",
        r"(FileLock|JSONFormat|CSVFormat|ParquetFormat|FileFormat)\b.*no counterpart",
        "file backend internals: backends.file.FileLock, JSONFormat, CSVFormat, ParquetFormat",
    ),
    (
        "structured-config-classes",
        r"^tests/test_unknown_config_keys\.py::test_(a_declared_alias_reaches_its_field|"
        r"every_backend_config_opts_into_the_guard|every_declared_alias_is_consumed_by_the_normalizer)"
        r"\[.*NOT COLLECTED",
        "dataknobs_common StructuredConfig classes per backend (CONFIG_CLS, _INPUT_KEYS, _normalize_dict)",
    ),
    (
        "backend-registries",
        r"^tests/test_(backend_factory_parity|unknown_config_keys)\.py.*(NOT COLLECTED|async_backends|sync_backends)",
        "backend registries dataknobs_data.backends.sync_backends / async_backends (and the config classes they list)",
    ),
    (
        "lane-parity-module",
        r"^tests/test_vector_mixin_lane_parity\.py.*NOT COLLECTED",
        "backend classes defined in dataknobs_data.backends.<name> (the sweep keeps classes whose __module__ is that module)",
    ),
    # --- the database classes
    (
        "from-backend",
        r"has no attribute 'from_backend'",
        "SyncDatabase.from_backend / AsyncDatabase.from_backend(backend, config)",
    ),
    ("from-config", r"has no attribute 'from_config'", "<Backend>Database.from_config(config) classmethod"),
    (
        "vector-mixin-methods",
        r"has no attribute '(update_vector|delete_from_index|hybrid_search|create_vector_index|"
        r"drop_vector_index|get_vector_index_stats)'",
        "database vector methods update_vector, delete_from_index, hybrid_search, create/drop_vector_index, get_vector_index_stats",
    ),
    ("streaming", r"has no attribute '(stream_read|stream_write)'", "database stream_read / stream_write"),
    (
        "count-all-list-all",
        r"has no attribute '(_count_all|list_all)'",
        "database list_all() and _count_all()",
    ),
    ("s3-session", r"has no attribute '_session'", "AsyncS3Database._session (shared aioboto3 session)"),
    (
        "bulk-embed-coroutine",
        r"bulk_embed_and_store is not awaitable",
        "AsyncDatabase.bulk_embed_and_store an `async def` (inspect.iscoroutinefunction)",
    ),
    (
        "bulk-embed-no-source",
        r"test_neither_source_is_an_error.*DID NOT RAISE ValueError",
        "bulk_embed_and_store without embedding_fn and embedder raises ValueError (even with no records)",
    ),
    (
        "source-fields-metadata",
        r"SOURCE_FIELDS_KEY|CONTENT_HASH_KEY|FIELD_SEPARATOR_KEY",
        "vector metadata keys of vector.content (source fields, content hash, separator)",
    ),
    (
        "list-embeddings",
        r"test_vector_search_takes_the_documented_keyword",
        "a plain list stored in the vector field is searched as a vector (dataknobs searches any list there)",
    ),
    (
        "not-connected",
        r"test_error_without_connection.*DID NOT RAISE RuntimeError",
        "operations before connect() raise RuntimeError (S3 async; ours open on their first call)",
    ),
    (
        "delete-returns",
        r"test_delete_existing_and_missing",
        "delete(id) of a missing id answers True (dataknobs's async S3 only; ours: False on every store)",
    ),
    # --- records and fields
    ("record-get-field", r"'Record' object has no attribute 'get_field'", "Record.get_field(name) -> Field"),
    ("record-storage-id", r"has no attribute 'has_storage_id'", "Record.has_storage_id / storage_id"),
    (
        "record-to-dict-flatten",
        r"to_dict\(\) got an unexpected keyword argument 'flatten'",
        "Record.to_dict(include_metadata=..., flatten=...) and the nested 'fields' dict form",
    ),
    (
        "record-attribute-set",
        r"'Record' object has no attribute '\w+' and no __dict__ for setting new attributes",
        "record.name = value sets a field (ours: AttributeError; record['name'] = value does)",
    ),
    (
        "record-methods",
        r"'Record' object has no attribute '(set_field|has_field|field_names|remove_field|merge|project|"
        r"validate|generate_id|name)'",
        "Record methods set_field, has_field, field_names, remove_field, merge, project, validate, generate_id, attribute access",
    ),
    (
        "record-from-dict",
        r"test_records\.py::TestRecord::test_from_dict|test_record_id_does_not_pollute",
        "Record.from_dict of {'fields': {...}, 'metadata': ..., 'id': ...} and id from metadata",
    ),
    ("record-positional-index", r"test_dict_like_access", "record[0]: a field by position"),
    ("field-api", r"type object 'Field' has no attribute 'from_dict'", "Field.from_dict / Field.to_dict"),
    (
        "record-fields-live",
        r"test_vector_field_in_record",
        "Record.fields is the record's own dict: record.fields[name] = VectorField(...) adds a field",
    ),
    (
        "vector-field-api",
        r"'VectorField' object has no attribute|test_vector_field_(metadata|invalid_type|"
        r"dimension_validation)",
        "VectorField API: to_dict/from_dict, validate, cosine_similarity, euclidean_distance, metadata, str input",
    ),
    (
        "vector-exception-kwargs",
        r"DimensionMismatchError\(\) takes no keyword arguments",
        "VectorDimensionError(expected=..., actual=...)",
    ),
    (
        "search-result-ordering",
        r"'<' not supported between instances of 'VectorSearchResult'",
        "VectorSearchResult ordering (sorted() by score)",
    ),
    (
        "duplicate-error-id",
        r"'DuplicateRecordError' object has no attribute 'id'|fails_closed_on_collision.*assert None == ",
        "DuplicateRecordError.id: the colliding id (the store must pass it when raising)",
    ),
    (
        "payload-id",
        r"test_create_payload_id_resolution",
        "create() takes the record id from the payload ('id' / record_id field)",
    ),
    (
        "s3-metadata-id",
        r"test_async_s3_native\.py::test_create_read_roundtrip.*KeyError: 'id'",
        "dataknobs's S3 backend puts the record id into the metadata of the record it reads (metadata['id'])",
    ),
    # --- queries
    (
        "filter-operand-at-build",
        r"FilterError: operator '\w+' on field '[^']*' needs",
        "BETWEEN / NOT_BETWEEN with a malformed range: ours raises when the filter is used, "
        "dataknobs matches nothing / every present value",
    ),
    (
        "operator-unknown-spelling",
        r"test_an_unknown_operator_raises",
        "Operator('eq') / Operator('gt') raise ValueError",
    ),
    (
        "query-serialization-fluent",
        r"'(Query|SortSpec)' object has no attribute '(to_dict|clear_filters|limit_property)'|"
        r"type object '(Query|SortSpec)' has no attribute 'from_dict'|test_query_enhanced\.py::TestQueryEdgeCases::test_none_values",
        "Query/SortSpec to_dict/from_dict, clear_filters, limit_property, Query() defaults",
    ),
    (
        "query-vector-methods",
        r"'Query' object has no attribute '(similar_to|near_text|hybrid|clear_vector)'",
        "Query.similar_to / near_text / hybrid / clear_vector (vector_query on Query)",
    ),
    (
        "datetime-strings",
        r"test_range_operators\.py::(TestImprovedComparisons::test_datetime_string_comparisons|"
        r"TestRangeOperators::test_datetime_between)",
        "comparisons between datetime objects and ISO strings (BETWEEN / >, < on dates)",
    ),
    ("empty-or", r"test_empty_or_conditions", "an OR of no conditions matches everything"),
    # --- configuration
    ("s3-max-workers", r"unknown config key 'max_workers'", "S3 config key max_workers (and max_retries)"),
    ("s3-create-bucket", r"bucket '[^']*' does not exist", "S3 creates a missing bucket on connect"),
    (
        "file-path-default",
        r"backend 'file' (needs config key|requires) 'path'",
        "a file store from a factory / TOML / CLI configuration without 'path' (ours: only the class "
        "called without a path is a temporary store)",
    ),
    (
        "file-format-compression",
        r"unknown config key '(format|compression)' for backend 'file'",
        "file backend config keys format ('json'/'csv'/'parquet') and compression ('gzip', ...)",
    ),
    (
        "file-is-one-file",
        r"cannot create store directory .*File exists",
        "the file backend's path names one JSON/CSV/Parquet file (ours: a directory holding a table)",
    ),
    ("backend-alias-mem", r"unknown backend 'mem'", "backend aliases ('mem' for memory, ...)"),
    ("factory-info", r"has no attribute 'get_backend_info'", "DatabaseFactory.get_backend_info(backend)"),
    (
        "factory-error-text",
        r"test_factory\.py::TestDatabaseFactory::test_unknown_backend_error|"
        r"test_s3_backend\.py::TestS3Configuration::test_missing_required_config",
        "error message wording of an unknown backend (and, before, of a missing bucket)",
    ),
    (
        "factory-s3-mock",
        r"test_create_s3_backend|test_factory_with_environment_variables|"
        r"test_a_legitimate_config_still_builds\[s3\]",
        "a sync S3 store makes its first request when created (dataknobs: at connect()): a test that "
        "patches boto3 with a MagicMock, or builds a store of a bucket it never reaches",
    ),
    (
        "s3-bucket-region",
        r"InvalidBucketName|cannot create bucket 'x'",
        "dataknobs's tests use a bucket name S3 (and moto) refuse ('x'); ours stops at creating the "
        "bucket when the store is created",
    ),
    (
        "s3-location-constraint",
        r"IllegalLocationConstraint",
        "creating a missing bucket outside us-east-1 needs a LocationConstraint (storage/s3.py)",
    ),
    (
        "s3-metadata-stamps",
        r"test_s3_backend\.py::TestS3Backend::test_(create_and_read|update)",
        "dataknobs's S3 backend stamps metadata id / created_at / updated_at on every record it writes",
    ),
    (
        "s3-store-attributes",
        r"'(Sync|Async)?S3Database' object has no attribute '(bucket|region)'",
        "the S3 store object's `bucket` / `region` attributes (ours: in `db.config`)",
    ),
    (
        "s3-attributes-read-only",
        r"property '(bucket|prefix|region|endpoint_url|max_workers)' of '(Sync|Async)?S3Database' object "
        r"has no setter|of an S3 store is its config key",
        "the S3 store's settings (`bucket`, `prefix`, `region`, `endpoint_url`, `max_workers`) are "
        "read-only on a store (plain attributes only on an instance made with `__new__`)",
    ),
    (
        "s3-prefix-default",
        r"test_s3_backend\.py::TestS3Configuration::test_default_values \| .*'' == 'records/'",
        "the sync S3 store's default `prefix`: dataknobs `records/`, ours `''` (the bucket's root)",
    ),
    (
        "vector-float32",
        r"test_embedding_fn_shapes\.py::TestTheVectorizerStoresAVectorRatherThanACoroutine::"
        r"test_the_stored_value_is_numeric",
        "a stored vector reads back as a float32 ndarray, its components `numpy.float32` (not "
        "`float`, which the test checks with isinstance)",
    ),
    (
        "backend-private-attributes",
        r"has no attribute '(prefix|_storage|_lock)'|test_memory_backend\.py::TestSyncMemoryDatabase::"
        r"test_create_database",
        "private attributes of dataknobs's backend objects (memory `_storage` / `_lock`; S3 `prefix` before)",
    ),
    (
        "bulk-embed-embedder-kw",
        r"TestTheEmbedderPath|test_metadata_describes_the_assembly",
        "bulk_embed_and_store(embedder=...) (dataknobs's TextEmbedder keyword; ours: embedding_fn= takes "
        "an embedder object) and the source-fields metadata it writes",
    ),
    (
        "structured-config-classes",
        r"test_unknown_config_keys\.py::test_(a_declared_alias_reaches_its_field|"
        r"the_registry_advertises_only_keys_the_backend_accepts|every_backend_config_opts_into_the_guard|"
        r"every_declared_alias_is_consumed_by_the_normalizer)",
        "dataknobs_common StructuredConfig classes per backend (CONFIG_CLS, _INPUT_KEYS, _normalize_dict)",
    ),
    (
        "update-vector-override",
        r"test_update_vector_reports_a_write_that_did_not_happen",
        "update_vector calls a subclass's overridden update() (ours: one read and one write step of the "
        "operation, not composed of public methods)",
    ),
]

# Causes that run against a deliberate design of dk_vector_plugins (reported apart).
DESIGN_CONFLICTS = {
    "file-is-one-file": "the file store is a directory holding a log-structured table, not one JSON/CSV/Parquet file",
    "file-formats-lock": "no JSON/CSV/Parquet codecs or lock file: the table format (segments, .npy) replaces them",
    "file-format-compression": "same: format and compression are the table's",
    "filter-operand-at-build": "a filter's operand is checked when the filter is first used (compiled): a "
    "malformed one raises FilterError rather than being read as 'no match'",
    "record-attribute-set": "fields are not set as attributes: a Python-level __setattr__ would cost every "
    "record a store builds; record['name'] = value sets a field",
    "vector-mixins": "vector methods are operations of the one facade, not mixin classes",
    "bulk-embed-coroutine": "operations are written once as generators; the async facade's methods are not `async def`",
    "s3-session": "a private attribute of dataknobs's S3 backend (its aioboto3 session pool)",
    "backend-private-attributes": "attributes of dataknobs's backend objects, not its API",
    "structured-config-classes": "configuration is validated by the factory against the backends' OptionSpecs, "
    "not by one dataknobs_common StructuredConfig class per backend",
    "update-vector-override": "operations are written once, as steps on the core, not composed of each "
    "other's public methods",
    "s3-metadata-stamps": "a record's metadata is stored exactly as given on every backend; dataknobs stamps "
    "id / created_at / updated_at on S3 only, and our cross-backend tests assert that metadata round-trips",
    "s3-metadata-id": "same: no metadata['id'] stamped into the records an S3 store reads",
    "delete-returns": "delete(id) answers False for a missing id on every store, as dataknobs's sync S3 "
    "backend does; only its async S3 backend answers True",
    "not-connected": "async stores open on their first call; no connect() is needed, so nothing raises "
    "RuntimeError before it",
    "s3-prefix-default": "prefix defaults to '' (the bucket's root): a 'records/' default would make existing "
    "root-prefix stores open empty; one default for sync and async (dataknobs's async default is '' too)",
    "factory-s3-mock": "sync file and S3 stores open their table when created, so a missing bucket or an "
    "unreachable endpoint is an error at create(), which our tests require; dataknobs makes no request "
    "before connect()",
    "s3-bucket-region": "the bucket name 'x' is refused when the store creates its bucket, at creation "
    "(the LocationConstraint half works: tests/test_s3_compat_details.py)",
}
# Causes that a names-only shim cannot remove whatever the package does (reported apart).
SHIM_LIMITS = {
    "lane-parity-module": "the sweep keeps classes whose __module__ is dataknobs_data.backends.<name>; only a "
    "dataknobs_data compatibility package that defines (subclasses) them there can satisfy it",
}


def module_level_missing(suite: Path, file: str) -> list[str]:
    """dataknobs names a test file imports at module level that the shim does not map."""
    path = suite / file
    if not path.exists():
        return []
    tree = ast.parse(path.read_text())
    out: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dataknobs_data"):
            if node.module in OUT_OF_SCOPE:
                continue
            mapped = NAME_MAP.get(node.module, {})
            out += [f"{node.module}.{a.name}" for a in node.names if a.name not in mapped]
    return out


def first_line(msg: str | None) -> str:
    """The line of a message that says what went wrong (an ``E   ...Error:`` line if there is one)."""
    lines = [ln.strip() for ln in (msg or "").strip().splitlines() if ln.strip()]
    errors = [ln.removeprefix("E").strip() for ln in lines if ln.startswith("E ") and "Error" in ln]
    return (errors[-1] if errors else lines[0] if lines else "")[:300]


def classify(strict: dict[str, Any], stub: dict[str, Any], suite: Path | None) -> dict[str, dict[str, Any]]:
    causes: dict[str, dict[str, Any]] = {}
    titles = {cid: title for cid, _, title in RULES}
    compiled = [(cid, re.compile(pat)) for cid, pat, _ in RULES]
    for nodeid, both in sorted(strict["tests"].items()):
        ref, ours = both["reference"], both["ours"]
        if not ref or ref["outcome"] != "passed" or (ours and ours["outcome"] == "passed"):
            continue
        s_ours = (stub["tests"].get(nodeid) or {}).get("ours")
        file = nodeid.split("::")[0]
        if s_ours and s_ours["outcome"] == "passed":
            names = module_level_missing(suite, file) if suite else []
            cid = "import:" + (",".join(sorted({n.rsplit(".", 1)[-1] for n in names})) or file)
            title = "imports only (the tests pass once these names exist): " + (
                ", ".join(sorted(set(names))) or "?"
            )
            msg = first_line(strict["collect_errors"]["ours"].get(file)) or first_line(
                (ours or {}).get("message")
            )
        else:
            msg = first_line(s_ours["message"]) if s_ours else "NOT COLLECTED"
            key = f"{nodeid} | {msg}"
            cid = next((c for c, rx in compiled if rx.search(key)), "unclassified")
            title = titles.get(cid, "not classified yet")
        c = causes.setdefault(cid, {"title": title, "tests": [], "example": None})
        c["tests"].append({"nodeid": nodeid, "message": msg})
        if c["example"] is None and msg:
            c["example"] = {"nodeid": nodeid, "message": msg}
    return causes


def print_markdown(causes: dict[str, dict[str, Any]]) -> None:
    """Per file, each failing test (parametrizations folded) and its cause id."""
    rows: dict[str, dict[str, collections.Counter[str]]] = {}
    for cid, c in causes.items():
        for t in c["tests"]:
            file, _, rest = t["nodeid"].partition("::")
            name = rest.split("[")[0]
            rows.setdefault(file, {}).setdefault(name, collections.Counter())[cid] += 1
    for file in sorted(rows):
        n = sum(sum(cnt.values()) for cnt in rows[file].values())
        print(f"* `{file}` ({n})")
        for name, cnt in sorted(rows[file].items()):
            why = ", ".join(f"{cid}" + (f" x{k}" if k > 1 else "") for cid, k in cnt.most_common())
            print(f"  * `{name}`: {why}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("strict_json")
    ap.add_argument("stub_json")
    ap.add_argument(
        "--suite", help="the extracted suite (default: the cache's, read from the runner's default)"
    )
    ap.add_argument("--tests", action="store_true", help="list every test under its cause")
    ap.add_argument("--json", metavar="OUT", help="write the causes and their tests as JSON")
    ap.add_argument(
        "--markdown",
        action="store_true",
        help="print the remaining failures per file as a Markdown list (parametrizations folded)",
    )
    args = ap.parse_args(argv)
    strict = json.loads(Path(args.strict_json).read_text())
    stub = json.loads(Path(args.stub_json).read_text())
    suite = Path(args.suite) if args.suite else HERE.parent / ".compat-cache" / "suite"
    causes = classify(strict, stub, suite if suite.exists() else None)
    total = sum(len(c["tests"]) for c in causes.values())
    if args.markdown:
        print_markdown(causes)
        return 0
    order = sorted(causes.items(), key=lambda kv: (-len(kv[1]["tests"]), kv[0]))
    shim = strict.get("shim", "strict")
    print(f"{total} tests pass on dataknobs-data and not on dk_vector_plugins (shim: {shim})\n")
    print(f"{'#':>4}  {'cause':<32} title / example")
    for cid, c in order:
        flag = "  [design]" if cid in DESIGN_CONFLICTS else "  [shim]" if cid in SHIM_LIMITS else ""
        print(f"{len(c['tests']):>4}  {cid[:32]:<32} {c['title']}{flag}")
        if c["example"]:
            print(f"{'':>38}e.g. {c['example']['nodeid']}\n{'':>38}     {c['example']['message'][:200]}")
        if args.tests:
            for t in c["tests"]:
                print(f"{'':>40}- {t['nodeid']}")
    counts: collections.Counter[str] = collections.Counter()
    for cid, c in causes.items():
        kind = "design" if cid in DESIGN_CONFLICTS else "shim" if cid in SHIM_LIMITS else "other"
        counts[kind] += len(c["tests"])
    print(
        f"\nagainst a deliberate design [design]: {counts['design']}; beyond a names-only shim [shim]: "
        f"{counts['shim']}; the rest: {counts['other']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({cid: c for cid, c in order}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
