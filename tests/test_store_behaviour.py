"""Behaviour of a store, identical for every backend and for the sync and async classes.

Every test takes the ``store`` fixture (or ``make_store_for``) from conftest.py, so it runs once
per entry of ``BACKENDS``; async stores are driven through the conftest ``SyncAdapter``.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import (
    ConfigError,
    DatabaseFactory,
    DimensionMismatchError,
    DkvError,
    DuplicateRecordError,
    Filter,
    FilterError,
    HashingEmbedder,
    InvalidRequestError,
    InvalidVectorError,
    Operator,
    Query,
    Record,
    RecordNotFoundError,
    VectorField,
    VectorSearchResult,
)

# --- helpers ---------------------------------------------------------------------------------


def snapshot(store: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every record as (id, JSON-ready dict), sorted: to check that a call changed nothing."""
    return sorted((r.id, r.to_dict(include_metadata=True)) for r in store.all())


def rec(rid: str, vec: Any = None, **data: Any) -> Record:
    if vec is not None:
        data["embedding"] = VectorField(vec)
    return Record(data, id=rid)


def ids(hits: list[VectorSearchResult]) -> list[str]:
    return [h.id for h in hits]


def assert_same_ranking(got: list[VectorSearchResult], want: list[VectorSearchResult]) -> None:
    """Same scores position by position; ids equal up to order among near-tied scores.

    A batch is one matrix-matrix product, a single search a matrix-vector one: float32 sums may
    round differently, so hits whose scores differ by less than 1e-6 may swap.
    """
    assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-5, abs=1e-6)
    i = 0
    while i < len(want):
        j = i + 1
        while j < len(want) and abs(want[j].score - want[j - 1].score) <= 1e-6:
            j += 1
        assert {h.id for h in got[i:j]} == {h.id for h in want[i:j]}
        i = j


@pytest.fixture
def filled(store: Any) -> Any:
    """Six records with 3-D vectors and metadata, plus one record without a vector."""
    store.create_batch(
        [
            rec("a", [1, 0, 0], cat="x", n=1, text="alpha"),
            rec("b", [0, 1, 0], cat="x", n=2, text="beta"),
            rec("c", [0, 0, 1], cat="y", n=3, text="gamma"),
            rec("d", [1, 1, 0], cat="y", n=4, text="delta"),
            rec("e", [1, 1, 1], cat="z", n=5, text="epsilon"),
            rec("f", [-1, 0, 0], cat="z", n=6, text="phi"),
            rec("novec", None, cat="x", n=7, text="no vector"),
        ]
    )
    return store


# --- CRUD ------------------------------------------------------------------------------------


def test_create_returns_id_and_read_round_trips(store: Any) -> None:
    rid = store.create(Record({"text": "hi", "n": 3, "nested": {"a": [1, 2]}}, metadata={"m": 1}, id="r1"))
    assert rid == "r1"
    got = store.read("r1")
    assert got is not None
    assert got.id == "r1"
    assert got["text"] == "hi"
    assert got["nested"] == {"a": [1, 2]}
    assert got.metadata == {"m": 1}


def test_create_without_id_assigns_one(store: Any) -> None:
    rid = store.create(Record({"text": "anon"}))
    assert isinstance(rid, str) and rid
    assert store.read(rid)["text"] == "anon"


def test_create_takes_id_from_data(store: Any) -> None:
    assert store.create(Record({"id": "from-data", "x": 1})) == "from-data"
    assert store.exists("from-data")


def test_create_duplicate_raises_and_keeps_original(store: Any) -> None:
    store.create(rec("a", x=1))
    before = snapshot(store)
    with pytest.raises(DuplicateRecordError):
        store.create(rec("a", x=2))
    assert snapshot(store) == before
    assert store.read("a")["x"] == 1


def test_create_batch_is_all_or_nothing_on_duplicates(store: Any) -> None:
    store.create(rec("a", x=1))
    with pytest.raises(DuplicateRecordError):
        store.create_batch([rec("b", x=2), rec("a", x=3), rec("c", x=4)])
    assert store.count() == 1
    with pytest.raises(DuplicateRecordError):  # the same id twice in one batch
        store.create_batch([rec("d", x=2), rec("d", x=3)])
    assert store.count() == 1
    assert not store.exists("b") and not store.exists("d")


@pytest.mark.parametrize(
    "bad_vector, error",
    [
        ([1.0, float("nan"), 0.0], InvalidVectorError),
        ([1.0, float("inf"), 0.0], InvalidVectorError),
        ([1.0, 2.0], DimensionMismatchError),
    ],
    ids=["nan", "inf", "wrong-dim"],
)
def test_create_batch_one_bad_vector_rejects_whole_batch(store: Any, bad_vector: Any, error: type) -> None:
    store.create(rec("first", [1, 2, 3]))
    before = snapshot(store)
    batch = [rec(f"r{i}", [i, 1, 1]) for i in range(5)]
    batch[3] = Record({"embedding": np.array(bad_vector, dtype=np.float64)}, id="bad")
    with pytest.raises(error):
        store.create_batch(batch)
    assert store.count() == 1
    assert snapshot(store) == before


