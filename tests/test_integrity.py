"""Stored bytes are verified, untrusted metadata is validated (file and S3 tables).

* every immutable object of a segment carries a checksum in its manifest entry, verified when
  the object is loaded (and by ranged reads, block by block): a damaged object is a
  :class:`StorageError` naming it, never a wrong answer;
* manifests and ``LATEST.json`` are validated before use: a segment name cannot leave the store,
  a malformed value is a :class:`StorageError` naming the file;
* fuzzing (hypothesis) over manifest JSON and segment bytes: opening and using a damaged table
  raises only :class:`DkvError` subclasses.

``DKV_INTEGRITY_REPORT=path`` writes the adversarial cases tried, per category and outcome, to
``path`` (JSON) when the module finishes.
"""

from __future__ import annotations

import collections
import copy
import functools
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dk_vector_plugins import DatabaseFactory, DkvError, Record, StorageError, VectorField
from dk_vector_plugins.storage.local import LocalObjectStore
from dk_vector_plugins.storage.log_format import (
    CHECKSUM_BLOCK,
    FORMAT_VERSION,
    block_digests,
    digest_list_checksum,
)
from dk_vector_plugins.storage.ops import Get
from dk_vector_plugins.storage.segments import StoreSpec, open_reader, snapshot

DIM = 8

#: category -> outcome -> count, for the report (see the module docstring).
CASES: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module", autouse=True)
def _case_report() -> Iterator[None]:
    yield
    target = os.environ.get("DKV_INTEGRITY_REPORT")
    if target:
        Path(target).write_text(json.dumps({k: dict(v) for k, v in sorted(CASES.items())}, indent=2))


# --- helpers ---------------------------------------------------------------------------------


def vec(seed: int, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


def open_file(root: Path, **config: Any) -> Any:
    # segment objects on their own (inline small segments are checked in test_small_commits.py)
    config.setdefault("inline_bytes", 0)
    return DatabaseFactory().create(backend="file", path=str(root), vector_enabled=True, **config)


def fill(db: Any) -> None:
    """Segments holding every object kind: ids (text and JSON), deletes, rows, vectors, norms,
    presence masks, and a vectors-only segment without a rows file."""
    db.create_batch(
        [
            Record(
                {"title": f"doc {i} ✓", "n": i, "kind": "ab"[i % 2], "embedding": VectorField(vec(i))},
                id=f"r{i:02d}",
                metadata={"i": i},
            )
            for i in range(12)
        ]
    )
    db.create_batch(  # some rows without a vector: a presence mask
        [
            Record({"n": i, **({"embedding": VectorField(vec(i))} if i % 2 else {})}, id=f"r{i:02d}")
            for i in range(12, 18)
        ]
    )
    db.delete("r03")  # a deletes object
    db.add_vectors(np.stack([vec(i) for i in range(18, 24)]), ids=[f"v{i}" for i in range(18, 24)])
    db.add_vectors(np.stack([vec(30), vec(31)]), ids=["line\nbreak", "plain"])  # ids as JSON


OPS: dict[str, Callable[[Any], Any]] = {
    "count": lambda db: db.count(),
    "all": lambda db: sorted((r.id, _plain(r)) for r in db.all()),
    "read": lambda db: {rid: (None if (r := db.read(rid)) is None else _plain(r)) for rid in ("r01", "r13", "v20", "zz")},
    "get": lambda db: _plain(db.get("r05")),
    "search": lambda db: [
        [(h.id, round(h.score, 5)) for h in db.vector_search(vec(100 + s), k=5)] for s in range(3)
    ],
    "filtered": lambda db: [(h.id, round(h.score, 5)) for h in db.vector_search(vec(7), k=4, filter={"kind": "b"})],
    "verify": lambda db: db.verify()["live"],
}


def answers(db: Any) -> dict[str, Any]:
    """Everything a store answers about its table, in a comparable form."""
    return {name: op(db) for name, op in OPS.items()}


def _plain(r: Record) -> Any:
    d = r.to_dict(include_metadata=True)
    return json.loads(json.dumps(d, default=lambda v: np.asarray(v).round(5).tolist(), sort_keys=True))


def probe(open_db: Callable[[], Any], want: dict[str, Any] | None) -> dict[str, str]:
    """Open a store and run every operation of :data:`OPS` on it: op -> ``"ok"`` or the name of
    the :class:`DkvError` it raised (``"open"``: opening failed). Any other exception propagates
    (the test fails). With ``want``, an operation that answers must answer exactly that."""
    try:
        db = open_db()
    except DkvError as e:
        return {"open": type(e).__name__}
    out: dict[str, str] = {}
    try:
        for name, op in OPS.items():
            try:
                got = op(db)
            except DkvError as e:
                out[name] = type(e).__name__
                continue
            out[name] = "ok"
            if want is not None:
                assert got == want[name], f"{name} answered wrongly"
    finally:
        try:
            db.close()
        except DkvError:
            pass
    return out


def outcome(result: dict[str, str]) -> str:
    """One word for a :func:`probe` result: the first error's class, or ``ok``."""
    errors = [v for v in result.values() if v != "ok"]
    return errors[0] if errors else "ok"


def newest_manifest(root: Path) -> Path:
    return sorted((root / "manifests").glob("*.json"))[-1]


def write_manifest(root: Path, m: Any) -> None:
    """Replace the newest manifest and LATEST.json by ``m`` (any JSON, or raw bytes)."""
    raw = m if isinstance(m, bytes) else json.dumps(m).encode()
    newest_manifest(root).write_bytes(raw)
    (root / "LATEST.json").write_bytes(raw)


def names_a_manifest(message: str) -> bool:
    """Whether an error names the damaged manifest: ``LATEST.json``, or (when the damaged hint
    was set aside for the listed manifests) the newest manifest file."""
    return "LATEST.json" in message or "manifests/0" in message


def use(db_factory: Callable[[], Any]) -> tuple[str, Any]:
    """Open a store and ask it everything: ``("ok", answers)`` or ``("DkvError", error)``; any
    other exception propagates (the tests fail on it)."""
    db = None
    try:
        db = db_factory()
        return "ok", answers(db)
    except DkvError as e:
        return type(e).__name__, e
    finally:
        if db is not None:
            try:
                db.close()
            except DkvError:
                pass


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A filled file table (never changed) and what it answers."""
    root = tmp_path_factory.mktemp("pristine") / "s"
    db = open_file(root)
    fill(db)
    want = answers(db)
    db.close()
    return root, want


@pytest.fixture
def table(pristine: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A fresh copy of the pristine table."""
    root = tmp_path / "s"
    shutil.copytree(pristine[0], root)
    return root, pristine[1]


def segment_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "segments").iterdir() if p.is_file())


