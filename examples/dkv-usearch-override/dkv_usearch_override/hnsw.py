"""A usearch HNSW index that mirrors one vector field of a store's table, kept in step with writes.

The store's :class:`~dk_vector_plugins.memtable.RecordTable` is append-only: a write appends rows
and retires the rows it replaces, so a table row never changes once written. That makes the row
number a stable usearch key, and lets a mirror catch up cheaply:

* the mirror remembers *which* :class:`~dk_vector_plugins.index.VectorIndex` object it copied
  (``table.indexes[field]``), how many rows it spans (``nrows``) and how many vectors it holds
  (``count``); a search on an unchanged table costs no work at all;
* new rows (appends, the new half of an update) are added, retired rows (deletes, the old half of
  an update) are removed;
* a different ``VectorIndex`` object (the table was cleared, compacted or reloaded from storage),
  or too many removals piled up, means a rebuild.

Searches ask usearch for candidate rows, drop those the filter rejects, then score the survivors
exactly with the package's own kernel (:func:`dk_vector_plugins.kernel.top_k`), so scores,
distances and tie-breaking are exactly those of the built-in search: only *which* rows are
considered is approximate.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from usearch.index import Index, MetricKind  # type: ignore[attr-defined]

from dk_vector_plugins import SearchRequest, VectorSearchResult
from dk_vector_plugins.index import VectorIndex
from dk_vector_plugins.kernel import rank_ids, top_k
from dk_vector_plugins.vectors import squared_norms

__all__ = ["HnswMirror", "Settings", "answer", "mirror_for", "mirrors_of"]

#: dk_vector_plugins metric -> the usearch space the mirror keeps. Cosine rows are stored
#: normalized under the inner product (a zero vector stays zero and scores 0, as in the engine).
SPACES = {"cosine": "cos", "dot_product": "ip", "euclidean": "l2sq"}
#: Rebuild instead of removing when removals since the last build exceed this fraction.
REBUILD_FRACTION = 0.25
#: Rows added to usearch per call (bounds the temporary normalized copy).
ADD_CHUNK = 65_536
#: Give up on the index (answer exactly) after this many widenings of a filtered search.
MAX_WIDENINGS = 4


@dataclass(frozen=True)
class Settings:
    """The ``hnsw_*`` keys of a store's configuration."""

    connectivity: int = 16
    ef_construction: int = 128
    ef: int = 64
    min_rows: int = 0
    min_selectivity: float = 0.05
    threads: int = 0

    def build_key(self) -> tuple[int, int]:
        """The settings a built graph depends on (the rest apply per search)."""
        return (self.connectivity, self.ef_construction)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings | None:
        """The settings of a store configured with ``index="hnsw"``, else ``None``."""
        if config.get("index") != "hnsw":
            return None
        d = cls()
        return cls(
            connectivity=int(config.get("hnsw_connectivity") or d.connectivity),
            ef_construction=int(config.get("hnsw_ef_construction") or d.ef_construction),
            ef=int(config.get("hnsw_ef") or d.ef),
            min_rows=int(config.get("hnsw_min_rows") or 0),
            min_selectivity=float(
                d.min_selectivity
                if config.get("hnsw_min_selectivity") is None
                else config["hnsw_min_selectivity"]
            ),
            threads=int(config.get("hnsw_threads") or 0),
        )