def test_read_returns_copies(store: Any) -> None:
    store.create(rec("a", [1, 2, 3], text="t", nested={"k": [1]}))
    got = store.read("a")
    got["text"] = "changed"
    got["nested"]["k"].append(2)
    got["embedding"][0] = 99.0
    got.metadata["x"] = 1
    again = store.read("a")
    assert again["text"] == "t"
    assert again["nested"] == {"k": [1]}
    assert again["embedding"].tolist() == [1.0, 2.0, 3.0]
    assert again.metadata == {}
    hit = store.vector_search([1, 2, 3], k=1)[0]
    hit.record["nested"]["k"].append(3)
    assert store.read("a")["nested"] == {"k": [1]}


def test_store_keeps_its_own_copy_of_created_records(store: Any) -> None:
    nested = {"k": 1}
    original = Record({"nested": nested, "tags": ["a"]}, metadata={"m": {"v": 1}}, id="a")
    store.create(original)
    nested["k"] = 2
    original["tags"].append("b")
    original.metadata["m"]["v"] = 2
    got = store.read("a")
    assert got["nested"] == {"k": 1}
    assert got["tags"] == ["a"]
    assert got.metadata == {"m": {"v": 1}}
    assert store.count({"nested.k": 1}) == 1
    assert store.count({"nested.k": 2}) == 0


def test_read_missing_is_none_and_get_raises(store: Any) -> None:
    assert store.read("nope") is None
    assert store.read_batch(["nope"]) == [None]
    with pytest.raises(RecordNotFoundError):
        store.get("nope")
    with pytest.raises(KeyError):  # RecordNotFoundError is a KeyError too
        store.get("nope")


def test_read_batch_order_and_missing(store: Any) -> None:
    store.create_batch([rec("a", x=1), rec("b", x=2)])
    got = store.read_batch(["b", "zz", "a"])
    assert [r.id if r else None for r in got] == ["b", None, "a"]


def test_update_existing_and_missing(store: Any) -> None:
    store.create(rec("a", [1, 0, 0], x=1, y=2))
    assert store.update("a", Record({"x": 10})) is True
    got = store.read("a")
    assert got["x"] == 10
    assert "y" not in got and "embedding" not in got  # update replaces the record
    before = snapshot(store)
    assert store.update("missing", Record({"x": 1})) is False
    assert snapshot(store) == before
    assert not store.exists("missing")


def test_update_batch(store: Any) -> None:
    store.create_batch([rec("a", x=1), rec("b", x=2)])
    assert store.update_batch([rec("a", x=10), rec("zz", x=0), rec("b", x=20)]) == [True, False, True]
    assert [r["x"] for r in store.read_batch(["a", "b"])] == [10, 20]
    assert store.count() == 2


def test_upsert_creates_then_replaces(store: Any) -> None:
    assert store.upsert(rec("a", x=1)) == "a"
    assert store.upsert("a", Record({"x": 2})) == "a"
    assert store.count() == 1
    assert store.read("a")["x"] == 2
    assert store.upsert("b", Record({"x": 3})) == "b"
    assert store.upsert_batch([rec("b", x=4), rec("c", x=5)]) == ["b", "c"]
    assert sorted((r.id, r["x"]) for r in store.all()) == [("a", 2), ("b", 4), ("c", 5)]


def test_upsert_replaces_vector(store: Any) -> None:
    store.upsert(rec("a", [1, 0, 0]))
    store.upsert(rec("a", [0, 1, 0]))
    hits = store.vector_search([0, 1, 0], k=5)
    assert ids(hits) == ["a"]
    assert hits[0].score == pytest.approx(1.0)


def test_delete_exists_count_clear(store: Any) -> None:
    store.create_batch([rec("a", [1, 0, 0]), rec("b", [0, 1, 0]), rec("c", x=1)])
    assert store.exists("a") and store.count() == 3
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert not store.exists("a")
    assert store.count() == 2
    assert ids(store.vector_search([1, 0, 0], k=5)) == ["b"]
    assert store.delete_batch(["b", "zz"]) == [True, False]
    assert store.clear() == 1
    assert store.count() == 0
    assert store.all() == []
    assert store.clear() == 0
    # the store is usable after clear, with the same dimension
    store.create(rec("d", [0, 0, 1]))
    assert ids(store.vector_search([0, 0, 1], k=5)) == ["d"]
    with pytest.raises(DimensionMismatchError):
        store.create(rec("e", [0, 1]))