def kind_of(path: Path) -> str:
    """``ids.txt``, ``f0.npy``, ``f0.sq.npy``... of a segment file."""
    return path.name.split(".", 1)[1]


def npy_data_start(raw: bytes | bytearray) -> int:
    return 10 + int.from_bytes(raw[8:10], "little")


# --- 1. a crafted manifest cannot escape the store -------------------------------------------


def two_stores(tmp_path: Path) -> tuple[Path, Path, str]:
    a, b = tmp_path / "a", tmp_path / "b"
    db = open_file(a)
    db.create_batch([Record({"who": "a", "embedding": VectorField(vec(i))}, id=f"a{i}") for i in range(3)])
    db.close()
    db = open_file(b)
    db.create_batch([Record({"who": "secret", "embedding": VectorField(vec(i))}, id=f"a{i}") for i in range(3)])
    db.close()
    seg_b = json.loads(newest_manifest(b).read_text())["segments"][0]["name"]
    return a, b, seg_b


ESCAPES = [
    "../../b/segments/{seg}",
    "../../b/segments/../segments/{seg}",
    "/{b}/segments/{seg}",
    "..",
    ".",
    "",
    "a/b",
    "a\\b",
    "..\\..\\b\\segments\\{seg}",
    "{seg}\x00",
    "séance",
    "x" * 300,
]


@pytest.mark.parametrize("name", ESCAPES, ids=[repr(e[:30]) for e in ESCAPES])
def test_a_segment_name_cannot_leave_the_store(tmp_path: Path, name: str) -> None:
    a, b, seg_b = two_stores(tmp_path)
    m = json.loads(newest_manifest(a).read_text())
    m["segments"][0]["name"] = name.format(seg=seg_b, b=str(b).lstrip("/"))
    write_manifest(a, m)
    with pytest.raises(StorageError) as err:
        db = open_file(a)
        try:
            db.all()
        finally:
            db.close()
    assert names_a_manifest(str(err.value)) and "name" in str(err.value)
    CASES["path escapes"]["StorageError"] += 1


