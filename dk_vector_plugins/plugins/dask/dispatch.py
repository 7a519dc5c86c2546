"""Dispatching a search to the cluster: plan under the store lock, one task per worker, merge.

1. The client refreshes the store (it answers for the current version) and, under the store lock,
   plans the search (:func:`~.plan.plan_search`): the parts of the loaded version, their dead
   rows, their workers.
2. One task per worker carries the whole batch of queries, the request's ``exact`` option and that
   worker's parts (:func:`~.worker.search_shards`).
3. The client merges the per-worker lists (:func:`~.merge.merge_hits`) and their shortlist counts
   (:func:`~.merge.merge_shortlists`), keeps ``k`` and builds the results from its table
   (:meth:`RecordTable.vector_results <dk_vector_plugins.memtable.RecordTable.vector_results>`,
   the code the single-process search uses). If the table changed meanwhile, it searches again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import ConflictError, DkvError
from ...kernel import TopK
from ...memtable import no_text_error
from ...search import apply_threshold
from ...storage.segments import StoreSpec
from ...textindex import field_without_text, merge_stats
from ...types import (
    AsyncStore,
    SearchRequest,
    Store,
    TextSearchRequest,
    TextSearchResult,
    VectorSearchResult,
)
from .cluster import ClusterError, StoreCluster, cluster_error, cluster_for
from .merge import Hits, merge_hits, merge_shortlists
from .options import table_core
from .plan import SearchPlan, plan_parts, plan_search
from .worker import search_shards, text_search_shards, text_stats_shards

__all__ = ["run_plan", "run_tasks", "search", "search_async", "text_search", "text_search_async"]

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")

_SEARCH_ATTEMPTS = 3


def run_tasks(
    cluster: StoreCluster, spec: StoreSpec, plan: SearchPlan, what: str, fn: Callable[..., T], *args: Any
) -> list[T]:
    """One task ``fn(spec, plan.names, the worker's parts, *args)`` per worker group of ``plan``
    (on that worker); their answers, or :class:`ClusterError` naming ``what`` when the cluster
    fails."""
    client = cluster.client
    token = uuid.uuid4().hex[:12]
    futures = [
        client.submit(
            fn,
            spec,
            plan.names,
            shards,
            *args,
            key=f"dkv-{fn.__name__.replace('_', '-')}-{token}-{i}",
            workers=[addr],
            allow_other_workers=True,
            pure=False,
        )
        for i, (addr, shards) in enumerate(sorted(plan.groups.items()))
    ]
    try:
        answers: list[T] = client.gather(futures)
    except DkvError:
        client.cancel(futures)
        raise
    except BaseException as e:  # a cancelled future is a BaseException (asyncio.CancelledError)
        client.cancel(futures)
        if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise cluster_error(what, e) from e
    for f in futures:
        f.release()
    return answers


def run_plan(cluster: StoreCluster, spec: StoreSpec, plan: SearchPlan, request: SearchRequest) -> list[TopK]:
    """One task per worker group; the merged top-``k`` per query (table rows), or
    :class:`ClusterError`.

    Each top-``k`` carries how the kernel's exact ranking went over every part
    (:attr:`TopK.reranked <dk_vector_plugins.kernel.TopK.reranked>`: the rows it scored, summed
    over the parts; :attr:`TopK.exact <dk_vector_plugins.kernel.TopK.exact>`: the scan of every
    part, or ``"mixed"``), as the single-process search's shows it for the whole table.
    """
    answers = run_tasks(
        cluster,
        spec,
        plan,
        "the vector search",
        search_shards,
        request.queries,
        request.k,
        request.metric,
        request.vector_field,
        request.filter,
        request.options.get("exact", "auto"),
    )
    b = len(request.queries)
    hits = _per_query([a.hits for a in answers], b, request.k, request.metric)
    tops = []
    for qi, (rows, scores, dists, _) in enumerate(hits):
        scan = merge_shortlists(a.shortlists[qi] for a in answers)
        if scan is None:
            tops.append(TopK(rows, scores, dists))
        else:
            tops.append(TopK(rows, scores, dists, reranked=scan.reranked, exact=scan.exact))
    return tops


def _per_query(groups: list[list[Hits]], b: int, k: int, order: str) -> list[Hits]:
    """The workers' hit lists (one per query each) merged per query, in the kernel's ``order``."""
    if any(len(g) != b for g in groups):  # pragma: no cover - a worker answered for other queries
        raise ClusterError("a Dask worker returned results for a different number of queries")
    return [merge_hits([g[qi] for g in groups], k, order) for qi in range(b)]


def _consistent(
    db: Store | AsyncStore,
    plan_of: Callable[[list[str]], SearchPlan | None],
    run: Callable[[SearchPlan], A],
    finish: Callable[[A], R],
    empty: R,
) -> R:
    """Plan (under the store lock, after a refresh), run on the cluster, finish under the lock
    for the version planned: if a commit landed meanwhile, plan again; the last attempt holds the
    lock throughout, so the table cannot change under it (the others let this store's other
    threads go on while the cluster works)."""
    cluster = cluster_for(db)
    core, storage = table_core(db)
    for attempt in range(_SEARCH_ATTEMPTS):
        hold = attempt == _SEARCH_ATTEMPTS - 1
        workers = cluster.workers()
        with core.lock:
            core.refresh()
            plan = plan_of(workers)
            if plan is None or not plan.groups:
                return empty
            if hold:
                return finish(run(plan))
        answer = run(plan)
        with core.lock:
            if storage.state.version == plan.version:
                return finish(answer)
        # committed meanwhile (rows may have died): search the new version
    raise ConflictError("the table changed during every attempt of a distributed search")  # pragma: no cover


def search(db: Store | AsyncStore, request: SearchRequest) -> list[list[VectorSearchResult]]:
    """Exact search of a Dask-configured store (one result list per query)."""
    cluster = cluster_for(db)
    spec = StoreSpec.from_config(db.backend_name, db.config)
    core, _ = table_core(db)

    def finish(tops: list[TopK]) -> list[list[VectorSearchResult]]:
        results = core.table.vector_results(tops, request.vector_field, request.metric)
        return apply_threshold(results, request)

    return _consistent(
        db,
        lambda workers: plan_search(db, request, cluster, workers),
        lambda plan: run_plan(cluster, spec, plan, request),
        finish,
        [[] for _ in range(len(request.queries))],
    )


async def search_async(db: AsyncStore, request: SearchRequest) -> list[list[VectorSearchResult]]:
    """The async twin: the same search from a worker thread (the store's I/O stays on its loop)."""
    return await db.core.run_async(search, db, request, heavy=True)


def text_search(db: Store | AsyncStore, request: TextSearchRequest) -> list[list[TextSearchResult]]:
    """BM25 search of a Dask-configured store, on the workers, in two rounds: each part's corpus
    statistics of the query terms (:func:`~.worker.text_stats_shards`), merged exactly on the
    client (:func:`~dk_vector_plugins.textindex.merge_stats`); then each part's top ``k`` scored
    with them (:func:`~.worker.text_search_shards`), merged by score and id. The scores are
    those of a single process over the whole live table, bit for bit."""
    cluster = cluster_for(db)
    spec = StoreSpec.from_config(db.backend_name, db.config)
    core, _ = table_core(db)
    settings = core.table.text_settings
    assert settings is not None, "a store sets its text settings before a text search"
    fields = list(request.text_fields)
    terms = sorted({t for q in request.terms for t in q})
    b = len(request.terms)

    def run(plan: SearchPlan) -> tuple[list[Hits], str | None]:
        parts = [
            p
            for group in run_tasks(cluster, spec, plan, "the text search", text_stats_shards, terms, fields, settings)
            for p in group
        ]
        corpus = merge_stats(parts, settings.k1, settings.b)
        groups = run_tasks(
            cluster,
            spec,
            plan,
            "the text search",
            text_search_shards,
            request.terms,
            fields,
            settings,
            request.k,
            corpus,
            request.filter,
        )
        hits = _per_query(groups, b, request.k, "bm25")
        blank = None
        if corpus.n_live and any(len(h[0]) == 0 for h in hits):  # a field without text? (as in text_tops)
            holds = [any(p.lengths[i] for p in parts) for i in range(len(fields))]
            blank = field_without_text(fields, holds)
        return hits, blank

    def finish(answer: tuple[list[Hits], str | None]) -> list[list[TextSearchResult]]:
        hits, blank = answer
        if blank is not None:
            raise no_text_error(blank, core.table.string_fields())
        results = core.table.text_results([(rows, scores) for rows, scores, _, _ in hits], fields)
        return apply_threshold(results, request)

    return _consistent(
        db, lambda workers: plan_parts(db, cluster, workers), run, finish, [[] for _ in range(b)]
    )


async def text_search_async(db: AsyncStore, request: TextSearchRequest) -> list[list[TextSearchResult]]:
    """The async twin of :func:`text_search` (from a worker thread)."""
    return await db.core.run_async(text_search, db, request, heavy=True)
