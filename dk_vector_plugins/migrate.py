"""Import the data of a dataknobs-data store into any of ours (``dkv import``).

dataknobs-data 0.11 keeps a **file store** as one file (``path``): JSON (a mapping of record id to
the record's structured dict), CSV (one row per record: ``__id__`` and one column per field,
structured fields as JSON cells) or Parquet, optionally gzip-compressed. Its **S3 store** keeps one
JSON object per record, ``<prefix><id>.json`` (the sync backend's default prefix ``records/``; the
async backend's ``<prefix>/<id>.json``), holding the same structured dict.

:func:`import_dataknobs` reads either into a store of ours: ids, fields (vectors as
:class:`~dk_vector_plugins.VectorField` with their source field, model and metadata) and record
metadata come over as dataknobs-data reads them. It is resumable: records are written in batches,
and a record whose stored copy is already the same is skipped, so running it again after an
interruption writes only what is missing or changed. A progress bar shows while it runs.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from .database import SyncDatabase
from .embed import progress_bar
from .errors import DkvError, InvalidRequestError, StorageError
from .records import Record, VectorField

__all__ = [
    "ImportReport",
    "import_dataknobs",
    "import_records",
    "read_dataknobs_file",
    "read_dataknobs_s3",
]

#: dataknobs-data's CSV column holding the record id.
_CSV_ID = "__id__"
_MAGIC: tuple[tuple[bytes, Callable[[bytes], bytes]], ...] = (
    (b"\x1f\x8b", gzip.decompress),
    (b"BZh", bz2.decompress),
    (b"\xfd7zXZ\x00", lzma.decompress),
)


@attrs.frozen
class ImportReport:
    """What an import did.

    :ivar source: what was read (a path or ``s3://bucket/prefix``).
    :ivar read: records in the source.
    :ivar imported: records written (new, or changed since a previous import).
    :ivar skipped: records already stored unchanged (a previous run imported them).
    :ivar batches: writes made.
    """

    source: str
    read: int
    imported: int
    skipped: int
    batches: int


# --- reading ---------------------------------------------------------------------------------


def _decompressed(raw: bytes) -> bytes:
    """``raw`` itself, or its content when it is gzip, bzip2 or xz (by its magic bytes, as a
    dataknobs-data ``.gz`` file may hold plain JSON)."""
    for magic, decompress in _MAGIC:
        if raw.startswith(magic):
            return decompress(raw)
    return raw


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        return fmt.lower()
    suffixes = [s.lower() for s in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".bz2", ".xz"):
        suffixes.pop()
    ext = suffixes[-1].lstrip(".") if suffixes else "json"
    return ext if ext in ("json", "csv", "parquet") else "json"


def _record(rid: str, raw: Any, where: str) -> Record:
    """A record from dataknobs-data's structured dict, with the id it is stored under."""
    if not isinstance(raw, Mapping):
        raise StorageError(f"{where}: record {rid!r} is a {type(raw).__name__}, not a record object")
    try:
        rec = Record.from_dict(dict(raw))
    except (TypeError, ValueError, KeyError) as e:
        raise StorageError(f"{where}: record {rid!r} cannot be read: {e}") from e
    rec.id = rid
    return rec


def _csv_cell(value: str) -> Any:
    """dataknobs-data's reading of a CSV cell: a JSON object or array is parsed, else the text."""
    text = value.strip()
    if (text.startswith("{") and text.endswith("}")) or (text.startswith("[") and text.endswith("]")):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


def read_dataknobs_file(path: str | Path, format: str | None = None) -> list[Record]:
    """The records of a dataknobs-data file store: its ``.json`` or ``.csv`` file (compressed
    with gzip, bzip2 or xz, or not).

    :param format: ``"json"`` or ``"csv"`` (default: from the extension below a compression
        suffix, else JSON, as dataknobs-data decides).
    CSV cells hold text (a CSV file keeps no types); an empty cell is an absent field.
    """
    p = Path(path)
    kind = _format_of(p, format)
    if kind == "parquet":
        raise DkvError(
            f"{p}: Parquet files are not imported; open the store with dataknobs-data and save it as JSON "
            "(its file backend with format='json'), then import that"
        )
    if kind not in ("json", "csv"):
        raise InvalidRequestError(f"format must be 'json' or 'csv', got {format!r}")
    try:
        raw = _decompressed(p.read_bytes())
    except OSError as e:
        raise StorageError(f"cannot read {p}: {e.strerror or e}") from e
    text = raw.decode("utf-8")
    if not text.strip():
        return []
    if kind == "csv":
        out = []
        for n, row in enumerate(csv.DictReader(io.StringIO(text)), 2):
            rid = row.pop(_CSV_ID, None)
            if not rid:
                raise StorageError(f"{p}:{n}: the row has no {_CSV_ID} (record id)")
            fields = {k: _csv_cell(v) for k, v in row.items() if k is not None and v != ""}
            out.append(_record(rid, {"fields": fields}, str(p)))
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise StorageError(f"{p} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise StorageError(
            f"{p}: the top level is a {type(data).__name__}, not a mapping of record ids to records"
        )
    return [_record(str(rid), rec, str(p)) for rid, rec in data.items()]


def _s3_location(location: str) -> tuple[str, str]:
    if not location.startswith("s3://"):
        raise InvalidRequestError(f"an S3 location is s3://bucket/prefix, got {location!r}")
    bucket, _, prefix = location[len("s3://") :].partition("/")
    if not bucket:
        raise InvalidRequestError(f"an S3 location names a bucket: s3://bucket/prefix, got {location!r}")
    return bucket, prefix


def _s3_record_keys(client: Any, bucket: str, prefix: str) -> list[tuple[str, str]]:
    """(object key, record id) of every ``<prefix><id>.json`` (or ``<prefix>/<id>.json``) object."""
    base = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", ()):
            key: str = obj["Key"]
            rid = key[len(base) : -len(".json")]
            if key.endswith(".json") and rid and "/" not in rid:
                out.append((key, rid))
    return out


def read_dataknobs_s3(
    client: Any, bucket: str, prefix: str = "records/", concurrency: int = 16
) -> tuple[int, Iterator[Record]]:
    """The records of a dataknobs-data S3 store (one ``<id>.json`` object per record under
    ``prefix``), read with the boto3 ``client``: their number, and an iterator that fetches them
    (``concurrency`` requests at a time) in key order."""
    keys = _s3_record_keys(client, bucket, prefix)

    def fetch(item: tuple[str, str]) -> Record:
        key, rid = item
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        where = f"s3://{bucket}/{key}"
        try:
            return _record(rid, json.loads(_decompressed(body).decode("utf-8")), where)
        except json.JSONDecodeError as e:
            raise StorageError(f"{where} is not valid JSON: {e}") from e

    def records() -> Iterator[Record]:
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            step = max(1, concurrency) * 8
            for start in range(0, len(keys), step):
                yield from pool.map(fetch, keys[start : start + step])

    return len(keys), records()


# --- writing ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A value as JSON-comparable data (vectors as float32-rounded lists)."""
    if isinstance(value, np.ndarray):
        return [float(x) for x in value.astype(np.float32).ravel()]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def _signature(rec: Record) -> str:
    """What a record holds, as one string: equal for a record and its stored copy."""
    fields: dict[str, Any] = {}
    for name, f in rec.fields.items():
        if isinstance(f, VectorField):
            fields[name] = ["vector", _plain(f.value), f.source_field, f.model_name, _plain(dict(f.metadata))]
        else:
            fields[name] = _plain(f.value)
    return json.dumps([fields, _plain(dict(rec.metadata))], sort_keys=True, default=str)


def import_records(
    db: SyncDatabase,
    records: Iterable[Record],
    total: int | None = None,
    batch_size: int = 500,
    progress: bool | None = None,
    source: str = "records",
) -> ImportReport:
    """Write ``records`` (which have ids) into ``db`` in batches, skipping those stored unchanged.

    :param total: how many there are (for the progress bar).
    :param progress: show a progress bar (default: when stderr is a terminal).
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
        raise InvalidRequestError(f"batch_size must be a positive int, got {batch_size!r}")
    read = imported = skipped = batches = 0
    batch: list[Record] = []

    def flush() -> None:
        nonlocal imported, skipped, batches
        stored = db.read_batch([str(r.id) for r in batch])
        todo = [r for r, s in zip(batch, stored) if s is None or _signature(s) != _signature(r)]
        skipped += len(batch) - len(todo)
        if todo:
            db.upsert_batch(todo)
            imported += len(todo)
            batches += 1
        bar.update(len(batch))
        batch.clear()

    with progress_bar(progress, total or 0, desc=f"importing {source}") as bar:
        for rec in records:
            if rec.id is None:
                raise InvalidRequestError(f"record {read} of {source} has no id")
            read += 1
            batch.append(rec)
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    return ImportReport(source, read, imported, skipped, batches)


def import_dataknobs(
    source: str | Path,
    db: SyncDatabase,
    *,
    format: str | None = None,
    s3_client: Any = None,
    s3_options: Mapping[str, Any] | None = None,
    batch_size: int = 500,
    progress: bool | None = None,
) -> ImportReport:
    """Import a dataknobs-data store into ``db``; see the module docstring.

    :param source: the file store's file (``.json``/``.csv``, maybe ``.gz``/``.bz2``/``.xz``), or
        ``s3://bucket/prefix`` of an S3 store (the prefix as configured there; dataknobs-data's
        sync S3 default is ``records/``).
    :param format: the file's format when its name does not say (``"json"``, ``"csv"``).
    :param s3_client: a boto3 S3 client to read with (default: one made from ``s3_options``).
    :param s3_options: for that client: ``endpoint_url``, ``region_name``,
        ``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``.
    :param batch_size: records per write.
    :param progress: show a progress bar (default: when stderr is a terminal).
    :returns: an :class:`ImportReport`. Running it again imports only what is missing or changed.
    """
    text = str(source)
    if text.startswith("s3://"):
        bucket, prefix = _s3_location(text)
        client = s3_client
        if client is None:
            from .storage.s3 import client_kwargs, require

            client = require("boto3").client("s3", **client_kwargs(dict(s3_options or {})))
        total, records = read_dataknobs_s3(client, bucket, prefix)
        return import_records(db, records, total, batch_size, progress, text)
    recs = read_dataknobs_file(source, format)
    return import_records(db, recs, len(recs), batch_size, progress, text)