def test_object_keys_cannot_leave_a_local_store(tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_text("secret")
    store = LocalObjectStore(tmp_path / "root")
    for key in ("../outside.txt", "segments/../../outside.txt", "/etc/passwd", "a//b", "./x"):
        with pytest.raises(StorageError, match="key"):
            store.do(Get(key))
        CASES["path escapes"]["StorageError"] += 1


# --- 1b. malformed manifests are a StorageError naming the file ------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(m: dict[str, Any]) -> Any:
        target: Any = m
        *head, last = path.split(".")
        for p in head:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is KeyError:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        return m

    return mutate


MALFORMED: dict[str, Callable[[dict[str, Any]], Any]] = {
    "segment is a string": _set("segments.0", "x"),
    "fields is a list": _set("segments.0.fields", []),
    "field is a list": _set("segments.0.fields.embedding", [1]),
    "rows is a string": _set("segments.0.rows", "many"),
    "rows is a float": _set("segments.0.rows", 1.5),
    "rows is huge": _set("segments.0.rows", 2**40),
    "rows is huge, no vectors": _set("segments.2.rows", 2**40),
    "rows is negative": _set("segments.0.rows", -1),
    "rows is missing": _set("segments.0.rows", KeyError),
    "rows is a bool": _set("segments.0.rows", True),
    "name is missing": _set("segments.0.name", KeyError),
    "name is a number": _set("segments.0.name", 7),
    "dim is zero": _set("segments.0.fields.embedding.dim", 0),
    "dim is huge": _set("segments.0.fields.embedding.dim", 2**40),
    "count exceeds rows": _set("segments.0.fields.embedding.count", 10**9),
    "field key is a path": _set("segments.0.fields.embedding.key", "../f0"),
    "ids format unknown": _set("segments.0.ids", "xml"),
    "segments is a dict": _set("segments", {}),
    "version is a string": _set("version", "x"),
    "version is negative": _set("version", -3),
    "format is a string": _set("format", "2"),
    "manifest is a list": lambda m: [m],
    "deep nesting": lambda m: {**m, "created": json.loads("[" * 50 + "]" * 50)},
}


#: Mutations that stay within the schema; the segment's objects refute them.
COUNTS_OBJECTS_REFUTE = {"rows is huge, no vectors"}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifests_are_a_storage_error(table: tuple[Path, dict[str, Any]], case: str) -> None:
    root, _ = table
    m = json.loads(newest_manifest(root).read_text())
    write_manifest(root, MALFORMED[case](m))
    with pytest.raises(StorageError) as err:
        db = open_file(root)
        try:
            answers(db)
        finally:
            db.close()
    # a schema violation names the manifest; a count its object cannot hold names the object
    if case in COUNTS_OBJECTS_REFUTE:
        assert "segments/" in str(err.value), err.value
    else:
        assert names_a_manifest(str(err.value)), err.value
    CASES["manifest mutations"]["StorageError"] += 1


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe{}", b'{"format": 1e999}', b"1" * 5000, b"null", b""],
    ids=["deep", "not utf-8", "infinite", "long number", "null", "empty"],
)
def test_an_unparsable_latest_is_recovered_from_the_manifests(
    table: tuple[Path, dict[str, Any]], raw: bytes
) -> None:
    # LATEST.json is a hint written without fsync (a power failure may leave it damaged): the
    # store lists its manifests instead, opens the newest, and repairs the hint
    root, _ = table
    (root / "LATEST.json").write_bytes(raw)
    outcome, got = use(lambda: open_file(root))
    assert outcome == "ok" and got == table[1]
    CASES["manifest mutations"][outcome] += 1


# --- 2. damaged vector bytes are an error, never a wrong result ------------------------------


def test_a_flipped_vector_byte_is_an_error(table: tuple[Path, dict[str, Any]]) -> None:
    root, _ = table
    vectors = next(p for p in segment_files(root) if kind_of(p) == "f0.npy")
    raw = bytearray(vectors.read_bytes())
    raw[npy_data_start(raw) + 5] ^= 0x40  # one bit of the first row's second float
    vectors.write_bytes(bytes(raw))
    with pytest.raises(StorageError) as err:
        db = open_file(root)
        try:
            db.vector_search(vec(0), k=3)
        finally:
            db.close()
    assert str(vectors) in str(err.value) and "checksum" in str(err.value)
    CASES["segment byte corruptions"]["StorageError"] += 1