class HnswMirror:
    """One usearch index over one vector field of one table, in one metric space."""

    def __init__(self, space: str, settings: Settings) -> None:
        self.space = space
        self.settings = settings
        self.index: Index | None = None
        self.dim: int | None = None
        # the VectorIndex mirrored, weakly: a compacted-away matrix is not kept alive by the mirror
        self._source: weakref.ref[VectorIndex] | None = None
        self.nrows = 0
        self.indexed = np.zeros(0, dtype=np.bool_)
        self.size = 0
        self.removed = 0
        #: How often the mirror was built from scratch / brought up to date incrementally.
        self.builds = 0
        self.updates = 0

    # -- keeping in step ------------------------------------------------------------------------
    def _new_index(self, dim: int) -> Index:
        return Index(
            ndim=dim,
            metric=MetricKind.L2sq if self.space == "l2sq" else MetricKind.IP,
            dtype="f32",
            connectivity=self.settings.connectivity,
            expansion_add=self.settings.ef_construction,
            expansion_search=self.settings.ef,
        )

    def _vectors(self, vindex: VectorIndex, rows: np.ndarray) -> np.ndarray:
        mat = vindex.gather(rows)  # a new float32 array of those rows
        if self.space == "cos":
            norms = np.linalg.norm(mat, axis=1, keepdims=True)
            np.divide(mat, norms, out=mat, where=norms > 0)
        return mat

    def _add(self, vindex: VectorIndex, rows: np.ndarray) -> None:
        assert self.index is not None
        for start in range(0, len(rows), ADD_CHUNK):
            chunk = rows[start : start + ADD_CHUNK]
            self.index.add(
                chunk.astype(np.uint64), self._vectors(vindex, chunk), threads=self.settings.threads
            )

    def rebuild(self, vindex: VectorIndex) -> str:
        """Build the index from every vector of ``vindex``."""
        self.dim = int(vindex.dim)
        self.index = self._new_index(self.dim)
        present = np.array(vindex.present, dtype=np.bool_)
        rows = np.flatnonzero(present)
        self._add(vindex, rows)
        self._source, self.nrows, self.indexed = weakref.ref(vindex), int(vindex.nrows), present
        self.size, self.removed = len(rows), 0
        self.builds += 1
        return "rebuilt"

    def sync(self, vindex: VectorIndex) -> str:
        """Bring the index up to ``vindex``: ``"current"``, ``"updated"`` or ``"rebuilt"``."""
        mirrored = self._source() if self._source is not None else None
        same_source = mirrored is not None and mirrored is vindex
        if self.index is None or not same_source or vindex.dim != self.dim or vindex.nrows < self.nrows:
            return self.rebuild(vindex)
        n = int(vindex.nrows)
        if n == self.nrows and vindex.count == self.size:
            return "current"  # rows are append-only: same rows and same count means nothing changed
        old = self.nrows
        present = np.asarray(vindex.present)
        gone = np.flatnonzero(self.indexed[:old] & ~present[:old])
        if np.any(present[:old] & ~self.indexed[:old]):  # an old row gained a vector: not expected
            return self.rebuild(vindex)
        added = old + np.flatnonzero(present[old:n])
        if self.removed + len(gone) > REBUILD_FRACTION * max(int(vindex.count), 1):
            return self.rebuild(vindex)
        assert self.index is not None
        if len(gone):
            self.index.remove(gone.astype(np.uint64))
        if len(added):
            self._add(vindex, added)
        indexed = np.zeros(n, dtype=np.bool_)
        indexed[:old] = self.indexed[:old]
        indexed[gone] = False
        indexed[added] = True
        self.nrows, self.indexed = n, indexed
        self.size += len(added) - len(gone)
        self.removed += len(gone)
        self.updates += 1
        return "updated"

    # -- searching ------------------------------------------------------------------------------
    def candidates(self, queries: np.ndarray, count: int) -> list[np.ndarray]:
        """Up to ``count`` candidate rows per query, nearest first (approximate)."""
        assert self.index is not None
        q = np.array(queries, dtype=np.float32, copy=True)
        if self.space == "cos":
            q /= np.linalg.norm(q, axis=1, keepdims=True)
        count = max(1, min(count, self.size))
        self.index.expansion_search = max(self.settings.ef, count)  # type: ignore[misc]
        found = self.index.search(q, count, threads=self.settings.threads)
        if not hasattr(found, "counts"):  # a single Matches
            return [np.asarray(found.keys, dtype=np.int64)]
        return [np.asarray(found.keys[i, : found.counts[i]], dtype=np.int64) for i in range(len(q))]

    def info(self) -> dict[str, Any]:
        """Size and maintenance counters (for tests, benchmarks and curious users)."""
        return {
            "space": self.space,
            "size": self.size,
            "nrows": self.nrows,
            "removed": self.removed,
            "builds": self.builds,
            "updates": self.updates,
            "connectivity": self.settings.connectivity,
            "ef": self.settings.ef,
            "memory_bytes": int(self.index.memory_usage) if self.index is not None else 0,
        }


# --- one set of mirrors per store ----------------------------------------------------------------

_MIRRORS: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], HnswMirror]] = weakref.WeakKeyDictionary()
_MIRRORS_LOCK = threading.Lock()


