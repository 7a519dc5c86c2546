"""The ``dkv`` command: ``plugins``, ``demo``, ``ingest``, ``import``, ``search`` (vector, text, hybrid), ``info`` and ``options``.

Stores are configured with ``--backend``, ``--config FILE.toml`` (top-level keys, or a ``[dkv]``
table) and ``--option key=value`` (the value parsed as JSON when it parses, else a string).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from .database import SyncDatabase
from .errors import DkvError
from .factory import CORE_OPTIONS, DatabaseFactory, backends, extra_options, resolve_config
from .host import list_plugins
from .records import Record, VectorField
from .types import HybridSearchResult, OptionSpec, TextSearchResult, VectorSearchResult

__all__ = ["main"]

_DEMO_QUERIES = [
    ("planets of the solar system", None),
    ("kneading bread dough", None),
    ("vectorized numpy arrays in python", None),
    ("marathon training", {"category": "sports"}),
]


def _load_toml(path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise DkvError(f"cannot read config file {path!r}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise DkvError(f"config file {path!r} is not valid TOML: {e}") from e
    return dict(data.get("dkv", data))


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise DkvError(f"--option takes key=value, got {text!r}")
    key, _, raw = text.partition("=")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _store_config(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if getattr(args, "config", None):
        config.update(_load_toml(args.config))
    for opt in getattr(args, "option", None) or []:
        key, value = _parse_option(opt)
        config[key] = value
    if getattr(args, "backend", None):
        config["backend"] = args.backend
    # a location given as keys names its backend: path= a file store, bucket= an S3 one
    config.setdefault("backend", "file" if "path" in config else "s3" if "bucket" in config else "memory")
    config.setdefault("vector_enabled", True)
    return config


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str], width: int = 70) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(c, width) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any, width: int = 70) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _hits_table(hits: Sequence[VectorSearchResult | TextSearchResult | HybridSearchResult], text_field: str) -> str:
    rows = []
    for rank, h in enumerate(hits, 1):
        rows.append([rank, h.id, h.score, h.record.get(text_field, "")])
    return _table(rows, ["#", "id", "score", text_field])


def _read_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        src = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    except OSError as e:
        raise DkvError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        for lineno, line in enumerate(src, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DkvError(f"{path}:{lineno}: not valid JSON: {e.msg}") from e
            if not isinstance(obj, dict):
                raise DkvError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj
    finally:
        if src is not sys.stdin:
            src.close()


# --- commands --------------------------------------------------------------------------------


def _status(status: str, reason: str | None) -> str:
    if status == "error":
        return f"ERROR: {reason}"
    return f"{status} ({reason})" if reason else status


def cmd_plugins(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """List plugins, their distribution, version and hooks."""
    infos = list_plugins(factory.plugin_manager, all=args.all)
    if args.json:
        print(json.dumps([i.as_dict() for i in infos], indent=2))
        return 0
    if not infos:
        print("no third-party plugins installed (dkv plugins --all lists the built-ins)")
        return 0
    rows = [
        [
            i.name,
            i.distribution or "-",
            i.version or "-",
            _status(i.status, i.reason),
            ", ".join(i.hooks),
        ]
        for i in infos
    ]
    print(_table(rows, ["plugin", "distribution", "version", "status", "hooks"], width=400))
    return 0


def cmd_demo(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """Ingest the bundled sample with the hashing embedder and run a few searches."""
    text = resources.files("dk_vector_plugins").joinpath("data/sample.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    db = factory.create(backend="memory", text_field="text", vector_dimensions=args.dimensions)
    with db:
        db.create_batch([Record(r) for r in rows])  # the store embeds each record's text
        print(
            f"dkv demo: {db.count()} records embedded with the built-in hashing embedder "
            f"({args.dimensions} dimensions), memory backend, exact cosine search\n"
            "(hashing matches words, not meaning; for a real model: pip install "
            "'dk_vector_plugins[model2vec]' and create the store with embedder=\"model2vec\")\n"
        )
        queries = [(q, None) for q in args.query] if args.query else _DEMO_QUERIES
        for q, flt in queries:
            hits = db.vector_search(q, k=args.k, filter=flt)
            where = f"  filter {json.dumps(flt)}" if flt else ""
            print(f"query: {q!r}{where}")
            print(_hits_table(hits, "text"))
            print()
    return 0


def _to_record(obj: dict[str, Any], args: argparse.Namespace, where: str) -> Record:
    obj = dict(obj)
    rid = obj.pop(args.id_field, None) if args.id_field in obj else None
    vec = obj.get(args.vector_field)
    if vec is not None:
        try:
            obj[args.vector_field] = VectorField(vec, name=args.vector_field)
        except DkvError as e:
            raise DkvError(f"{where}: {e}") from e
    elif not isinstance(obj.get(args.text_field), str):
        raise DkvError(f"{where}: needs a vector in {args.vector_field!r} or a text in {args.text_field!r}")
    return Record(obj, id=None if rid is None else str(rid))


def cmd_ingest(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """Load JSON Lines into a store: given vectors are stored, texts are embedded."""
    config = _store_config(args)
    path = config.get("path") if config.get("backend") == "file" else None
    new_dir = isinstance(path, str) and not os.path.exists(path)
    try:
        return _ingest(args, factory, config)
    except DkvError:
        # a failed first ingest leaves no empty store directory behind (nothing was committed)
        if new_dir and isinstance(path, str) and not os.path.exists(os.path.join(path, "manifests")):
            shutil.rmtree(path, ignore_errors=True)
        raise


def _ingest(args: argparse.Namespace, factory: DatabaseFactory, config: dict[str, Any]) -> int:
    rows = list(_read_jsonl(args.file))  # a missing or malformed file fails before the store opens
    if config["backend"] == "memory":
        print(
            "note: the memory backend keeps nothing after this command; use --backend file", file=sys.stderr
        )
    if args.embedder:
        config["embedder"] = args.embedder
    if args.vector_field:
        config["vector_field"] = args.vector_field
    if args.text_field:
        config["text_field"] = args.text_field
    with factory.create(config) as probe:  # a new store records its text field (and embedder)
        field = probe.schema.field()
        if field is None or field.source is None:
            config.setdefault("text_field", "text")
        else:
            args.text_field = args.text_field or field.source[0]
    with factory.create(config) as db:
        args.vector_field = db.schema.default_field
        args.text_field = args.text_field or config["text_field"]
        records = [_to_record(obj, args, f"{args.file}:{n}") for n, obj in rows]
        with_vec = [r for r in records if args.vector_field in r]
        to_embed = [r for r in records if args.vector_field not in r]
        if with_vec:
            for start in range(0, len(with_vec), args.batch_size):
                db.upsert_batch(with_vec[start : start + args.batch_size])
        embedded = 0
        if to_embed:
            report = db.bulk_embed(
                to_embed,
                args.text_field,
                vector_field=args.vector_field,
                batch_size=args.batch_size,
                progress=None if not args.no_progress else False,
            )
            embedded = report.embedded
            skipped = report.skipped
        else:
            skipped = 0
        print(
            f"ingested {len(records)} records into {_location(config)}: {len(with_vec)} with vectors, "
            f"{embedded} embedded, {skipped} already up to date; the store holds {db.count()}"
        )
    return 0


def cmd_import(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """Import a dataknobs-data store (its JSON/CSV file, or s3://bucket/prefix) into a store."""
    from .migrate import import_dataknobs

    config = _store_config(args)
    if config["backend"] == "memory":
        raise DkvError("importing into the memory backend keeps nothing after this command; use --backend file or s3")
    if args.vector_field:
        config["vector_field"] = args.vector_field
    s3_options = dict(_parse_option(o) for o in args.source_option or [])
    with factory.create(config) as db:
        report = import_dataknobs(
            args.source,
            db,
            format=args.format,
            s3_options=s3_options,
            batch_size=args.batch_size,
            progress=False if args.no_progress else None,
        )
        print(
            f"imported {report.source} into {_location(config)}: {report.read} records read, "
            f"{report.imported} written, {report.skipped} already up to date; the store holds {db.count()}"
        )
    return 0


def _location(config: dict[str, Any]) -> str:
    if config.get("backend") == "file":
        return repr(str(config.get("path")))
    if config.get("backend") == "s3":
        return f"s3://{config.get('bucket')}/{config.get('prefix') or ''}"
    return f"backend {config.get('backend')!r}"


def _open_existing(factory: DatabaseFactory, config: dict[str, Any]) -> SyncDatabase:
    """Open a store that must already hold a table: searching or describing an empty location
    is an error that says why, never an empty answer (and creates nothing)."""
    resolve_config(factory.plugin_manager, config)  # a bad key or value is reported first
    backend = config.get("backend")
    if backend == "memory":
        raise DkvError(
            "the memory backend keeps nothing between commands, so there is nothing to search: "
            "ingest into a file or s3 store (dkv ingest FILE --backend file -o path=DIR) and search that"
        )
    path = config.get("path")
    if backend == "file" and isinstance(path, str) and not os.path.isdir(path):
        raise DkvError(f"no table at {path!r}: the directory does not exist (dkv ingest creates one)")
    db = factory.create(config)
    if getattr(db, "version", None) == 0:
        db.close()
        raise DkvError(f"no table at {_location(config)}: nothing was ever committed there")
    return db


def cmd_search(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """Search a store: by vector (a text embedded, or a vector), by text (BM25), or both (hybrid)."""
    mode = args.mode
    location = args.location
    config = _store_config(args)
    located = "path" in config or "bucket" in config  # the store's location given by -o or --config
    if location is None and args.vector and args.text and not located and mode == "vector":
        location, args.text = args.text, None  # dkv search --vector V DIR
    named = located or bool(args.backend or args.config or args.option)
    if location is not None:
        config.update(_location_config(location))
        if args.backend:
            config["backend"] = args.backend
    as_of: dict[str, int | str] = {}
    if args.as_of is not None:
        if mode == "hybrid":
            raise DkvError("--as-of works with --mode text or vector (a hybrid search runs on the newest version)")
        as_of["as_of"] = int(args.as_of) if args.as_of.isdigit() else args.as_of
    fields = [f.strip() for f in args.text_fields.split(",") if f.strip()] if args.text_fields else None
    flt = None
    if args.filter:
        try:
            flt = json.loads(args.filter)
        except json.JSONDecodeError as e:
            raise DkvError(f'--filter must be JSON, e.g. \'{{"category": "a"}}\': {e.msg}') from e
    vec: Any = None
    if args.vector:
        try:
            vec = json.loads(args.vector)
        except json.JSONDecodeError as e:
            raise DkvError(f"--vector must be a JSON list of numbers: {e.msg}") from e
    elif not args.text:
        raise DkvError("give a query text or --vector")
    if mode in ("text", "hybrid") and not args.text:
        raise DkvError(f"--mode {mode} needs a query text")
    if location is None and not named:
        raise DkvError(
            f"which store? give its location after the query (dkv search {json.dumps(args.text or 'QUERY')} "
            "DIR or s3://bucket/prefix), or --backend and -o keys, or --config"
        )
    with _open_existing(factory, config) as db:
        if mode == "text":
            found = db.text_search(args.text, k=args.k, text_fields=fields, filter=flt, **as_of)
            shown = args.text_field or (found[0].text_fields[0] if found and found[0].text_fields else "text")
            _print_hits(found, shown, args.format)
            return 0
        field_name = args.vector_field or db.schema.default_field
        field = db.schema.field(field_name)
        query: Any = vec
        if vec is None:
            if args.embedder:  # an embedder named on the command line embeds the query
                options = dict(config.get("embedder_options") or {}) if args.embedder == config.get("embedder") else {}
                embedder = factory.embedder(args.embedder, db.vector_dimension(field_name), **options)
                query = embedder.embed([args.text])[0]
            elif field is None or field.embedder is None:
                raise DkvError(
                    f"the store's vector field {field_name!r} has no embedder (its vectors were given, "
                    "not embedded by the store): pass --vector, or --embedder NAME to embed the text"
                )
            else:
                query = args.text  # the store embeds it with its own embedder
        text_field = args.text_field or (field.source[0] if field is not None and field.source else "text")
        hits: Sequence[VectorSearchResult] | Sequence[HybridSearchResult]
        if mode == "hybrid":
            hits = db.hybrid_search(
                args.text, query, text_fields=fields, vector_field=field_name, k=args.k, filter=flt, metric=args.metric
            )
        else:
            hits = db.vector_search(query, vector_field=field_name, k=args.k, filter=flt, metric=args.metric, **as_of)
        _print_hits(hits, text_field, args.format)
    return 0


def _print_hits(
    hits: Sequence[VectorSearchResult] | Sequence[TextSearchResult] | Sequence[HybridSearchResult],
    text_field: str,
    fmt: str,
) -> None:
    if fmt == "json":
        print(json.dumps([h.to_dict() for h in hits], indent=2, default=str))
    else:
        print(_hits_table(hits, text_field) if hits else "no results")


def _location_config(location: str) -> dict[str, Any]:
    """``DIR`` (a file store) or ``s3://bucket/prefix`` as config keys."""
    if location.startswith("s3://"):
        bucket, _, prefix = location[len("s3://") :].partition("/")
        return {"backend": "s3", "bucket": bucket, "prefix": prefix}
    return {"backend": "file", "path": location}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def cmd_reembed(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """Re-embed every record of a stored table (see ``SyncDatabase.reembed``)."""
    config = {**_store_config(args), **_location_config(args.location)}
    options = dict(_parse_option(o) for o in args.embedder_option or []) if args.embedder_option else None
    with _open_existing(factory, config) as db:
        report = db.reembed(
            embedder=args.new_embedder,
            embedder_options=options,
            text_field=args.source,
            vector_field=args.vector_field,
            batch_size=args.batch_size,
            progress=None if not args.no_progress else False,
        )
        field = db.schema.field(args.vector_field)
        used = field.embedder.describe() if field is not None and field.embedder is not None else "?"
        print(
            f"re-embedded {report.embedded} of {len(report.ids)} records with {used} "
            f"({report.skipped} already done, {report.batches} commits); {_location(config)} is at version "
            f"{db.version}"  # type: ignore[attr-defined]
        )
    return 0


def cmd_versions(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """List the committed versions of a stored table, oldest first."""
    import datetime as dt

    config = {**_store_config(args), **_location_config(args.location)}
    if args.backend:
        config["backend"] = args.backend
    with _open_existing(factory, config) as db:
        listed = db.versions()  # type: ignore[attr-defined]
    if args.json:
        print(json.dumps(listed, indent=2))
        return 0
    rows = [
        [
            v["version"],
            dt.datetime.fromtimestamp(v["created"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            v["operation"],
            v["added"],
            v["deleted"],
            v["rows"],
            v["segments"],
            ", ".join(v["tags"]),
        ]
        for v in listed
    ]
    print(_table(rows, ["version", "created (UTC)", "operation", "added", "deleted", "rows", "segments", "tags"]))
    return 0


def _golden_queries(path: str) -> list[dict[str, Any]]:
    """The queries of a JSON Lines file: per line ``{"query": text}`` (or ``"text"``) or
    ``{"vector": [...]}``, with optional ``"id"``, ``"k"`` and ``"filter"``."""
    out: list[dict[str, Any]] = []
    for n, q in _read_jsonl(path):
        if "query" not in q and "text" in q:
            q["query"] = q["text"]
        if not isinstance(q.get("query"), str) and "vector" not in q:
            raise DkvError(f'{path}:{n}: a query is {{"query": "text"}} or {{"vector": [...]}}, got {json.dumps(q)[:80]}')
        q.setdefault("id", str(n))
        out.append(q)
    if not out:
        raise DkvError(f"--queries {path} holds no query")
    return out


def cmd_diff(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """How each golden query's exact top-k changed between two versions of a stored table."""
    config = {**_store_config(args), **_location_config(args.location)}
    if args.backend:
        config["backend"] = args.backend
    queries = _golden_queries(args.queries)
    versions: list[int | str] = [int(v) if v.isdigit() else v for v in (args.v1, args.v2)]
    report: list[dict[str, Any]] = []
    with _open_existing(factory, config) as db:
        for q in queries:
            k = int(q.get("k", args.k))
            tops: list[list[str]] = []
            query: str | list[float] | None = q["vector"] if args.mode == "vector" and "vector" in q else q.get("query")
            if query is None:
                raise DkvError(f"query {q['id']}: --mode {args.mode} needs a query text")
            for version in versions:
                hits: Sequence[VectorSearchResult] | Sequence[TextSearchResult]
                if isinstance(query, str) and args.mode == "text":
                    hits = db.text_search(query, k=k, filter=q.get("filter"), as_of=version)
                else:
                    hits = db.vector_search(query, k=k, filter=q.get("filter"), as_of=version)
                tops.append([str(h.id) for h in hits])
            before, after = tops
            moved = {rid: (before.index(rid) + 1, after.index(rid) + 1) for rid in before if rid in after}
            report.append(
                {
                    "id": q["id"],
                    "changed": before != after,
                    "overlap": len(moved) / max(len(before), len(after), 1),
                    "added": [rid for rid in after if rid not in before],
                    "removed": [rid for rid in before if rid not in after],
                    "moved": {rid: ranks for rid, ranks in moved.items() if ranks[0] != ranks[1]},
                    "before": before,
                    "after": after,
                }
            )
    changed = sum(r["changed"] for r in report)
    if args.json:
        print(json.dumps({"v1": versions[0], "v2": versions[1], "changed": changed, "queries": report}, indent=2))
    else:
        rows = [
            [
                r["id"],
                "changed" if r["changed"] else "same",
                f"{r['overlap']:.2f}",
                ", ".join(r["added"]) or "-",
                ", ".join(r["removed"]) or "-",
                ", ".join(f"{rid} {a}->{b}" for rid, (a, b) in r["moved"].items()) or "-",
            ]
            for r in report
        ]
        print(_table(rows, ["query", "top-k", "overlap", "added", "removed", "moved (rank)"], width=50))
        mean = sum(r["overlap"] for r in report) / len(report)
        print(f"\n{changed} of {len(report)} queries changed between {versions[0]} and {versions[1]}; mean overlap {mean:.2f}")
    return 1 if changed and args.fail_on_change else 0


def cmd_info(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """Describe a stored table: counts, vector fields, segments, versions and size."""
    config = {**_store_config(args), **_location_config(args.location)}
    if args.backend:
        config["backend"] = args.backend
    with _open_existing(factory, config) as db:
        state = db.storage.state  # type: ignore[attr-defined]
        fields: dict[str, list[int]] = {}
        for seg in state.segments:
            for name, f in (seg.get("fields") or {}).items():
                dim_count = fields.setdefault(name, [int(f.get("dim", 0)), 0])
                dim_count[1] += int(f.get("count", 0))
        info: dict[str, Any] = {
            "location": _location(config).strip("'"),
            "backend": config["backend"],
            "version": state.version,
            "records": db.count(),
            "segments": len(state.segments),
            "rows stored": sum(int(seg.get("rows", 0)) for seg in state.segments),
            "vector fields": {n: {"dimensions": d, "vectors stored": c} for n, (d, c) in fields.items()},
            "schema": _schema_info(db),
            "full text": {
                "text_search_fields": list(db.schema.text.fields),
                "analyzer": _with_options(db.schema.text.analyzer, db.schema.text.options),
            },
        }
        sizes: list[int] | None = None
        if config["backend"] == "file":
            sizes = [p.stat().st_size for p in Path(config["path"]).rglob("*") if p.is_file()]
        elif config["backend"] == "s3":
            pages = db.s3_client.get_paginator("list_objects_v2").paginate(  # type: ignore[attr-defined]
                Bucket=config["bucket"], Prefix=config.get("prefix") or ""
            )
            sizes = [int(o["Size"]) for page in pages for o in page.get("Contents", [])]
        if sizes is not None:
            info["objects"] = len(sizes)
            info["size"] = _size(sum(sizes))
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            for key, value in info.items():
                if isinstance(value, dict):
                    value = "; ".join(
                        f"{k} ({', '.join(f'{a} {b}' for a, b in v.items())})"
                        if isinstance(v, dict)
                        else f"{k} {', '.join(v) or 'none' if isinstance(v, list) else v}"
                        for k, v in value.items()
                    ) or "none"
                print(f"{key + ':':<15} {value}")
    return 0


def _with_options(name: str, options: Mapping[str, Any]) -> str:
    """``name(key=value,...)`` (an embedder or analyzer as ``dkv info`` shows it), or ``name``."""
    opts = ",".join(f"{k}={v}" for k, v in options.items())
    return name + (f"({opts})" if opts else "")


def _schema_info(db: SyncDatabase) -> dict[str, Any]:
    """Each vector field's stored settings, as ``dkv info`` shows them."""
    out: dict[str, Any] = {}
    for name, f in db.schema.fields.items():
        entry: dict[str, Any] = {"dimensions": f.dim or db.vector_dimension(name), "metric": f.metric}
        if f.source is not None:
            entry["text"] = "+".join(f.source)
        if f.embedder is not None:
            entry["embedder"] = _with_options(f.embedder.name, f.embedder.options)
            if f.embedder.model:
                entry["model"] = f.embedder.model
        out[name + (" (default)" if name == db.schema.default_field else "")] = entry
    return out


def _type_names(opt: OptionSpec) -> str:
    names = [t.__name__ for t in opt.types]
    return " or ".join("path" if n == "PathLike" else n for n in names)


def _bounds(opt: OptionSpec) -> str:
    out = []
    if opt.choices is not None:
        out.append("one of " + ", ".join(f"`{c!r}`" for c in opt.choices))
    if opt.minimum is not None:
        out.append(f">= {opt.minimum}")
    if opt.above is not None:
        out.append(f"> {opt.above}")
    if opt.maximum is not None:
        out.append(f"<= {opt.maximum}")
    if opt.secret:
        out.append("secret (never shown)")
    return "; ".join(out)


def config_reference(factory: DatabaseFactory, backend_names: Sequence[str] | None = None) -> str:
    """Markdown: every config key of every backend (its own keys, the keys all backends share,
    and the keys plugins add), generated from the ``OptionSpec`` declarations."""
    pm = factory.plugin_manager
    specs = backends(pm)
    names = sorted(specs) if backend_names is None else list(backend_names)
    extra = extra_options(pm)

    def table(options: Sequence[OptionSpec]) -> list[str]:
        rows = ["| key | type | default | accepted | meaning |", "|---|---|---|---|---|"]
        for o in options:
            default = "required" if o.required else ("—" if o.default is None else f"`{o.default!r}`")
            aliases = f" (also: {', '.join(f'`{a}`' for a in o.aliases)})" if o.aliases else ""
            doc = o.doc.replace("|", "\\|")
            rows.append(f"| `{o.name}`{aliases} | {_type_names(o)} | {default} | {_bounds(o)} | {doc} |")
        return rows

    lines = [
        "# Configuration reference",
        "",
        "Every configuration key of the built-in backends and plugins: its type, default, accepted",
        "values and meaning. Generated from the keys' declarations (`OptionSpec`) by",
        "`dkv options --markdown` (with `DKV_DISABLE_PLUGIN_AUTOLOAD=1`, so that only the built-ins",
        "appear); a test fails when this page and the code disagree. A configuration is a dict, keyword",
        "arguments, or a TOML file given to the CLI (`--config`); an unknown key or a value of the wrong",
        "type is a `ConfigError` naming the key.",
        "",
        "## Keys every backend accepts",
        "",
        *table(CORE_OPTIONS),
    ]
    for name in names:
        spec = specs[name]
        lines += ["", f"## Backend `{name}`", "", spec.description + ".", "", *table(spec.options)]
    if extra:
        lines += [
            "",
            "## Keys added by plugins",
            "",
            "Declared with `dkv_register_options`; the plugin that declares a key says which backends",
            "accept it.",
            "",
            *table(extra),
        ]
    return "\n".join(lines) + "\n"


def cmd_options(args: argparse.Namespace, factory: DatabaseFactory) -> int:
    """Print the configuration keys (as a table, or as the Markdown reference page)."""
    specs = backends(factory.plugin_manager)
    if args.backend and args.backend not in specs:
        raise DkvError(f"unknown backend {args.backend!r}; installed backends: {', '.join(sorted(specs))}")
    names = [args.backend] if args.backend else None
    if args.markdown:
        sys.stdout.write(config_reference(factory, names))
        return 0
    options = [*CORE_OPTIONS]
    for name in names or sorted(specs):
        options += [o for o in specs[name].options if o not in options]
    options += [o for o in extra_options(factory.plugin_manager) if o not in options]
    rows = [
        [o.name, _type_names(o), "required" if o.required else repr(o.default), _bounds(o), o.doc]
        for o in options
    ]
    print(_table(rows, ["key", "type", "default", "accepted", "meaning"], width=90))
    return 0


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend", help="backend name (default: the config file's; file with -o path=, s3 with -o bucket=; else memory)"
    )
    p.add_argument("--config", metavar="FILE.toml", help="store configuration (TOML)")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="a config key (repeatable)")
    p.add_argument("--vector-field", default=None, help="vector field (default: the store's, else embedding)")
    p.add_argument("--text-field", default=None, help="text field (default: the store's, else text)")
    p.add_argument("--embedder", default=None, help="registered embedder name (default: the store's)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dkv``."""
    parser = argparse.ArgumentParser(prog="dkv", description="dk_vector_plugins: vector stores with plugins")
    parser.add_argument("--block", action="append", default=[], metavar="PLUGIN", help="block a plugin")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list installed plugins and the hooks they implement")
    p.add_argument("--all", action="store_true", help="include the built-in plugins")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("demo", help="embed a bundled sample in memory and search it")
    p.add_argument("--query", "-q", action="append", help="your own query (repeatable)")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--dimensions", type=int, default=384)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("ingest", help="load JSON Lines records into a store")
    p.add_argument("file", help="a .jsonl file, or - for stdin")
    _add_store_args(p)
    p.add_argument("--id-field", default="id", help="field holding the record id (default: id)")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("import", help="import a dataknobs-data store (file or S3) into a store")
    p.add_argument("source", help="its .json/.csv file (maybe .gz/.bz2/.xz), or s3://bucket/prefix")
    _add_store_args(p)
    p.add_argument("--format", choices=["json", "csv"], default=None, help="the file's format (default: its name's)")
    p.add_argument(
        "--source-option",
        "-s",
        action="append",
        metavar="KEY=VALUE",
        help="S3 source: endpoint_url, region_name, aws_access_key_id, ... (default: boto3's chain)",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("search", help="top-k search: by vector, full text (BM25) or both (hybrid)")
    p.add_argument("text", nargs="?", help="query text (embedded with the store's embedder in vector mode)")
    p.add_argument(
        "location",
        nargs="?",
        help="a file store's directory, or s3://bucket/prefix (or give --backend and -o keys)",
    )
    p.add_argument(
        "--mode",
        choices=["vector", "text", "hybrid"],
        default="vector",
        help="vector: nearest vectors; text: BM25 full-text search; hybrid: both, fused by RRF",
    )
    p.add_argument(
        "--text-fields",
        default=None,
        metavar="F1,F2",
        help="fields of text and hybrid search (default: text_search_fields, else text_field, else all text)",
    )
    _add_store_args(p)
    p.add_argument("--vector", help="query vector as a JSON list")
    p.add_argument("--k", type=int, default=5, help="how many results (default 5)")
    p.add_argument("--as-of", default=None, metavar="VERSION", help="search the table as of a version or tag")
    p.add_argument("--filter", help='filter as JSON, e.g. \'{"year": {"$gte": 2020}}\'')
    p.add_argument("--metric", default=None, help="cosine, euclidean or dot_product")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("options", help="list the configuration keys of the backends and plugins")
    p.add_argument("--backend", help="only this backend's keys (and the shared ones)")
    p.add_argument("--markdown", action="store_true", help="print the Markdown reference page")
    p.set_defaults(func=cmd_options)

    p = sub.add_parser("info", help="describe a stored table (counts, vector fields, segments, size)")
    p.add_argument("location", help="a file store's directory, or s3://bucket/prefix")
    _add_store_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("reembed", help="re-embed a stored table with another embedder (resumable)")
    p.add_argument("location", help="a file store's directory, or s3://bucket/prefix")
    p.add_argument("--embedder", dest="new_embedder", default=None, help="the new embedder (default: the current one)")
    p.add_argument(
        "--embedder-option",
        "-e",
        action="append",
        metavar="KEY=VALUE",
        help="an option of the new embedder (repeatable; values are JSON or text)",
    )
    p.add_argument("--text-field", action="append", dest="source", help="the source text field (default: the stored one)")
    p.add_argument("--vector-field", default=None, help="the field to re-embed (default: the store's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="a store config key (repeatable)")
    p.add_argument("--backend", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_reembed)

    p = sub.add_parser("versions", help="list a stored table's versions (time, operation, counts, tags)")
    p.add_argument("location", help="a file store's directory, or s3://bucket/prefix")
    _add_store_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser(
        "diff", help="how each query's exact top-k changed between two versions (a retrieval regression check)"
    )
    p.add_argument("location", help="a file store's directory, or s3://bucket/prefix")
    p.add_argument("v1", help="the earlier version (a number or a tag)")
    p.add_argument("v2", help="the later version (a number or a tag)")
    p.add_argument(
        "--queries",
        required=True,
        metavar="FILE.jsonl",
        help='golden queries, one per line: {"query": "text"} or {"vector": [...]}, optional "id", "k", "filter"',
    )
    p.add_argument("--mode", choices=["vector", "text"], default="vector", help="vector (default) or text (BM25)")
    p.add_argument("--k", type=int, default=10, help="results compared per query (default 10)")
    p.add_argument("--fail-on-change", action="store_true", help="exit with 1 when any query's top-k changed")
    _add_store_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_diff)
    return parser


def _show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A warning as one line, like an error (no source path, no code line)."""
    print(f"dkv: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dkv``; returns the exit code (2 for a usage or data error)."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            factory = DatabaseFactory(block=args.block)
            return int(args.func(args, factory))
    except DkvError as e:
        print(f"dkv: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `dkv ... | head`: the reader left; stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