def _descr(raw: bytes) -> bytes:
    """The quoted dtype of a ``.npy`` header, e.g. ``b"'<f4'"``."""
    found = re.search(rb"'descr': ('[^']*')", raw)
    assert found is not None
    return found.group(1)


HEADER_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "unbalanced brace": lambda raw: raw.replace(b"'descr'", b"{'descr'", 1)[: len(raw)],
    "unterminated string": lambda raw: raw.replace(_descr(raw), _descr(raw)[:-1] + b" ", 1),
    "shape changed": lambda raw: raw.replace(b"'shape': (", b"'shape': (9", 1)[: len(raw)],
    "dtype changed": lambda raw: raw.replace(_descr(raw), b"'<f8'", 1),
    "big-endian": lambda raw: raw.replace(_descr(raw), b"'>f4'", 1),
    "fortran order": lambda raw: raw.replace(b"False", b"True ", 1),
    "object dtype": lambda raw: raw.replace(_descr(raw), b"'|O' ", 1),
    "bad magic": lambda raw: b"\x93NUMPX" + raw[6:],
    "version 3": lambda raw: raw[:6] + b"\x03\x00" + raw[8:],
    "header length huge": lambda raw: raw[:8] + b"\xff\xff" + raw[10:],
    "header length zero": lambda raw: raw[:8] + b"\x00\x00" + raw[10:],
    "not a dict": lambda raw: raw[:10] + b"[" * 40 + raw[50:],
    "truncated in header": lambda raw: raw[:40],
}


@pytest.mark.parametrize("case", sorted(HEADER_DAMAGE))
@pytest.mark.parametrize("kind", ["f0.npy", "f0.sq.npy", "f0.mask.npy"])
def test_a_damaged_npy_header_is_a_storage_error(table: tuple[Path, dict[str, Any]], case: str, kind: str) -> None:
    root, _ = table
    path = next(p for p in segment_files(root) if kind_of(p) == kind)
    raw = path.read_bytes()
    damaged = HEADER_DAMAGE[case](raw)
    assert damaged != raw
    path.write_bytes(damaged)
    outcome, got = use(lambda: open_file(root))
    assert outcome == "StorageError", (case, kind, outcome)
    assert str(path) in str(got)
    CASES["header damage"][outcome] += 1


# --- 3. checksums, and the format versions ---------------------------------------------------


def test_every_segment_object_has_a_checksum(table: tuple[Path, dict[str, Any]]) -> None:
    root, _ = table
    m = json.loads(newest_manifest(root).read_text())
    assert m["format"] == FORMAT_VERSION == 5
    covered = set()
    for e in m["segments"]:
        sums = e["checksums"]
        assert sums["algorithm"] == "xxh3_64" and sums["block"] > 0
        assert all(re.fullmatch("[0-9a-f]{16}", v) for v in sums["objects"].values())
        covered |= {f"{e['name']}.{suffix}" for suffix in sums["objects"]}
    assert covered == {p.name for p in segment_files(root)}


@pytest.mark.parametrize("kind", ["ids.txt", "ids.json", "deletes.json", "rows.jsonl", "f0.npy", "f0.sq.npy", "f0.mask.npy"])
@pytest.mark.parametrize("damage", ["flip", "truncate", "append"])
def test_damage_to_any_object_is_named_never_a_wrong_answer(
    table: tuple[Path, dict[str, Any]], kind: str, damage: str
) -> None:
    """Every object kind, each of its damages: the operations that need the object raise a
    StorageError naming it (``verify`` always does), the others answer as before."""
    root, want = table
    path = next(p for p in segment_files(root) if kind_of(p) == kind)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x01
    elif damage == "truncate":
        del raw[-1:]
    else:
        raw += b"\n"
    path.write_bytes(bytes(raw))
    errors: list[str] = []
    result = probe(lambda: open_file(root), want)
    assert result.get("verify", result.get("open")) == "StorageError", result
    db = None
    try:
        db = open_file(root)
        db.verify()
    except StorageError as e:
        errors.append(str(e))
    finally:
        if db is not None:
            db.close()
    assert errors and str(path) in errors[0], errors
    CASES["segment byte corruptions"][outcome(result)] += 1