def test_recreate_after_delete(store: Any) -> None:
    store.create(rec("a", x=1))
    store.delete("a")
    store.create(rec("a", x=2))
    assert store.read("a")["x"] == 2
    assert store.count() == 1


# --- search ----------------------------------------------------------------------------------


def test_search_query_filters(filled: Any) -> None:
    got = filled.search(Query().filter("cat", "=", "x"))
    assert sorted(r.id for r in got) == ["a", "b", "novec"]
    got = filled.search(Query(filters=[Filter("n", Operator.GTE, 3), Filter("cat", Operator.NEQ, "z")]))
    assert sorted(r.id for r in got) == ["c", "d", "novec"]
    assert filled.count(Query().filter("n", "between", [2, 4])) == 3


def test_search_sort_limit_offset(filled: Any) -> None:
    q = Query().sort_by("n", "desc").limit(3)
    assert [r.id for r in filled.search(q)] == ["novec", "f", "e"]
    q = Query().sort_by("n", "asc").offset(2).limit(2)
    assert [r.id for r in filled.search(q)] == ["c", "d"]
    q = Query().sort_by("cat", "desc").sort_by("n", "asc")
    assert [r.id for r in filled.search(q)] == ["e", "f", "c", "d", "a", "b", "novec"]
    assert filled.search(Query().sort_by("n").offset(100)) == []


def test_search_sort_puts_missing_last(store: Any) -> None:
    store.create_batch([rec("a", n=2), rec("b"), rec("c", n=1), rec("d", n=None)])
    assert [r.id for r in store.search(Query().sort_by("n"))][:2] == ["c", "a"]
    assert [r.id for r in store.search(Query().sort_by("n", "desc"))][:2] == ["a", "c"]
    assert {r.id for r in store.search(Query().sort_by("n", "desc"))[2:]} == {"b", "d"}


def test_search_select_projects_fields(filled: Any) -> None:
    got = filled.search(Query().filter("id", "=", "a").select("text", "n"))
    assert len(got) == 1
    assert got[0].id == "a"
    assert dict(got[0].data) == {"text": "alpha", "n": 1}


def test_search_with_dict_filters(filled: Any) -> None:
    assert sorted(r.id for r in filled.search({"cat": "y"})) == ["c", "d"]
    assert filled.count({"n": {"$gt": 2, "$lte": 5}}) == 3
    assert filled.count({"$or": [{"cat": "x"}, {"n": {"$gte": 6}}]}) == 4
    assert filled.count({"$not": {"cat": "x"}}) == 4
    assert filled.count({"text": {"$like": "%ta"}}) == 2  # beta, delta
    assert filled.count({"embedding": {"$exists": True}}) == 0  # vectors are not filterable data
    assert filled.count(Filter("cat", "in", ["x", "z"])) == 5
    assert filled.count([{"cat": "x"}, Filter("n", "<", 2)]) == 1


def test_search_or_and_not_builders(filled: Any) -> None:
    q = Query().filter("n", "<=", 5).or_({"cat": "x"}, Filter("cat", "=", "z"))
    assert sorted(r.id for r in filled.search(q)) == ["a", "b", "e"]
    q = Query().not_({"cat": "y"}).and_({"n": {"$lt": 6}})
    assert sorted(r.id for r in filled.search(q)) == ["a", "b", "e"]


def test_all_returns_every_record(filled: Any) -> None:
    assert sorted(r.id for r in filled.all()) == ["a", "b", "c", "d", "e", "f", "novec"]


# --- vector search ---------------------------------------------------------------------------


def _cos(a: Any, b: Any) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_vector_search_cosine(filled: Any) -> None:
    hits = filled.vector_search([1, 0.2, 0], k=3)
    assert all(isinstance(h, VectorSearchResult) for h in hits)
    assert ids(hits) == ["a", "d", "e"]
    for h in hits:
        assert h.score == pytest.approx(_cos([1, 0.2, 0], h.record["embedding"]), abs=1e-6)
        assert h.distance is None
        assert h.vector_field == "embedding"
        assert h.metadata["metric"] == "cosine"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_vector_search_euclidean_score_and_distance(filled: Any) -> None:
    q = np.array([0.9, 0.1, 0.0])
    hits = filled.vector_search(q, k=6, metric="euclidean")
    expected = sorted(
        ((float(np.linalg.norm(q - np.asarray(v))), rid) for rid, v in _VECS.items()),
    )
    assert ids(hits) == [rid for _, rid in expected]
    for h, (dist, _) in zip(hits, expected):
        assert h.distance == pytest.approx(dist, abs=1e-5)
        assert h.score == pytest.approx(1.0 / (1.0 + h.distance), rel=1e-12)
        assert h.metadata["distance"] == h.distance
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_vector_search_dot_product(filled: Any) -> None:
    q = [2.0, 1.0, 0.5]
    hits = filled.vector_search(q, k=6, metric="dot_product")
    expected = sorted(((-float(np.dot(q, v)), rid) for rid, v in _VECS.items()))
    assert ids(hits) == [rid for _, rid in expected]
    assert [h.score for h in hits] == pytest.approx([-s for s, _ in expected])
    assert all(h.distance is None for h in hits)


