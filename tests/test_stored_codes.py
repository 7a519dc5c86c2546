"""int8 codes stored with big segments: read instead of computed, checksummed, and on S3 with
``load_vectors=False`` a search reads the codes and only the re-ranked rows (ranged GETs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import DatabaseFactory, StorageError, quant
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