def _strip_to_format_2(root: Path) -> None:
    """Rewrite a table as format 2 wrote it: no checksums in its manifests, no block digests
    after the ``.npy`` data."""
    for path in [root / "LATEST.json", *sorted((root / "manifests").glob("*.json"))]:
        m = json.loads(path.read_text())
        m["format"] = 2
        for e in m["segments"]:
            e.pop("checksums", None)
        path.write_text(json.dumps(m))
    for npy in (root / "segments").glob("*.npy"):
        np.save(npy, np.load(npy))


def test_format_2_tables_are_read_and_gain_checksums(table: tuple[Path, dict[str, Any]]) -> None:
    root, want = table
    _strip_to_format_2(root)
    assert probe(lambda: open_file(root), want) == dict.fromkeys(OPS, "ok")
    db = open_file(root)
    db.add_vectors(np.stack([vec(70)]), ids=["new"])  # the next commit writes the current format
    m = json.loads(newest_manifest(root).read_text())
    assert m["format"] == FORMAT_VERSION
    assert ["checksums" in e for e in m["segments"]] == [False] * 5 + [True]
    db.compact()  # compaction rewrites the live rows: every segment has checksums
    db.close()
    m = json.loads(newest_manifest(root).read_text())
    assert len(m["segments"]) == 1 and "checksums" in m["segments"][0]
    again = open_file(root)
    assert again.count() == want["count"] + 1 and again.verify()["live"] == want["count"] + 1
    again.close()


def test_old_checksums_are_ignored_in_old_formats(table: tuple[Path, dict[str, Any]]) -> None:
    """A manifest of format 1 or 2 is not read for checksums, even if it holds some (a table
    rewritten by hand): its segments load as before and a commit carries them on without any."""
    root, want = table
    for path in [root / "LATEST.json", *sorted((root / "manifests").glob("*.json"))]:
        m = json.loads(path.read_text())
        m["format"] = 2
        for e in m["segments"]:
            for k in e["checksums"]["objects"]:
                e["checksums"]["objects"][k] = "0" * 16
        path.write_text(json.dumps(m))
    assert probe(lambda: open_file(root), want) == dict.fromkeys(OPS, "ok")
    db = open_file(root)
    db.add_vectors(np.stack([vec(70)]), ids=["new"])
    db.close()
    m = json.loads(newest_manifest(root).read_text())
    assert ["checksums" in e for e in m["segments"]] == [False] * 5 + [True]
    assert open_file(root).verify()["live"] == want["count"] + 1


def test_undecodable_rows_and_ids_are_a_storage_error(table: tuple[Path, dict[str, Any]]) -> None:
    """Without checksums (format 2), rows and ids that do not decode to what the table expects
    are a StorageError naming their object."""
    root, _ = table
    _strip_to_format_2(root)
    rows = next(p for p in segment_files(root) if kind_of(p) == "rows.jsonl")
    lines = rows.read_bytes().split(b"\n")
    for bad in (b'{"d": 5, "m": {}, "v": {}}', b'{"d": {}, "m": {}, "v": {"embedding": 3}}', b"[" * 100_000):
        rows.write_bytes(b"\n".join([bad, *lines[1:]]))
        result = probe(lambda: open_file(root), None)
        assert result["all"] == "StorageError" and result["verify"] == "StorageError", result
        db = open_file(root)
        with pytest.raises(StorageError) as err:
            db.all()
        db.close()
        assert str(rows) in str(err.value)
        CASES["segment byte corruptions"]["StorageError"] += 1
    rows.write_bytes(b"\n".join(lines))
    ids = next(p for p in segment_files(root) if kind_of(p) == "ids.json")
    for bad in (b'{"ids": {"a": 1, "b": 2}, "deletes": []}', b'{"ids": [1, 2], "deletes": []}', b"[" * 100_000):
        ids.write_bytes(bad)
        result = probe(lambda: open_file(root), None)
        assert outcome(result) == "StorageError", result
        CASES["segment byte corruptions"]["StorageError"] += 1


# --- 4. lazy and ranged reads ----------------------------------------------------------------


