"""int8 codes stored with big segments: read instead of computed, checksummed, and on S3 with
``load_vectors=False`` a search reads the codes and only the re-ranked rows (ranged GETs)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from s3_server import S3Server, clients_from

from dk_vector_plugins import DatabaseFactory, StorageError, SyncDatabase, VectorSearchResult, quant
from dk_vector_plugins import kernel as kernel_module

ROWS, DIM = 5000, 24


def _vectors(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((ROWS, DIM)).astype(np.float32)


def _hits(results: list[Any]) -> list[tuple[str, float]]:
    return [(h.id, h.score) for h in results]


def test_codes_are_stored_with_big_segments_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t"
    db = DatabaseFactory().create(backend="file", path=str(path))
    x = _vectors()
    db.add_vectors(x, ids=[f"r{i:05d}" for i in range(ROWS)])
    db.add_vectors(x[:3] + 1, ids=["s0", "s1", "s2"])  # a small segment: no codes
    db.close()
    manifest = json.loads(sorted((path / "manifests").glob("*.json"))[-1].read_bytes())
    big, small = manifest["segments"]
    assert big["fields"]["embedding"]["codes"] is True and "codes" not in small["fields"]["embedding"]
    assert {"f0.c8.npy", "f0.cs.npy", "f0.cr.npy", "f0.cn.npy"} <= set(big["checksums"]["objects"])

    real = quant.quantize_rows

    def refuse(matrix: Any, *args: Any, **kwargs: Any) -> Any:
        if len(matrix) > 100:  # the small segment's 3 rows have no stored codes
            raise AssertionError("quantized the rows instead of reading the stored codes")
        return real(matrix, *args, **kwargs)

    again = DatabaseFactory().create(backend="file", path=str(path))
    q = np.random.default_rng(5).standard_normal((3, DIM)).astype(np.float32)
    want = [_hits(again.vector_search(v, k=7, exact="float32")) for v in q]
    monkeypatch.setattr(quant, "quantize_rows", refuse)
    got = again.vector_search(q[0], k=7, exact="int8")
    assert _hits(got) == want[0] and got[0].metadata["exact"] == "int8"
    # "auto" uses them from the first search: no warm-up of a part whose codes are stored
    monkeypatch.setattr(kernel_module, "INT8_MIN_ROWS", 100)
    monkeypatch.setattr(kernel_module, "INT8_ROWS_PER_K", 1)
    fresh = DatabaseFactory().create(backend="file", path=str(path))
    auto = fresh.vector_search(q[1], k=7)
    assert _hits(auto) == want[1] and auto[0].metadata["exact"] == "int8"
    fresh.close()
    again.close()


def test_compaction_stores_the_codes_the_table_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A compaction (or a merge) of rows whose codes the table holds stores those codes (a row's
    codes depend on that row alone) instead of quantizing the rows again; a reopened store reads
    them and answers the same."""
    from dk_vector_plugins.storage import log_format

    path = tmp_path / "t"
    db = DatabaseFactory().create(backend="file", path=str(path))
    x = _vectors(3)
    db.add_vectors(x, ids=[f"r{i:05d}" for i in range(ROWS)])  # stored with its codes, read back
    db.add_vectors(x[:50] * 2, ids=[f"n{i:02d}" for i in range(50)])  # a small segment: no codes
    q = np.random.default_rng(6).standard_normal(DIM).astype(np.float32)
    db.vector_search(q, k=5, exact="int8")  # the small part's codes are built by the int8 search
    db.delete_batch([f"r{i:05d}" for i in range(0, ROWS, 7)])
    want = _hits(db.vector_search(q, k=9, exact="float32"))
    calls: list[int] = []
    real = log_format.quantize_rows

    def counting(matrix: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(matrix))
        return real(matrix, *args, **kwargs)

    monkeypatch.setattr(log_format, "quantize_rows", counting)
    db.compact()
    assert calls == []  # the table's codes were stored
    manifest = json.loads(sorted((path / "manifests").glob("*.json"))[-1].read_bytes())
    (segment,) = manifest["segments"]
    assert segment["fields"]["embedding"]["codes"] is True
    monkeypatch.setattr(log_format, "quantize_rows", real)
    again = DatabaseFactory().create(backend="file", path=str(path))
    assert _hits(again.vector_search(q, k=9, exact="int8")) == want == _hits(db.vector_search(q, k=9, exact="int8"))
    stored = again.core.table.indexes["embedding"]._parts[0].codes
    fresh = quant.quantize_rows(np.asarray(again.core.table.indexes["embedding"].matrix))
    assert np.array_equal(stored.codes, fresh.codes) and np.array_equal(stored.scales, fresh.scales)
    assert np.array_equal(stored.residuals, fresh.residuals) and np.array_equal(stored.sqnorms, fresh.sqnorms)
    again.close()
    db.close()


