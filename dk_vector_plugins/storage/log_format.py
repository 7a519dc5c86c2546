"""The log-structured table, sans I/O: manifests, segments, commit, refresh, compaction, clean-up.

Layout below a table's root (a directory, or an S3 prefix)::

    LATEST.json                     a copy of the newest manifest (a hint readers poll)
    manifests/00000000000000000007.json   manifest version 7, created once, never changed
    segments/<name>.ids.txt         the rows' ids, one per line (UTF-8)
    segments/<name>.deletes.json    ["id", ...]: ids this commit deletes (only when it deletes)
    segments/<name>.ids.json        {"ids": [...], "deletes": [...]}: instead of the two above
                                    when an id holds a line break (and in format 1)
    segments/<name>.rows.jsonl      one JSON object per row: data, metadata, vector info
    segments/<name>.f0.npy          the rows' vectors of one field, float32 (rows x dim)
    segments/<name>.f0.sq.npy       their squared norms, float32 (rows; from format 2)
    segments/<name>.f0.mask.npy     which rows hold that vector (only when not all do)

A manifest entry flags a segment ``fresh`` when none of its ids was stored before it and none
appears twice: a reader then appends its rows without looking ids up, and reads the ids only
when a result needs them (reopening a big store costs little more than mapping its vectors).

A commit uploads its segment objects, makes them durable, then creates manifest ``N+1`` with an
atomic create-if-absent. Whoever creates it has committed; a writer that loses the race deletes
its segment objects and plans again on the new version. Readers never see half a commit: a
manifest only names complete segments. ``LATEST.json`` is then advanced by compare-and-swap (never
backwards). A reader checks it with one conditional request; a writer that lost a race also probes
``N+1, N+2, ...`` so that a crash between creating a manifest and advancing ``LATEST.json`` is
repaired by the next writer.

Deletes and updates are tombstones: a segment lists the ids it deletes, and a later row with an
id replaces the earlier one. Compaction writes the live rows as one segment flagged ``clear`` in a
new manifest. Clean-up deletes only objects that none of the last ``keep_versions`` manifests name
and that are older than a grace period, so a reader still on an older version keeps working.

Integrity (format 3). Every object of a segment has a checksum in the segment's manifest entry
(``"checksums": {"algorithm": "xxh3_64", "block": 262144, "objects": {"ids.txt": <hex>, ...}}``):
the xxh3_64 of the list of xxh3_64 digests of its 256 KiB blocks (little-endian uint64s). A
``.npy`` object carries that list after its data (``trailer``), so a ranged read of a few rows
checks the blocks it reads against the trailer, and the trailer against the manifest. An object
is verified when it is first loaded (a memory-mapped file is hashed once, on open); a mismatch is
a :class:`StorageError` naming the object. Segments written in formats 1 and 2 have no checksums
(a manifest of those formats is never read for any); compaction rewrites them with checksums.

Schema (format 4). Every manifest carries the store's schema (``"schema": {"default_field":
"embedding", "fields": {"embedding": {"dim": 384, "metric": "cosine", "source": ["text"],
"separator": " ", "embedder": {"name": ..., "options": ..., "model": ..., "fingerprint": [...]}}}}``,
see :mod:`dk_vector_plugins.schema`), so a store reopens with its location only.

Manifests and ``LATEST.json`` are untrusted input: :func:`validate_manifest` checks them before
use (segment names are plain file names, counts are bounded integers, keys are known), and no
count read from them sizes anything before an object has confirmed it.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

import attrs
import numpy as np
import numpy.typing as npt
import xxhash

from ..core import WriteBatch, apply
from ..errors import (
    ConfigError,
    ConflictError,
    DkvPerformanceWarning,
    InvalidRequestError,
    StorageError,
    VersionNotFoundError,
)
from ..index import LazyArray
from ..memtable import RecordTable
from ..quant import Int8Codes, LoadedCodes, quantize_rows
from ..schema import StoreSchema
from ..textindex import Postings
from ..vectors import squared_norms, unique_ints
from .npy import dump_npy, load_npy, npy_header, npy_header_bytes, npy_source
from .ops import (
    Data,
    Delete,
    Flush,
    Get,
    GetArray,
    GetIfChanged,
    GetRange,
    List,
    Listed,
    Many,
    Program,
    Put,
    PutIfAbsent,
    PutIfMatch,
    Stat,
    Versioned,
    data_len,
    joined,
)
from .row_codec import EMPTY_ROW, LazyRows, RowParts, encode_row, line_at, line_ends

__all__ = [
    "FORMAT_VERSION",
    "LOAD_VECTORS",
    "Checksums",
    "TableLogic",
    "TableOptions",
    "TableState",
    "serve_inline",
    "validate_manifest",
]

T = TypeVar("T")

#: The table format this version writes; a manifest with a higher number is refused.
#: 1: ids in ``.ids.json``; 2: adds ``.ids.txt``, ``.deletes.json``, ``.sq.npy`` and ``fresh``;
#: 3: adds checksums of every segment object (and block digests after ``.npy`` data); rows may
#: hold the row codec's ``$dict`` and ``$tuple`` tags (escaped user dicts, tuples), which format-2
#: readers would read as plain dicts, so they refuse format 3;
#: 4: manifests hold the store's schema (``"schema"``: per vector field its dimension, metric,
#: source text fields and embedder), which a format-3 writer would drop, so it refuses format 4;
#: 5: segments may hold full-text postings (``"text"``: per field ``<key>.terms.json`` and
#: ``<key>.post.npy``) and, per vector field, the int8 codes of its rows (``"codes": true``:
#: ``<key>.c8.npy``, ``.cs.npy``, ``.cr.npy``, ``.cn.npy``), which a format-4 writer's clean-up
#: would delete, so it refuses format 5.
FORMAT_VERSION = 5
#: The first format whose manifests hold checksums.
CHECKSUM_FORMAT = 3
CHECKSUM_ALGORITHM = "xxh3_64"
#: Bytes per checksum block: what a ranged read reads at least (and verifies) per row it wants.
CHECKSUM_BLOCK = 1 << 18
#: The objects of a vector field's int8 codes: codes (int8 rows x dim), scales (float32), residual
#: norms (float32), squared norms (float64); see :class:`~dk_vector_plugins.quant.Int8Codes`.
CODE_OBJECTS = ("c8", "cs", "cr", "cn")
#: What a store reads of a segment's vectors when it loads it (``TableOptions.load_vectors``).
LoadVectors = bool | Literal["codes"]
#: The values ``load_vectors`` takes.
LOAD_VECTORS: tuple[LoadVectors, ...] = (True, False, "codes")
LATEST = "LATEST.json"
MANIFESTS = "manifests/"
SEGMENTS = "segments/"
TMP_MARK = ".tmp-"


def manifest_key(version: int) -> str:
    """The key of manifest ``version``."""
    return f"{MANIFESTS}{version:020d}.json"


def check_load_vectors(value: object) -> LoadVectors:
    """``value`` if it is a value of ``load_vectors`` (``True``, ``False`` or ``"codes"``), else a
    :class:`ConfigError` naming it."""
    if isinstance(value, bool):
        return value
    if value == "codes":
        return "codes"
    raise ConfigError(f"load_vectors must be True, False or 'codes', got {value!r}")


@attrs.define
class TableOptions:
    """Tuning of the table format.

    :ivar max_segments: compact automatically when a manifest names more segments.
    :ivar dead_fraction: compact automatically when this fraction of stored rows is dead.
    :ivar keep_versions: clean-up never deletes what the newest this-many manifests name.
    :ivar grace_s: clean-up never deletes an object younger than this (seconds).
    :ivar lazy_rows: load row data on first use (vectors and ids load at once).
    :ivar lazy_ids: read the ids of ``fresh`` segments on first use instead of with the vectors
        (worth it where a read is cheap: local files; on S3 it would cost a round trip later).
    :ivar load_vectors: read vectors when a segment is loaded; ``False``: when first needed (a
        local search reads a segment's vectors whole, a record shown reads its own row), for a
        store whose searches run elsewhere (a Dask cluster); ``"codes"``: read the int8 codes of
        a segment that stores them (:data:`CODE_OBJECTS`) instead of its vectors, which stay in
        storage: a search scans the codes and reads the rows it re-ranks by ranged reads (the
        vectors of a segment without codes are read on load, as with ``True``).
    :ivar warn_load_bytes: warn (:class:`DkvPerformanceWarning`) before loading more than this.
    :ivar inline_max_bytes: a commit whose segment objects total at most this many bytes keeps
        them inside its manifest (one durable write per commit; see "Small commits").
    :ivar latest_every: advance ``LATEST.json`` every this many versions (and at compaction);
        above 1 readers always look for the manifests after it (cheap where a missing object
        costs a failed ``open``: a local store, which rewrites a file only every 16 commits).
    :ivar merge_fan: merge the newest segments into one once this many of them are small (see
        :meth:`TableLogic.merge_start`): commits never wait for a rewrite of the whole table.
    :ivar merge_max_rows: a merge rewrites at most this many rows (bounded work per commit).
    :ivar gc_every: clean up (:meth:`TableLogic.gc`) after every this many versions (0: never
        automatically).
    :ivar codes_min_rows: a segment of at least this many rows stores the int8 codes of its
        vectors (:mod:`dk_vector_plugins.quant`), so the int8 scan reads them instead of
        quantizing the rows (0: never).
    :ivar maintenance: ``"background"``: merges and automatic clean-ups run on a thread of the
        writing store, beside its commits; ``"inline"``: in the commit that makes them due.
    """

    max_segments: int = 32
    dead_fraction: float = 0.5
    keep_versions: int = 10
    grace_s: float = 3600.0
    lazy_rows: bool = True
    lazy_ids: bool = False
    load_vectors: LoadVectors = attrs.field(default=True, validator=lambda _s, _a, v: check_load_vectors(v))
    warn_load_bytes: int | None = None
    inline_max_bytes: int = 64 * 1024
    latest_every: int = 1
    merge_fan: int = 8
    merge_max_rows: int = 8192
    gc_every: int = 64
    codes_min_rows: int = 4096
    maintenance: Literal["background", "inline"] = "background"


@attrs.define
class TableState:
    """What one store has loaded: the manifest version, its segments and LATEST.json's etag."""

    version: int = 0
    etag: str | None = None
    segments: list[dict[str, Any]] = attrs.field(factory=list)
    probe: bool = True  # probe for manifests newer than LATEST.json on the next refresh
    #: The objects of inline segments (kept in a manifest, not stored on their own), by key.
    inline: dict[str, bytes] = attrs.field(factory=dict)
    #: A checkout: the table stays at this committed version and takes no writes.
    pinned: int | None = None
    #: How many restores the loaded version follows (the manifest's ``epoch``): a store whose
    #: next version follows another restore loads the table again (see ``_apply_manifest``).
    epoch: int = 0
    stats: dict[str, int] = attrs.field(factory=lambda: {"segments_loaded": 0, "bytes_loaded": 0})


# --- checksums ---------------------------------------------------------------------------------

Buffer = bytes | bytearray | memoryview
_digest = xxhash.xxh3_64_intdigest


def block_digests(parts: Sequence[Any], block: int) -> npt.NDArray[np.uint64]:
    """The xxh3_64 digest of every ``block`` bytes of the concatenation of ``parts`` (buffers)."""
    out: list[int] = []
    pending: Any = None  # a block begun in one part and continued in the next
    filled = 0
    for part in parts:
        view = memoryview(part).cast("B")
        n = len(view)
        at = 0
        if pending is not None:
            at = min(block - filled, n)
            pending.update(view[:at])
            filled += at
            if filled == block:
                out.append(pending.intdigest())
                pending = None
        whole = (n - at) // block
        out.extend(_digest(view[i : i + block]) for i in range(at, at + whole * block, block))
        at += whole * block
        if at < n:
            pending, filled = xxhash.xxh3_64(view[at:]), n - at
    if pending is not None:
        out.append(pending.intdigest())
    return np.array(out, dtype="<u8")


def digest_list_checksum(digests: Buffer) -> str:
    """The checksum of an object whose block digests are ``digests`` (little-endian uint64s)."""
    return xxhash.xxh3_64_hexdigest(digests)


def object_checksum(parts: Sequence[Any], block: int = CHECKSUM_BLOCK) -> str:
    """The checksum of an object of ``parts``: xxh3_64 of its block digests."""
    return digest_list_checksum(block_digests(parts, block).tobytes())


@attrs.frozen
class Checksums:
    """The checksums of one segment's objects (a format-3 manifest entry's ``checksums``).

    :ivar block: bytes per checksum block.
    :ivar objects: object key -> checksum (hex).
    """

    block: int
    objects: Mapping[str, str]

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Checksums | None:
        """Those of a validated manifest entry (``None``: a segment of format 1 or 2)."""
        sums = entry.get("checksums")
        if sums is None:
            return None
        base = f"{SEGMENTS}{entry['name']}."
        return cls(int(sums["block"]), {base + k: v for k, v in sums["objects"].items()})

    def expected(self, key: str) -> str:
        """The checksum of ``key`` (every object of the segment has one: validated)."""
        return self.objects[key]


def _mismatch(where: str, detail: str) -> StorageError:
    return StorageError(f"checksum mismatch in segment file {where}: {detail} (the object is damaged)")


def verify_bytes(data: Buffer, key: str, sums: Checksums | None, describe: Callable[[str], str]) -> None:
    """Check an object's bytes against its checksum (nothing to check without checksums)."""
    if sums is None:
        return
    want = sums.expected(key)
    got = object_checksum([data], sums.block)
    if got != want:
        raise _mismatch(describe(key), f"xxh3_64 {got}, the manifest says {want}")


def verify_npy(array: npt.NDArray[Any], key: str, sums: Checksums | None, describe: Callable[[str], str]) -> None:
    """Check a loaded ``.npy`` object (its header, data and trailer of block digests, and that
    nothing follows) against its checksum."""
    if sums is None:
        return
    whole = npy_source(array)
    if whole is None:  # pragma: no cover - the stores load arrays with npy.open_npy / load_npy
        raise StorageError(f"cannot verify {describe(key)}: not loaded from its object")
    view = memoryview(whole).cast("B")
    # where the array's data lies in the object (its header was parsed when it was loaded)
    start = array.__array_interface__["data"][0] - np.frombuffer(whole, dtype=np.uint8).__array_interface__["data"][0]
    end = start + array.nbytes
    trailer = 8 * math.ceil(end / sums.block)
    if len(view) != end + trailer:
        raise _mismatch(describe(key), f"{len(view)} bytes, its checksum covers {end + trailer}")
    digests = block_digests([view[:end]], sums.block).tobytes()
    if digests != view[end:]:
        raise _mismatch(describe(key), "its data does not match its block digests")
    if digest_list_checksum(digests) != sums.expected(key):
        raise _mismatch(describe(key), "its block digests do not match the manifest")


def _block_spans(spans: Sequence[tuple[int, int]], block: int, end: int) -> list[tuple[int, int]]:
    """Byte spans (ascending) widened to whole checksum blocks of an object's first ``end``
    bytes, overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for a, b in spans:
        a, b = a // block * block, min(-(-b // block) * block, end)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def npy_object(array: npt.NDArray[Any], block: int) -> tuple[tuple[Buffer, ...], str]:
    """A ``.npy`` object with its trailer of block digests, and its checksum."""
    head, body = dump_npy(array)
    digests = block_digests([head, body], block).tobytes()
    return (head, body, digests), digest_list_checksum(digests)


# --- untrusted manifests -----------------------------------------------------------------------

#: A segment name is a plain file name: no separator, no "..", not hidden.
SEGMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
FIELD_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")
_HEX64 = re.compile(r"[0-9a-f]{16}")
#: Sanity bounds of counts and dimensions (an object must still confirm every count).
MAX_COUNT = 1 << 48
MAX_DIM = 1 << 24
MAX_VERSION = 10**20 - 1  # manifest keys have 20 digits


class NewerFormatError(StorageError):
    """A manifest was written by a newer table format than this version reads."""


class _Invalid(Exception):
    """A manifest violates the schema (the message says where)."""


def _int_or_error(value: Any, where: str) -> int:
    if type(value) is not int or not 0 < value <= MAX_VERSION:
        raise StorageError(f"corrupt tag {where}: version {value!r}")
    return value


def _int(value: Any, at: str, low: int = 0, high: int = MAX_COUNT) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _Invalid(f"{at} is {value!r}, not an integer in [{low}, {high}]")
    return value


def _opt(entry: Mapping[str, Any], key: str, kind: type, at: str) -> None:
    if key in entry and type(entry[key]) is not kind:
        raise _Invalid(f"{at}.{key} is {entry[key]!r}, not a {kind.__name__}")


def validate_manifest(m: Any, where: str) -> dict[str, Any]:
    """Check a parsed manifest (or ``LATEST.json``) against the table format's schema.

    Returns it with, for formats 1 and 2, no checksums (they are not read from such a manifest).
    Any violation is a :class:`StorageError` naming ``where`` and the offending value.
    """
    try:
        if not isinstance(m, dict):
            raise _Invalid(f"not a JSON object but {type(m).__name__}")
        fmt = _int(m.get("format"), "format", 1, 2**31)
        if fmt > FORMAT_VERSION:
            raise NewerFormatError(
                f"{where} was written in table format {fmt} by a newer dk_vector_plugins; this version "
                f"reads format {FORMAT_VERSION} and older: upgrade the package"
            )
        _int(m.get("version"), "version", 0, MAX_VERSION)
        if "created" in m and (type(m["created"]) not in (int, float) or not math.isfinite(m["created"])):
            raise _Invalid(f"created is {m['created']!r}, not a time")
        if "rows" in m:
            _int(m["rows"], "rows")
        if "epoch" in m:
            _int(m["epoch"], "epoch")
        if "schema" in m and not (isinstance(m["schema"], dict) and isinstance(m["schema"].get("fields"), dict)):
            raise _Invalid(f"schema is {m['schema']!r}, not an object with fields")
        segs = m.get("segments")
        if not isinstance(segs, list):
            raise _Invalid(f"segments is {type(segs).__name__}, not a list")
        entries = [_valid_entry(e, f"segments[{i}]", fmt) for i, e in enumerate(segs)]
        if len({e["name"] for e in entries}) != len(entries):
            raise _Invalid("a segment name appears twice")
        inline = m.get("inline", {})
        if not isinstance(inline, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
            for k, v in inline.items()
        ):
            raise _Invalid("inline is not an object of segment objects (base64 strings)")
        for e in entries:
            if "in" in e and e["in"] > m["version"]:
                raise _Invalid(f"segment {e['name']} is inline in version {e['in']}, after this one")
    except _Invalid as e:
        raise StorageError(f"corrupt manifest {where}: {e}") from None
    return {**m, "segments": entries}


def _valid_entry(e: Any, at: str, fmt: int) -> dict[str, Any]:
    if not isinstance(e, dict):
        raise _Invalid(f"{at} is {type(e).__name__}, not a JSON object")
    name = e.get("name")
    if not isinstance(name, str) or not SEGMENT_NAME.fullmatch(name) or ".." in name:
        raise _Invalid(f"{at}.name is {name!r}, not a plain file name ([A-Za-z0-9._-], no '..')")
    rows = _int(e.get("rows"), f"{at}.rows")
    if "deletes" in e:
        _int(e["deletes"], f"{at}.deletes")
    for key in ("clear", "fresh", "data"):
        _opt(e, key, bool, at)
    if e.get("ids", "json") not in ("txt", "json"):
        raise _Invalid(f"{at}.ids is {e['ids']!r}, not 'txt' or 'json'")
    if "bytes" in e:
        _int(e["bytes"], f"{at}.bytes", 0, 2**63)
    if "in" in e:
        _int(e["in"], f"{at}.in", 1, MAX_VERSION)
    fields = e.get("fields")
    if not isinstance(fields, dict):
        raise _Invalid(f"{at}.fields is {type(fields).__name__}, not a JSON object")
    keys: set[str] = set()
    for fname, f in fields.items():
        fat = f"{at}.fields[{fname!r}]"
        if not fname or not isinstance(f, dict):
            raise _Invalid(f"{fat} is not a named JSON object")
        fkey = f.get("key")
        if not isinstance(fkey, str) or not FIELD_KEY.fullmatch(fkey) or fkey in keys:
            raise _Invalid(f"{fat}.key is {fkey!r}, not a new key of [A-Za-z0-9_]")
        keys.add(fkey)
        _int(f.get("dim"), f"{fat}.dim", 1, MAX_DIM)
        _int(f.get("count"), f"{fat}.count", 0, rows)
        _opt(f, "sq", bool, fat)
        _opt(f, "codes", bool, fat)
    texts = e.get("text", {})
    if not isinstance(texts, dict):
        raise _Invalid(f"{at}.text is {type(texts).__name__}, not a JSON object")
    for fname, t in texts.items():
        tat = f"{at}.text[{fname!r}]"
        if not fname or not isinstance(t, dict) or not isinstance(t.get("analyzer"), str):
            raise _Invalid(f"{tat} is not a named JSON object with an analyzer")
        tkey = t.get("key")
        if not isinstance(tkey, str) or not FIELD_KEY.fullmatch(tkey) or tkey in keys:
            raise _Invalid(f"{tat}.key is {tkey!r}, not a new key of [A-Za-z0-9_]")
        keys.add(tkey)
        _int(t.get("size"), f"{tat}.size", rows + 1, 2**31 - 1)
    out = {k: v for k, v in e.items() if k != "checksums"}
    if fmt >= CHECKSUM_FORMAT and "checksums" in e:
        out["checksums"] = _valid_checksums(e["checksums"], out, f"{at}.checksums")
    return out


def _valid_checksums(sums: Any, entry: Mapping[str, Any], at: str) -> dict[str, Any]:
    if not isinstance(sums, dict) or sums.get("algorithm") != CHECKSUM_ALGORITHM:
        raise _Invalid(f"{at} is not {{'algorithm': {CHECKSUM_ALGORITHM!r}, 'block': ..., 'objects': ...}}")
    block = _int(sums.get("block"), f"{at}.block", 4096, 1 << 30)
    if block & (block - 1):
        raise _Invalid(f"{at}.block is {block}, not a power of two")
    objects = sums.get("objects")
    base = len(SEGMENTS) + len(entry["name"]) + 1
    want = {k[base:] for k in segment_keys(entry)}
    if not isinstance(objects, dict) or set(objects) != want:
        raise _Invalid(f"{at}.objects does not name exactly the segment's objects {sorted(want)}")
    for k, v in objects.items():
        if not isinstance(v, str) or not _HEX64.fullmatch(v):
            raise _Invalid(f"{at}.objects[{k!r}] is {v!r}, not 16 hex digits")
    return sums


def _parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    try:
        m = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise StorageError(f"corrupt manifest {where}: {type(e).__name__}: {e}") from None
    return validate_manifest(m, where)


# --- segment entries and their objects ---------------------------------------------------------


def has_row_data(entry: Mapping[str, Any]) -> bool:
    """Whether a segment has a rows file (format 2 leaves it out when every row is empty)."""
    return bool(entry["rows"]) and bool(entry.get("data", True))


def id_keys(entry: Mapping[str, Any]) -> list[str]:
    """The objects holding a segment's ids and deletes, in the order :func:`decode_ids` takes them."""
    base = f"{SEGMENTS}{entry['name']}"
    if entry.get("ids") != "txt":
        return [f"{base}.ids.json"]
    keys = [f"{base}.ids.txt"]
    if entry.get("deletes"):
        keys.append(f"{base}.deletes.json")
    return keys


def segment_keys(entry: Mapping[str, Any]) -> list[str]:
    """Every object key of a segment."""
    base = f"{SEGMENTS}{entry['name']}"
    keys = list(id_keys(entry))
    if has_row_data(entry):
        keys.append(f"{base}.rows.jsonl")
    for f in entry["fields"].values():
        keys.append(f"{base}.{f['key']}.npy")
        if f.get("sq"):
            keys.append(f"{base}.{f['key']}.sq.npy")
        if f["count"] < entry["rows"]:
            keys.append(f"{base}.{f['key']}.mask.npy")
        if f.get("codes"):
            keys.extend(f"{base}.{f['key']}.{c}.npy" for c in CODE_OBJECTS)
    for t in entry.get("text", {}).values():
        keys.append(f"{base}.{t['key']}.terms.json")
        keys.append(f"{base}.{t['key']}.post.npy")
    return keys


def _strings(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise StorageError(f"corrupt segment file {where}: not a list of ids")
    return raw


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise StorageError(f"corrupt segment file {where}: {type(e).__name__}: {e}") from None


def decode_ids(
    entry: Mapping[str, Any], raw: Sequence[bytes], describe: Callable[[str], str]
) -> tuple[Sequence[str] | Callable[[], Sequence[str]], list[str]]:
    """A segment's ids and deletes from the objects :func:`id_keys` names.

    Text ids are checked by count now (at most one id per byte) and decoded when first asked
    for (a function).
    """
    keys = id_keys(entry)
    m = int(entry["rows"])
    if entry.get("ids") != "txt":
        meta = _json(raw[0], describe(keys[0]))
        if not isinstance(meta, dict):
            raise StorageError(f"corrupt segment file {describe(keys[0])}: not a JSON object")
        ids = _strings(meta.get("ids"), describe(keys[0]))
        deletes = _strings(meta.get("deletes"), describe(keys[0]))
        if len(ids) != m:
            raise StorageError(f"segment file {describe(keys[0])} lists {len(ids)} ids, its manifest says {m}")
        return ids, deletes
    deletes = []
    if len(keys) > 1:
        deletes = _strings(_json(raw[1], describe(keys[1])), describe(keys[1]))
        if len(deletes) != int(entry["deletes"]):
            raise StorageError(
                f"segment file {describe(keys[1])} lists {len(deletes)} ids, its manifest says {entry['deletes']}"
            )
    if m > len(raw[0]) or (m == 0) != (len(raw[0]) == 0):  # one line per id, each ended by "\n"
        raise StorageError(f"segment file {describe(keys[0])} cannot hold the {m} ids its manifest says")
    lazy = LazyIds(raw[0], describe(keys[0]), m)
    return lambda: lazy, deletes


class LazyIds(Sequence[str]):
    """A segment's ids, one per line, decoded on access: one id costs one slice, all of them one
    split (a search showing 10 hits of a 200k-row segment decodes 10 ids). A file holding
    another number of lines than ``expected`` raises :class:`StorageError` on first access."""

    def __init__(self, raw: bytes, where: str, expected: int) -> None:
        self._raw = raw
        self._where = where
        self._expected = expected  # checked when the ids are first read
        self._ends_cache: npt.NDArray[np.intp] | None = None
        self._all: list[str] | None = None

    def _bad_count(self, got: int) -> StorageError:
        return StorageError(f"segment file {self._where} lists {got} ids, its manifest says {self._expected}")

    @property
    def _ends(self) -> npt.NDArray[np.intp]:
        if self._ends_cache is None:
            ends = line_ends(self._raw)
            if len(ends) != self._expected or (len(self._raw) and self._raw[-1:] != b"\n"):
                raise self._bad_count(len(ends))
            self._ends_cache = ends
        return self._ends_cache

    def __len__(self) -> int:
        return self._expected

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return self.all()[i]
        if self._all is not None:
            return self._all[i]
        i, start, end = line_at(self._ends, i)
        try:
            return self._raw[start:end].decode()
        except UnicodeDecodeError as e:
            raise StorageError(f"corrupt segment file {self._where} (line {i + 1}): {e}") from e

    def all(self) -> list[str]:
        """Every id (decoded once)."""
        if self._all is None:
            try:
                got = self._raw.decode().split("\n")
            except UnicodeDecodeError as e:
                raise StorageError(f"corrupt segment file {self._where}: {e}") from e
            if len(got) != self._expected + 1 or got[-1]:
                raise self._bad_count(len(got) - 1 if not got[-1] else len(got))
            self._all = got[:-1]
        return self._all


class CheckedRows(LazyRows):
    """A segment's rows, parsed row by row on access (:class:`LazyRows`) and each checked: data,
    metadata and vector info are JSON objects, the info of each vector field too. Anything else,
    or a row nested too deeply to decode, is a :class:`StorageError` naming the object."""

    def __init__(self, raw: bytes, where: str) -> None:
        super().__init__(raw, where)
        self._object = where

    def __getitem__(self, i: Any) -> Any:  # as LazyRows (a slice: row by row, through here)
        if isinstance(i, slice):
            return super().__getitem__(i)
        try:
            row = super().__getitem__(i)
        except RecursionError:
            raise StorageError(f"corrupt segment rows {self._object} (row {i}): nested too deeply") from None
        data, meta, vinfo = row
        if not (
            type(data) is dict
            and type(meta) is dict
            and type(vinfo) is dict
            and all(type(v) is dict and type(v.get("metadata", {})) is dict for v in vinfo.values())
        ):
            raise StorageError(
                f"corrupt segment rows {self._object} (row {i}): not a record's data, metadata and vector info"
            )
        return row


#: A segment read and checked, not yet applied to a table (see :meth:`RecordTable.load_segment`).
StoredVectors = tuple[Any, "npt.NDArray[np.bool_] | None", Any]


@attrs.frozen
class ReadSegment:
    entry: Mapping[str, Any]
    ids: Sequence[str] | Callable[[], Sequence[str]]
    deletes: list[str]
    vectors: dict[str, StoredVectors]
    loader: Callable[[], Sequence[RowParts]] | None
    #: Per text field: the analyzer key of its stored postings and a function reading them.
    texts: dict[str, tuple[str, Callable[[int], Postings]]] = attrs.field(factory=dict)
    #: Per vector field with stored int8 codes: a function reading them.
    codes: dict[str, Callable[[], Int8Codes]] = attrs.field(factory=dict)


_MISSING = object()


def inline_answer(op: Any, inline: Mapping[str, bytes]) -> Any:
    """What an object store would answer ``op`` with, when it reads an inline object (else
    ``_MISSING``): the bytes, a range of them, or the ``.npy`` array they hold."""
    key = getattr(op, "key", None)
    if key is None or key not in inline:
        return _MISSING
    data = inline[key]
    if isinstance(op, Get):
        return Versioned(data, "inline")
    if isinstance(op, GetRange):
        return data[op.start : op.start + op.length]
    if isinstance(op, GetArray):
        return load_npy(data)
    return _MISSING


def serve_inline(program: Program[T], inline: Mapping[str, bytes]) -> Program[T]:
    """Run ``program``, answering its reads of inline objects from ``inline`` and passing every
    other operation (and its errors) through."""
    try:
        op = next(program)
        while True:
            try:
                if isinstance(op, Many):
                    local = [inline_answer(o, inline) for o in op.ops]
                    remote = [o for o, got in zip(op.ops, local) if got is _MISSING]
                    fetched = iter((yield Many(remote)) if remote else [])
                    result: Any = [next(fetched) if got is _MISSING else got for got in local]
                else:
                    result = inline_answer(op, inline)
                    if result is _MISSING:
                        result = yield op
            except BaseException as e:  # the program sees the store's error where it yielded
                op = program.throw(e)
                continue
            op = program.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _live_batch(table: RecordTable, first: int, text_fields: Sequence[str] = (), **flags: Any) -> WriteBatch:
    """The live rows of ``table`` from row ``first`` on (in row order), with their vectors, the
    int8 codes the table holds for them and the postings it holds for them of ``text_fields``
    (neither computed again), as a batch
    (``flags``: its other fields); vector-only rows as bare ids (no tuple per row)."""
    ids, rows = table.live_rows(first)
    live = np.flatnonzero(table._live[first : table.nrows]) + first
    batches = {}
    codes: dict[str, Int8Codes] = {}
    for name, index in table.indexes.items():
        pos = np.flatnonzero(index.holds(live))
        if len(pos):
            batches[name] = (pos.astype(np.int64), index.gather(live[pos]))
            held = index.codes_of(live) if len(pos) == len(live) else None
            if held is not None:
                codes[name] = held
    if rows is None:
        return WriteBatch(bare_ids=ids, batches=batches, codes=codes, **flags)
    texts = table.postings_of_rows(live, text_fields) if text_fields else {}
    return WriteBatch(rows=rows, batches=batches, texts=texts, codes=codes, **flags)


def _operation(batch: WriteBatch) -> str:
    """What a commit did, as :meth:`TableLogic.versions` lists it."""
    if batch.restore is not None:
        return "restore"
    if batch.clear:
        return "compact" if batch.rows or batch.bare_ids else "clear"
    if batch.replaces is not None:
        return "merge"
    if not batch.changes_rows:
        return "schema"
    return "delete" if batch.deletes and not (batch.rows or batch.bare_ids) else "write"


#: Where tags live: ``tags/<name>.json`` = ``{"version": N, "created": time}``.
TAGS = "tags/"
TAG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def manifest_versions(listed: Sequence[Listed]) -> list[tuple[int, Listed]]:
    """The committed manifests among listed objects (not temporary files), by version."""
    out = []
    for x in listed:
        number = x.key[len(MANIFESTS) : -5]
        if x.key.startswith(MANIFESTS) and x.key.endswith(".json") and TMP_MARK not in x.key and number.isdigit():
            out.append((int(number), x))
    return sorted(out, key=lambda vx: vx[0])


def _hint_version(raw: bytes, where: str) -> int:
    """The version ``LATEST.json`` names (``-1`` when it is damaged: it is then replaced)."""
    try:
        return int(_parse_manifest(raw, where)["version"])
    except NewerFormatError:
        raise
    except StorageError:
        return -1


def _inline_objects(manifest: Mapping[str, Any]) -> dict[str, bytes]:
    """The inline objects a manifest carries, by key."""
    out: dict[str, bytes] = {}
    for name, objects in manifest.get("inline", {}).items():
        for suffix, text in objects.items():
            try:
                out[f"{SEGMENTS}{name}.{suffix}"] = base64.b64decode(text, validate=True)
            except ValueError as e:
                raise StorageError(f"corrupt inline object {name}.{suffix} in a manifest: {e}") from None
    return out


@attrs.define(eq=False)
class PreparedMerge:
    """A merge stored off the commit path, waiting to be committed (by the next commit of the
    store, in its manifest, or by the maintenance thread on its own)."""

    #: The names of the segments it replaces, in order.
    run: list[str]
    #: Their live rows (and their deletes of earlier rows), as :meth:`TableLogic.merge_batch` took them.
    batch: WriteBatch
    #: The merged segment's manifest entry (without ``in``: the committing version adds it).
    entry: dict[str, Any]
    #: Its objects kept inside the manifest that commits it (a small merge), else empty.
    inline: dict[str, bytes]
    #: Its objects stored on their own (deleted when the merge is dropped).
    written: list[str]
    #: Where the merged segment went among the committed segments (set by the commit taking it).
    start: int | None = None
    #: The segments after the run, read for the commit taking it along (``None``: not read).
    later: list[ReadSegment] | None = None

    def find(self, state: TableState) -> int | None:
        """Where the run stands among ``state``'s segments, or ``None`` (compacted, merged or
        restored away)."""
        names = [str(s["name"]) for s in state.segments]
        n = len(self.run)
        return next((i for i in range(len(names) - n + 1) if names[i : i + n] == self.run), None) if n else None

    def spliced(self, state: TableState, start: int, version: int) -> list[dict[str, Any]]:
        """``state``'s segments with the merged one in place of the run at ``start``, as
        ``version`` commits it (holding its objects when they are inline)."""
        entry = {**self.entry, "in": version} if self.inline else self.entry
        return [*state.segments[:start], entry, *state.segments[start + len(self.run) :]]


class TableLogic:
    """The table programs. ``describe(key)`` names an object in error messages."""

    def __init__(self, options: TableOptions, describe: Callable[[str], str]) -> None:
        self.options = options
        self.describe = describe
        self.check_norms = False  # verify(): recompute stored norms
        #: The store's schema: adopted from each manifest loaded, written into each one committed.
        self.schema: StoreSchema | None = None
        # .npy key -> (where its data starts, its verified block digests or None): row reads
        self._layouts: dict[str, tuple[int, npt.NDArray[np.uint64] | None]] = {}
        # version -> its segments, for the newest versions this store committed or loaded: what
        # clean-up keeps (the newest keep_versions, and those from the one LATEST.json names on),
        # without reading and parsing those manifests again (each is written once)
        self._recent: dict[int, list[dict[str, Any]]] = {}

    # -- encoding -------------------------------------------------------------------------------
    def encode_segment(
        self, batch: WriteBatch, version: int
    ) -> tuple[dict[str, Any], dict[str, Data]]:
        """The manifest entry and the objects of a batch's segment (validates JSON-ability)."""
        name = f"{version:012d}-{uuid.uuid4().hex[:16]}"
        base = f"{SEGMENTS}{name}"
        block = CHECKSUM_BLOCK
        sums: dict[str, str] = {}
        objects: dict[str, Data] = {}

        def put(suffix: str, data: bytes) -> None:
            objects[f"{base}.{suffix}"] = data
            sums[suffix] = object_checksum([data], block)

        def put_npy(suffix: str, array: npt.NDArray[Any]) -> None:
            objects[f"{base}.{suffix}"], sums[suffix] = npy_object(array, block)

        ids = batch.row_ids()
        text_ids = "\n".join(ids)
        id_format = "txt" if text_ids.count("\n") == max(len(ids) - 1, 0) else "json"  # no id holds one
        if id_format == "txt":
            put("ids.txt", (text_ids + "\n").encode() if ids else b"")
            if batch.deletes:
                put("deletes.json", json.dumps(list(batch.deletes)).encode())
        else:
            put("ids.json", json.dumps({"ids": ids, "deletes": list(batch.deletes)}).encode())
        has_data = False
        if batch.rows:
            stored: Sequence[bytes | None] = (
                batch.lines if batch.lines is not None and len(batch.lines) == len(batch.rows) else [None] * len(batch.rows)
            )
            lines = [
                line
                if line is not None
                else EMPTY_ROW
                if not (r[1] or r[2] or (r[3] and any(r[3].values())))
                else encode_row(*r)
                for line, r in zip(stored, batch.rows)
            ]
            has_data = any(line is not EMPTY_ROW for line in lines)
            if has_data:  # rows that are all empty (vectors only) need no file
                put("rows.jsonl", b"".join(lines))
        m = len(ids)
        fields: dict[str, Any] = {}
        for i, (field, (positions, mat)) in enumerate(sorted(batch.batches.items())):
            key = f"f{i}"
            dense = len(positions) == m and np.array_equal(positions, np.arange(m))
            if dense:
                full = mat  # every row holds this vector, in order: no scatter
            else:
                full = np.zeros((m, mat.shape[1]), dtype=np.float32)
                full[positions] = mat
            put_npy(f"{key}.npy", full)
            known = batch.norms.get(field)
            sq = np.zeros(m, dtype=np.float32)
            sq[positions] = known if known is not None and len(known) == len(mat) else squared_norms(mat)
            put_npy(f"{key}.sq.npy", sq)
            count = m if dense else len(unique_ints(positions))
            if count < m:
                present = np.zeros(m, dtype=np.bool_)
                present[positions] = True
                put_npy(f"{key}.mask.npy", present)
            fields[field] = {"key": key, "dim": int(mat.shape[1]), "count": count, "sq": True}
            if self.options.codes_min_rows and m >= self.options.codes_min_rows:
                held = batch.codes.get(field) if dense else None  # the table's, of these very rows
                codes = held if held is not None and len(held.codes) == m else quantize_rows(full)
                arrays: tuple[npt.NDArray[Any], ...] = (codes.codes, codes.scales, codes.residuals, codes.sqnorms)
                for suffix, arr in zip(CODE_OBJECTS, arrays):
                    put_npy(f"{key}.{suffix}.npy", arr)
                fields[field]["codes"] = True
        texts: dict[str, Any] = {}
        for i, (field, postings) in enumerate(sorted(batch.texts.items())):
            key = f"t{i}"
            terms, arr = postings.encode()
            put(f"{key}.terms.json", terms)
            put_npy(f"{key}.post.npy", arr)
            texts[field] = {"key": key, "analyzer": postings.analyzer, "size": len(arr)}
        entry = {
            "name": name,
            "rows": m,
            "deletes": len(batch.deletes),
            "clear": batch.clear,
            "fresh": batch.fresh and not batch.deletes,
            "ids": id_format,
            "data": has_data,
            "fields": fields,
            **({"text": texts} if texts else {}),
            "bytes": sum(data_len(v) for v in objects.values()),
            "checksums": {"algorithm": CHECKSUM_ALGORITHM, "block": block, "objects": sums},
        }
        return entry, objects

    @staticmethod
    def segment_keys(entry: Mapping[str, Any]) -> list[str]:
        """Every object key of a segment."""
        return segment_keys(entry)

    # -- reading --------------------------------------------------------------------------------
    def refresh(
        self, table: RecordTable, state: TableState, runner: Callable[[Program[Any]], Any]
    ) -> Program[bool]:
        """Bring ``table`` to the newest committed version; ``True`` if anything changed."""
        if state.pinned is not None:  # a checkout: load that version once
            if state.version == state.pinned:
                return False
            key = manifest_key(state.pinned)
            got = yield Get(key, missing_ok=True)
            if got is None:
                raise VersionNotFoundError(
                    f"version {state.pinned} of {self.describe('')} does not exist or was cleaned up "
                    "(keep_versions, or tag a version to keep it)"
                )
            yield from self._apply_manifest(table, state, _parse_manifest(got.data, self.describe(key)), runner)
            return True
        resp = yield GetIfChanged(LATEST, state.etag)
        target: dict[str, Any] | None = None
        no_hint = False  # no LATEST.json: a new table, or a hint lost to a power failure
        if resp is not None:
            state.etag = resp.etag
            no_hint = not resp.data
            if resp.data:
                latest: dict[str, Any] | None
                try:
                    latest = _parse_manifest(resp.data, self.describe(LATEST))
                except NewerFormatError:
                    raise
                except StorageError:  # a hint written without fsync, lost to a power failure
                    latest = yield from self._newest_listed(state)
                if latest is not None and latest["version"] > state.version:
                    target = latest
                    self._saw(int(latest["version"]), latest["segments"])
        every = self.options.latest_every
        if state.probe or every > 1:  # LATEST.json may lag: look for the manifests after it
            v = max(state.version, target["version"] if target else 0)
            newest_from_latest = v
            while True:
                got = yield Get(manifest_key(v + 1), missing_ok=True)
                if got is None:
                    break
                target = _parse_manifest(got.data, self.describe(manifest_key(v + 1)))
                v += 1
                self._saw(v, target["segments"])
            state.probe = False
            if target is None and no_hint and state.version == 0:
                # nothing at version 1 either: clean-up may have removed the first manifests
                target = yield from self._newest_listed(state)
            if target is not None and (v - newest_from_latest >= every or no_hint):
                yield from self.publish_latest(target, state)  # (a lost hint is written again)
        if target is None:
            return False
        yield from self._apply_manifest(table, state, target, runner)
        return True

    def _newest_listed(self, state: TableState) -> Program[dict[str, Any] | None]:
        """The newest manifest, found by listing them (when ``LATEST.json`` is unreadable); the
        next probe then finds any newer one and the next publish repairs the hint."""
        listed = yield List(MANIFESTS)
        versions = [v for v, _ in manifest_versions(listed)]
        state.probe = True
        if not versions:
            return None
        got = yield Get(manifest_key(max(versions)))
        return _parse_manifest(got.data, self.describe(manifest_key(max(versions))))

    def _apply_manifest(
        self,
        table: RecordTable,
        state: TableState,
        manifest: dict[str, Any],
        runner: Callable[[Program[Any]], Any],
    ) -> Program[None]:
        if self.schema is not None:
            self.schema.adopt(manifest.get("schema"), self.describe(""))
        segs = manifest["segments"]
        old = [s["name"] for s in state.segments]
        same = 0  # the segments both versions start with
        while same < min(len(old), len(segs)) and segs[same]["name"] == old[same]:
            same += 1
        # merged by another writer: the table keeps the rows of the common segments and loads
        # the rest (the merged segment deletes and replaces what the segments it replaced did);
        # compacted or cleared (nothing in common), or restored since (the segments dropped may
        # have deleted or replaced rows of the common ones): it loads everything again
        epoch = int(manifest.get("epoch", 0))
        rebuild = (same == 0 and bool(old)) or (same < len(old) and epoch != state.epoch)
        if rebuild:
            same = 0
        keep_rows = sum(int(e["rows"]) for e in state.segments[:same])
        new = segs[same:]
        yield from self._load_inline(state, manifest, new)
        total = sum(self._bytes_on_load(e) for e in new)
        if self.options.warn_load_bytes is not None and total > self.options.warn_load_bytes:
            warnings.warn(
                f"loading {total / 2**20:.1f} MiB of segments from {self.describe('')} "
                f"(more than warn_download_bytes={self.options.warn_load_bytes}); a warm store "
                "afterwards only fetches what changes",
                DkvPerformanceWarning,
                stacklevel=2,
            )
        read = yield from self.read_entries(new, runner)
        if rebuild:
            table.clear()
        elif same < len(old):
            table.truncate(keep_rows)
        self._load_read(table, state, read)
        state.version = int(manifest["version"])
        state.segments = list(segs)
        state.epoch = epoch
        self._saw(state.version, state.segments)

    def read_entries(
        self, new: Sequence[Mapping[str, Any]], runner: Callable[[Program[Any]], Any]
    ) -> Program[list[ReadSegment]]:
        """Read (and check) what loading the segments ``new`` needs, before the table changes
        (their inline objects in ``state.inline`` already)."""
        ops: list[Any] = []
        for entry in new:
            base = f"{SEGMENTS}{entry['name']}"
            if not self._ids_later(entry):
                ops.extend(Get(k) for k in id_keys(entry))
            if not self.options.lazy_rows and has_row_data(entry):
                ops.append(Get(f"{base}.rows.jsonl"))
            for f in entry["fields"].values():
                if self._codes_only(f):  # the codes, and where the vectors' rows are
                    ops.extend(GetArray(f"{base}.{f['key']}.{c}.npy") for c in CODE_OBJECTS)
                    trailer = self._trailer_guess(entry, f)
                    if trailer is not None:
                        ops.append(trailer)
                elif self.options.load_vectors:
                    ops.append(GetArray(f"{base}.{f['key']}.npy"))
                    if f.get("sq"):
                        ops.append(GetArray(f"{base}.{f['key']}.sq.npy"))
                if f["count"] < entry["rows"]:
                    ops.append(GetArray(f"{base}.{f['key']}.mask.npy"))
        results = iter((yield Many(ops)) if ops else [])
        # every object is checked (and every count confirmed by one) before the table changes
        return [self._read_segment(entry, results, runner) for entry in new]

    def _load_read(self, table: RecordTable, state: TableState, read: Sequence[ReadSegment]) -> None:
        """Append the segments read by :meth:`read_entries` to ``table``."""
        table.expect_rows(table.nrows + sum(int(r.entry["rows"]) for r in read))
        try:
            for r in read:
                self._check_dimensions(table, r)
                table.load_segment(
                    r.ids,
                    int(r.entry["rows"]),
                    r.deletes,
                    r.vectors,
                    r.loader,
                    clear=bool(r.entry.get("clear")),
                    fresh=bool(r.entry.get("fresh")),
                    texts=r.texts,
                    codes=r.codes,
                )
                state.stats["segments_loaded"] += 1
                state.stats["bytes_loaded"] += int(r.entry.get("bytes", 0))
        finally:
            table.expect_rows(0)

    def _saw(self, version: int, segments: list[dict[str, Any]]) -> None:
        """Remember the segments of a version just committed or loaded (the newest few)."""
        recent = self._recent
        recent[version] = segments
        while len(recent) > max(1, self.options.keep_versions + self.options.latest_every):
            del recent[min(recent)]

    def _bytes_on_load(self, entry: Mapping[str, Any]) -> int:
        """About how many bytes loading a segment reads: its objects' bytes less those of the
        vectors (and norms) left in storage and of the int8 codes not read on load."""
        total = int(entry.get("bytes", 0))
        m = int(entry["rows"])
        for f in entry["fields"].values():
            d = int(f["dim"])
            vectors = m * d * 4 + (m * 4 if f.get("sq") else 0)
            codes = m * (d + 16) if f.get("codes") else 0  # int8 codes, scales, residuals, norms
            if self._codes_only(f):
                total -= vectors
            elif self.options.load_vectors:
                total -= codes
            else:
                total -= vectors + codes
        return max(total, 0)

    def _load_inline(
        self, state: TableState, manifest: Mapping[str, Any], new: Sequence[Mapping[str, Any]]
    ) -> Program[None]:
        """Make the inline objects of the segments ``manifest`` names available in
        ``state.inline``: from the manifest itself, and from the manifests that wrote the new
        segments (one read each); those of segments no longer named are dropped."""
        allowed = {k for e in manifest["segments"] if "in" in e for k in segment_keys(e)}
        state.inline.update((k, v) for k, v in _inline_objects(manifest).items() if k in allowed)
        wanted = sorted(
            {
                int(e["in"])
                for e in new
                if "in" in e and int(e["in"]) != manifest["version"] and not self._has_inline(state, e)
            }
        )
        if wanted:
            got = yield Many([Get(manifest_key(v)) for v in wanted])
            for v, g in zip(wanted, got):
                older = _parse_manifest(g.data, self.describe(manifest_key(v)))
                state.inline.update((k, d) for k, d in _inline_objects(older).items() if k in allowed)
        for e in new:
            if "in" in e and not self._has_inline(state, e):
                raise StorageError(
                    f"manifest {self.describe(manifest_key(int(e['in'])))} does not hold the inline "
                    f"objects of segment {e['name']}"
                )
        for key in [k for k in state.inline if k not in allowed]:
            del state.inline[key]

    @staticmethod
    def _has_inline(state: TableState, entry: Mapping[str, Any]) -> bool:
        return all(k in state.inline for k in segment_keys(entry))

    def _check_dimensions(self, table: RecordTable, read: ReadSegment) -> None:
        for field, f in read.entry["fields"].items():
            dim = table.vector_dimension(field)
            if dim is not None and dim != f["dim"]:
                key = f"{SEGMENTS}{read.entry['name']}.{f['key']}.npy"
                raise StorageError(
                    f"segment file {self.describe(key)} has {f['dim']}-dimensional vectors for field "
                    f"{field!r}, the store has {dim}"
                )

    def _read_segment(
        self, entry: Mapping[str, Any], results: Iterator[Any], runner: Callable[[Program[Any]], Any]
    ) -> ReadSegment:
        """Check the objects of one segment fetched by :meth:`_apply_manifest` (in its order) and
        set up those read later."""
        base = f"{SEGMENTS}{entry['name']}"
        sums = Checksums.of(entry)
        m = int(entry["rows"])
        ids: Sequence[str] | Callable[[], Sequence[str]]
        deletes: list[str] = []
        if self._ids_later(entry):
            ids_key = id_keys(entry)[0]
            ids_read: list[Sequence[str]] = []

            def ids() -> Sequence[str]:
                if not ids_read:
                    got, _ = decode_ids(entry, [runner(self.get_bytes(ids_key, sums))], self.describe)
                    ids_read.append(got() if callable(got) else got)
                return ids_read[0]

        else:
            raw = []
            for k in id_keys(entry):
                data = next(results).data
                verify_bytes(data, k, sums, self.describe)
                raw.append(data)
            ids, deletes = decode_ids(entry, raw, self.describe)
        rows_key = f"{base}.rows.jsonl"
        cache: list[CheckedRows] = []
        if not self.options.lazy_rows and has_row_data(entry):
            # fetched with the vectors (no request later), parsed row by row when first used
            data = next(results).data
            verify_bytes(data, rows_key, sums, self.describe)
            cache.append(self._rows(rows_key, data, m))
        vectors: dict[str, StoredVectors] = {}
        codes: dict[str, Callable[[], Int8Codes]] = {}
        for field, f in entry["fields"].items():
            key = f"{base}.{f['key']}.npy"
            skey = f"{base}.{f['key']}.sq.npy"
            shape = (m, int(f["dim"]))
            mat: Any
            sq: Any = None
            held: Int8Codes | None = None
            if self._codes_only(f):
                arrays = [next(results) for _ in CODE_OBJECTS]
                held = self._checked_codes(f"{base}.{f['key']}", arrays, shape, sums)
                if sums is not None:  # where the rows are: the first search reads only them
                    digests = self._trailer_digests(key, next(results), self._data_offset(shape), shape, sums)
                    if digests is not None:
                        self._layouts[key] = (self._data_offset(shape), digests)
            if self.options.load_vectors and held is None:
                mat = self._checked(key, next(results), shape, sums)
                if f.get("sq"):
                    sq = self._checked(skey, next(results), (m,), sums)
                    if self.check_norms and not np.allclose(sq, squared_norms(mat), rtol=1e-5, atol=1e-30):
                        raise StorageError(
                            f"segment file {self.describe(skey)} does not hold the squared norms of "
                            f"{self.describe(key)}"
                        )
            else:  # read when a search needs them all, or a record its own vector
                mat = LazyArray(
                    shape,
                    functools.partial(self.read_array, runner, key, shape, sums),
                    functools.partial(self.read_vectors, runner, key, shape, sums=sums),
                    # codes held: the rows a search re-ranks are read by themselves, a batch's too
                    few=LazyArray.MOST if held is not None else None,
                )
                if f.get("sq"):
                    sq = LazyArray((m,), functools.partial(self.read_array, runner, skey, (m,), sums))
            present = None
            if f["count"] < m:
                mkey = f"{base}.{f['key']}.mask.npy"
                present = self._checked(mkey, next(results), (m,), sums, np.dtype(np.bool_))
            vectors[field] = (mat, present, sq)
            if held is not None:
                codes[field] = LoadedCodes(held)
            elif f.get("codes"):
                codes[field] = functools.partial(self._read_codes, runner, f"{base}.{f['key']}", m, int(f["dim"]), sums)

        def loader() -> CheckedRows:
            # read once, parse row by row on demand (the table asks again for later rows)
            if not cache:
                cache.append(self._rows(rows_key, runner(self.get_bytes(rows_key, sums)), m))
            return cache[0]

        texts: dict[str, tuple[str, Callable[[int], Postings]]] = {
            str(field): (str(t["analyzer"]), functools.partial(self.read_postings, runner, entry, t, sums))
            for field, t in entry.get("text", {}).items()
        }
        return ReadSegment(entry, ids, deletes, vectors, loader if has_row_data(entry) else None, texts, codes)

    def _codes_only(self, field: Mapping[str, Any]) -> bool:
        """Whether a segment's vector field is loaded as its int8 codes, its vectors left in
        storage (``load_vectors="codes"`` and the segment stores them)."""
        return self.options.load_vectors == "codes" and bool(field.get("codes"))

    def _read_codes(
        self, runner: Callable[[Program[Any]], Any], base: str, m: int, dim: int, sums: Checksums | None
    ) -> Int8Codes:
        """A segment's stored int8 codes of one vector field (read on its first int8 search)."""
        arrays = runner(self.get_arrays([f"{base}.{c}.npy" for c in CODE_OBJECTS]))
        return self._checked_codes(base, arrays, (m, dim), sums)

    def _checked_codes(
        self, base: str, arrays: Sequence[npt.NDArray[Any]], shape: tuple[int, int], sums: Checksums | None
    ) -> Int8Codes:
        """The int8 codes of a segment's vector field (``base``: its objects' key without the
        suffix) from its loaded code objects (in :data:`CODE_OBJECTS` order), checked: dtypes,
        shapes (``shape``: the vectors'), checksums."""
        m = shape[0]
        want: dict[str, tuple[type[np.generic], tuple[int, ...]]] = {
            "c8": (np.int8, shape),
            "cs": (np.float32, (m,)),
            "cr": (np.float32, (m,)),
            "cn": (np.float64, (m,)),
        }
        checked = [
            self._checked(f"{base}.{c}.npy", arr, want[c][1], sums, np.dtype(want[c][0]))
            for c, arr in zip(CODE_OBJECTS, arrays, strict=True)
        ]
        return Int8Codes.from_arrays(*checked)

    def read_postings(
        self,
        runner: Callable[[Program[Any]], Any],
        entry: Mapping[str, Any],
        text: Mapping[str, Any],
        sums: Checksums | None,
        start: int,
    ) -> Postings:
        """A segment's stored full-text postings of one field (read on the field's first search)."""
        base = f"{SEGMENTS}{entry['name']}.{text['key']}"
        terms = runner(self.get_bytes(f"{base}.terms.json", sums))
        arr = self.read_array(runner, f"{base}.post.npy", (int(text["size"]),), sums, np.dtype(np.int32))
        return Postings.decode(
            terms, arr, int(entry["rows"]), start, self.describe(f"{base}.post.npy"), str(text["analyzer"])
        )

    def _rows(self, key: str, data: bytes, expected: int) -> CheckedRows:
        rows = CheckedRows(data, self.describe(key))
        if len(rows) != expected:
            raise StorageError(f"segment file {self.describe(key)} holds {len(rows)} rows, expected {expected}")
        return rows

    def _checked(
        self,
        key: str,
        arr: npt.NDArray[Any],
        shape: tuple[int, ...],
        sums: Checksums | None,
        dtype: np.dtype[Any] = np.dtype(np.float32),
    ) -> npt.NDArray[Any]:
        """A loaded ``.npy`` object, checked: its dtype, shape and C order, then its checksum."""
        if arr.dtype != dtype or arr.shape != shape or not arr.flags.c_contiguous:
            raise StorageError(
                f"segment file {self.describe(key)} holds {arr.dtype} {arr.shape}, expected {dtype} {shape}"
            )
        verify_npy(arr, key, sums, self.describe)
        return arr

    def read_array(
        self,
        runner: Callable[[Program[Any]], Any],
        key: str,
        shape: tuple[int, ...],
        sums: Checksums | None = None,
        dtype: np.dtype[Any] = np.dtype(np.float32),
    ) -> npt.NDArray[Any]:
        """A whole ``.npy`` object of ``shape`` and ``dtype`` (memory-mapped where the store is
        local), verified against ``sums``."""
        return self._checked(key, runner(self.get_array(key)), shape, sums, dtype)

    def get_array(self, key: str) -> Program[npt.NDArray[Any]]:
        """Load a ``.npy`` object (any dtype and shape; unchecked)."""
        arr: npt.NDArray[Any] = yield GetArray(key)
        return arr

    def get_arrays(self, keys: Sequence[str]) -> Program[list[npt.NDArray[Any]]]:
        """Load several ``.npy`` objects at once (unchecked), in the order of ``keys``."""
        arrays: list[npt.NDArray[Any]] = yield Many([GetArray(k) for k in keys])
        return arrays

    def read_vectors(
        self,
        runner: Callable[[Program[Any]], Any],
        key: str,
        shape: tuple[int, int],
        rows: npt.NDArray[np.int64],
        sums: Checksums | None = None,
    ) -> npt.NDArray[np.float32]:
        """Some rows of a segment's vectors: ranged reads of just those rows (of the checksum
        blocks holding them, each verified, when the segment has checksums)."""
        out: npt.NDArray[np.float32] = runner(self._vector_rows(key, shape, rows, sums))
        return out

    def _layout(
        self, key: str, shape: tuple[int, int], sums: Checksums | None
    ) -> Program[tuple[int, npt.NDArray[np.uint64] | None]]:
        """Where a vectors object's data starts, and (with checksums) its verified block digests.

        With checksums the header is not read: the trailer of block digests is looked for where
        the header this version writes would put it, and found there (its checksum matching the
        manifest's) it proves that offset. Only if it is not there is the header asked.
        """
        if sums is None:
            return (yield from self._header_offset(key, shape)), None
        guess = self._data_offset(shape)
        digests = yield from self._trailer(key, guess, shape, sums)
        if digests is not None:
            return guess, digests
        offset = yield from self._header_offset(key, shape)
        digests = None if offset == guess else (yield from self._trailer(key, offset, shape, sums))
        if digests is None:
            raise _mismatch(self.describe(key), "its block digests do not match the manifest")
        return offset, digests

    def _trailer(
        self, key: str, offset: int, shape: tuple[int, int], sums: Checksums
    ) -> Program[npt.NDArray[np.uint64] | None]:
        """The block digests after the data of a vectors object whose data starts at ``offset``,
        if they are there (and nothing follows them) and match the manifest."""
        trailer = yield self._trailer_range(key, offset, shape, sums)
        return self._trailer_digests(key, trailer, offset, shape, sums)

    @staticmethod
    def _data_offset(shape: tuple[int, int]) -> int:
        """Where the data of a vectors object of ``shape`` starts when this version wrote it."""
        return len(npy_header_bytes(shape, np.dtype(np.float32)))

    @staticmethod
    def _trailer_range(key: str, offset: int, shape: tuple[int, int], sums: Checksums) -> GetRange:
        """The read of the block digests after the data of a vectors object whose data starts
        at ``offset`` (one byte more: nothing may follow them)."""
        end = offset + shape[0] * shape[1] * 4
        return GetRange(key, end, 8 * math.ceil(end / sums.block) + 1)

    @staticmethod
    def _trailer_digests(
        key: str, trailer: bytes, offset: int, shape: tuple[int, int], sums: Checksums
    ) -> npt.NDArray[np.uint64] | None:
        """The block digests read by :meth:`_trailer_range`, if they are all there and match the
        manifest (``None``: the data does not start at ``offset``)."""
        end = offset + shape[0] * shape[1] * 4
        if len(trailer) != 8 * math.ceil(end / sums.block) or digest_list_checksum(trailer) != sums.expected(key):
            return None
        return np.frombuffer(trailer, dtype="<u8")

    def _trailer_guess(self, entry: Mapping[str, Any], field: Mapping[str, Any]) -> GetRange | None:
        """The read of a field's vectors' block digests where this version puts them, for a
        segment left in storage (loaded with its codes): the first search then reads only the
        blocks of the rows it re-ranks. ``None`` without checksums (the header says where)."""
        sums = Checksums.of(entry)
        if sums is None:
            return None
        shape = (int(entry["rows"]), int(field["dim"]))
        key = f"{SEGMENTS}{entry['name']}.{field['key']}.npy"
        return self._trailer_range(key, self._data_offset(shape), shape, sums)

    def _header_offset(self, key: str, shape: tuple[int, int]) -> Program[int]:
        """Where the data of a vectors object starts, by its header (checked against ``shape``)."""
        head = yield GetRange(key, 0, 4096)
        try:
            got_shape, fortran, dtype, offset = npy_header(head)
        except ValueError as e:
            raise StorageError(f"corrupt segment file {self.describe(key)}: {e}") from e
        if fortran or dtype != np.float32 or got_shape != shape:
            raise StorageError(
                f"segment file {self.describe(key)} holds {dtype} {got_shape}, expected float32 {shape}"
            )
        return offset

    def _vector_rows(
        self, key: str, shape: tuple[int, int], rows: npt.NDArray[np.int64], sums: Checksums | None
    ) -> Program[Any]:
        if len(rows) and (rows.min() < 0 or rows.max() >= shape[0]):
            raise IndexError(f"rows out of range 0..{shape[0] - 1}")
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = yield from self._layout(key, shape, sums)
        offset, digests = layout
        width = shape[1] * 4
        wanted = unique_ints(rows)
        breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(wanted, breaks) if len(r)]
        # byte spans to read: the runs' rows, or (with checksums) the blocks holding them
        spans = [(offset + a * width, offset + b * width) for a, b in runs]
        if digests is not None and sums is not None:
            spans = _block_spans(spans, sums.block, offset + shape[0] * width)
        parts = yield Many([GetRange(key, a, b - a) for a, b in spans])
        for (a, b), data in zip(spans, parts):
            if len(data) != b - a:
                raise StorageError(f"segment file {self.describe(key)} is truncated")
            if digests is not None and sums is not None:
                first = a // sums.block
                got = block_digests([data], sums.block)
                if not np.array_equal(got, digests[first : first + len(got)]):
                    raise _mismatch(self.describe(key), f"bytes {a}..{b} do not match their block digests")
        starts = np.array([a for a, _ in spans], dtype=np.int64)

        def rows_of(a: int, b: int) -> npt.NDArray[np.float32]:
            at = offset + a * width
            i = int(np.searchsorted(starts, at, side="right")) - 1
            return np.frombuffer(parts[i], dtype=np.float32, count=(b - a) * shape[1], offset=at - int(starts[i])).reshape(
                b - a, shape[1]
            )

        if len(runs) == 1 and len(wanted) == len(rows) and bool(np.all(np.diff(rows) == 1)):
            return rows_of(*runs[0])  # one run in order (a shard): no copy of the block
        block = np.empty((len(wanted), shape[1]), dtype=np.float32)
        at = 0
        for a, b in runs:
            block[at : at + b - a] = rows_of(a, b)
            at += b - a
        return block[np.searchsorted(wanted, rows)]

    def _ids_later(self, entry: Mapping[str, Any]) -> bool:
        """Whether a segment's ids are read on first use: a fresh segment that deletes nothing,
        whose row count its vectors confirm when it loads (an untrusted count sizes nothing)."""
        return (
            self.options.lazy_ids
            and self.options.load_vectors is not False  # vectors or codes confirm the count
            and bool(entry["fields"])
            and bool(entry.get("fresh"))
            and entry.get("ids") == "txt"
            and not entry.get("deletes")
            and int(entry["rows"]) > 0
        )

    def get_bytes(self, key: str, sums: Checksums | None = None) -> Program[bytes]:
        """An object's bytes, verified against ``sums``."""
        got = yield Get(key)
        data: bytes = got.data
        verify_bytes(data, key, sums, self.describe)
        return data

    def get_rows(self, key: str, sums: Checksums | None = None) -> Program[CheckedRows]:
        """A segment's rows file (verified against ``sums``), parsed row by row on access."""
        data = yield from self.get_bytes(key, sums)
        return CheckedRows(data, self.describe(key))

    # -- writing --------------------------------------------------------------------------------
    def commit(
        self,
        state: TableState,
        batch: WriteBatch,
        merge: PreparedMerge | None = None,
        table: RecordTable | None = None,
        keep: dict[str, bytes] | None = None,
        keep_max: int = 0,
    ) -> Program[bool]:
        """Commit ``batch`` as version ``state.version + 1``; ``False`` if another writer was first.

        ``merge``: a merge prepared off the commit path, committed in the same manifest when
        ``batch`` only writes (no restore, clear or merge of its own), the run it replaces is
        still the table's and the segments after the run were read (:attr:`PreparedMerge.later`,
        :meth:`read_entries`: once the manifest is written nothing may fail);
        :attr:`PreparedMerge.start` says where it went. ``table`` (which holds the run's rows)
        then holds the merged rows in their place and the segments after them loaded again,
        ready for ``batch`` to be applied (see :meth:`commit_merge`). ``keep``: where the
        objects the commit stores on their own are kept too (by key), once committed, while
        ``keep`` then holds at most ``keep_max`` bytes."""
        if state.pinned is not None:
            raise StorageError(f"a checkout of version {state.pinned} is read-only")
        version = state.version + 1
        inline: dict[str, bytes] = {}
        written: list[str] = []
        adopt: Callable[[], None] | None = None
        if batch.restore is not None:  # the segments of an earlier version, as they are
            segments = list(batch.restore)
        elif batch.changes_rows:
            entry, objects = self.encode_segment(batch, version)
            inline = yield from self.store_segment(objects)
            written = [k for k in objects if k not in inline]
            if inline:
                entry["in"] = version
            kept = state.segments if batch.replaces is None else state.segments[: batch.replaces]
            segments = ([] if batch.clear else list(kept)) + [entry]
            start = None if merge is None or batch.clear or batch.replaces is not None else merge.find(state)
            if merge is not None and merge.later is not None and start is not None and table is not None:
                adopt = self._taking(table, state, merge, start, merge.later)
                segments = [*merge.spliced(state, start, version), entry]
                inline = {**merge.inline, **inline}
                merge.start = start
        else:  # a new schema only: the same segments
            segments = list(state.segments)
        epoch = state.epoch + (batch.restore is not None)
        done = yield from self._commit_manifest(
            state, version, _operation(batch), epoch, segments, inline, written, publish=batch.clear, committed=adopt
        )
        if merge is not None and not done:
            merge.start = None
        if done and keep is not None and written:
            size = sum(data_len(objects[k]) for k in written)
            if size + sum(map(len, keep.values())) <= keep_max:
                keep.update((k, bytes(joined(objects[k]))) for k in written)
        return done

    def store_segment(self, objects: Mapping[str, Data]) -> Program[dict[str, bytes]]:
        """Store a segment's ``objects``: a small segment's (at most ``inline_max_bytes`` in
        all) are returned to be kept inside the manifest that commits it (one durable write),
        a larger one's are written (and flushed) on their own; returns the inline ones."""
        if sum(data_len(v) for v in objects.values()) <= self.options.inline_max_bytes:
            return {k: bytes(joined(v)) for k, v in objects.items()}
        yield Many([Put(k, v) for k, v in objects.items()])
        yield Flush()
        return {}

    def _new_manifest(
        self, version: int, op: str, epoch: int, segments: list[dict[str, Any]], inline: Mapping[str, bytes]
    ) -> dict[str, Any]:
        """The manifest of ``version`` naming ``segments``, the one written by it holding the
        ``inline`` objects."""
        manifest: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "version": version,
            "created": time.time(),
            "op": op,
            "epoch": epoch,
            "segments": segments,
            "rows": sum(int(s["rows"]) for s in segments),
        }
        if inline:  # by segment: the batch's, and a merge's committed with it
            held: dict[str, dict[str, str]] = {}
            for e in segments:
                if e.get("in") == version:
                    base = f"{SEGMENTS}{e['name']}."
                    held[e["name"]] = {
                        k[len(base) :]: base64.b64encode(v).decode("ascii") for k, v in inline.items() if k.startswith(base)
                    }
            manifest["inline"] = held
        if self.schema is not None:
            dims = {name: f["dim"] for s in segments for name, f in s["fields"].items()}
            manifest["schema"] = self.schema.to_json(dims)
        return manifest

    def _commit_manifest(
        self,
        state: TableState,
        version: int,
        op: str,
        epoch: int,
        segments: list[dict[str, Any]],
        inline: Mapping[str, bytes],
        written: Sequence[str],
        publish: bool = False,
        committed: Callable[[], None] | None = None,
    ) -> Program[bool]:
        """Write the manifest of ``version`` naming ``segments`` if no other writer did, and make
        it ``state``'s (then call ``committed``, before anything more may fail); on a lost race
        delete the ``written`` objects."""
        manifest = self._new_manifest(version, op, epoch, segments, inline)
        created = yield PutIfAbsent(manifest_key(version), json.dumps(manifest).encode())
        if not created:
            yield from self.delete_objects(written)
            state.probe = True
            return False
        state.version = version
        state.segments = segments
        state.epoch = epoch
        self._saw(version, segments)
        allowed = {k for e in segments if "in" in e for k in segment_keys(e)}
        for key in [k for k in state.inline if k not in allowed]:
            del state.inline[key]
        state.inline.update(inline)
        if committed is not None:
            committed()
        if version % self.options.latest_every == 0 or version == 1 or publish:
            yield from self.publish_latest(manifest, state)
        return True

    def commit_merge(
        self,
        table: RecordTable,
        state: TableState,
        merge: PreparedMerge,
        later: Sequence[ReadSegment],
        last_try: bool = True,
    ) -> Program[bool | None]:
        """Commit a prepared merge on its own (no commit of the store took it along): the merged
        segment replaces the run where it now stands, the segments committed since stay after
        it (``later``: those segments, read by :meth:`read_entries` before, as nothing may fail
        once the manifest is written). ``False`` (its objects left to the caller) when the run
        is no longer the table's or, on the ``last_try``, when another writer committed first;
        else ``None`` then (refresh and try again).

        The table then holds the merged rows in place of the run's and the segments after it
        loaded again, as a refresh loads another writer's merge: their deletes and replacements
        of the run's rows since the batch was taken apply again."""
        if state.pinned is not None:  # pragma: no cover - a checkout never merges
            raise StorageError(f"a checkout of version {state.pinned} is read-only")
        start = merge.find(state)
        if start is None:
            return False
        version = state.version + 1
        adopt = self._taking(table, state, merge, start, later)
        merge.start = start  # from here its objects are kept: a manifest may name them
        done = yield from self._commit_manifest(
            state, version, "merge", state.epoch, merge.spliced(state, start, version), merge.inline, [], committed=adopt
        )
        if done:
            return True
        merge.start = None  # not written: another writer's version
        return False if last_try else None

    def _taking(
        self, table: RecordTable, state: TableState, merge: PreparedMerge, start: int, later: Sequence[ReadSegment]
    ) -> Callable[[], None]:
        """What a commit of ``merge`` (its run at ``start``) does to ``table`` once its manifest
        is written: the merged rows in place of the run's, the ``later`` segments loaded again
        (as a refresh after another writer's merge)."""
        first = sum(int(e["rows"]) for e in state.segments[:start])

        def adopt() -> None:
            table.truncate(first)
            apply(table, merge.batch)
            self._load_read(table, state, later)

        return adopt

    @staticmethod
    def delete_objects(keys: Sequence[str]) -> Program[None]:
        """Delete objects no manifest names (a dropped merge's)."""
        if keys:
            yield Many([Delete(k) for k in keys])

    def read_back(self, entry: Mapping[str, Any], batch: WriteBatch) -> Program[None]:
        """Replace the vectors of ``batch`` by those of its committed segment ``entry`` where
        every row holds one (a memory map of the file, for a local store), verified like any
        segment loaded."""
        base = f"{SEGMENTS}{entry['name']}"
        fields = [
            (name, f)
            for name, f in entry["fields"].items()
            if name in batch.batches and int(f["count"]) == int(entry["rows"])
        ]
        if not fields:
            return
        keys = [f"{base}.{f['key']}.npy" for _, f in fields]
        got = yield Many([GetArray(k) for k in keys])
        sums = Checksums.of(entry)
        for (name, _), key, arr in zip(fields, keys, got):
            pos, mat = batch.batches[name]
            batch.batches[name] = (pos, self._checked(key, arr, mat.shape, sums))

    def publish_latest(self, manifest: Mapping[str, Any], state: TableState) -> Program[None]:
        """Advance LATEST.json to ``manifest`` by compare-and-swap, never backwards.

        First try against the version this store last saw (no read: what a lone writer's commit
        meets); when another writer changed it since, read it and compare.
        """
        data = json.dumps(manifest).encode()
        if state.etag is not None:
            etag = yield PutIfMatch(LATEST, data, state.etag or None, durable=False)
            if etag is not None:
                state.etag = etag
                return
        for _ in range(100):
            cur = yield Get(LATEST, missing_ok=True)
            if cur is not None and cur.data and _hint_version(cur.data, self.describe(LATEST)) >= manifest["version"]:
                return
            etag = yield PutIfMatch(LATEST, data, cur.etag if cur is not None else None, durable=False)
            if etag is not None:
                state.etag = etag
                return
        # Others keep advancing it: they are ahead of us, which is all LATEST.json must say.

    def needs_compaction(self, table: RecordTable, state: TableState) -> bool:
        """Whether the table has piled up small segments or dead rows."""
        if len(state.segments) > self.options.max_segments:
            return True
        stored = sum(int(s["rows"]) for s in state.segments)
        return stored > 1024 and table.dead > self.options.dead_fraction * stored

    def merge_start(self, state: TableState) -> int | None:
        """Where a merge of the newest segments starts, or ``None`` (nothing to merge yet).

        Walking back from the newest segment, a segment joins the run while it holds no more
        rows than the run so far (and the run stays within :attr:`TableOptions.merge_max_rows`):
        a size-tiered merge, so every row is rewritten O(log n) times and a table of n rows keeps
        O(fan · log n) segments. A run of at least ``merge_fan`` segments is merged.
        """
        segs = state.segments
        fan = self.options.merge_fan
        if fan < 2 or len(segs) < fan:
            return None
        total, i = 0, len(segs)
        while i > 0:
            rows = int(segs[i - 1]["rows"])
            if i < len(segs) and rows > total:
                break
            if total + rows > self.options.merge_max_rows or segs[i - 1].get("clear"):
                break
            total += rows
            i -= 1
        return i if len(segs) - i >= fan else None

    def merge_batch(
        self,
        table: RecordTable,
        state: TableState,
        start: int,
        runner: Callable[[Program[Any]], Any],
        read_stored: bool = False,
    ) -> WriteBatch:
        """The live rows of segments ``start..`` (table rows from the first of them on) and
        their deletes of earlier rows, as one batch replacing those segments (their rows as
        stored, see :meth:`_with_stored_lines`)."""
        tail = state.segments[start:]
        first = sum(int(e["rows"]) for e in state.segments[:start])
        deletes: list[str] = []
        for entry in tail:
            if entry.get("deletes"):
                sums = Checksums.of(entry)
                raw = [runner(self.get_bytes(k, sums)) for k in id_keys(entry)]
                deletes.extend(decode_ids(entry, raw, self.describe)[1])
        fresh = all(e.get("fresh") for e in tail) and not deletes
        batch = _live_batch(
            table, first, self._text_fields(), deletes=list(dict.fromkeys(deletes)), fresh=fresh, replaces=start
        )
        return self._with_stored_lines(batch, table, state, start, runner, read_stored)

    def compaction_batch(
        self,
        table: RecordTable,
        state: TableState,
        runner: Callable[[Program[Any]], Any],
        read_stored: bool = False,
    ) -> WriteBatch:
        """All live rows of ``table`` (in row order) as one ``clear`` batch (their rows as
        stored, see :meth:`_with_stored_lines`)."""
        batch = _live_batch(table, 0, self._text_fields(), clear=True, fresh=True)
        return self._with_stored_lines(batch, table, state, 0, runner, read_stored)

    def _with_stored_lines(
        self,
        batch: WriteBatch,
        table: RecordTable,
        state: TableState,
        start: int,
        runner: Callable[[Program[Any]], Any],
        read_stored: bool,
    ) -> WriteBatch:
        """``batch`` (the live rows of segments ``start..``) with the rows' JSON lines as those
        segments store them, so that a merge writes them again without encoding each row: from
        the segments held in their manifests, and, with ``read_stored`` (a local store, where a
        read costs no request), from their rows files (checksums verified either way); ``None``
        for a row to encode again (one holding a string that starts with ``$``, which an earlier
        version may have written ambiguously). Without the lines of every segment (one not at
        hand, damaged or missing), the batch as it is: its rows, which the table holds, are
        encoded."""
        if not batch.rows:
            return batch
        tail = state.segments[start:]
        first = sum(int(e["rows"]) for e in state.segments[:start])
        if first + sum(int(e["rows"]) for e in tail) != table.nrows:
            return batch  # the table's rows are not those of the segments: encode them
        lines: list[bytes | None] = []
        row = first
        for entry in tail:
            m = int(entry["rows"])
            alive = np.flatnonzero(table._live[row : row + m])
            row += m
            if not len(alive):
                continue
            if not has_row_data(entry):
                lines.extend([EMPTY_ROW] * len(alive))
                continue
            key = f"{SEGMENTS}{entry['name']}.rows.jsonl"
            if key not in state.inline and not read_stored:
                return batch
            try:
                raw = runner(self.get_bytes(key, Checksums.of(entry)))
            except StorageError:  # damaged or gone: the rows the table holds are encoded instead
                return batch
            ends = line_ends(raw)
            if len(ends) != m:
                return batch  # not one line per row: encode them
            starts = np.concatenate((np.zeros(1, dtype=ends.dtype), ends[:-1] + 1))
            for a, b in zip(starts[alive].tolist(), ends[alive].tolist()):
                line = raw[a : b + 1]
                # a string starting with "$" may be a tag-shaped dict an earlier version wrote
                # unescaped: that row is encoded again, in the current (unambiguous) form
                lines.append(EMPTY_ROW if line == EMPTY_ROW else None if b'"$' in line else line)
        if len(lines) != len(batch.rows):
            return batch
        return attrs.evolve(batch, lines=lines)

    def _text_fields(self) -> tuple[str, ...]:
        """The fields whose postings every commit stores (the schema's ``text_search_fields``)."""
        return tuple(self.schema.text.fields) if self.schema is not None else ()

    # -- versions -----------------------------------------------------------------------------
    def versions(self) -> Program[list[dict[str, Any]]]:
        """Every committed version still stored, oldest first: number, time, operation, counts,
        and the tags naming it."""
        listed = yield List(MANIFESTS)
        numbers = [v for v, _ in manifest_versions(listed)]
        got = yield Many([Get(manifest_key(v), missing_ok=True) for v in numbers])
        tags = yield from self.tags()
        out = []
        for v, g in zip(numbers, got):
            if g is None:  # cleaned up meanwhile
                continue
            m = _parse_manifest(g.data, self.describe(manifest_key(v)))
            last = m["segments"][-1] if m["segments"] else {}
            out.append(
                {
                    "version": v,
                    "created": float(m.get("created", 0.0)),
                    "operation": m.get("op", "write"),
                    "rows": int(m.get("rows", 0)),
                    "segments": len(m["segments"]),
                    "added": int(last.get("rows", 0)) if last.get("name", "").startswith(f"{v:012d}-") else 0,
                    "deleted": int(last.get("deletes", 0)) if last.get("name", "").startswith(f"{v:012d}-") else 0,
                    "tags": sorted(t for t, tv in tags.items() if tv == v),
                }
            )
        return out

    def tags(self) -> Program[dict[str, int]]:
        """Tag name -> version."""
        listed = yield List(TAGS)
        return (yield from self._tag_versions(listed))

    def _tag_versions(self, listed: Sequence[Listed]) -> Program[dict[str, int]]:
        """Tag name -> version, read from the tag objects among ``listed``."""
        keys = [x.key for x in listed if x.key.endswith(".json") and TMP_MARK not in x.key]
        got = yield Many([Get(k, missing_ok=True) for k in keys])
        return {k[len(TAGS) : -5]: self._tag_version(k, g.data) for k, g in zip(keys, got) if g is not None}

    def _tag_version(self, key: str, data: Data) -> int:
        """The version a tag object names."""
        try:
            v = json.loads(joined(data))["version"]
        except (ValueError, KeyError, TypeError):
            raise StorageError(f"corrupt tag {self.describe(key)}") from None
        return _int_or_error(v, self.describe(key))

    def tag(self, name: str, version: int, move: bool = False) -> Program[None]:
        """Name a version (clean-up keeps it and what it names); a name that names another
        version moves only with ``move``."""
        if not isinstance(name, str) or not TAG_NAME.fullmatch(name):
            raise InvalidRequestError(f"a tag name is [A-Za-z0-9._-] (up to 128), starting alphanumeric; got {name!r}")
        if name.isdigit():
            raise InvalidRequestError(
                f"a tag name of digits only, {name!r}, would read as a version number (on the command "
                "line, in diff): add a letter, e.g. 'v" + name + "'"
            )
        key = f"{TAGS}{name}.json"
        for _ in range(8):  # written only over what was read (another store may tag at once)
            got, held = yield Many([Get(manifest_key(version), missing_ok=True), Get(key, missing_ok=True)])
            if got is None:
                raise VersionNotFoundError(f"version {version} does not exist or was cleaned up: nothing to tag")
            if held is not None:
                now = self._tag_version(key, held.data)
                if now == version:
                    return
                if not move:
                    raise InvalidRequestError(
                        f"tag {name!r} names version {now}: pass move=True to move it to version {version} "
                        f"(version {now} then loses it, and with it the protection from clean-up)"
                    )
            data = json.dumps({"version": version, "created": time.time()}).encode()
            if (yield PutIfMatch(key, data, None if held is None else held.etag)) is not None:
                return
        raise ConflictError(f"tag {name!r} kept changing while it was being written: try again")

    def untag(self, name: str) -> Program[bool]:
        """Remove a tag; ``False`` when there was none."""
        tags = yield from self.tags()
        if name not in tags:
            return False
        yield Delete(f"{TAGS}{name}.json")
        return True

    def version_segments(self, version: int) -> Program[list[dict[str, Any]]]:
        """The segments version ``version`` names, checked to be all still stored (what a restore
        commits again)."""
        key = manifest_key(version)
        got = yield Get(key, missing_ok=True)
        if got is None:
            raise VersionNotFoundError(f"version {version} does not exist or was cleaned up: nothing to restore")
        segments: list[dict[str, Any]] = _parse_manifest(got.data, self.describe(key))["segments"]
        missing = yield from self.missing_objects(segments)
        if missing:
            raise InvalidRequestError(
                f"version {version} names objects that were cleaned up ({self.describe(missing[0])}, ...): "
                "it cannot be restored"
            )
        return segments

    def missing_objects(self, segments: Sequence[Mapping[str, Any]]) -> Program[list[str]]:
        """The keys of the objects ``segments`` are stored in (their files, or the manifests
        holding them inline) that are no longer stored."""
        holders = sorted({int(e["in"]) for e in segments if "in" in e})
        stored = [k for e in segments if "in" not in e for k in segment_keys(e)]
        listed = yield Many([List(SEGMENTS, stat=False), List(MANIFESTS, stat=False)])
        have = {x.key for x in listed[0]} | {x.key for x in listed[1]}
        return [k for k in stored if k not in have] + [manifest_key(v) for v in holders if manifest_key(v) not in have]

    def gc(
        self,
        state: TableState,
        now: float | None = None,
        grace_s: float | None = None,
        in_flight: Callable[[], set[str]] | None = None,
    ) -> Program[int]:
        """Delete unreferenced segments and old manifests past the grace period; returns the count.

        ``in_flight``: the keys of objects this process has written for a commit still to come
        (a merge stored off the commit path), read before the manifests are listed again: they
        are spared whatever their age."""
        now = time.time() if now is None else now
        grace = self.options.grace_s if grace_s is None else grace_s
        listed = yield Many([List(MANIFESTS, stat=False), List(SEGMENTS, stat=False), Get(LATEST, missing_ok=True)])
        manifests, segments, latest = listed
        versions = manifest_versions(manifests)
        tagged = set((yield from self.tags()).values())
        recent = {v for v, _ in versions[-self.options.keep_versions :]}
        # a reader opens at the version LATEST.json names (it advances every latest_every
        # versions) and reads every manifest after it: those stay, with what they name
        hint = _hint_version(latest.data, self.describe(LATEST)) if latest is not None and latest.data else -1
        # (no usable hint: a reader walks from the version it holds; every manifest stays until a
        # store writes the hint again, which its next refresh does)
        recent.update(v for v, _ in versions if v >= max(hint, 0))
        kept_entries = list(state.segments) + (yield from self._segments_of(sorted(recent | tagged)))
        # holders: manifests holding the inline objects of a kept segment
        referenced, holders = self._stored_in(kept_entries)
        # candidates in the order they were created (segment names and manifest numbers start
        # with the version that wrote them); each is deleted only when it is older than grace
        doomed = yield from self._older_than(
            [x for x in segments if x.key not in referenced and TMP_MARK not in x.key], now - grace
        )
        doomed += yield from self._older_than(
            [x for v, x in versions if v not in recent and v not in holders and v not in tagged], now - grace
        )
        doomed += yield from self._older_than(
            [x for x in manifests + segments if TMP_MARK in x.key], now - grace, stop=False
        )
        if doomed:
            # objects of a commit in flight (before listing again: one committed by then is named)
            spared = in_flight() if in_flight is not None else set()
            # versions committed or tagged since the listing: a restore names old segments again
            spared |= yield from self._named_since({v for v, _ in versions}, tagged)
            doomed = [k for k in doomed if k not in spared]
        if doomed:
            yield Many([Delete(k) for k in doomed])
        return len(doomed)

    def _named_since(self, listed: set[int], tagged: set[int]) -> Program[set[str]]:
        """What a clean-up that listed the manifests ``listed`` and read the tagged versions
        ``tagged`` must spare, read again just before it deletes: the manifests committed
        since (every one still stored: another clean-up may have removed some, not what the
        later ones name) and those tagged since, and the object keys they name (their
        segments' files, the manifests holding segments inline)."""
        got_list, tags = yield Many([List(MANIFESTS, stat=False), List(TAGS)])
        newest = max(listed, default=0)
        fresh = [v for v, _ in manifest_versions(got_list) if v > newest]
        now_tagged = set((yield from self._tag_versions(tags)).values())
        versions = sorted(set(fresh) | (now_tagged - tagged))
        keys, holders = self._stored_in((yield from self._segments_of(versions)))
        return keys | {manifest_key(v) for v in sorted(set(versions) | holders)}

    def _segments_of(self, versions: Sequence[int]) -> Program[list[dict[str, Any]]]:
        """The segments the manifests of ``versions`` name: remembered (:meth:`_saw`), else read
        (a manifest removed meanwhile names none)."""
        unseen = [v for v in versions if v not in self._recent]
        got = yield Many([Get(manifest_key(v), missing_ok=True) for v in unseen])
        entries = [e for v in versions for e in self._recent.get(v, ())]
        for g, v in zip(got, unseen):
            if g is not None:
                entries += _parse_manifest(g.data, self.describe(manifest_key(v)))["segments"]
        return entries

    def _stored_in(self, entries: Sequence[Mapping[str, Any]]) -> tuple[set[str], set[int]]:
        """The object keys of segments ``entries`` and the versions of the manifests holding
        some of them inline."""
        keys: set[str] = set()
        holders: set[int] = set()
        for entry in entries:
            keys.update(self.segment_keys(entry))
            if "in" in entry:
                holders.add(int(entry["in"]))
        return keys, holders

    @staticmethod
    def _older_than(listed: Sequence[Listed], cutoff: float, stop: bool = True) -> Program[list[str]]:
        """The keys of ``listed`` last modified before ``cutoff``. A listing that left the ages
        out (a local directory: a call per key) has them read one by one, in the given (creation)
        order, up to the first one too young (``stop``): the later ones are younger, and any that
        is not waits for a later clean-up, so a store that keeps an hour of versions reads one or
        two ages per clean-up, not hundreds. Ages the listing gave (S3) are all used."""
        out: list[str] = []
        for x in listed:
            mtime, known = x.mtime, not math.isnan(x.mtime)
            if not known:
                got = yield Stat(x.key)
                if got is None:  # deleted since the listing
                    continue
                mtime = got.mtime
            if mtime < cutoff:
                out.append(x.key)
            elif stop and not known:
                break
        return out

    def verify(self) -> Program[dict[str, Any]]:
        """Check that the newest manifest and every segment it names are complete and consistent."""
        v = 0
        got = yield Get(LATEST, missing_ok=True)
        manifest = None
        if got is not None and got.data:
            try:
                manifest = _parse_manifest(got.data, self.describe(LATEST))
            except NewerFormatError:
                raise
            except StorageError:  # a damaged hint: the newest listed manifest instead
                manifest = yield from self._newest_listed(TableState())
            v = manifest["version"] if manifest is not None else 0
        while True:
            nxt = yield Get(manifest_key(v + 1), missing_ok=True)
            if nxt is None:
                break
            v += 1
            manifest = _parse_manifest(nxt.data, self.describe(manifest_key(v)))
        if manifest is None:
            return {"version": 0, "segments": 0, "rows": 0, "live": 0}
        probe = RecordTable()
        state = TableState(probe=False)
        options = attrs.evolve(self.options, lazy_rows=False, lazy_ids=False, load_vectors=True)
        checker = TableLogic(options, self.describe)
        checker.check_norms = True
        yield from serve_inline(checker._apply_manifest(probe, state, manifest, lambda p: None), state.inline)
        probe.materialize()  # parse every row: a corrupt line is named here
        return {
            "version": v,
            "segments": len(manifest["segments"]),
            "rows": probe.nrows,
            "live": len(probe),
        }