def _big_table(root: Path) -> tuple[np.ndarray, Path, int]:
    """One segment of 3000 x 384 vectors (several checksum blocks); returns the vectors, their
    file and the offset of their data."""
    x = np.random.default_rng(1).standard_normal((3000, 384)).astype(np.float32)
    db = open_file(root)
    db.add_vectors(x, ids=[f"x{i}" for i in range(len(x))])
    db.close()
    path = next(p for p in segment_files(root) if kind_of(p) == "f0.npy")
    return x, path, npy_data_start(path.read_bytes())


def test_ranged_reads_verify_the_blocks_they_read(tmp_path: Path) -> None:
    root = tmp_path / "s"
    x, path, start = _big_table(root)
    raw = bytearray(path.read_bytes())
    raw[start + 2500 * 384 * 4 + 17] ^= 0x08  # row 2500
    path.write_bytes(bytes(raw))
    lazy = open_file(root, load_vectors=False)  # vectors are read when first needed
    got = lazy.read("x10")
    np.testing.assert_array_equal(np.asarray(got["embedding"]), x[10])  # its block is intact
    with pytest.raises(StorageError) as err:
        lazy.read("x2500")  # a ranged read of a damaged block
    assert str(path) in str(err.value) and "checksum" in str(err.value)
    with pytest.raises(StorageError):
        lazy.vector_search(x[0], k=3)  # a search reads (and verifies) the whole object
    lazy.close()
    CASES["segment byte corruptions"]["StorageError"] += 1


