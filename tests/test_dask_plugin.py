"""The ``dask`` plugin: search and bulk embedding of file and S3 stores on a Dask cluster.

One ``distributed.LocalCluster`` of 2 worker processes (1 thread each) serves the module. Each test
builds a reference store (``executor="local"``, the single-process search) and a Dask store
(``executor="dask"``) over the same table, and checks that they answer alike.

About "alike": equal bit for bit: ids, order, scores, distances and records. The kernel ranks a
shortlist by scores computed in float64 in a fixed summation order, so a score does not depend
on where a row sits in a matrix (OpenBLAS rounds the last ``n % 4`` rows and the rows at a thread
boundary differently), nor on which process computed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dask
import numpy as np
import pytest
from distributed import KilledWorker, LocalCluster

import dk_vector_plugins.plugins.dask as de
from dk_vector_plugins import (
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    InvalidRequestError,
    Record,
    StorageError,
    quant,
)
from dk_vector_plugins import kernel as kernel_module
from dk_vector_plugins.kernel import TopK
from dk_vector_plugins.plugins.dask import dispatch as dask_dispatch
from dk_vector_plugins.plugins.dask import plan as dask_plan
from dk_vector_plugins.plugins.dask import worker as dask_worker
from dk_vector_plugins.storage.segments import SegmentInfo, open_reader, snapshot

DIM = 24
COMMITS = (701, 523, 389, 1, 250)  # rows per commit: segments of odd sizes, parts of odd sizes
SHARD_ROWS = 300
METRICS = ("cosine", "euclidean", "dot_product")
FILTERS: tuple[Any, ...] = (
    None,
    {"g": 3},  # ~1/7 of the rows: the kernel gathers them first
    {"$or": [{"lang": "en"}, {"g": {"$gte": 5}}]},  # most rows: the kernel masks
    {"name": {"$like": "doc1%"}, "lang": {"$in": ["de", "fr"]}},
    {"g": 99},  # nothing matches
)


# --- fixtures ------------------------------------------------------------------------------------


class Blocking:
    """An async store driven synchronously: each awaitable it returns runs on the adapter's loop."""

    def __init__(self, db: Any) -> None:
        self.wrapped = db
        self.loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.wrapped, name)
        if not callable(attr) or inspect.isclass(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            out = attr(*args, **kwargs)
            return self.loop.run_until_complete(out) if inspect.isawaitable(out) else out

        return call

    def close(self) -> None:
        if self.loop.is_closed():  # closed already (a test closed it before the fixture did)
            return
        try:
            self.loop.run_until_complete(self.wrapped.close())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """2 worker processes; work stealing off so that a task runs where the plugin puts it."""
    with dask.config.set({"distributed.scheduler.work-stealing": False}):
        cl = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    cl.wait_for_workers(2, timeout=60)
    yield cl
    cl.close()


@pytest.fixture
def stores(
    cluster: LocalCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """``make(backend, is_async, **config) -> (reference store, dask store)`` over one table."""
    made: list[Any] = []

    def make(backend: str, is_async: bool = False, **config: Any) -> tuple[Any, Any]:
        where: dict[str, Any]
        if backend == "file":
            where = {"path": str(tmp_path / f"table-{len(made)}")}
        else:  # a fresh prefix in the test bucket of the local S3 server
            where = request.getfixturevalue("s3_server").config()
        config = {"backend": backend, "vector_enabled": True, **where, **config}
        ref = DatabaseFactory().create(config)
        dask_config = {
            "executor": "dask",
            "scheduler_address": cluster.scheduler_address,
            "shard_rows": SHARD_ROWS,
        }
        if is_async:
            dk: Any = Blocking(AsyncDatabaseFactory().create(config, **dask_config))
        else:
            dk = DatabaseFactory().create(config, **dask_config)
        made.extend([ref, dk])
        return ref, dk

    yield make
    for db in reversed(made):
        de.close_client(db.wrapped if isinstance(db, Blocking) else db)
        db.close()


def fill(db: Any, seed: int = 7) -> np.ndarray:
    """Several commits of vectors with metadata, then tombstones: deletes, updates, a vectorless record."""
    rng = np.random.default_rng(seed)
    n = sum(COMMITS)
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors[17] = vectors[16]  # a tie, broken by id
    start = 0
    for size in COMMITS:
        rows = range(start, start + size)
        db.add_vectors(
            vectors[start : start + size],
            ids=[f"r{i:05d}" for i in rows],
            metadata=[{"g": i % 7, "lang": ("en", "de", "fr")[i % 3], "name": f"doc{i}"} for i in rows],
        )
        start += size
    db.delete_batch([f"r{i:05d}" for i in (3, 4, 400, 1000, 1500, 1863)])
    moved = rng.standard_normal((5, DIM)).astype(np.float32)
    db.add_vectors(moved, ids=[f"r{i:05d}" for i in (10, 11, 702, 703, 1700)])  # updates: old rows die
    db.create(Record({"g": 3, "lang": "en", "name": "doc-novec"}, id="novec"))
    return vectors


def queries(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def ids_of(results: list[list[Any]]) -> list[list[str]]:
    return [[h.record.id for h in hits] for hits in results]


def assert_alike(expected: list[list[Any]], got: list[list[Any]]) -> None:
    """Same ids in the same order, same records, the same scores and distances bit for bit."""
    assert ids_of(got) == ids_of(expected)
    for exp_hits, got_hits in zip(expected, got):
        for e, g in zip(exp_hits, got_hits):
            assert g.record == e.record and g.vector_field == e.vector_field
            assert g.score == e.score
            assert g.distance == e.distance


def compare_all(ref: Any, dk: Any) -> None:
    batch = queries(64)
    for metric in METRICS:
        for flt in FILTERS:
            expected = ref.vector_search_batch(batch, k=10, metric=metric, filter=flt)
            got = dk.vector_search_batch(batch, k=10, metric=metric, filter=flt)
            assert_alike(expected, got)
            if flt is None:
                assert all(len(h) == 10 for h in got)
            single = ref.vector_search(batch[0], k=7, metric=metric, filter=flt)
            assert_alike([single], [dk.vector_search(batch[0], k=7, metric=metric, filter=flt)])
            few_ref = ref.vector_search_batch(batch[:3], k=5, metric=metric, filter=flt)
            assert_alike(few_ref, dk.vector_search_batch(batch[:3], k=5, metric=metric, filter=flt))


# --- identical results ---------------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("backend", ["file", "s3"])
def test_identical_results(stores: Callable[..., tuple[Any, Any]], backend: str, is_async: bool) -> None:
    ref, dk = stores(backend, is_async)
    fill(ref)
    compare_all(ref, dk)
    # the tie at rows 16/17 (same vector) is broken by id, as in the single-process search
    hits = dk.vector_search(ref.read("r00016")["embedding"], k=2, metric="euclidean")
    assert [h.record.id for h in hits] == ["r00016", "r00017"]
    # options the core applies after top-k
    thr = ref.vector_search(queries(1)[0], k=20, score_threshold=0.2)
    assert ids_of([dk.vector_search(queries(1)[0], k=20, score_threshold=0.2)]) == ids_of([thr])
    assert (
        dk.vector_search(queries(1)[0], k=5000)[-1].record.id
        == ref.vector_search(queries(1)[0], k=5000)[-1].record.id
    )


def test_async_store_through_asyncio(stores: Callable[..., tuple[Any, Any]], cluster: LocalCluster) -> None:
    """The async hook returns an awaitable that the async store awaits (without an adapter)."""
    ref, _ = stores("file")
    fill(ref)
    q = queries(64)
    expected = ref.vector_search_batch(q, k=5, filter={"g": 2})

    async def main() -> list[list[Any]]:
        db = AsyncDatabaseFactory().create(
            backend="file",
            path=ref.config["path"],
            vector_enabled=True,
            executor="dask",
            scheduler_address=cluster.scheduler_address,
        )
        try:
            got, single = await asyncio.gather(
                db.vector_search_batch(q, k=5, filter={"g": 2}), db.vector_search(q[0], k=5, filter={"g": 2})
            )
            assert ids_of([single]) == ids_of(expected[:1])
            return got  # type: ignore[no-any-return]
        finally:
            de.close_client(db)
            await db.close()

    assert_alike(expected, asyncio.run(main()))


# --- new commits, stable assignment, tombstones --------------------------------------------------


@pytest.mark.parametrize(
    "backend, is_async", [("file", False), ("file", True), ("s3", False)], ids=["file-sync", "file-async", "s3-sync"]
)
def test_text_and_hybrid_search_on_the_workers(
    stores: Callable[..., tuple[Any, Any]], backend: str, is_async: bool
) -> None:
    """BM25 on the workers: each part's corpus statistics merged exactly, then each part's top
    ``k``: the same records, order and scores (bit for bit) as a single process over the whole
    live table, with tombstones, filters, several fields (``name``'s postings stored with the
    segments, ``lang``'s built on the workers from the rows) and repeated query terms."""
    ref, dk = stores(backend, is_async, text_search_fields=["name"])
    fill(ref)
    searches_before = sum(r["stats"]["searches"] for r in de.client_for(dk).run(de.cached_parts).values())
    for q in ("doc12 en", "doc-novec", "fr", "doc1 doc2 de de en", "nothing-matches"):
        for flt in (None, {"g": {"$lt": 5}}, {"g": 99}):
            for fields in (["name", "lang"], "name", "lang"):
                want = ref.text_search(q, k=7, text_fields=fields, filter=flt)
                got = dk.text_search(q, k=7, text_fields=fields, filter=flt)
                assert [(h.record.id, h.score) for h in got] == [(h.record.id, h.score) for h in want]
                assert [h.record for h in got] == [h.record for h in want]
    batch = ["doc12 en", "fr de", "doc-novec"]
    want_b = ref.text_search_batch(batch, k=4, text_fields=["name", "lang"])
    got_b = dk.text_search_batch(batch, k=4, text_fields=["name", "lang"])
    assert [[(h.record.id, h.score) for h in hits] for hits in got_b] == [
        [(h.record.id, h.score) for h in hits] for hits in want_b
    ]
    searches_after = sum(r["stats"]["searches"] for r in de.client_for(dk).run(de.cached_parts).values())
    assert searches_after > searches_before  # the workers ranked the rows
    with pytest.raises(InvalidRequestError, match="no record holds text in field 'nope'"):
        dk.text_search("doc12", text_fields="nope")
    q = queries(1)[0]
    want_h = [(h.record.id, h.combined_score) for h in ref.hybrid_search("doc12 de", q, text_fields="name", k=6)]
    assert [(h.record.id, h.combined_score) for h in dk.hybrid_search("doc12 de", q, text_fields="name", k=6)] == want_h


def test_workers_resolve_text_field_paths_as_one_process(stores: Callable[..., tuple[Any, Any]]) -> None:
    """Postings a worker builds from the rows resolve a field as a filter path, as the single
    process does: ``metadata.title`` of a record without data fields, ``id`` as the record's id."""
    ref, dk = stores("file")
    ref.create_batch(
        [
            Record({}, metadata={"title": "alpha beta"}, id="only-metadata"),
            Record({"body": "gamma"}, metadata={"title": "alpha"}, id="with-data"),
            Record({"body": "delta", "id": "data-id"}, id="record-id"),
        ]
    )
    for q, field in (("alpha", "metadata.title"), ("record", "id"), ("data", "id"), ("metadata", "id")):
        want = [(h.record.id, h.score) for h in ref.text_search(q, text_fields=field)]
        assert want, (q, field)
        assert [(h.record.id, h.score) for h in dk.text_search(q, text_fields=field)] == want, (q, field)


def _parts_on_workers(dk: Any, store_key: tuple[str, ...]) -> dict[str, set[tuple[Any, ...]]]:
    report = de.client_for(dk).run(de.cached_parts)
    return {w: {p[1:] for p in r["parts"] if p[0] == store_key} for w, r in report.items()}


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_new_commit_seen_and_only_new_segments_move(
    stores: Callable[..., tuple[Any, Any]], backend: str
) -> None:
    ref, dk = stores(backend)
    fill(ref)
    q = queries(64)
    assert_alike(ref.vector_search_batch(q, k=10), dk.vector_search_batch(q, k=10))
    key = de.StoreSpec.from_config(backend, dk.config).key
    before = _parts_on_workers(dk, key)
    assert all(before.values()), "both workers hold parts"

    # another writer (the reference store) commits: a new record, a delete, an update
    extra = np.random.default_rng(5).standard_normal((2, DIM)).astype(np.float32)
    ref.add_vectors(extra, ids=["new-a", "new-b"], metadata=[{"g": 3}, {"g": 4}])
    v20 = ref.read("r00020")["embedding"]
    ref.delete("r00020")
    assert dk.vector_search(extra[0], k=1)[0].record.id == "new-a"  # seen on the next search
    assert all(h.record.id != "r00020" for h in dk.vector_search(v20, k=5))
    assert_alike(
        ref.vector_search_batch(q, k=10, filter={"g": 3}), dk.vector_search_batch(q, k=10, filter={"g": 3})
    )

    after = _parts_on_workers(dk, key)
    for worker, parts in before.items():
        assert parts <= after[worker], "a part moved to another worker"
    new = set().union(*after.values()) - set().union(*before.values())
    new_segments = {p[0] for p in new}
    assert len(new_segments) == 1  # the one segment with rows committed since
    assert new_segments == {ref.storage.state.segments[-2]["name"]}  # (the last one only deletes)

    # compaction rewrites the table: workers drop the old segments' parts
    ref.compact()
    assert_alike(ref.vector_search_batch(q, k=10), dk.vector_search_batch(q, k=10))
    live = {s["name"] for s in ref.storage.state.segments}
    assert all(p[0] in live for parts in _parts_on_workers(dk, key).values() for p in parts)


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_worker_task_in_process(stores: Callable[..., tuple[Any, Any]], backend: str) -> None:
    """The worker side (parts, ranged reads, filters, tombstones) run in this process: the tasks
    of a plan over 3 pretend workers, merged, give the single-process results."""
    from dk_vector_plugins.search import build_search_request

    ref, dk = stores(backend)
    fill(ref)
    dk.refresh()
    spec = de.StoreSpec.from_config(backend, dk.config)
    stub = SimpleNamespace(owners=de.assign)
    for metric in METRICS:
        for flt in FILTERS[:4]:
            request = build_search_request(
                queries(70),
                vector_field="embedding",
                k=6,
                filter=flt,
                metric=metric,
                default_metric="cosine",
                dimension=DIM,
                batch=True,
                options={},
            )
            plan = dask_plan.plan_search(dk, request, stub, ["tcp://a:1", "tcp://b:1", "tcp://c:1"])  # type: ignore[arg-type]
            assert plan is not None and len(plan.groups) == 3
            groups = [
                dask_worker.search_shards(
                    spec, plan.names, shards, request.queries, 6, metric, "embedding", request.filter
                ).hits
                for shards in plan.groups.values()
            ]
            merged = [de.merge_hits([g[i] for g in groups], 6, metric) for i in range(70)]
            got = dk.core.table.vector_results([TopK(r, s, d) for r, s, d, _ in merged], "embedding", metric)
            assert_alike(ref.vector_search_batch(request.queries, k=6, metric=metric, filter=flt), got)
    stats = de.cached_parts()["stats"]
    assert stats["parts_loaded"] >= 8 and stats["searches"] >= 36


def test_local_cluster_started_by_the_plugin(tmp_path: Path) -> None:
    """Without scheduler_address the store starts (and closes) its own LocalCluster."""
    ref = DatabaseFactory().create(backend="file", path=str(tmp_path), vector_enabled=True)
    fill(ref)
    db = DatabaseFactory().create(
        backend="file",
        path=str(tmp_path),
        vector_enabled=True,
        executor="dask",
        n_workers=1,
        threads_per_worker=1,
    )
    q = queries(5)
    assert_alike(
        ref.vector_search_batch(q, k=4, filter={"g": 1}), db.vector_search_batch(q, k=4, filter={"g": 1})
    )
    client = de.client_for(db)
    cluster = db.__dict__["_dkv_dask"].cluster
    assert cluster is not None and len(client.nthreads()) == 1
    de.close_client(db)
    assert client.status == "closed" and cluster.status.name == "closed"


def test_assignment_is_stable_and_balanced() -> None:
    workers = ["tcp://a:1", "tcp://b:1", "tcp://c:1"]
    parts = [(f"seg{i}:0", 100 + 37 * (i % 5)) for i in range(30)]
    owners = de.assign(parts, workers)
    assert owners == de.assign(parts, list(workers))  # deterministic
    loads = {w: sum(r for (_, r), o in zip(parts, owners) if o == w) for w in workers}
    assert max(loads.values()) - min(loads.values()) <= max(r for _, r in parts)
    more = [*parts, ("seg30:0", 90), ("seg31:0", 5000)]
    assert de.assign(more, workers)[: len(parts)] == owners  # a commit moves only its own parts


def test_big_segment_is_split_into_parts() -> None:
    segments = [SegmentInfo("a", 1000), SegmentInfo("b", 0), SegmentInfo("c", 7)]
    parts = dask_plan.split_parts(segments, 300)
    assert [(s.name, a, b, base) for s, a, b, base in parts] == [
        ("a", 0, 250, 0),
        ("a", 250, 500, 0),
        ("a", 500, 750, 0),
        ("a", 750, 1000, 0),
        ("c", 0, 7, 1000),
    ]


def test_merge_hits_orders_like_the_kernel() -> None:
    def hits(rows: list[int], scores: list[float], ids: list[str], d: list[float] | None = None) -> de.Hits:
        return (
            np.array(rows, np.int64),
            np.array(scores, np.float64),
            None if d is None else np.array(d, np.float64),
            ids,
        )

    a = hits([0, 1], [0.9, 0.5], ["b", "x"])
    b = hits([7, 8], [0.9, 0.7], ["a", "c"])
    rows, _scores, _, ids = de.merge_hits([a, b], 3, "cosine")
    assert ids == ["a", "b", "c"] and rows.tolist() == [7, 0, 8]
    # euclidean: by distance, which stays exact where 1 / (1 + d) rounds equal
    e1 = hits([0], [1.0], ["z"], [1e-20])
    e2 = hits([5], [1.0], ["y"], [2e-20])
    assert de.merge_hits([e2, e1], 2, "euclidean")[3] == ["z", "y"]
    assert de.merge_hits([], 3, "cosine")[3] == []


# --- bulk embedding ------------------------------------------------------------------------------


def _docs(n: int) -> list[Record]:
    words = ["alpha", "beta", "gamma", "delta", "sigma", "omega", "kappa"]
    docs = [
        Record(
            {"text": " ".join(words[(i * j) % 7] for j in range(1, 6)) + f" item{i}", "n": i}, id=f"d{i:03d}"
        )
        for i in range(n)
    ]
    docs.append(Record({"text": "a repeated id, embedded again with this text", "n": -1}, id="d005"))
    return docs


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("backend", ["file", "s3"])
def test_bulk_embed_matches_single_process(
    stores: Callable[..., tuple[Any, Any]], backend: str, is_async: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    ref, _ = stores(backend, vector_dimensions=32)
    _, dk = stores(backend, is_async, vector_dimensions=32)
    docs = _docs(70)
    expected = ref.bulk_embed(docs, "text", batch_size=16)
    report = dk.bulk_embed(docs, "text", batch_size=16, progress=True)
    assert report == expected  # ids in input order, embedded / skipped / batches
    assert report.batches == 5 and report.embedded == 71
    assert "embedding" in capsys.readouterr().err  # the progress bar
    for rid in {d.id for d in docs}:
        assert dk.read(rid) == ref.read(rid)  # the same vectors (and metadata) stored
    assert len(dk.storage.state.segments) >= 5  # a segment per batch
    again = dk.bulk_embed(docs, "text", batch_size=16)  # resumable: only d005 (two texts) again
    assert again == ref.bulk_embed(docs, "text", batch_size=16) and again.skipped == 69
    q = ref.read("d010")["embedding"]
    assert ids_of([dk.vector_search(q, k=3)]) == ids_of([ref.vector_search(q, k=3)])


def test_bulk_embed_with_a_function(stores: Callable[..., tuple[Any, Any]]) -> None:
    """A user's function (a closure: cloudpickle sends it by value) runs on the workers."""
    offset = 1.0

    def lengths(texts: list[str]) -> np.ndarray:
        return np.array([[len(t), t.count("a") + offset, 1.0] for t in texts], dtype=np.float32)

    ref, _ = stores("file")
    _, dk = stores("file")
    docs = _docs(20)
    expected = ref.bulk_embed(docs, "text", vector_field="lv", embedding_fn=lengths, batch_size=6)
    assert dk.bulk_embed(docs, "text", vector_field="lv", embedding_fn=lengths, batch_size=6) == expected
    for d in docs:
        assert dk.read(d.id) == ref.read(d.id)

    async def async_fn(texts: list[str]) -> np.ndarray:  # pragma: no cover - never called
        return lengths(texts)

    with pytest.raises(InvalidRequestError, match="async embedding function"):
        dk.bulk_embed_and_store(docs, "text", vector_field="lv2", embedding_fn=async_fn)


def test_unpicklable_embedder_is_rebuilt_or_refused() -> None:
    from dk_vector_plugins import HashingEmbedder

    shipped = de.portable(HashingEmbedder(16, seed=3))
    rebuilt = de.embed_texts(shipped, ["hello world"])
    assert np.array_equal(rebuilt, HashingEmbedder(16, seed=3).embed(["hello world"]))

    class Locked:
        def __init__(self) -> None:
            self.lock = threading.Lock()

        def embed(self, texts: list[str]) -> np.ndarray:  # pragma: no cover
            return np.zeros((len(texts), 2), np.float32)

    with pytest.raises(Exception, match="cannot be sent to Dask workers"):
        de.portable(Locked())


# --- worker loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("allowed_failures", [3, 0])
def test_worker_killed_during_a_batch(
    stores: Callable[..., tuple[Any, Any]], cluster: LocalCluster, allowed_failures: int
) -> None:
    """A worker dies while the batch's task is on it: the scheduler runs the task again on the
    other worker (correct results); when it may not retry, the search raises ClusterError."""
    ref, dk = stores("file")
    fill(ref)
    q = queries(200)
    expected = ref.vector_search_batch(q, k=10, filter={"lang": "de"})
    assert_alike(expected, dk.vector_search_batch(q, k=10, filter={"lang": "de"}))  # warm
    client = de.client_for(dk)
    victim = sorted(client.nthreads())[0]
    pids = client.run(os.getpid)
    blocker = client.submit(time.sleep, 1.5, workers=[victim], pure=False)  # the victim is busy ...
    deadline = time.monotonic() + 30
    while not client.processing().get(victim) and time.monotonic() < deadline:
        time.sleep(0.01)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["results"] = dk.vector_search_batch(q, k=10, filter={"lang": "de"})
        except Exception as e:
            outcome["error"] = e

    scheduler = cluster.scheduler
    saved = scheduler.allowed_failures
    scheduler.allowed_failures = allowed_failures
    try:
        searcher = threading.Thread(target=run)
        searcher.start()
        deadline = time.monotonic() + 30
        while not any(str(k).startswith("dkv-search") for k in client.processing()[victim]):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert searcher.is_alive()  # ... so the search's task waits on it
        os.kill(pids[victim], signal.SIGKILL)
        searcher.join(60)
        assert not searcher.is_alive()
    finally:
        scheduler.allowed_failures = saved
        blocker.release()
    if allowed_failures:
        assert "error" not in outcome, outcome.get("error")
        assert_alike(expected, outcome["results"])
    else:
        error = outcome.get("error")
        assert isinstance(error, de.ClusterError), outcome
        assert "KilledWorker" in str(error) and "nothing partial" in str(error)
    cluster.wait_for_workers(2, timeout=60)  # the nanny restarts the victim
    assert_alike(ref.vector_search_batch(q, k=10), dk.vector_search_batch(q, k=10))


def test_lost_cluster_is_a_clear_error() -> None:
    class Futures:
        def __init__(self, error: BaseException) -> None:
            self.error = error
            self.cancelled = False

        def submit(self, *args: Any, **kwargs: Any) -> object:
            return object()

        def gather(self, futures: Any) -> Any:
            raise self.error

        def cancel(self, futures: Any) -> None:
            self.cancelled = True

    from dk_vector_plugins.types import SearchRequest

    plan = dask_plan.SearchPlan(1, frozenset({"s"}), {"tcp://w:1": []})
    request = SearchRequest(queries(1), k=3)
    for error in (
        KilledWorker("dkv-search-x", SimpleNamespace(address="tcp://w:1"), 3),
        asyncio.CancelledError(),
    ):
        fake = Futures(error)
        holder = type("C", (), {"client": fake})()
        with pytest.raises(de.ClusterError, match="nothing partial was returned"):
            dask_dispatch.run_plan(holder, de.StoreSpec("file", path="/x"), plan, request)  # type: ignore[arg-type]
        assert fake.cancelled


def test_unreachable_scheduler(tmp_path: Path) -> None:
    db = DatabaseFactory().create(
        backend="file",
        path=str(tmp_path),
        vector_enabled=True,
        executor="dask",
        scheduler_address="tcp://127.0.0.1:9",
    )
    db.add_vectors(queries(3), ids=["a", "b", "c"])
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(de.ClusterError, match="cannot reach"),
    ):
        db.vector_search(queries(1)[0], k=1)


# --- configuration -------------------------------------------------------------------------------


def test_config_keys() -> None:
    factory = DatabaseFactory()
    with pytest.raises(ConfigError, match="'executor' must be one of"):
        factory.create(backend="memory", executor="spark")
    with pytest.raises(ConfigError, match="'n_workers' must be > 0"):
        factory.create(backend="memory", executor="dask", n_workers=0)
    mem = factory.create(backend="memory", vector_enabled=True, executor="dask")
    mem.add_vectors(queries(2), ids=["a", "b"])
    with pytest.raises(ConfigError, match="no segments"):
        mem.vector_search(queries(1)[0], k=1)
    local = factory.create(backend="memory", vector_enabled=True, executor="local")
    local.add_vectors(queries(2), ids=["a", "b"])
    assert len(local.vector_search(queries(1)[0], k=2)) == 2  # the plugin declines


def test_config_from_toml_through_the_cli(
    tmp_path: Path, cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """The keys come from a TOML file like every other key: ingest (bulk embed) and search."""
    import json

    from dk_vector_plugins.cli import main

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": d.id, "text": d["text"]}) + "\n" for d in _docs(30)[:-1]))
    outputs = []
    for executor in ("local", "dask"):
        toml = tmp_path / f"{executor}.toml"
        toml.write_text(
            f'backend = "file"\npath = "{tmp_path / executor}"\nvector_dimensions = 32\n'
            f'executor = "{executor}"\nscheduler_address = "{cluster.scheduler_address}"\nshard_rows = 7\n'
        )
        assert main(["ingest", str(data), "--config", str(toml), "--batch-size", "8", "--no-progress"]) == 0
        capsys.readouterr()
        assert (
            main(["search", "gamma delta item7", "--config", str(toml), "--k", "4", "--format", "json"]) == 0
        )
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 4


def test_missing_dask_says_which_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = DatabaseFactory().create(backend="file", path=str(tmp_path), vector_enabled=True, executor="dask")
    db.add_vectors(queries(2), ids=["a", "b"])
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(ConfigError, match=r"pip install 'dk_vector_plugins\[dask\]'"):
        db.vector_search(queries(1)[0], k=1)


def test_module_imports_without_dask() -> None:
    code = (
        "import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None\n"
        "from dk_vector_plugins import DatabaseFactory\n"
        "db = DatabaseFactory().create(backend='memory', vector_enabled=True)\n"
        "db.add_vectors([[1.0, 0.0]], ids=['a']); print(db.vector_search([1.0, 0.0], k=1)[0].record.id)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "a"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_closing_the_store_closes_its_client(stores: Callable[..., tuple[Any, Any]], is_async: bool) -> None:
    ref, dk = stores("file", is_async)
    ref.add_vectors(queries(20), ids=[f"r{i}" for i in range(20)])
    dk.vector_search(queries(1)[0], k=3)
    wrapped = dk.wrapped if is_async else dk
    client = de.client_for(wrapped)
    assert client.status == "running"
    dk.close()
    assert client.status == "closed"


def test_client_of_an_s3_store_downloads_no_vectors(stores: Callable[..., tuple[Any, Any]]) -> None:
    """The store a Dask search runs from reads only the vectors of the records it shows; the
    workers hold the segments (a table larger than the client's memory)."""
    from dk_vector_plugins.index import LazyArray

    ref, dk = stores("s3")
    fill(ref)
    q = queries(2)
    assert_alike(ref.vector_search_batch(q, k=10), dk.vector_search_batch(q, k=10))
    arrays = [p.matrix for p in dk.core.table.indexes["embedding"]._parts]
    assert arrays and all(isinstance(a, LazyArray) and not a.loaded for a in arrays)


# --- int8 codes stored with the segments ---------------------------------------------------------

CODED_COMMITS = (701, 523, 389)  # every segment of vectors at least CODES_MIN_ROWS: all store codes
CODES_MIN_ROWS = 100


def fill_coded(db: Any, seed: int = 11) -> None:
    """Segments that all store the int8 codes of their vectors (the writer's ``codes_min_rows``
    lowered to :data:`CODES_MIN_ROWS`), then deletes and an update of 150 rows (a segment of its
    own, with codes too)."""
    db.storage.logic.options.codes_min_rows = CODES_MIN_ROWS
    rng = np.random.default_rng(seed)
    start = 0
    for size in CODED_COMMITS:
        rows = range(start, start + size)
        db.add_vectors(
            rng.standard_normal((size, DIM)).astype(np.float32),
            ids=[f"r{i:05d}" for i in rows],
            metadata=[{"g": i % 7, "lang": ("en", "de", "fr")[i % 3], "name": f"doc{i}"} for i in rows],
        )
        start += size
    db.delete_batch([f"r{i:05d}" for i in (3, 4, 400, 1000, 1500)])
    moved = range(600, 750)  # rows of the first two segments die, a segment of 150 rows holds them
    db.add_vectors(
        rng.standard_normal((len(moved), DIM)).astype(np.float32),
        ids=[f"r{i:05d}" for i in moved],
        metadata=[{"g": i % 7, "lang": "en", "name": f"doc{i}"} for i in moved],
    )
    coded = [f.get("codes") for seg in db.storage.state.segments for f in seg["fields"].values()]
    assert len(coded) == len(CODED_COMMITS) + 1 and all(coded)


@contextlib.contextmanager
def worker_quantizer_spy(client: Any, **kernel_settings: int) -> Iterator[Callable[[], list[int]]]:
    """Count, on every worker process, the rows each call of ``quant.quantize_rows`` quantizes
    (and set ``kernel_settings`` there, e.g. the thresholds of ``exact="auto"``); yields a
    function returning the counts of all workers. Undone on exit."""

    def install() -> None:
        from dk_vector_plugins import kernel, quant

        real = quant.quantize_rows
        calls: list[int] = []

        def counting(matrix: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(int(matrix.shape[0]))
            return real(matrix, *args, **kwargs)

        saved = {name: getattr(kernel, name) for name in kernel_settings}
        for name, value in kernel_settings.items():
            setattr(kernel, name, value)
        quant.quantize_rows = counting
        quant.__dict__["_test_spy"] = (real, calls, saved)

    def counts() -> list[int]:
        from dk_vector_plugins import quant

        return list(quant.__dict__["_test_spy"][1])

    def remove() -> None:
        from dk_vector_plugins import kernel, quant

        real, _, saved = quant.__dict__.pop("_test_spy")
        quant.quantize_rows = real
        for name, value in saved.items():
            setattr(kernel, name, value)

    client.run(install)
    try:
        yield lambda: sorted(n for got in client.run(counts).values() for n in got)
    finally:
        client.run(remove)


def assert_same_scans(expected: list[list[Any]], got: list[list[Any]], exact: str | None) -> None:
    """The Dask results show ``reranked`` and ``exact`` where the single-process ones do: the
    same scan (``exact``, when given), and at least as many rows ranked as results shown."""
    for exp_hits, got_hits in zip(expected, got):
        for e, g in zip(exp_hits, got_hits):
            assert ("reranked" in g.metadata) == ("reranked" in e.metadata)
            if "reranked" not in e.metadata:
                continue
            assert isinstance(g.metadata["reranked"], int) and g.metadata["reranked"] >= len(got_hits)
            if exact is not None:
                assert e.metadata["exact"] == g.metadata["exact"] == exact


@pytest.mark.skipif(not quant.available(), reason="the int8 scan needs numkong")
@pytest.mark.parametrize("backend", ["file", "s3"])
def test_workers_scan_the_stored_int8_codes(
    stores: Callable[..., tuple[Any, Any]], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's int8 search reads the codes its segments store (a slice of them for a part of a
    segment) instead of quantizing its rows; ``exact`` travels to the workers, whose results are
    the single-process ones (ids, order, scores with ==) and whose metadata shows the scan."""
    ref, dk = stores(backend, inline_bytes=0)  # (every segment on its own objects: ranged reads on S3)
    fill_coded(ref)
    batch = queries(5, seed=3)
    client = de.client_for(dk)
    # exact="auto" picks int8 for this little table (whole or per part) once it has 100 rows
    auto_settings = {"INT8_MIN_ROWS": CODES_MIN_ROWS, "INT8_ROWS_PER_K": 1}
    for name, value in auto_settings.items():
        monkeypatch.setattr(kernel_module, name, value)
    with worker_quantizer_spy(client, **auto_settings) as quantized:
        for exact in ("int8", "float32", "auto"):
            for metric in METRICS:
                for flt in (None, {"g": 3}, {"$or": [{"lang": "en"}, {"g": {"$gte": 5}}]}):
                    expected = ref.vector_search_batch(batch, k=10, metric=metric, filter=flt, exact=exact)
                    got = dk.vector_search_batch(batch, k=10, metric=metric, filter=flt, exact=exact)
                    assert_alike(expected, got)
                    # auto decides per part (for its own rows): a filtered part of few rows scans float32
                    forced = exact if exact != "auto" else ("int8" if flt is None else None)
                    assert_same_scans(expected, got, forced)
                    one = ref.vector_search(batch[0], k=4, metric=metric, filter=flt, exact=exact)
                    got_one = dk.vector_search(batch[0], k=4, metric=metric, filter=flt, exact=exact)
                    assert_alike([one], [got_one])
        assert quantized() == [], "a worker quantized rows whose codes its segment stores"
    parts = _parts_on_workers(dk, de.StoreSpec.from_config(backend, dk.config).key)
    assert any(start > 0 for held in parts.values() for _, start, _ in held), "a part is a slice of a segment"


def test_workers_quantize_rows_without_stored_codes(stores: Callable[..., tuple[Any, Any]]) -> None:
    """The spy sees a worker quantize: segments that store no codes (``codes_min_rows`` above
    their rows) are quantized on the worker by its first int8 search, with the same results."""
    ref, dk = stores("file")
    fill(ref)  # segments of fewer than 4096 rows: no codes stored
    assert not any(f.get("codes") for seg in ref.storage.state.segments for f in seg["fields"].values())
    batch = queries(3)
    with worker_quantizer_spy(de.client_for(dk)) as quantized:
        for _ in range(2):
            expected = ref.vector_search_batch(batch, k=10, exact="int8")
            got = dk.vector_search_batch(batch, k=10, exact="int8")
            assert_alike(expected, got)
            assert_same_scans(expected, got, "int8" if quant.available() else "float32")
        if quant.available():  # every part's rows, once (the segment of 5 updated rows too)
            assert sum(quantized()) == sum(COMMITS) + 5


def test_exact_reaches_the_worker_task(
    stores: Callable[..., tuple[Any, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request's ``exact`` option is an argument of the worker task (the kernel raises for
    an unknown one: the store validates it first)."""
    ref, dk = stores("file")
    fill(ref)
    seen: list[tuple[Any, ...]] = []
    real = dask_dispatch.run_tasks

    def spying(*args: Any) -> Any:
        seen.append(args[5:])
        return real(*args)

    monkeypatch.setattr(dask_dispatch, "run_tasks", spying)
    for exact in ("float32", "int8", "auto"):
        dk.vector_search(queries(1)[0], k=3, exact=exact)
        assert seen[-1][-1] == exact
    dk.vector_search(queries(1)[0], k=3)
    assert seen[-1][-1] == "auto"
    with pytest.raises(InvalidRequestError, match="exact must be one of"):
        dk.vector_search(queries(1)[0], k=3, exact="int4")


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_reader_reads_the_codes_of_a_row_range(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """``SegmentReader.codes``: the stored codes of any row range of a segment equal those of its
    rows quantized; on S3 a range is read from the checksum blocks holding it (an object of
    several blocks here), which are verified: damage inside the range is caught, damage
    elsewhere is not read."""
    if backend == "file":
        where: dict[str, Any] = {"path": str(tmp_path / "t")}
    else:
        where = request.getfixturevalue("s3_server").config()
    db = DatabaseFactory().create(backend=backend, vector_enabled=True, **where)
    db.storage.logic.options.codes_min_rows = 1000
    rows, dim = 3000, 96  # codes of 288,000 bytes: two checksum blocks of 256 KiB
    x = np.random.default_rng(4).standard_normal((rows, dim)).astype(np.float32)
    db.add_vectors(x, ids=[f"r{i:05d}" for i in range(rows)])
    db.add_vectors(x[:5], ids=[f"s{i}" for i in range(5)])  # a small segment: no codes
    (segment, small) = snapshot(db.storage).segments
    field, small_field = segment.field("embedding"), small.field("embedding")
    assert field is not None and field.has_codes and len(field.codes_keys) == 4
    assert small_field is not None and not small_field.has_codes
    spec = de.StoreSpec.from_config(backend, db.config)
    reader = open_reader(spec)
    try:
        assert reader.codes(small, small_field, 0, 5) is None
        for start, stop in ((0, rows), (0, 1), (1000, 2000), (2700, rows), (2730, 2731), (1234, 1234)):
            got = reader.codes(segment, field, start, stop)
            want = quant.quantize_rows(x[start:stop])
            assert got is not None and got.n == stop - start
            for name in ("codes", "scales", "residuals", "sqnorms"):
                assert np.array_equal(getattr(got, name), getattr(want, name)), (start, stop, name)
        with pytest.raises(IndexError):
            reader.codes(segment, field, 10, rows + 1)
    finally:
        reader.close()
    if backend == "s3":
        s3 = request.getfixturevalue("s3_server").client()
        key = f"{spec.prefix}{field.codes_keys[0]}"
        raw = bytearray(s3.get_object(Bucket=spec.bucket, Key=key)["Body"].read())
        raw[-(8 * 2 + 1000)] ^= 0x55  # a byte of the last rows (the second block)
        s3.put_object(Bucket=spec.bucket, Key=key, Body=bytes(raw))
        reader = open_reader(spec)
        try:
            assert reader.codes(segment, field, 0, 1000) is not None  # the first block only
            with pytest.raises(StorageError, match=r"c8\.npy.*block digests"):
                reader.codes(segment, field, 2900, rows)
            with pytest.raises(StorageError, match=r"c8\.npy"):
                reader.codes(segment, field, 0, rows)  # read whole: verified whole
        finally:
            reader.close()
    db.close()