_VECS = {
    "a": [1, 0, 0],
    "b": [0, 1, 0],
    "c": [0, 0, 1],
    "d": [1, 1, 0],
    "e": [1, 1, 1],
    "f": [-1, 0, 0],
}


@pytest.mark.parametrize("metric", ["dot", "inner_product", "l2", "EUCLIDEAN", "cos"])
def test_vector_search_metric_aliases(filled: Any, metric: str) -> None:
    canonical = {"dot": "dot_product", "inner_product": "dot_product", "l2": "euclidean"}.get(
        metric.lower(), "euclidean" if metric == "EUCLIDEAN" else "cosine"
    )
    hits = filled.vector_search([1, 2, 3], k=6, metric=metric)
    ref = filled.vector_search([1, 2, 3], k=6, metric=canonical)
    assert ids(hits) == ids(ref)
    assert hits[0].metadata["metric"] == canonical


def test_store_default_metric_from_config(make_store_for: Any) -> None:
    db = make_store_for(vector_enabled=True, vector_metric="l2")
    assert db.config["vector_metric"] == "euclidean"
    db.create_batch([rec("near", [1, 1]), rec("far", [10, 10])])
    hits = db.vector_search([0.5, 0.5], k=2)
    assert ids(hits) == ["near", "far"]  # cosine would tie them
    assert hits[0].distance is not None


def test_vector_search_ties_broken_by_id(store: Any) -> None:
    names = ["m", "c", "x", "a", "q", "b"]
    store.create_batch([rec(n, [1, 2, 3]) for n in names] + [rec("z", [3, 2, 1])])
    for metric in ("cosine", "euclidean", "dot_product"):
        hits = store.vector_search([1, 2, 3], k=4, metric=metric)
        assert ids(hits) == ["a", "b", "c", "m"], metric
        assert len({h.score for h in hits}) == 1


def test_vector_search_k_larger_than_count(filled: Any) -> None:
    hits = filled.vector_search([1, 0, 0], k=1000)
    assert sorted(ids(hits)) == ["a", "b", "c", "d", "e", "f"]  # not the record without a vector


def test_vector_search_filter_returns_min_k_matches(filled: Any) -> None:
    for k in (1, 2, 3, 5):
        hits = filled.vector_search([1, 0, 0], k=k, filter={"cat": {"$in": ["x", "z"]}})
        # matches with a vector: a, b, e, f (novec matches but has no vector)
        assert len(hits) == min(k, 4)
        assert set(ids(hits)) <= {"a", "b", "e", "f"}
    hits = filled.vector_search([1, 0, 0], k=10, filter=Query().filter("cat", "=", "y"))
    assert ids(hits) == ["d", "c"]
    hits = filled.vector_search([1, 0, 0], k=2, filter=Filter("n", ">", 3))
    assert ids(hits) == ["d", "e"]
    assert filled.vector_search([1, 0, 0], k=3, filter={"cat": "nothing"}) == []


def test_records_without_vectors_are_ignored(store: Any) -> None:
    store.create_batch([rec("v", [1, 0]), rec("plain1", text="x"), rec("plain2", text="y")])
    assert ids(store.vector_search([1, 0], k=10)) == ["v"]
    assert ids(store.vector_search([1, 0], k=10, filter={"text": {"$exists": True}})) == []


def test_vector_search_empty_store(store: Any) -> None:
    assert store.vector_search([1, 2, 3], k=5) == []
    assert store.vector_search_batch([[1, 2, 3], [3, 2, 1]], k=5) == [[], []]
    store.create(rec("plain", x=1))
    assert store.vector_search([1, 2, 3], k=5) == []


def test_vector_search_after_all_deleted(store: Any) -> None:
    store.create_batch([rec("a", [1, 0]), rec("b", [0, 1])])
    store.delete_batch(["a", "b"])
    assert store.vector_search([1, 0], k=3) == []


def test_search_result_record_is_full_copy(filled: Any) -> None:
    hit = filled.vector_search([0, 0, 1], k=1)[0]
    assert hit.id == "c"
    assert hit.record["text"] == "gamma"
    assert hit.record["cat"] == "y"
    assert hit.record["embedding"].tolist() == [0.0, 0.0, 1.0]
    d = hit.to_dict()
    assert d["id"] == "c" and d["data"]["text"] == "gamma" and "embedding" not in d["data"]


