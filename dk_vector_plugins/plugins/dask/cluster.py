"""A store's Dask client (and the local cluster it may start), and which worker holds which part.

Parts are assigned to workers greedily in table order (each part to the least-loaded worker by
rows, ties broken by a hash of part and worker): deterministic for a given worker set, and a
commit only appends segments, so it assigns only the new parts and every other part stays on the
worker whose cache holds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from ...errors import ConfigError, PluginError
from ...types import AsyncStore, Store
from .options import require_distributed, wants_dask

__all__ = [
    "ClusterError",
    "StoreCluster",
    "assign",
    "client_for",
    "close_client",
    "cluster_error",
    "cluster_for",
    "is_cluster_failure",
]

log = logging.getLogger(__name__)

_WORKERS_TTL_S = 1.0
#: Where a store keeps its cluster handle (and the finalizer that closes it).
_STATE_KEY = "_dkv_dask"
_FINALIZER_KEY = "_dkv_dask_finalizer"


class ClusterError(PluginError):
    """The Dask cluster could not answer (workers lost beyond the retries, scheduler unreachable).

    Nothing partial is returned: a search either gives the full exact top-``k`` or raises this.
    """


def _rank(part: str, worker: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{part}|{worker}".encode(), digest_size=8).digest(), "big")


def assign(parts: Sequence[tuple[str, int]], workers: Sequence[str]) -> list[str]:
    """A worker per part ``(name, rows)``: greedy least-loaded in the given (table) order.

    Deterministic for a worker set; appending parts never moves the earlier ones.
    """
    loads = dict.fromkeys(workers, 0)
    out = []
    for name, rows in parts:
        lowest = min(loads.values())
        tied = [w for w in workers if loads[w] == lowest]
        best = tied[0] if len(tied) == 1 else max(tied, key=lambda w: _rank(name, w))
        loads[best] += rows
        out.append(best)
    return out


class StoreCluster:
    """A store's Dask client (and the local cluster it started), created on first use."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        distributed = require_distributed()
        self.cluster: Any = None
        address = config.get("scheduler_address")
        try:
            if address:
                # connect timeout: distributed.comm.timeouts.connect (dask config)
                self.client: Any = distributed.Client(address, set_as_default=False)
            else:
                self.cluster = distributed.LocalCluster(
                    n_workers=config.get("n_workers") or max(1, (os.cpu_count() or 1)),
                    threads_per_worker=config.get("threads_per_worker") or 1,
                    processes=True,
                    dashboard_address=":0",
                )
                self.client = distributed.Client(self.cluster, set_as_default=False)
        except (OSError, TimeoutError) as e:
            if self.cluster is not None:
                self.cluster.close()
            where = f"the Dask scheduler at {address}" if address else "a local Dask cluster"
            raise ClusterError(f"cannot reach {where}: {type(e).__name__}: {e}") from e
        self._workers: list[str] = []
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self._assigned: tuple[Any, list[str]] | None = None

    def owners(self, parts: list[tuple[str, int]], workers: list[str]) -> list[str]:
        """:func:`assign`, remembered for the last (parts, workers) seen."""
        key = (parts, workers)
        with self._lock:
            if self._assigned is not None and self._assigned[0] == key:
                return self._assigned[1]
        owners = assign(parts, workers)
        with self._lock:
            self._assigned = (key, owners)
        return owners

    def workers(self) -> list[str]:
        """The workers' addresses, sorted (refreshed at most every second)."""
        with self._lock:
            now = time.monotonic()
            if not self._workers or now - self._checked > _WORKERS_TTL_S:
                found = sorted(self.client.nthreads())
                if not found:
                    try:
                        self.client.wait_for_workers(1, timeout=60)
                    except TimeoutError as e:
                        raise ClusterError("the Dask cluster has no workers (waited 60 s)") from e
                    found = sorted(self.client.nthreads())
                self._workers, self._checked = found, now
            return list(self._workers)


def _close(client: Any, cluster: Any) -> None:
    for thing in (client, cluster):
        if thing is not None:
            try:
                thing.close()
            except Exception:  # pragma: no cover - best effort at shutdown
                log.debug("closing %r failed", thing, exc_info=True)


_CREATE_LOCK = threading.Lock()


def cluster_for(db: Store | AsyncStore) -> StoreCluster:
    """The cluster handle of a Dask-configured store (connected, or started, on first use)."""
    state: StoreCluster | None = db.__dict__.get(_STATE_KEY)
    if state is not None and state.client.status in ("closed", "closing", "failed"):
        close_client(db)  # e.g. gave up reconnecting to a restarted scheduler: start afresh
        state = None
    if state is None:
        with _CREATE_LOCK:
            state = db.__dict__.get(_STATE_KEY)
            if state is None:
                state = StoreCluster(db.config)
                db.__dict__[_STATE_KEY] = state
                finalizer = weakref.finalize(db, _close, state.client, state.cluster)
                db.__dict__[_FINALIZER_KEY] = finalizer
                db.on_close(finalizer)  # db.close() closes the client (and a local cluster) too
    return state


def client_for(db: Store | AsyncStore) -> Any:
    """The ``distributed.Client`` of a store configured with ``executor="dask"`` (created if needed)."""
    if not wants_dask(db):
        raise ConfigError("this store is not configured with executor='dask'")
    return cluster_for(db).client


def close_client(db: Store | AsyncStore) -> None:
    """Close a store's Dask client, and the local cluster it started (also done when ``db`` is collected)."""
    finalizer = db.__dict__.pop(_FINALIZER_KEY, None)
    db.__dict__.pop(_STATE_KEY, None)
    if finalizer is not None:
        finalizer()


def is_cluster_failure(e: BaseException) -> bool:
    """Whether ``e`` says the cluster failed (a worker lost for good, a cancelled task) rather
    than the task's own code."""
    from distributed import KilledWorker
    from distributed.comm.core import CommClosedError

    return isinstance(e, (KilledWorker, CommClosedError, asyncio.CancelledError)) or type(e).__name__ in (
        "FutureCancelledError",
        "CancelledError",
    )


def cluster_error(what: str, e: BaseException) -> ClusterError:
    """The :class:`ClusterError` of ``what`` failing with ``e``."""
    return ClusterError(
        f"{what} failed on the Dask cluster: {type(e).__name__}: {e}; nothing partial was returned "
        "(a lost worker's tasks are retried on the others up to distributed.scheduler.allowed-failures)"
    )
