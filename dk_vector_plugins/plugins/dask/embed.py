"""Distributed bulk embedding: batches are embedded on the workers, committed in input order.

Batches of texts are embedded on the workers in parallel with the request's embedder (sent to
each worker once); each batch is committed as one segment, in input order, as it finishes, while
up to two batches per worker are in flight. The progress bar advances per committed batch.
Skipping of records that already hold their vector (resume), record preparation and the check
of the embedder's output are the built-in driver's (:mod:`dk_vector_plugins.embed`).
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt

from ...embed import attach_vectors, batch_slices, prepare_records, progress_bar, skip_mask
from ...errors import DkvError, InvalidRequestError, PluginError
from ...types import AsyncStore, BulkEmbedReport, BulkEmbedRequest, Store
from .cluster import cluster_error, cluster_for, is_cluster_failure
from .options import table_core
from .worker import worker_cache

__all__ = ["ShippedEmbedder", "bulk_embed", "bulk_embed_async", "embed_texts", "portable"]


class ShippedEmbedder:
    """An embedder that pickle cannot take as it is because ``__init__`` cached a bound method with
    ``functools.lru_cache`` (as :class:`~dk_vector_plugins.HashingEmbedder` does): its class, its
    other attributes and the caches to rebuild. It travels (and is replicated between workers) in
    this picklable form; each worker builds the embedder once and keeps it."""

    def __init__(
        self, cls: Any, state: dict[str, Any], caches: dict[str, tuple[str, dict[str, Any]]]
    ) -> None:
        self.cls, self.state, self.caches = cls, state, caches
        self.token = uuid.uuid4().hex

    def build(self) -> Any:
        """The embedder itself."""
        obj = self.cls.__new__(self.cls)
        obj.__dict__.update(self.state)
        for attr, (method, params) in self.caches.items():
            wrapped = functools.lru_cache(maxsize=params.get("maxsize"), typed=bool(params.get("typed")))
            setattr(obj, attr, wrapped(getattr(obj, method)))
        return obj


def portable(embedder: Any) -> Any:
    """``embedder`` itself if it pickles, else a :class:`ShippedEmbedder`, else :class:`PluginError`."""
    import cloudpickle

    try:
        cloudpickle.dumps(embedder)
        return embedder
    except Exception as first:
        state: dict[str, Any] = {}
        caches: dict[str, tuple[str, dict[str, Any]]] = {}
        for name, value in getattr(embedder, "__dict__", {}).items():
            inner = getattr(value, "__wrapped__", None)
            if hasattr(value, "cache_parameters") and inspect.ismethod(inner) and inner.__self__ is embedder:
                caches[name] = (inner.__name__, dict(value.cache_parameters()))
            else:
                state[name] = value
        shipped = ShippedEmbedder(type(embedder), state, caches)
        try:
            if not caches:
                raise first
            cloudpickle.dumps(shipped)
        except Exception as e:
            raise PluginError(
                f"the embedder {embedder!r} cannot be sent to Dask workers (it does not pickle: {e}); "
                "use a picklable embedder or executor='local'"
            ) from e
        return shipped


def embed_texts(embedder: Any, texts: list[str]) -> npt.NDArray[Any]:
    """The worker task: embed one batch of texts."""
    emb = embedder
    if isinstance(embedder, ShippedEmbedder):
        emb = worker_cache().embedder(embedder.token, embedder.build)
    vectors = emb.embed(texts)
    if inspect.isawaitable(vectors):
        if inspect.iscoroutine(vectors):
            vectors.close()
        raise InvalidRequestError("an async embedding function cannot run on Dask workers")
    return np.asarray(vectors)


def bulk_embed(db: Store | AsyncStore, request: BulkEmbedRequest) -> BulkEmbedReport:
    """Embed on the workers, commit each batch (one segment) in input order as it finishes."""
    if getattr(request.embedder, "is_async", False):
        raise InvalidRequestError(
            "an async embedding function cannot run on Dask workers: give a sync one, or use executor='local'"
        )
    cluster = cluster_for(db)
    client = cluster.client
    core, _ = table_core(db)
    recs, texts = prepare_records(request)
    dim = db.vector_dimension(request.vector_field)
    window = max(2, 2 * len(cluster.workers()))
    token = uuid.uuid4().hex[:12]
    embedded = skipped = batches = 0
    pending: deque[tuple[list[int], Any, int]] = deque()
    pending_ids: set[str] = set()
    try:
        shipped = client.scatter(portable(request.embedder), broadcast=True, hash=False)
    except DkvError:
        raise
    except Exception as e:
        raise cluster_error("sending the embedder", e) from e

    def vectors_of(future: Any) -> Any:
        try:
            return future.result()
        except DkvError:
            raise
        except BaseException as e:
            if is_cluster_failure(e):
                raise cluster_error("bulk embedding", e) from e
            raise

    try:
        with progress_bar(request.progress, len(recs)) as bar:

            def commit_oldest() -> None:
                nonlocal dim, embedded, batches
                todo, future, size = pending.popleft()
                if future is not None:
                    done = attach_vectors(
                        [recs[i] for i in todo], vectors_of(future), request, dim, [texts[i] for i in todo]
                    )
                    dim = done[0][request.vector_field].shape[0]
                    core.put(done, "upsert")
                    embedded += len(done)
                    batches += 1
                    pending_ids.difference_update(str(recs[i].id) for i in todo)
                bar.update(size)

            for n, sl in enumerate(batch_slices(len(recs), request.batch_size)):
                ids = [str(r.id) for r in recs[sl]]
                if not pending_ids.isdisjoint(ids):  # the same id again: commit the earlier one first
                    while pending:
                        commit_oldest()
                skip = skip_mask(core.read(ids), texts[sl], request)
                todo = [i for i, s in zip(range(sl.start, sl.stop), skip) if not s]
                skipped += len(skip) - len(todo)
                future = None
                if todo:
                    future = client.submit(
                        embed_texts,
                        shipped,
                        [texts[i] for i in todo],
                        key=f"dkv-embed-{token}-{n}",
                        pure=False,
                    )
                    pending_ids.update(str(recs[i].id) for i in todo)
                pending.append((todo, future, sl.stop - sl.start))
                while len(pending) >= window:
                    commit_oldest()
            while pending:
                commit_oldest()
    finally:
        leftover = [f for _, f, _ in pending if f is not None]
        if leftover:
            client.cancel(leftover)
        client.cancel([shipped])
    return BulkEmbedReport([str(r.id) for r in recs], embedded, skipped, batches)


async def bulk_embed_async(db: AsyncStore, request: BulkEmbedRequest) -> BulkEmbedReport:
    """The async twin: the same driver from a worker thread."""
    return await db.core.run_async(bulk_embed, db, request, heavy=True)