def test_vector_search_accepts_vectorfield_and_arrays(filled: Any) -> None:
    ref = ids(filled.vector_search([1, 1, 0], k=3))
    assert ids(filled.vector_search(VectorField([1, 1, 0]), k=3)) == ref
    assert ids(filled.vector_search(np.array([1, 1, 0], dtype=np.int64), k=3)) == ref
    assert ids(filled.vector_search((1.0, 1.0, 0.0), k=np.int64(3))) == ref


def test_add_vectors_upserts_by_id_and_metadata_is_filterable(store: Any) -> None:
    out = store.add_vectors(
        np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32),
        ids=["a", "b", "c"],
        metadata=[{"tag": "red"}, {"tag": "blue"}, {"tag": "red"}],
    )
    assert out == ["a", "b", "c"]
    assert store.count({"tag": "red"}) == 2
    hits = store.vector_search([1, 0], k=5, filter={"tag": "red"})
    assert ids(hits) == ["a", "c"]
    # upsert by id: new vector, metadata merged, other fields kept
    store.update("a", Record({"tag": "red", "extra": 1, "embedding": VectorField([1, 0])}))
    store.add_vectors([[0, 1]], ids=["a"], metadata=[{"tag": "green"}])
    got = store.read("a")
    assert got["tag"] == "green" and got["extra"] == 1
    assert got["embedding"].tolist() == [0.0, 1.0]
    assert store.count() == 3
    # without ids: fresh ids
    new = store.add_vectors([[2, 2], [3, 3]])
    assert len(new) == 2 and len(set(new)) == 2
    assert store.count() == 5


def test_add_vectors_validation_changes_nothing(store: Any) -> None:
    store.add_vectors([[1, 0, 0]], ids=["a"])
    before = snapshot(store)
    with pytest.raises(InvalidRequestError):
        store.add_vectors([[1, 0, 0], [0, 1, 0]], ids=["x"])
    with pytest.raises(InvalidRequestError):
        store.add_vectors([[1, 0, 0]], ids=["x"], metadata=[{}, {}])
    with pytest.raises(DimensionMismatchError):
        store.add_vectors([[1, 0]], ids=["x"])
    with pytest.raises(InvalidVectorError):
        store.add_vectors([[1, 0, float("nan")]], ids=["x"])
    assert snapshot(store) == before


def test_vector_search_batch_equals_single_searches(store: Any) -> None:
    rng = np.random.default_rng(7)
    vecs = rng.integers(-5, 6, size=(40, 6)).astype(np.float32)
    vecs[~vecs.any(axis=1), 0] = 1  # no zero vectors (cosine)
    store.add_vectors(vecs, ids=[f"r{i:02d}" for i in range(40)], metadata=[{"g": i % 3} for i in range(40)])
    queries = rng.integers(-5, 6, size=(5, 6)).astype(np.float32)
    queries[:, 0] += 10
    for metric in ("cosine", "euclidean", "dot_product"):
        for flt in (None, {"g": 1}):
            single = [store.vector_search(q, k=7, metric=metric, filter=flt) for q in queries]
            batch = store.vector_search_batch(queries, k=7, metric=metric, filter=flt)
            two_d = store.vector_search(queries, k=7, metric=metric, filter=flt)
            assert isinstance(batch, list) and all(isinstance(x, list) for x in batch)
            for got in (batch, two_d):
                assert len(got) == len(single)
                for g, s in zip(got, single):
                    assert_same_ranking(g, s)
    # a list of lists given to vector_search_batch works too
    assert [ids(x) for x in store.vector_search_batch(queries.tolist(), k=3)] == [
        ids(store.vector_search(q, k=3)) for q in queries
    ]


def test_score_threshold(filled: Any) -> None:
    all_hits = filled.vector_search([1, 0, 0], k=10)
    thr = 0.5
    hits = filled.vector_search([1, 0, 0], k=10, score_threshold=thr)
    assert ids(hits) == [h.id for h in all_hits if h.score >= thr]
    assert ids(hits) == ["a", "d", "e"]
    assert filled.vector_search([1, 0, 0], k=10, score_threshold=1.5) == []
    eu = filled.vector_search([1, 0, 0], k=10, metric="euclidean", score_threshold=0.5)
    assert all(h.score >= 0.5 for h in eu) and ids(eu) == ["a", "d"]
    with pytest.raises(InvalidRequestError):
        filled.vector_search([1, 0, 0], k=10, score_threshold="high")
    with pytest.raises(InvalidRequestError):
        filled.vector_search([1, 0, 0], k=10, no_such_option=1)


def test_multiple_vector_fields(store: Any) -> None:
    store.create_batch(
        [
            Record({"title_vec": VectorField([1, 0]), "body_vec": VectorField([0, 0, 1])}, id="a"),
            Record({"title_vec": VectorField([0, 1]), "body_vec": VectorField([1, 0, 0])}, id="b"),
        ]
    )
    assert ids(store.vector_search([1, 0], vector_field="title_vec", k=1)) == ["a"]
    assert ids(store.vector_search([1, 0, 0], vector_field="body_vec", k=1)) == ["b"]
    with pytest.raises(DimensionMismatchError):
        store.vector_search([1, 0, 0], vector_field="title_vec", k=1)