def test_segment_reader_verifies_what_it_reads(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _, path, start = _big_table(root)
    raw = bytearray(path.read_bytes())
    raw[start + 5] ^= 0x01
    path.write_bytes(bytes(raw))
    db = open_file(root, load_vectors=False)
    snap = snapshot(db.storage)
    db.close()
    reader = open_reader(StoreSpec.from_config("file", {"path": str(root)}))
    seg = snap.segments[0]
    field = seg.fields[0]
    assert list(reader.ids(seg)[:2]) == ["x0", "x1"]
    with pytest.raises(StorageError) as err:
        reader.vectors(seg, field, 2000, 2010)  # a mapped file is verified whole
    assert str(path) in str(err.value)
    reader.close()


def test_ranged_reads_find_the_data_after_any_header(tmp_path: Path) -> None:
    """A vectors object whose header is longer than the one this version writes (another numpy
    could pad it otherwise) still reads by rows: its block digests prove where the data starts."""
    root = tmp_path / "s"
    x, path, start = _big_table(root)
    raw = path.read_bytes()
    head, body = raw[:start], raw[start : start + x.nbytes]
    longer = head[:8] + (len(head) - 10 + 64).to_bytes(2, "little") + head[10:-1] + b" " * 64 + b"\n"
    digests = block_digests([longer, body], CHECKSUM_BLOCK).tobytes()
    path.write_bytes(longer + body + digests)
    for manifest_path in (newest_manifest(root), root / "LATEST.json"):
        m = json.loads(manifest_path.read_text())
        m["segments"][0]["checksums"]["objects"]["f0.npy"] = digest_list_checksum(digests)
        manifest_path.write_text(json.dumps(m))
    lazy = open_file(root, load_vectors=False)
    np.testing.assert_array_equal(np.asarray(lazy.read("x2500")["embedding"]), x[2500])
    assert lazy.vector_search(x[7], k=1)[0].id == "x7"
    assert lazy.verify()["live"] == len(x)
    lazy.close()


# --- 5. S3 -----------------------------------------------------------------------------------


def s3_copy(s3_server: Any, config: dict[str, Any]) -> dict[str, Any]:
    """A copy of the table at ``config``'s prefix under a fresh prefix; its config."""
    client = s3_server.client()
    new = {**config, "prefix": f"t-{uuid.uuid4().hex[:12]}"}
    listed = client.list_objects_v2(Bucket=config["bucket"], Prefix=config["prefix"] + "/")
    for obj in listed.get("Contents", []):
        key = new["prefix"] + obj["Key"][len(config["prefix"]) :]
        client.copy_object(Bucket=config["bucket"], Key=key, CopySource={"Bucket": config["bucket"], "Key": obj["Key"]})
    return new


def s3_object(client: Any, config: dict[str, Any], key: str) -> bytes:
    return client.get_object(Bucket=config["bucket"], Key=f"{config['prefix']}/{key}")["Body"].read()  # type: ignore[no-any-return]


def s3_put(client: Any, config: dict[str, Any], key: str, data: bytes) -> None:
    client.put_object(Bucket=config["bucket"], Key=f"{config['prefix']}/{key}", Body=data)


def open_s3(config: dict[str, Any], **extra: Any) -> Any:
    return DatabaseFactory().create(backend="s3", vector_enabled=True, inline_bytes=0, **{**config, **extra})


@pytest.fixture(scope="module")
def s3_pristine(s3_server: Any) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """A filled S3 table (never changed), what it answers, and its segment keys."""
    config = s3_server.config()
    db = open_s3(config)
    fill(db)
    want = answers(db)
    db.close()
    listed = s3_server.client().list_objects_v2(Bucket=config["bucket"], Prefix=config["prefix"] + "/segments/")
    keys = sorted(o["Key"][len(config["prefix"]) + 1 :] for o in listed["Contents"])
    return config, want, keys


def test_s3_damaged_objects_are_an_error(s3_server: Any, s3_pristine: Any) -> None:
    config, want, keys = s3_pristine
    client = s3_server.client()
    for kind in ("f0.npy", "ids.txt", "rows.jsonl"):
        copy_config = s3_copy(s3_server, config)
        key = next(k for k in keys if k.split(".", 1)[1] == kind)
        raw = bytearray(s3_object(client, copy_config, key))
        raw[-3] ^= 0x20
        s3_put(client, copy_config, key, bytes(raw))
        result = probe(functools.partial(open_s3, copy_config), want)
        assert "StorageError" in result.values(), result
        with pytest.raises(StorageError) as err:
            open_s3(copy_config).verify()
        assert key in str(err.value)
        CASES["segment byte corruptions"][outcome(result)] += 1


def test_s3_cache_copies_are_verified(s3_server: Any, tmp_path: Path) -> None:
    config = s3_server.config()
    cache = tmp_path / "cache"
    db = open_s3(config, cache_dir=str(cache))
    db.add_vectors(np.stack([vec(i) for i in range(20)]), ids=[f"c{i}" for i in range(20)])
    db.close()
    assert open_s3(config, cache_dir=str(cache)).count() == 20  # downloads, and keeps copies
    copy = next(p for p in cache.iterdir() if p.name.endswith(".f0.npy"))
    raw = bytearray(copy.read_bytes())
    raw[npy_data_start(raw) + 1] ^= 0x02
    copy.write_bytes(bytes(raw))
    with pytest.raises(StorageError, match="checksum"):
        open_s3(config, cache_dir=str(cache)).vector_search(vec(3), k=1)
    CASES["segment byte corruptions"]["StorageError"] += 1


def test_s3_ranged_reads_verify_blocks(s3_server: Any) -> None:
    config = s3_server.config()
    x = np.random.default_rng(1).standard_normal((3000, 384)).astype(np.float32)
    db = open_s3(config)
    db.add_vectors(x, ids=[f"x{i}" for i in range(len(x))])
    db.close()
    client = s3_server.client()
    listed = client.list_objects_v2(Bucket=config["bucket"], Prefix=config["prefix"] + "/segments/")
    key = next(o["Key"] for o in listed["Contents"] if o["Key"].endswith(".f0.npy"))[len(config["prefix"]) + 1 :]
    raw = bytearray(s3_object(client, config, key))
    raw[npy_data_start(raw) + 2500 * 384 * 4 + 3] ^= 0x10
    s3_put(client, config, key, bytes(raw))
    lazy = open_s3(config, load_vectors=False)
    np.testing.assert_array_equal(np.asarray(lazy.read("x10")["embedding"]), x[10])
    with pytest.raises(StorageError, match="checksum"):
        lazy.read("x2500")
    lazy.close()
    db = open_s3(config, load_vectors=False)
    snap = snapshot(db.storage)
    db.close()
    reader = open_reader(StoreSpec.from_config("s3", config))
    seg = snap.segments[0]
    np.testing.assert_array_equal(reader.vectors(seg, seg.fields[0], 0, 100), x[:100])
    with pytest.raises(StorageError, match="checksum"):
        reader.vectors(seg, seg.fields[0], 2400, 2600)
    reader.close()
    CASES["segment byte corruptions"]["StorageError"] += 2


# --- 6. fuzzing ------------------------------------------------------------------------------

#: Values a mutated manifest may hold: wrong types, huge and negative counts, path-like names,
#: unicode, nesting.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**40, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["../x", "../../b/segments/x", "/etc/passwd", "a/b", "..", ".", "f0/../f1", "é\u0000", "txt", "json"]),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(min_value=-5, max_value=5), max_size=3),
)


