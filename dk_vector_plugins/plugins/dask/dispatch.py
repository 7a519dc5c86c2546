"""Dispatching a search to the cluster: plan under the store lock, one task per worker, merge.

1. The client refreshes the store (it answers for the current version) and, under the store lock,
   plans the search (:func:`~.plan.plan_search`): the parts of the loaded version, their dead
   rows, their workers.
2. One task per worker carries the whole batch of queries and that worker's parts
   (:func:`~.worker.search_shards`).
3. The client merges the per-worker lists (:func:`~.merge.merge_hits`), keeps ``k`` and builds the
   results from its table (:meth:`RecordTable.vector_results
   <dk_vector_plugins.memtable.RecordTable.vector_results>`, the code the single-process search
   uses). If the table changed meanwhile, it searches again.
"""

from __future__ import annotations

import uuid

from ...errors import ConflictError, DkvError
from ...kernel import TopK
from ...search import apply_threshold
from ...storage.segments import StoreSpec
from ...types import AsyncStore, SearchRequest, Store, VectorSearchResult
from .cluster import ClusterError, StoreCluster, cluster_error, cluster_for
from .merge import Hits, merge_hits
from .options import table_core
from .plan import SearchPlan, plan_search
from .worker import search_shards

__all__ = ["run_plan", "search", "search_async"]

_SEARCH_ATTEMPTS = 3


def run_plan(cluster: StoreCluster, spec: StoreSpec, plan: SearchPlan, request: SearchRequest) -> list[Hits]:
    """One task per worker group; the merged hits per query, or :class:`ClusterError`."""
    client = cluster.client
    token = uuid.uuid4().hex[:12]
    futures = [
        client.submit(
            search_shards,
            spec,
            plan.names,
            shards,
            request.queries,
            request.k,
            request.metric,
            request.vector_field,
            request.filter,
            key=f"dkv-search-{token}-{i}",
            workers=[addr],
            allow_other_workers=True,
            pure=False,
        )
        for i, (addr, shards) in enumerate(sorted(plan.groups.items()))
    ]
    try:
        groups: list[list[Hits]] = client.gather(futures)
    except DkvError:
        client.cancel(futures)
        raise
    except BaseException as e:  # a cancelled future is a BaseException (asyncio.CancelledError)
        client.cancel(futures)
        if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        raise cluster_error("the vector search", e) from e
    for f in futures:
        f.release()
    b = len(request.queries)
    if any(len(g) != b for g in groups):  # pragma: no cover - a worker answered for other queries
        raise ClusterError("a Dask worker returned results for a different number of queries")
    return [merge_hits([g[qi] for g in groups], request.k, request.metric) for qi in range(b)]


def search(db: Store | AsyncStore, request: SearchRequest) -> list[list[VectorSearchResult]]:
    """Exact search of a Dask-configured store (one result list per query)."""
    cluster = cluster_for(db)
    spec = StoreSpec.from_config(db.backend_name, db.config)
    core, storage = table_core(db)
    empty: list[list[VectorSearchResult]] = [[] for _ in range(len(request.queries))]

    def finish(hits: list[Hits]) -> list[list[VectorSearchResult]]:
        tops = [TopK(rows, scores, dists) for rows, scores, dists, _ in hits]
        results = core.table.vector_results(tops, request.vector_field, request.metric)
        return apply_threshold(results, request)

    for attempt in range(_SEARCH_ATTEMPTS):
        # The last attempt holds the store lock throughout, so the table cannot change under it;
        # the others let this store's other threads go on while the cluster works.
        hold = attempt == _SEARCH_ATTEMPTS - 1
        workers = cluster.workers()
        with core.lock:
            core.refresh()
            plan = plan_search(db, request, cluster, workers)
            if plan is None or not plan.groups:
                return empty
            if hold:
                return finish(run_plan(cluster, spec, plan, request))
        hits = run_plan(cluster, spec, plan, request)
        with core.lock:
            if storage.state.version == plan.version:
                return finish(hits)
        # committed meanwhile (rows may have died): search the new version
    raise ConflictError("the table changed during every attempt of a distributed search")  # pragma: no cover


async def search_async(db: AsyncStore, request: SearchRequest) -> list[list[VectorSearchResult]]:
    """The async twin: the same search from a worker thread (the store's I/O stays on its loop)."""
    return await db.core.run_async(search, db, request, heavy=True)