def test_damaged_stored_codes_are_caught(tmp_path: Path) -> None:
    path = tmp_path / "t"
    db = DatabaseFactory().create(backend="file", path=str(path))
    db.add_vectors(_vectors(1), ids=[f"r{i:05d}" for i in range(ROWS)])
    db.close()
    obj = next((path / "segments").glob("*.f0.c8.npy"))
    raw = bytearray(obj.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    obj.write_bytes(bytes(raw))
    again = DatabaseFactory().create(backend="file", path=str(path))
    q = _vectors(2)[0]
    assert len(again.vector_search(q, k=3, exact="float32")) == 3  # the vectors are intact
    with pytest.raises(StorageError, match=r"c8\.npy"):
        again.vector_search(q, k=3, exact="int8")
    again.close()


class Sent:
    """The S3 requests a botocore client sends: method, object name, Range header."""

    def __init__(self, client: Any) -> None:
        self.sent: list[tuple[str, str, str | None]] = []
        client.meta.events.register("before-send.s3.*", self._on_send)

    def _on_send(self, request: Any, **_: Any) -> None:
        name = request.url.split("?")[0].rsplit("/", 1)[-1]
        self.sent.append((request.method, name, request.headers.get("Range")))


def test_s3_search_without_loaded_vectors_reads_codes_and_reranked_rows(s3_server: Any) -> None:
    cfg = {**s3_server.config(), "inline_bytes": 0}
    writer = DatabaseFactory().create(backend="s3", **cfg)
    x = _vectors(3)
    writer.add_vectors(x, ids=[f"r{i:05d}" for i in range(ROWS)])
    q = np.random.default_rng(9).standard_normal(DIM).astype(np.float32)
    want = _hits(writer.vector_search(q, k=5, exact="float32"))
    writer.close()
    reader = DatabaseFactory().create(backend="s3", load_vectors=False, **{**cfg, "prefix": cfg["prefix"]})
    assert reader.count() == ROWS
    sent = Sent(reader.s3_client)
    got = reader.vector_search(q, k=5, exact="int8")
    assert _hits(got) == want
    whole_vectors = [s for s in sent.sent if s[1].endswith(".f0.npy") and s[2] is None]
    assert whole_vectors == []  # never the whole float32 matrix
    ranged = [s for s in sent.sent if s[1].endswith(".f0.npy")]
    assert ranged and all(s[2] for s in ranged)  # the re-ranked rows, by ranged GET
    codes = {s[1].rsplit(".", 2)[-2] for s in sent.sent if s[1].endswith((".c8.npy", ".cs.npy", ".cr.npy", ".cn.npy"))}
    assert codes == {"c8", "cs", "cr", "cn"}
    read = sum(1 for s in sent.sent if s[0] == "GET")
    assert read <= 4 + 2 + len(ranged)  # codes, the squared norms (and LATEST), the rows
    reader.close()


# --- load_vectors="codes": an S3 store that holds the codes and reads the re-ranked rows -------

#: A table of this shape: big enough to store its codes (``codes_min_rows``: 4096 rows).
CODES_ROWS, CODES_DIM = 5000, 384
#: The checksum block the table is written with in these tests. A ranged read reads (and
#: verifies) whole blocks, so this gives the small table as many rows per block as the real
#: block (256 KiB) gives a table of about 150,000 rows: the bytes the re-rank reads are not the
#: whole matrix merely because the table is small.
TEST_BLOCK = 8192
METRICS = ("cosine", "euclidean", "dot_product")
FILTERS: tuple[dict[str, Any] | None, ...] = (None, {"tag": "t1"})


class Traffic:
    """What a botocore client downloads: per ``GetObject`` answered, the object's name, the range
    answered (``None``: the whole object) and the bytes (``after-call``, so retries count once)."""

    def __init__(self, events: Any) -> None:
        self.got: list[tuple[str, str | None, int]] = []
        events.register("after-call.s3.GetObject", self._on_get)

    def _on_get(self, http_response: Any, parsed: Mapping[str, Any], **_: Any) -> None:
        name = str(http_response.url).split("?")[0].rsplit("/", 1)[-1]
        self.got.append((name, parsed.get("ContentRange"), int(parsed.get("ContentLength") or 0)))

    def whole(self, suffix: str) -> list[str]:
        """Objects ending in ``suffix`` downloaded whole."""
        return [name for name, rng, _ in self.got if name.endswith(suffix) and rng is None]

    def ranged(self, suffix: str) -> list[tuple[str, str | None, int]]:
        """Ranged reads of objects ending in ``suffix``."""
        return [g for g in self.got if g[0].endswith(suffix) and g[1] is not None]

    def take(self) -> list[tuple[str, str | None, int]]:
        """What was downloaded since the last call."""
        out, self.got = self.got, []
        return out


@pytest.fixture(scope="module")
def codes_table(s3_server: S3Server) -> Iterator[dict[str, Any]]:
    """An S3 table of one segment of CODES_ROWS x CODES_DIM vectors with a ``tag`` field, its
    int8 codes stored (objects of their own: ``inline_bytes=0``), and the queries."""
    from dk_vector_plugins.storage import log_format

    cfg = {**s3_server.config(), "inline_bytes": 0}
    rng = np.random.default_rng(21)
    x = rng.standard_normal((CODES_ROWS, CODES_DIM)).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(log_format, "CHECKSUM_BLOCK", TEST_BLOCK)
        writer = DatabaseFactory().create(backend="s3", **cfg)
        ids = [f"r{i:05d}" for i in range(CODES_ROWS)]
        writer.add_vectors(x, ids=ids, metadata=[{"tag": f"t{i % 4}"} for i in range(CODES_ROWS)])
        writer.close()
    queries = rng.standard_normal((4, CODES_DIM)).astype(np.float32)
    yield {"config": cfg, "queries": queries}


def _full(results: Sequence[VectorSearchResult]) -> list[tuple[str | None, float, float | None, dict[str, Any]]]:
    """What must not differ: ids, order, scores, distances, and the records."""
    return [
        (h.id, h.score, h.distance, {k: np.asarray(v).tolist() for k, v in h.record.data.items()}) for h in results
    ]


def _expected(cfg: Mapping[str, Any], queries: np.ndarray) -> dict[tuple[str, int, int], Any]:
    """Results of a fully loaded store (``load_vectors=True``, the float32 scan), per (metric,
    filter, query)."""
    loaded = DatabaseFactory().create(backend="s3", **cfg)
    out = {
        (metric, fi, qi): _full(loaded.vector_search(q, k=10, metric=metric, filter=flt, exact="float32"))
        for metric in METRICS
        for fi, flt in enumerate(FILTERS)
        for qi, q in enumerate(queries)
    }
    loaded.close()
    return out


def _open_counted(cfg: Mapping[str, Any], **extra: Any) -> tuple[SyncDatabase, Traffic]:
    """A sync S3 store whose downloads are counted from its construction (its open) on."""
    import boto3

    session = boto3.Session()
    traffic = Traffic(session.events)
    with clients_from(session):
        db = DatabaseFactory().create(backend="s3", **{**cfg, **extra})
    return db, traffic


def test_load_vectors_takes_true_false_or_codes() -> None:
    from dk_vector_plugins import ConfigError
    from dk_vector_plugins.backends.tabled import table_options
    from dk_vector_plugins.factory import resolve_config

    pm = DatabaseFactory().pm
    base = {"backend": "s3", "bucket": "b"}
    for value in (True, False, "codes"):
        assert table_options(resolve_config(pm, {**base, "load_vectors": value}), True).load_vectors == value
    assert table_options(resolve_config(pm, base), True).load_vectors is True
    for bad in ("yes", "CODES", 1, 0.5):
        with pytest.raises(ConfigError, match=rf"load_vectors.*{bad!r}"):
            resolve_config(pm, {**base, "load_vectors": bad})
    with pytest.raises(ConfigError, match=r"load_vectors.*'all'"):
        resolve_config(pm, {"backend": "file", "path": "p", "load_vectors": "all"})
    from dk_vector_plugins.storage.log_format import TableOptions

    with pytest.raises(ConfigError, match=r"load_vectors.*'vectors'"):
        TableOptions(load_vectors="vectors")  # type: ignore[arg-type]


@pytest.mark.parametrize("flt", FILTERS, ids=["all", "filter"])
@pytest.mark.parametrize("metric", METRICS)
def test_s3_codes_store_reads_codes_on_open_and_only_reranked_rows(
    codes_table: dict[str, Any], metric: str, flt: dict[str, Any] | None
) -> None:
    """``load_vectors="codes"``: the open reads each segment's ids and int8 codes, never its
    float32 matrix; a search (``exact="auto"``, whatever the table's size) scans the codes and
    reads the rows it re-ranks by ranged GETs; the results are those of a fully loaded store,
    bit for bit, in far fewer bytes than the float32 matrix."""
    from dk_vector_plugins.index import LazyArray

    cfg, queries = codes_table["config"], codes_table["queries"]
    fi = FILTERS.index(flt)
    want = _expected(cfg, queries[:2])
    db, traffic = _open_counted(cfg, load_vectors="codes")
    opened = traffic.take()
    names = {n.split(".f0.", 1)[1] for n, _, _ in opened if ".f0." in n}
    assert names == {"c8.npy", "cs.npy", "cr.npy", "cn.npy", "npy"}, opened  # codes, and the vectors'
    trailer = [g for g in opened if g[0].endswith(".f0.npy")]
    assert len(trailer) == 1 and trailer[0][1] is not None and trailer[0][2] < 8 * 1024  # its block digests
    index = db.core.table.indexes["embedding"]
    (part,) = index._parts
    assert isinstance(part.matrix, LazyArray) and not part.matrix.loaded
    assert part.codes is not None and part.codes.n == CODES_ROWS  # held from the open on
    got = db.vector_search(queries[0], k=10, metric=metric, filter=flt)
    assert _full(got) == want[(metric, fi, 0)]
    assert got[0].metadata["exact"] == "int8"  # "auto" scans the codes: no float32 matrix to scan
    searched = traffic.take()
    assert [g for g in searched if g[0].endswith(".f0.npy") and g[1] is None] == []  # never the whole matrix
    assert [g for g in searched if g[0].endswith(".sq.npy")] == []  # nor the squared norms
    assert [g for g in searched if g[0].endswith(".f0.npy")], searched  # the re-ranked rows
    matrix_bytes = CODES_ROWS * CODES_DIM * 4
    total = sum(n for _, _, n in opened + searched)
    assert total < 0.5 * matrix_bytes, (total, matrix_bytes)
    assert not part.matrix.loaded and index.in_storage
    # a second query: more ranged reads (the rows read before are kept), the same answers
    again = db.vector_search(queries[1], k=10, metric=metric, filter=flt)
    assert _full(again) == want[(metric, fi, 1)]
    assert [g for g in traffic.take() if g[0].endswith(".f0.npy") and g[1] is None] == []
    db.close()


def test_s3_codes_store_float32_search_loads_the_matrix(codes_table: dict[str, Any]) -> None:
    """``exact="float32"`` on a codes-only store still answers (it reads the matrix then), and
    the answers are the same."""
    cfg, queries = codes_table["config"], codes_table["queries"]
    want = _expected(cfg, queries[:1])
    db, traffic = _open_counted(cfg, load_vectors="codes")
    for metric in METRICS:
        for fi, flt in enumerate(FILTERS):
            got = db.vector_search(queries[0], k=10, metric=metric, filter=flt, exact="float32")
            assert _full(got) == want[(metric, fi, 0)]
    assert len(traffic.whole(".f0.npy")) == 1  # read once, whole
    assert not db.core.table.indexes["embedding"].in_storage
    for metric in METRICS:  # int8 and auto on the loaded matrix: the same again
        for exact in ("int8", "auto"):
            assert _full(db.vector_search(queries[0], k=10, metric=metric, exact=exact)) == want[(metric, 0, 0)]
    db.close()


def test_s3_codes_store_batches_and_new_segments(codes_table: dict[str, Any]) -> None:
    """A batch of queries (more than ``auto`` scans int8 on loaded vectors) is scanned on the codes
    too, and a segment another writer commits later is read the same way (its codes, not its
    matrix) by the next search's refresh."""
    from dk_vector_plugins.kernel import INT8_MAX_BATCH
    from dk_vector_plugins.storage import log_format

    cfg = codes_table["config"]
    own = {**cfg, "prefix": cfg["prefix"] + "-grow"}
    rng = np.random.default_rng(33)
    x = rng.standard_normal((CODES_ROWS, CODES_DIM)).astype(np.float32)
    queries = rng.standard_normal((INT8_MAX_BATCH + 4, CODES_DIM)).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(log_format, "CHECKSUM_BLOCK", TEST_BLOCK)
        writer = DatabaseFactory().create(backend="s3", **own)
        writer.add_vectors(x, ids=[f"a{i:05d}" for i in range(CODES_ROWS)])
        reader, traffic = _open_counted(own, load_vectors="codes")
        writer.add_vectors(x[::-1] * 0.5, ids=[f"b{i:05d}" for i in range(CODES_ROWS)])
    batch = reader.vector_search_batch(queries, k=5)
    want = writer.vector_search_batch(queries, k=5, exact="float32")
    assert [[(h.id, h.score) for h in hits] for hits in batch] == [[(h.id, h.score) for h in hits] for hits in want]
    assert all(hits[0].metadata["exact"] == "int8" for hits in batch)
    assert traffic.whole(".f0.npy") == [] and traffic.whole(".sq.npy") == []
    parts = reader.core.table.indexes["embedding"]._parts
    assert len(parts) == 2 and all(p.codes is not None and not p.matrix.loaded for p in parts)
    writer.close()
    reader.close()


def test_s3_async_codes_store(codes_table: dict[str, Any]) -> None:
    """The async store opens the same way (codes held, matrix in storage) and answers the same,
    for every metric, with and without a filter, reading rows by ranged GETs only."""
    import asyncio

    from dk_vector_plugins import AsyncDatabaseFactory
    from dk_vector_plugins.index import LazyArray

    cfg, queries = codes_table["config"], codes_table["queries"]
    want = _expected(cfg, queries[:1])

    async def run() -> None:
        adb = AsyncDatabaseFactory().create(backend="s3", load_vectors="codes", **cfg)
        assert await adb.count() == CODES_ROWS  # the open: ids and codes
        (part,) = adb.core.table.indexes["embedding"]._parts
        assert isinstance(part.matrix, LazyArray) and not part.matrix.loaded and part.codes is not None
        traffic = Traffic(adb.s3_client.meta.events)
        for metric in METRICS:
            for fi, flt in enumerate(FILTERS):
                got = await adb.vector_search(queries[0], k=10, metric=metric, filter=flt)
                assert _full(got) == want[(metric, fi, 0)]
                assert got[0].metadata["exact"] == "int8"
        assert traffic.whole(".f0.npy") == [] and traffic.ranged(".f0.npy")
        assert not part.matrix.loaded
        await adb.close()

    asyncio.run(run())


def test_file_codes_store_answers_the_same(tmp_path: Path) -> None:
    """On a file store ``load_vectors="codes"`` maps the codes and leaves the vectors unread
    until rows are re-ranked; the answers are the same."""
    from dk_vector_plugins.index import LazyArray

    path = str(tmp_path / "t")
    db = DatabaseFactory().create(backend="file", path=path)
    x = _vectors(4)
    db.add_vectors(x, ids=[f"r{i:05d}" for i in range(ROWS)])
    q = np.random.default_rng(8).standard_normal((3, DIM)).astype(np.float32)
    want = [_hits(db.vector_search(v, k=7, metric=m, exact="float32")) for v in q for m in METRICS]
    db.close()
    codes = DatabaseFactory().create(backend="file", path=path, load_vectors="codes")
    (part,) = codes.core.table.indexes["embedding"]._parts
    assert isinstance(part.matrix, LazyArray) and part.codes is not None
    assert [_hits(codes.vector_search(v, k=7, metric=m)) for v in q for m in METRICS] == want
    codes.close()


def test_cold_load_warning_counts_what_a_codes_store_reads(codes_table: dict[str, Any]) -> None:
    """``warn_download_bytes`` weighs what the open reads: the vectors (7.7 MB here) for
    ``load_vectors=True``, the codes (2 MB) for ``load_vectors="codes"``."""
    import warnings

    from dk_vector_plugins import DkvPerformanceWarning

    cfg = {**codes_table["config"], "warn_download_bytes": 4_000_000}
    with pytest.warns(DkvPerformanceWarning, match="MiB"):
        DatabaseFactory().create(backend="s3", **cfg).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DkvPerformanceWarning)
        DatabaseFactory().create(backend="s3", load_vectors="codes", **cfg).close()
        DatabaseFactory().create(backend="s3", load_vectors=False, **cfg).close()