def json_paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a JSON document (the root is ``()``)."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += json_paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += json_paths(v, (*prefix, i))
    return out


def mutate_manifest(data: st.DataObject, m: dict[str, Any]) -> Any:
    """One drawn change to a manifest: a value replaced, a key removed or added."""
    m = copy.deepcopy(m)
    path = data.draw(st.sampled_from(json_paths(m)), label="path")
    action = data.draw(st.sampled_from(["replace", "remove", "add"]), label="action")
    if not path:
        return data.draw(ODD_VALUES, label="whole")
    parent: Any = m
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1]
    if action == "remove":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8), label="new key")] = data.draw(ODD_VALUES, label="value")
    else:
        parent[last] = data.draw(ODD_VALUES, label="value")
    return m


#: Examples per fuzz test: 3x the profile's (120 with the suite's "dkv" profile).
BASE_EXAMPLES = settings().max_examples

FUZZ = settings(
    max_examples=BASE_EXAMPLES * 3,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(data=st.data())
def test_fuzz_manifests(pristine: tuple[Path, dict[str, Any]], data: st.DataObject) -> None:
    """A mutated manifest (as LATEST.json, as the newest manifest, or both): only DkvErrors."""
    source, _ = pristine
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "s"
        shutil.copytree(source, root)
        m = json.loads(newest_manifest(root).read_text())
        mutated = json.dumps(mutate_manifest(data, m)).encode()
        where = data.draw(st.sampled_from(["latest", "manifest", "both"]), label="where")
        if where != "latest":
            newest_manifest(root).write_bytes(mutated)
        if where != "manifest":
            (root / "LATEST.json").write_bytes(mutated)
        result = probe(lambda: open_file(root), None)
    CASES["manifest mutations"][outcome(result)] += 1


def damage(data: st.DataObject, raw: bytes) -> bytes:
    """One drawn damage: flipped bits, truncation, or junk appended."""
    how = data.draw(st.sampled_from(["flip", "truncate", "append"]), label="how")
    if how == "flip" and raw:
        out = bytearray(raw)
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="at")
        out[at] ^= data.draw(st.integers(min_value=1, max_value=255), label="bits")
        return bytes(out)
    if how == "truncate" and raw:
        return raw[: data.draw(st.integers(min_value=0, max_value=len(raw) - 1), label="length")]
    return raw + data.draw(st.binary(min_size=1, max_size=64), label="junk")


@FUZZ
@given(data=st.data())
def test_fuzz_segment_bytes(pristine: tuple[Path, dict[str, Any]], data: st.DataObject) -> None:
    """A damaged segment object of any kind: only StorageErrors, every answer given is right,
    and verify() always notices."""
    source, want = pristine
    names = [p.name for p in segment_files(source)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "s"
        shutil.copytree(source, root)
        path = root / "segments" / data.draw(st.sampled_from(names), label="object")
        path.write_bytes(damage(data, path.read_bytes()))
        result = probe(lambda: open_file(root), want)
    assert result.get("verify", result.get("open")) == "StorageError", result
    assert set(result.values()) <= {"ok", "StorageError"}, result
    CASES["segment byte corruptions"][outcome(result)] += 1


@settings(
    max_examples=max(10, BASE_EXAMPLES // 2),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_s3(s3_server: Any, s3_pristine: Any, data: st.DataObject) -> None:
    """The same on S3: a damaged segment object or a mutated LATEST.json."""
    config, want, keys = s3_pristine
    client = s3_server.client()
    copy_config = s3_copy(s3_server, config)
    if data.draw(st.booleans(), label="manifest?"):
        m = json.loads(s3_object(client, copy_config, "LATEST.json"))
        s3_put(client, copy_config, "LATEST.json", json.dumps(mutate_manifest(data, m)).encode())
        result = probe(lambda: open_s3(copy_config), None)
        CASES["manifest mutations"][outcome(result)] += 1
        return
    key = data.draw(st.sampled_from(keys), label="object")
    s3_put(client, copy_config, key, damage(data, s3_object(client, copy_config, key)))
    result = probe(lambda: open_s3(copy_config), want)
    assert result.get("verify", result.get("open")) == "StorageError", result
    CASES["segment byte corruptions"][outcome(result)] += 1