def mirrors_of(core: Any) -> dict[tuple[str, str], HnswMirror]:
    """The mirrors of one store core, by (vector field, space)."""
    with _MIRRORS_LOCK:
        return _MIRRORS.setdefault(core, {})


def mirror_for(core: Any, field: str, metric: str, settings: Settings) -> HnswMirror:
    """The mirror of ``field`` in ``metric``'s space (created empty on first use)."""
    mirrors = mirrors_of(core)
    key = (field, SPACES[metric])
    mirror = mirrors.get(key)
    if mirror is None or mirror.settings.build_key() != settings.build_key():
        mirror = mirrors[key] = HnswMirror(SPACES[metric], settings)
    else:
        mirror.settings = settings  # search-time settings (ef, threads, ...) apply at once
    return mirror


# --- answering a search --------------------------------------------------------------------------


def answer(
    core: Any, table: Any, request: SearchRequest, settings: Settings
) -> list[list[VectorSearchResult]] | None:
    """Answer ``request`` from the HNSW mirror, or ``None`` when the exact search is the better answer.

    Call it with the store's lock held and its table refreshed (``core.read_locked``). Declines
    for: an unknown field or a dimension mismatch (the built-in raises the proper error), fewer
    than ``hnsw_min_rows`` vectors, a ``k`` that asks for (nearly) every row, and a filter that
    keeps less than ``hnsw_min_selectivity`` of the rows (scoring those few rows exactly is
    cheaper and exact) or keeps too few of the candidates even after widening the search.
    """
    field = request.vector_field
    vindex = table.indexes.get(field)
    queries = request.queries
    if vindex is None or vindex.count == 0 or vindex.dim != queries.shape[1]:
        return None
    total = int(vindex.count)
    if total < settings.min_rows:
        return None
    mask = None
    matching = total
    if request.filter is not None:
        mask = table.mask(request.filter)[: vindex.nrows] & np.asarray(vindex.present)
        matching = int(np.count_nonzero(mask))
        if matching == 0 or matching < settings.min_selectivity * total:
            return None
    k = request.k
    want = min(k, matching)
    # Unfiltered: usearch's distances are exact float32 ones, so k candidates suffice. Filtered:
    # ask for enough candidates that about `want` survive the filter, with a margin.
    fetch = k if mask is None else math.ceil(1.5 * k * total / matching) + k
    if fetch >= total:
        return None
    mirror = mirror_for(core, field, request.metric, settings)
    mirror.sync(vindex)
    for _ in range(MAX_WIDENINGS + 1):
        cands = mirror.candidates(queries, fetch)
        if mask is not None:
            cands = [c[mask[c]] for c in cands]
        if all(len(c) >= want for c in cands):
            break
        fetch *= 4
        if fetch >= total:
            return None
    else:
        return None
    return [_exact_top(table, vindex, field, request.metric, q, c, want) for q, c in zip(queries, cands)]


def _exact_top(
    table: Any, vindex: Any, field: str, metric: str, query: np.ndarray, rows: np.ndarray, k: int
) -> list[VectorSearchResult]:
    """Score candidate rows exactly with the package's kernel and build the results."""
    mat = vindex.gather(rows)
    ids = table.ids_of(rows)  # row -> record id (for the kernel's tie-break by id)
    top = top_k(mat, squared_norms(mat), query[None, :], k, metric, rank_ids(ids))[0]
    best = rows[top.rows]
    return [
        _result(
            table,
            int(row),
            field,
            metric,
            float(top.scores[j]),
            None if top.distances is None else float(top.distances[j]),
        )
        for j, row in enumerate(best.tolist())
    ]


def _result(
    table: Any, row: int, field: str, metric: str, score: float, distance: float | None
) -> VectorSearchResult:
    """One hit, built as the built-in search builds it, plus an ``"index": "hnsw"`` marker."""
    record = table.record(row)
    info = (table.row_parts(row)[3] or {}).get(field, {})
    src = info.get("source_field")
    source_text = record.get_value(src) if src else None
    meta: dict[str, Any] = {"metric": metric, "index": "hnsw"}
    if distance is not None:
        meta["distance"] = distance
    return VectorSearchResult(
        record=record,
        score=score,
        source_text=source_text if isinstance(source_text, str) else None,
        vector_field=field,
        metadata=meta,
        distance=distance,
    )