# --- bulk embedding --------------------------------------------------------------------------

TEXTS = [
    "the cat sat on the mat",
    "a dog chased the ball",
    "stock markets fell sharply today",
    "the kitten sat on a mat",
    "interest rates and inflation",
]


def test_bulk_embed_and_store_with_hashing_embedder(store: Any) -> None:
    records = [Record({"text": t, "n": i}, id=f"doc{i}") for i, t in enumerate(TEXTS)]
    out = store.bulk_embed_and_store(records, text_field="text", batch_size=2, progress=False)
    assert out == [f"doc{i}" for i in range(len(TEXTS))]
    assert store.count() == len(TEXTS)
    got = store.read("doc0")
    assert got["n"] == 0
    vf = got.fields["embedding"]
    assert isinstance(vf, VectorField)
    assert vf.dimensions == 384
    assert vf.source_field == "text"
    assert vf.model_name == "dkv-hashing"
    # re-run: everything is skipped
    report = store.bulk_embed(records, "text", batch_size=2, progress=False)
    assert (report.embedded, report.skipped, report.batches) == (0, len(TEXTS), 0)
    assert report.ids == out
    # searching with the same embedder finds the similar text first, with its source text
    qv = HashingEmbedder(384).embed(["the cat sat on the mat"])[0]
    hits = store.vector_search(qv, k=2)
    assert ids(hits) == ["doc0", "doc3"]
    assert hits[0].source_text == "the cat sat on the mat"


def test_bulk_embed_embedding_fn_callable_and_name(store: Any) -> None:
    calls: list[list[str]] = []

    def fn(texts: list[str]) -> Any:
        calls.append(list(texts))
        return [[len(t), 1.0, 0.5] for t in texts]

    records = [{"id": f"r{i}", "body": t} for i, t in enumerate(TEXTS[:3])]
    out = store.bulk_embed_and_store(records, "body", vector_field="v3", embedding_fn=fn, progress=False)
    assert out == ["r0", "r1", "r2"]
    assert calls == [TEXTS[:3]]
    assert store.read("r1")["v3"].tolist() == [float(len(TEXTS[1])), 1.0, 0.5]
    assert store.read("r1").fields["v3"].model_name == "fn"
    out = store.bulk_embed_and_store(
        [Record({"body": "hello world"}, id="h")], "body", vector_field="hv", embedding_fn="hashing"
    )
    assert out == ["h"]
    assert store.read("h")["hv"].shape == (384,)


def test_bulk_embed_multiple_text_fields(store: Any) -> None:
    seen: list[str] = []

    def fn(texts: list[str]) -> Any:
        seen.extend(texts)
        return np.ones((len(texts), 2), dtype=np.float32)

    store.bulk_embed_and_store(
        [Record({"title": "T", "body": "B"}, id="a"), Record({"title": "only"}, id="b")],
        ["title", "body"],
        embedding_fn=fn,
        field_separator=" | ",
    )
    assert seen == ["T | B", "only"]
    assert store.read("a").fields["embedding"].source_field is None


def test_bulk_embed_bad_input_changes_nothing(store: Any) -> None:
    store.create(Record({"text": "keep"}, id="keep"))
    before = snapshot(store)
    with pytest.raises(InvalidRequestError):  # a record without text
        store.bulk_embed_and_store([Record({"text": "ok"}, id="x"), Record({"other": 1}, id="y")], "text")
    with pytest.raises(InvalidRequestError):  # non-text value
        store.bulk_embed_and_store([Record({"text": 5}, id="x")], "text")
    with pytest.raises(InvalidRequestError):
        store.bulk_embed_and_store([Record({"text": "ok"}, id="x")], "text", batch_size=0)
    with pytest.raises(InvalidRequestError):
        store.bulk_embed_and_store([Record({"text": "ok"}, id="x")], "text", embedding_fn=42)
    with pytest.raises(ConfigError):
        store.bulk_embed_and_store([Record({"text": "ok"}, id="x")], "text", embedding_fn="no-such")
    with pytest.raises(InvalidVectorError):  # the embedder returns NaN
        store.bulk_embed_and_store(
            [Record({"text": "ok"}, id="x")], "text", embedding_fn=lambda t: [[float("nan"), 1.0]]
        )
    with pytest.raises(InvalidVectorError):  # the embedder returns too few rows
        store.bulk_embed_and_store(
            [Record({"text": "ok"}, id="x"), Record({"text": "ok2"}, id="y")],
            "text",
            embedding_fn=lambda t: [[1.0, 1.0]],
        )
    assert snapshot(store) == before


