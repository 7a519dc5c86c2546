"""The worker side: a cache of loaded parts per Dask worker, and the search task.

A worker loads each part once (ids; the field's rows of the ``.npy`` -- memory-mapped for a file
store, one ranged GET on S3; row data only when a filter needs it) through a read-only
:class:`~dk_vector_plugins.storage.segments.SegmentReader`, and keeps it on the
``distributed.Worker`` object, keyed by store and segment name (segments are immutable). It
computes ``mask = live & filter`` with the core's compiled filter, runs the core's one search
kernel (:meth:`VectorIndex.search <dk_vector_plugins.index.VectorIndex.search>`, with the
request's ``exact`` option) and returns its local top-``k``. A part of a segment that stores the
int8 codes of its rows reads those of its row range on its first int8 search (as the
single-process store does), so the int8 scan quantizes nothing on the worker.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from ...index import VectorIndex
from ...kernel import TopK, rank_ids
from ...memtable import RecordTable, names_the_id, row_text
from ...quant import Int8Codes
from ...query import Expr
from ...storage.row_codec import RowParts
from ...storage.segments import SegmentReader, StoreSpec, VectorFieldInfo, open_reader
from ...textindex import (
    CorpusStats,
    PartStats,
    TextIndex,
    TextSettings,
    bm25_top,
    index_texts,
    part_stats,
)
from .merge import Hits, Shortlist, merge_hits, merge_shortlists
from .plan import ShardRange

__all__ = [
    "SegmentShard",
    "ShardAnswer",
    "WorkerCache",
    "cached_parts",
    "query_chunks",
    "search_shards",
    "text_search_shards",
    "text_stats_shards",
    "worker_cache",
]

FloatArray = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# A worker scores at least this many queries per kernel call and at most about _CHUNK_FLOATS
# scores at once (bounds a worker's memory for big batches). How a batch is split does not change
# any score: the kernel ranks by exact scores, which do not depend on the product's shape.
_MIN_CHUNK = 128
_CHUNK_FLOATS = 1 << 25
#: The embedders of the latest bulk embeds a worker keeps built.
_KEEP_EMBEDDERS = 4


def query_chunks(queries: FloatArray, nrows: int) -> list[FloatArray]:
    """Split a big batch so that one kernel call scores at most about ``_CHUNK_FLOATS`` values."""
    b = queries.shape[0]
    size = max(_MIN_CHUNK, _CHUNK_FLOATS // max(1, nrows))
    n = max(1, b // size)
    return [queries] if n == 1 else list(np.array_split(queries, n))


class SegmentShard:
    """A worker's loaded part of a segment: ids, vector indexes per field, rows for filters."""

    def __init__(self, reader: SegmentReader, shard: ShardRange) -> None:
        self.reader = reader
        self.segment = shard.segment
        self.start, self.stop = shard.start, shard.stop
        self.id_list = list(reader.ids(self.segment)[self.start : self.stop])
        self.ids = rank_ids(self.id_list)
        self.lock = threading.Lock()
        self._indexes: dict[str, VectorIndex | None] = {}
        self._texts: dict[tuple[str, str], TextIndex] = {}
        self._table: RecordTable | None = None

    def index(self, field: str) -> VectorIndex | None:
        """The part's vectors of ``field`` (loaded on first use), ``None`` when it has none."""
        with self.lock:
            if field not in self._indexes:
                self._indexes[field] = self._load_index(field)
            return self._indexes[field]

    def _load_index(self, field: str) -> VectorIndex | None:
        """The part's rows of ``field`` as one adopted block; where the segment stores their int8
        codes, the first int8 search reads those of the part's rows instead of quantizing them."""
        f = self.segment.field(field)
        if f is None or self.stop <= self.start:
            return None
        mat = self.reader.vectors(self.segment, f, self.start, self.stop)
        index = VectorIndex()
        codes = functools.partial(self._stored_codes, f) if f.has_codes else None
        index.append_block(mat, self.reader.presence(self.segment, f, self.start, self.stop), codes=codes)
        return index

    def _stored_codes(self, field: VectorFieldInfo) -> Int8Codes:
        """The int8 codes the segment stores of the part's rows of ``field`` (a slice of the
        segment's when the part is a range of it)."""
        codes = self.reader.codes(self.segment, field, self.start, self.stop)
        assert codes is not None, "called only for a field whose codes the segment stores"
        return codes

    def _load_rows(self) -> list[RowParts]:
        return self.reader.rows(self.segment, self.start, self.stop)

    def text_index(self, field: str, settings: TextSettings) -> TextIndex:
        """The part's full-text postings of ``field`` (read from the segment when it stores them,
        made by the same analyzer; else built from its rows), built once."""
        key = (field, settings.key)
        with self.lock:
            index = self._texts.get(key)
            if index is None:
                stored = self.reader.postings(self.segment, field)
                if stored is not None and stored.analyzer == settings.key:
                    n = self.stop - self.start
                    whole = self.start == 0 and n == stored.n
                    postings = stored if whole else stored.select(np.arange(self.start, self.stop), 0)
                else:
                    rids = self.id_list if names_the_id(field) else itertools.repeat(None)
                    texts = (
                        row_text(rid, data, meta, field) for rid, (data, meta, _) in zip(rids, self._load_rows())
                    )
                    postings = index_texts(texts, settings.analyzer.analyze, 0, settings.key)
                index = TextIndex()
                index.add(postings)
                self._texts[key] = index
            return index

    def live(self, dead: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """The part's live rows (all but ``dead``)."""
        live = np.ones(self.stop - self.start, dtype=np.bool_)
        live[dead] = False
        return live

    def text_stats(
        self, terms: Sequence[str], fields: Sequence[str], settings: TextSettings, dead: npt.NDArray[np.int64]
    ) -> PartStats:
        """The part's contribution to the corpus statistics of ``terms``."""
        return part_stats([self.text_index(f, settings) for f in fields], terms, self.live(dead))

    def text_search(
        self,
        terms: Sequence[Sequence[str]],
        fields: Sequence[str],
        settings: TextSettings,
        k: int,
        corpus: CorpusStats,
        expr: Expr | None,
        dead: npt.NDArray[np.int64],
    ) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
        """BM25's top-``k`` of this part per query, scored with the whole corpus's statistics
        (rows local to the part)."""
        live = self.live(dead)
        mask = None if expr is None else self._filter_mask(expr) & live
        indexes = [self.text_index(f, settings) for f in fields]
        return bm25_top(
            indexes, terms, live, mask, k, settings.k1, settings.b, self.ids_of, corpus=corpus
        )

    def ids_of(self, rows: npt.NDArray[np.int64]) -> list[str]:
        """The ids of the part's rows ``rows``."""
        return [self.id_list[r] for r in rows.tolist()]

    def _filter_mask(self, expr: Expr) -> npt.NDArray[np.bool_]:
        with self.lock:  # building filter columns mutates the table
            if self._table is None:
                table = RecordTable()
                loader = self._load_rows if self.segment.has_rows else None
                table.load_segment(self.id_list, len(self.id_list), [], {}, loader, fresh=True)
                self._table = table
            return self._table.mask(expr)

    def search(
        self,
        queries: FloatArray,
        k: int,
        metric: str,
        field: str,
        expr: Expr | None,
        dead: npt.NDArray[np.int64],
        exact: str = "auto",
    ) -> list[TopK]:
        """The kernel's top-``k`` of this part per query (rows local to the part); ``exact``:
        which scan shortlists the rows (see :func:`~dk_vector_plugins.kernel.choose_exact`)."""
        index = self.index(field)
        if index is None or index.count == 0:
            return [TopK(np.empty(0, np.int64), np.empty(0, np.float64), None) for _ in range(len(queries))]
        mask = None if expr is None else self._filter_mask(expr)
        if len(dead):
            if mask is None:
                mask = np.ones(self.stop - self.start, dtype=np.bool_)
            mask[dead] = False
        out: list[TopK] = []
        for chunk in query_chunks(queries, self.stop - self.start):
            out.extend(index.search(chunk, k, metric, self.ids, mask, exact=exact))
        return out


@attrs.frozen
class ShardAnswer:
    """A worker's answer to a vector search task.

    :ivar hits: per query, the merged top-``k`` of the worker's parts (table rows, best first).
    :ivar shortlists: per query, how the kernel's exact ranking went over those parts (``None``:
        no part ranked a row).
    """

    hits: list[Hits]
    shortlists: list[Shortlist | None]


class WorkerCache:
    """What one worker keeps between tasks: segment readers, loaded parts (immutable), embedders."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readers: dict[tuple[str, ...], SegmentReader] = {}
        self.parts: dict[tuple[Any, ...], SegmentShard] = {}
        self.loading: dict[tuple[Any, ...], threading.Lock] = {}
        self.stats = {"parts_loaded": 0, "searches": 0}
        self.embedders: dict[str, Any] = {}

    def reader(self, spec: StoreSpec) -> SegmentReader:
        """The reader of a store (opened on first use)."""
        with self.lock:
            reader = self.readers.get(spec.key)
            if reader is None:
                reader = self.readers[spec.key] = open_reader(spec)
            return reader

    def part(self, spec: StoreSpec, shard: ShardRange) -> SegmentShard:
        """The loaded part ``shard`` names (loaded once, even with several threads per worker)."""
        key = (spec.key, shard.segment.name, shard.start, shard.stop)
        with self.lock:
            part = self.parts.get(key)
            if part is not None:
                return part
            loading = self.loading.setdefault(key, threading.Lock())
        with loading:
            with self.lock:
                part = self.parts.get(key)
            if part is None:
                part = SegmentShard(self.reader(spec), shard)
                with self.lock:
                    self.parts[key] = part
                    self.loading.pop(key, None)
                    self.stats["parts_loaded"] += 1
        return part

    def evict(self, store: tuple[str, ...], live: frozenset[str]) -> None:
        """Forget parts of ``store``'s segments that its current version no longer names."""
        with self.lock:
            for key in [k for k in self.parts if k[0] == store and k[1] not in live]:
                del self.parts[key]

    def embedder(self, token: str, build: Any) -> Any:
        """The embedder ``token`` names, built by ``build()`` on first use."""
        with self.lock:
            emb = self.embedders.get(token)
            if emb is None:
                emb = self.embedders[token] = build()
                while len(self.embedders) > _KEEP_EMBEDDERS:
                    self.embedders.pop(next(iter(self.embedders)))
            return emb


_LOCAL_CACHE_LOCK = threading.Lock()
_LOCAL_HOLDER = type("_LocalHolder", (), {})()


def worker_cache() -> WorkerCache:
    """The cache of the current Dask worker (an in-process fallback outside a worker)."""
    try:
        from distributed import get_worker

        holder: Any = get_worker()
    except (ImportError, ValueError):
        holder = _LOCAL_HOLDER
    cache: WorkerCache | None = getattr(holder, "_dkv_cache", None)
    if cache is None:
        with _LOCAL_CACHE_LOCK:
            cache = getattr(holder, "_dkv_cache", None)
            if cache is None:
                cache = WorkerCache()
                holder._dkv_cache = cache
    return cache


def cached_parts(dask_worker: Any = None) -> dict[str, Any]:
    """What a worker holds (``client.run(cached_parts)``): its parts per store, and counters."""
    cache: WorkerCache = getattr(dask_worker, "_dkv_cache", None) or worker_cache()
    with cache.lock:
        return {"parts": sorted(cache.parts), "stats": dict(cache.stats)}


def search_shards(
    spec: StoreSpec,
    live_segments: frozenset[str],
    shards: Sequence[ShardRange],
    queries: FloatArray,
    k: int,
    metric: str,
    field: str,
    expr: Expr | None,
    exact: str = "auto",
) -> ShardAnswer:
    """The worker task: the merged top-``k`` of ``shards`` for each query (table rows, best first),
    each part searched with the scan ``exact`` asks for (``"auto"``: the kernel's choice for the
    part), and per query how their exact ranking went."""
    scans: list[list[Shortlist]] = [[] for _ in range(len(queries))]

    def search(part: SegmentShard, shard: ShardRange) -> list[tuple[IntArray, F64Array, F64Array | None]]:
        tops = part.search(queries, k, metric, field, expr, shard.dead, exact)
        for qi, top in enumerate(tops):
            if top.reranked is not None and top.exact is not None:
                scans[qi].append(Shortlist(top.reranked, top.exact))
        return [(t.rows, t.scores, t.distances) for t in tops]

    hits = _merged(spec, live_segments, shards, len(queries), k, metric, search)
    return ShardAnswer(hits, [merge_shortlists(s) for s in scans])


def _merged(
    spec: StoreSpec,
    live_segments: frozenset[str],
    shards: Sequence[ShardRange],
    b: int,
    k: int,
    order: str,
    search: Callable[[SegmentShard, ShardRange], list[tuple[IntArray, F64Array, F64Array | None]]],
) -> list[Hits]:
    """Run ``search`` (part, shard) -> per query (rows, scores, distances) on each of ``shards``
    (loaded once on this worker) and merge the parts' hits per query in the kernel's ``order``."""
    cache = worker_cache()
    cache.evict(spec.key, live_segments)
    per_query: list[list[Hits]] = [[] for _ in range(b)]
    for shard in shards:
        part = cache.part(spec, shard)
        for qi, (rows, scores, dists) in enumerate(search(part, shard)):
            if len(rows):
                per_query[qi].append((rows + shard.base, scores, dists, part.ids_of(rows)))
    cache.stats["searches"] += 1
    return [merge_hits(lists, k, order) for lists in per_query]


def text_stats_shards(
    spec: StoreSpec,
    live_segments: frozenset[str],
    shards: Sequence[ShardRange],
    terms: Sequence[str],
    fields: Sequence[str],
    settings: TextSettings,
) -> list[PartStats]:
    """The worker task of a text search's first round: each part's corpus statistics of ``terms``."""
    cache = worker_cache()
    cache.evict(spec.key, live_segments)
    return [cache.part(spec, shard).text_stats(terms, fields, settings, shard.dead) for shard in shards]


def text_search_shards(
    spec: StoreSpec,
    live_segments: frozenset[str],
    shards: Sequence[ShardRange],
    terms: Sequence[Sequence[str]],
    fields: Sequence[str],
    settings: TextSettings,
    k: int,
    corpus: CorpusStats,
    expr: Expr | None,
) -> list[Hits]:
    """The worker task of a text search's second round: the merged BM25 top-``k`` of ``shards``
    for each query (table rows, best first, ties by id), scored with the corpus's statistics."""
    return _merged(
        spec,
        live_segments,
        shards,
        len(terms),
        k,
        "bm25",
        lambda part, shard: [
            (rows, scores, None)
            for rows, scores in part.text_search(terms, fields, settings, k, corpus, expr, shard.dead)
        ],
    )
