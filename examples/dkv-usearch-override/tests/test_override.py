"""The override's own tests: registered explicitly (``plugins=[plugin]``), no entry points needed.

Run them with ``python -m pytest examples/dkv-usearch-override/tests`` (from the repository root,
or from the distribution's directory).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from dkv_usearch_override import index_info, plugin, warm_up

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    InvalidRequestError,
    Record,
    VectorField,
)

N, D = 2000, 24


def make_factory(cls: Any = DatabaseFactory) -> Any:
    # load_entrypoints=False: the installed copy (if any) must not be registered a second time
    return cls(plugins=[plugin], load_entrypoints=False)


def clustered(n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, d)).astype(np.float32) * 3
    return (centres[rng.integers(0, 20, n)] + rng.standard_normal((n, d))).astype(np.float32)


def fill(db: Any, x: np.ndarray) -> list[str]:
    ids = [f"r{i:05d}" for i in range(len(x))]
    meta = [{"group": i % 10, "even": i % 2 == 0} for i in range(len(x))]
    return db.add_vectors(x, ids=ids, metadata=meta)


def ids(hits: list[Any]) -> list[str]:
    return [h.id for h in hits]


def by_hnsw(hits: list[Any]) -> bool:
    return bool(hits) and all(h.metadata.get("index") == "hnsw" for h in hits)


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered()


@pytest.fixture
def pair(data: np.ndarray) -> tuple[Any, Any]:
    """An HNSW store and an exact store holding the same records."""
    f = make_factory()
    hnsw = f.create(backend="memory", vector_enabled=True, index="hnsw")
    exact = f.create(backend="memory", vector_enabled=True)
    fill(hnsw, data)
    fill(exact, data)
    return hnsw, exact


# --- configuration -------------------------------------------------------------------------------


def test_options_are_declared_for_every_backend(tmp_path: Any) -> None:
    f = make_factory()
    db = f.create(backend="file", path=str(tmp_path / "s"), vector_enabled=True, index="hnsw", hnsw_ef=32)
    assert db.config["index"] == "hnsw" and db.config["hnsw_ef"] == 32
    assert f.create(backend="memory").config["index"] is None
    db.close()


def test_options_are_type_checked() -> None:
    f = make_factory()
    with pytest.raises(ConfigError, match="hnsw_ef"):
        f.create(backend="memory", index="hnsw", hnsw_ef="wide")
    with pytest.raises(ConfigError, match="hnsw_connectivity"):
        f.create(backend="memory", index="hnsw", hnsw_connectivity=1)
    with pytest.raises(ConfigError, match="hnsw_min_selectivity"):
        f.create(backend="memory", index="hnsw", hnsw_min_selectivity=2.0)


def test_without_the_plugin_index_is_an_unknown_key() -> None:
    with pytest.raises(ConfigError, match="unknown config key 'index'"):
        DatabaseFactory(load_entrypoints=False).create(backend="memory", index="hnsw")


# --- searching -----------------------------------------------------------------------------------


def test_hnsw_answers_with_high_recall_and_exact_scores(pair: tuple[Any, Any], data: np.ndarray) -> None:
    hnsw, exact = pair
    queries = clustered(50, seed=1)
    found = 0
    for q in queries:
        got, want = hnsw.vector_search(q, k=10), exact.vector_search(q, k=10)
        assert by_hnsw(got) and len(got) == 10
        assert [h.score for h in got] == sorted((h.score for h in got), reverse=True)
        exact_scores = {h.id: h.score for h in want}
        for h in got:
            if h.id in exact_scores:
                assert h.score == pytest.approx(exact_scores[h.id], rel=1e-5)
        found += len(set(ids(got)) & set(ids(want)))
    assert found / (10 * len(queries)) >= 0.9
    # the hit is built like the built-in's: a copy of the record, its vector, the field searched
    hit = hnsw.vector_search(data[7], k=1)[0]
    assert hit.id == "r00007" and hit.vector_field == "embedding" and hit.record.get("group") == 7
    assert np.allclose(hit.record["embedding"], data[7])


def test_declines_for_stores_without_index_hnsw(pair: tuple[Any, Any], data: np.ndarray) -> None:
    _, exact = pair
    hits = exact.vector_search(data[0], k=5)
    assert hits[0].id == "r00000" and "index" not in hits[0].metadata


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "dot_product"])
def test_metrics(pair: tuple[Any, Any], data: np.ndarray, metric: str) -> None:
    hnsw, exact = pair
    q = data[11] + 0.01
    got, want = hnsw.vector_search(q, k=5, metric=metric), exact.vector_search(q, k=5, metric=metric)
    assert by_hnsw(got)
    assert got[0].id == want[0].id
    assert got[0].score == pytest.approx(want[0].score, rel=1e-5)
    if metric == "euclidean":
        assert got[0].distance == pytest.approx(want[0].distance, rel=1e-4, abs=1e-5)
        assert got[0].metadata["distance"] == got[0].distance
    spaces = {key.split("/")[1] for key in index_info(hnsw)}
    assert {"cosine": "cos", "euclidean": "l2sq", "dot_product": "ip"}[metric] in spaces


def test_batch_and_score_threshold(pair: tuple[Any, Any], data: np.ndarray) -> None:
    hnsw, _ = pair
    batch = hnsw.vector_search_batch(data[:3], k=4)
    assert [hits[0].id for hits in batch] == ["r00000", "r00001", "r00002"]
    assert all(by_hnsw(hits) and len(hits) == 4 for hits in batch)
    strong = hnsw.vector_search(data[3], k=10, score_threshold=0.999)
    assert ids(strong) == ["r00003"]


def test_filters_are_respected(pair: tuple[Any, Any], data: np.ndarray) -> None:
    hnsw, exact = pair
    q = clustered(1, seed=5)[0]
    flt = {"group": {"$in": [1, 2, 3]}}  # keeps 30%: post-filtered HNSW candidates
    got, want = hnsw.vector_search(q, k=10, filter=flt), exact.vector_search(q, k=10, filter=flt)
    assert by_hnsw(got) and len(got) == 10
    assert all(h.record.get("group") in (1, 2, 3) for h in got)
    assert len(set(ids(got)) & set(ids(want))) >= 8


def test_a_very_selective_filter_is_answered_exactly(pair: tuple[Any, Any], data: np.ndarray) -> None:
    hnsw, exact = pair
    flt = {"id": {"$in": ["r00010", "r00020", "r00030"]}}
    got = hnsw.vector_search(data[0], k=2, filter=flt)
    assert not by_hnsw(got)  # declined: the built-in scored the three rows exactly
    assert ids(got) == ids(exact.vector_search(data[0], k=2, filter=flt))


def test_k_as_large_as_the_store_is_answered_exactly() -> None:
    db = make_factory().create(backend="memory", vector_enabled=True, index="hnsw")
    fill(db, clustered(30))
    assert not by_hnsw(db.vector_search(clustered(1)[0], k=30))
    assert by_hnsw(db.vector_search(clustered(1)[0], k=3))


def test_min_rows_and_errors_go_to_the_built_in() -> None:
    db = make_factory().create(backend="memory", vector_enabled=True, index="hnsw", hnsw_min_rows=1000)
    fill(db, clustered(100))
    assert not by_hnsw(db.vector_search(clustered(1)[0], k=3))
    with pytest.raises(InvalidRequestError, match="unknown vector field"):
        db.vector_search(clustered(1)[0], vector_field="nope", k=3)


# --- staying correct after writes ----------------------------------------------------------------


def test_writes_update_the_index_incrementally(data: np.ndarray) -> None:
    db = make_factory().create(backend="memory", vector_enabled=True, index="hnsw")
    fill(db, data)
    assert db.vector_search(data[5], k=1)[0].id == "r00005"
    (info,) = index_info(db).values()
    assert info["builds"] == 1 and info["size"] == N

    far = np.full(D, 40.0, dtype=np.float32)
    db.create(Record({"embedding": VectorField(far), "group": 99}, id="new"))
    assert db.vector_search(far, k=1)[0].id == "new"
    db.upsert(Record({"embedding": VectorField(-far), "group": 99}, id="r00005"))  # moves r00005
    hits = db.vector_search(-far, k=1)
    assert ids(hits) == ["r00005"] and by_hnsw(hits)
    assert "r00005" not in ids(db.vector_search(data[5], k=5))
    db.delete("new")
    assert "new" not in ids(db.vector_search(far, k=10))
    (info,) = index_info(db).values()
    assert info["builds"] == 1 and info["updates"] == 3 and info["size"] == N


def test_many_deletes_clear_and_compaction_rebuild(data: np.ndarray) -> None:
    # one build thread: the same graph on every run (a multi-threaded build varies with the
    # machine's load, and HNSW is approximate: the exact top-1 below could then miss)
    db = make_factory().create(backend="memory", vector_enabled=True, index="hnsw", hnsw_threads=1)
    fill(db, data)
    db.vector_search(data[0], k=1)
    db.delete_batch([f"r{i:05d}" for i in range(0, N, 2)])  # half the rows: cheaper to rebuild
    hits = db.vector_search(data[0], k=10)
    assert by_hnsw(hits) and all(int(h.id[1:]) % 2 == 1 for h in hits)
    db.compact()  # renumbers rows: a new VectorIndex, a rebuild
    assert db.vector_search(data[1], k=1)[0].id == "r00001"
    db.clear()
    fill(db, data[:500])
    assert db.vector_search(data[499], k=1)[0].id == "r00499"
    (info,) = index_info(db).values()
    assert info["builds"] == 4 and info["size"] == 500


def test_file_store_sees_another_writers_commits(tmp_path: Any, data: np.ndarray) -> None:
    f = make_factory()
    path = str(tmp_path / "store")
    writer = f.create(backend="file", path=path, vector_enabled=True)
    fill(writer, data[:1000])
    reader = f.create(backend="file", path=path, vector_enabled=True, index="hnsw")
    assert warm_up(reader)["size"] == 1000
    writer.add_vectors(data[1000:1100], ids=[f"late{i}" for i in range(100)])
    hits = reader.vector_search(data[1050], k=1)  # refresh loads the new segment; the index catches up
    assert ids(hits) == ["late50"] and by_hnsw(hits)
    (info,) = index_info(reader).values()
    assert info["size"] == 1100 and info["builds"] == 1
    writer.close()
    reader.close()


# --- async -----------------------------------------------------------------------------------------


async def test_async_store(data: np.ndarray, tmp_path: Any) -> None:
    f = make_factory(AsyncDatabaseFactory)
    # one build thread: the graph (and so which neighbours an approximate search finds) is the same
    # on every run; a graph built on several threads differs from run to run and can, rarely, miss
    # the exact top hit this test of the async plumbing asks for
    async with f.create(
        backend="file", path=str(tmp_path / "a"), vector_enabled=True, index="hnsw", hnsw_threads=1
    ) as db:
        await db.add_vectors(
            data, ids=[f"r{i:05d}" for i in range(N)], metadata=[{"group": i % 10} for i in range(N)]
        )
        hits, batch = await asyncio.gather(
            db.vector_search(data[9], k=3), db.vector_search_batch(data[:2], k=2)
        )
        assert hits[0].id == "r00009" and by_hnsw(hits)
        assert [b[0].id for b in batch] == ["r00000", "r00001"]
        selective = await db.vector_search(data[9], k=3, filter={"id": "r00009"})
        assert ids(selective) == ["r00009"] and not by_hnsw(selective)  # fell back to the exact search
    plain = f.create(backend="memory", vector_enabled=True)
    await plain.add_vectors(data[:10])
    assert not by_hnsw(await plain.vector_search(data[0], k=2))