# --- bad input: the specific error, nothing changed ------------------------------------------


BAD_SEARCHES: list[tuple[str, dict[str, Any], type[DkvError]]] = [
    ("wrong-dim", {"query_vector": [1, 0]}, DimensionMismatchError),
    ("nan", {"query_vector": [1, float("nan"), 0]}, InvalidVectorError),
    ("inf", {"query_vector": [1, float("-inf"), 0]}, InvalidVectorError),
    ("empty", {"query_vector": []}, InvalidVectorError),
    ("nested-list", {"query_vector": [[1, 0, 0]]}, InvalidVectorError),
    ("non-numeric", {"query_vector": ["a", "b", "c"]}, InvalidVectorError),
    ("string", {"query_vector": "abc"}, InvalidVectorError),
    ("object", {"query_vector": [1, None, 0]}, InvalidVectorError),
    ("zero-cosine", {"query_vector": [0, 0, 0]}, InvalidVectorError),
    ("k-zero", {"k": 0}, InvalidRequestError),
    ("k-negative", {"k": -3}, InvalidRequestError),
    ("k-float", {"k": 2.0}, InvalidRequestError),
    ("k-str", {"k": "3"}, InvalidRequestError),
    ("k-bool", {"k": True}, InvalidRequestError),
    ("unknown-metric", {"metric": "manhattan"}, ConfigError),
    ("unknown-field", {"vector_field": "nope"}, InvalidRequestError),
    ("empty-field", {"vector_field": ""}, InvalidRequestError),
    ("bad-filter-op", {"filter": {"cat": {"$bogus": 1}}}, FilterError),
    ("bad-filter-key", {"filter": {"$xor": []}}, FilterError),
    ("bad-filter-type", {"filter": 42}, FilterError),
    ("bad-between", {"filter": {"n": {"$between": [1]}}}, FilterError),
]


@pytest.mark.parametrize("args, error", [b[1:] for b in BAD_SEARCHES], ids=[b[0] for b in BAD_SEARCHES])
def test_bad_vector_search_raises_specific_error(filled: Any, args: dict[str, Any], error: type) -> None:
    before = snapshot(filled)
    call = {"query_vector": [1, 0, 0], "k": 3, **args}
    with pytest.raises(error):
        filled.vector_search(**call)
    assert snapshot(filled) == before
    # the store still answers a good search
    assert ids(filled.vector_search([1, 0, 0], k=1)) == ["a"]


def test_bad_batch_query_raises(filled: Any) -> None:
    with pytest.raises(DimensionMismatchError):
        filled.vector_search_batch([[1, 0, 0], [1, 0]], k=2)
    with pytest.raises(InvalidVectorError):
        filled.vector_search_batch(np.zeros((0, 3)), k=2)
    with pytest.raises(InvalidVectorError):
        filled.vector_search_batch(np.array([[1, 0, 0], [0, np.nan, 1]]), k=2)
    with pytest.raises(InvalidVectorError):
        filled.vector_search_batch(np.ones((2, 3, 1)), k=2)


BAD_WRITES: list[tuple[str, Any, type[DkvError]]] = [
    ("wrong-dim", lambda: rec("new", [1, 0]), DimensionMismatchError),
    ("nan", lambda: Record({"embedding": np.array([1.0, np.nan, 0.0])}, id="new"), InvalidVectorError),
    ("inf", lambda: Record({"embedding": np.array([1.0, np.inf, 0.0])}, id="new"), InvalidVectorError),
    ("empty", lambda: Record({"embedding": np.array([], dtype=np.float32)}, id="new"), InvalidVectorError),
]


@pytest.mark.parametrize("make, error", [b[1:] for b in BAD_WRITES], ids=[b[0] for b in BAD_WRITES])
@pytest.mark.parametrize("op", ["create", "upsert", "update", "create_batch", "upsert_batch"])
def test_bad_vector_write_raises_and_changes_nothing(filled: Any, make: Any, error: type, op: str) -> None:
    before = snapshot(filled)
    record = make()
    with pytest.raises(error):
        if op == "create":
            filled.create(record)
        elif op == "upsert":
            filled.upsert(record)
        elif op == "update":
            filled.update("a", record)
        elif op == "create_batch":
            filled.create_batch([rec("ok", [1, 1, 1]), record])
        else:
            filled.upsert_batch([rec("a", [5, 5, 5]), record])
    assert snapshot(filled) == before


@pytest.mark.parametrize(
    "value",
    [np.ones((2, 3)), [[1, 0, 0]], ["a", "b", "c"], "abc", [], [1, float("nan"), 0], [1 + 2j, 0, 0]],
    ids=["2d-array", "nested-list", "strings", "str", "empty", "nan", "complex"],
)
def test_bad_vector_field_values_raise_invalid_vector(value: Any) -> None:
    with pytest.raises(InvalidVectorError):
        VectorField(value)


def test_write_non_record_raises(store: Any) -> None:
    with pytest.raises(InvalidRequestError):
        store.create({"text": "a dict, not a Record"})
    with pytest.raises(InvalidRequestError):
        store.create_batch([Record({"x": 1}, id="ok"), "nope"])
    assert store.count() == 0


def test_vector_search_works_without_vector_enabled(make_store_for: Any) -> None:
    # as in dataknobs-data: vector_enabled=False (the default) does not stop a search of the
    # vectors a store holds (a reopened store must not need the flag to search its own vectors)
    db = make_store_for()
    db.create(rec("a", [1, 0, 0]))
    db.create(rec("b", [0, 1, 0]))
    assert ids(db.vector_search([1, 0, 0], k=1)) == ["a"]
    assert [ids(r) for r in db.vector_search_batch([[0, 1, 0]], k=1)] == [["b"]]


def test_configured_dimension_is_enforced(make_store_for: Any) -> None:
    db = make_store_for(vector_enabled=True, vector_dimensions=4)
    with pytest.raises(DimensionMismatchError):
        db.create(rec("a", [1, 0, 0]))
    assert db.count() == 0
    with pytest.raises(DimensionMismatchError):
        db.vector_search([1, 0, 0], k=1)
    db.create(rec("a", [1, 0, 0, 0]))
    assert ids(db.vector_search([1, 0, 0, 0], k=1)) == ["a"]
    assert db.vector_dimension() == 4


def test_first_vector_fixes_dimension(store: Any) -> None:
    assert store.vector_dimension() is None
    store.create(rec("a", [1, 2, 3, 4, 5]))
    assert store.vector_dimension() == 5
    with pytest.raises(DimensionMismatchError):
        store.upsert(rec("b", [1, 2, 3]))
    assert store.count() == 1


# --- concurrency -----------------------------------------------------------------------------


def test_concurrent_creates_sync_memory() -> None:
    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    n_threads, per_thread = 8, 150
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                db.create(rec(f"t{t}-{i}", [t + 1, i, 1], t=t))
                if i % 50 == 0:
                    db.vector_search([1, 1, 1], k=3)
                    db.count({"t": t})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert db.count() == n_threads * per_thread
    assert all(db.count({"t": t}) == per_thread for t in range(n_threads))
    assert len(db.vector_search([1, 1, 1], k=10_000)) == n_threads * per_thread
    db.close()


def test_score_values_are_finite_floats(filled: Any) -> None:
    for metric in ("cosine", "euclidean", "dot_product"):
        for h in filled.vector_search([1, 2, 3], k=10, metric=metric):
            assert isinstance(h.score, float) and math.isfinite(h.score)


async def test_concurrent_tasks_async_memory() -> None:
    import asyncio

    from dk_vector_plugins import AsyncDatabaseFactory

    db = AsyncDatabaseFactory().create(backend="memory", vector_enabled=True)

    async def writer(t: int) -> None:
        for i in range(40):
            await db.create(rec(f"t{t}-{i}", [t + 1, i, 1], t=t))
            if i % 10 == 0:
                await db.vector_search([1, 1, 1], k=3)

    await asyncio.gather(
        *(writer(t) for t in range(6)), db.create_batch([rec(f"b{i}", [1, 1, i]) for i in range(50)])
    )
    assert await db.count() == 6 * 40 + 50
    assert len(await db.vector_search([1, 1, 1], k=1000)) == 6 * 40 + 50
    await db.close()


def test_close_runs_on_close_callbacks_once(store: Any) -> None:
    calls: list[str] = []
    store.on_close(lambda: calls.append("first"))

    def failing() -> None:
        calls.append("second")
        raise RuntimeError("plugin cleanup failed")

    store.on_close(failing)
    with pytest.raises(RuntimeError, match="plugin cleanup failed"):
        store.close()
    assert calls == ["second", "first"]  # every callback ran, the last registered first
    store.close()  # closing again does nothing
    assert calls == ["second", "first"]


def test_all_after_compaction_with_the_last_rows_without_a_vector(store: Any) -> None:
    # the vector index spans the rows up to the last one holding a vector; reading every record
    # (more than a few rows) after a compaction indexed past its presence mask (IndexError)
    store.create_batch(
        [Record({"n": i, "embedding": VectorField(np.ones(4, dtype=np.float32))}, id=f"v{i}") for i in range(60)]
    )
    store.create_batch([Record({"n": i}, id=f"p{i}") for i in range(10)])  # rows without a vector, last
    store.delete("v0")
    store.compact()
    records = {r.id: r for r in store.all()}
    assert len(records) == 69 and "embedding" not in records["p3"].data
    assert np.array_equal(np.asarray(records["v5"]["embedding"]), np.ones(4, dtype=np.float32))
