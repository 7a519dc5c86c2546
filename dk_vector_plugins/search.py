"""Building the search requests (validated once, then handed to the ``dkv_vector_search`` and
``dkv_text_search`` hooks), the score threshold every answer applies, and the fusion of a hybrid
search's two rankings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from .errors import InvalidRequestError, InvalidVectorError
from .kernel import EXACT_MODES
from .query import compile_filter
from .records import Record
from .types import (
    FusionStrategy,
    HybridSearchConfig,
    HybridSearchResult,
    SearchRequest,
    TextSearchRequest,
    TextSearchResult,
    VectorSearchResult,
)
from .vectors import as_vector, as_vector_batch, normalize_metric

__all__ = [
    "apply_threshold",
    "build_search_request",
    "build_text_request",
    "Fused",
    "fuse",
    "fuse_ranked",
    "hybrid_fetch_k",
    "hybrid_results",
    "reciprocal_rank_fusion",
    "weighted_score_fusion",
]

_OPTIONS = {"score_threshold", "include_source", "exact"}

#: A larger ``k`` is answered as this one: no store holds more rows (the kernel works in int64).
MAX_K = 2**40


def build_search_request(
    query_vector: Any,
    *,
    vector_field: str,
    k: Any,
    filter: Any,
    metric: Any,
    default_metric: str,
    dimension: int | None,
    batch: bool | None,
    options: dict[str, Any],
) -> SearchRequest:
    """Validate the arguments of ``vector_search`` and return the request (nothing is searched)."""
    k = _check_k(k)  # more than any store holds: as many results as there are
    if not isinstance(vector_field, str) or not vector_field:
        raise InvalidRequestError(f"vector_field must be a non-empty string, got {vector_field!r}")
    unknown = set(options) - _OPTIONS
    if unknown:
        raise InvalidRequestError(
            f"unknown vector_search option(s) {', '.join(sorted(unknown))}; accepted: {', '.join(sorted(_OPTIONS))}"
        )
    thr = options.get("score_threshold")
    if thr is not None and (isinstance(thr, bool) or not isinstance(thr, (int, float))):
        raise InvalidRequestError(f"score_threshold must be a number, got {thr!r}")
    exact = options.get("exact")
    if exact is not None and exact not in EXACT_MODES:
        raise InvalidRequestError(f"exact must be one of {', '.join(EXACT_MODES)}, got {exact!r}")
    metric_name = normalize_metric(default_metric if metric is None else metric)
    arr = (
        query_vector.value
        if hasattr(query_vector, "value") and not isinstance(query_vector, np.ndarray)
        else query_vector
    )
    if batch is None:
        batch = isinstance(arr, np.ndarray) and arr.ndim == 2
    if batch:
        queries = as_vector_batch(arr, dimension, what="query vectors")
        if queries.shape[0] == 0:
            raise InvalidVectorError("query vectors are empty: give at least one query")
    else:
        queries = as_vector(arr, dimension, what="query vector")[None, :]
    if metric_name == "cosine" and not np.any(queries, axis=1).all():
        raise InvalidVectorError("a zero query vector has no direction; cosine similarity is undefined")
    return SearchRequest(
        queries=queries,
        vector_field=vector_field,
        k=k,
        filter=compile_filter(filter),
        metric=metric_name,
        batch=bool(batch),
        options={k2: v for k2, v in options.items() if v is not None},
    )


class _Scored(Protocol):
    @property
    def score(self) -> float: ...


H = TypeVar("H", bound=_Scored)


def apply_threshold(results: list[list[H]], request: SearchRequest | TextSearchRequest) -> list[list[H]]:
    """Drop hits below the request's ``score_threshold`` option (when it has one).

    The built-in search applies it; a plugin that answers searches itself calls this too.
    """
    thr = request.options.get("score_threshold")
    if thr is None:
        return results
    return [[h for h in hits if h.score >= thr] for hits in results]


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidRequestError(f"k must be an int, got {type(k).__name__} {k!r}")
    if k <= 0:
        raise InvalidRequestError(f"k must be > 0, got {k}")
    return min(int(k), MAX_K)


def text_field_names(text_fields: Any) -> tuple[str, ...] | None:
    """A ``text_fields`` argument as a tuple of names (``None``: the store's default)."""
    if text_fields is None:
        return None
    names = (text_fields,) if isinstance(text_fields, str) else text_fields
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(f, str) and f for f in names):
        raise InvalidRequestError(f"text_fields must be a field name or a non-empty list of them, got {text_fields!r}")
    return tuple(dict.fromkeys(names))


def build_text_request(
    query_text: Any,
    *,
    text_fields: tuple[str, ...],
    k: Any,
    filter: Any,
    batch: bool,
    options: dict[str, Any],
    analyze: Callable[[str], list[str]],
) -> TextSearchRequest:
    """Validate the arguments of ``text_search`` and return the request (nothing is searched).

    An empty or blank query text is refused; a text without terms (only stop words or
    punctuation) is a valid query that matches nothing.
    """
    k = _check_k(k)
    unknown = set(options) - {"score_threshold"}
    if unknown:
        raise InvalidRequestError(
            f"unknown text_search option(s) {', '.join(sorted(unknown))}; accepted: score_threshold"
        )
    thr = options.get("score_threshold")
    if thr is not None and (isinstance(thr, bool) or not isinstance(thr, (int, float))):
        raise InvalidRequestError(f"score_threshold must be a number, got {thr!r}")
    texts: Sequence[Any] = query_text if batch else [query_text]
    if batch and (not isinstance(query_text, (list, tuple)) or not query_text):
        raise InvalidRequestError(f"query texts must be a non-empty list of strings, got {query_text!r}")
    for q in texts:
        if not isinstance(q, str):
            raise InvalidRequestError(f"a text query must be a string, got {type(q).__name__} {q!r}")
        if not q.strip():
            raise InvalidRequestError(f"a text query must not be empty, got {q!r}")
    return TextSearchRequest(
        queries=tuple(texts),
        terms=tuple(tuple(analyze(q)) for q in texts),
        text_fields=text_fields,
        k=k,
        filter=compile_filter(filter),
        batch=batch,
        options={k2: v for k2, v in options.items() if v is not None},
    )


def hybrid_fetch_k(k: int) -> int:
    """How many results each side of a hybrid search ranks before fusion keeps ``k``
    (dataknobs-data's ``min(3k, 100)``, and never fewer than ``k``)."""
    return max(k, min(3 * k, 100))


def reciprocal_rank_fusion(
    text_results: Sequence[tuple[str, float]],
    vector_results: Sequence[tuple[str, float]],
    k: int = 60,
    text_weight: float = 1.0,
    vector_weight: float = 1.0,
) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of two rankings of ``(id, score)`` (each best first):
    ``sum(weight / (k + rank))`` over the rankings an id is in; best first (dataknobs-data's
    function of the same name and result)."""
    scores: dict[str, float] = {}
    for weight, ranking in ((text_weight, text_results), (vector_weight, vector_results)):
        for rank, (rid, _) in enumerate(ranking, start=1):
            scores[rid] = scores.get(rid, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda kv: kv[1], reverse=True)


def _minmax(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi == lo:
        return dict.fromkeys(scores, 1.0)
    return {rid: (v - lo) / (hi - lo) for rid, v in scores.items()}


def weighted_score_fusion(
    text_results: Sequence[tuple[str, float]],
    vector_results: Sequence[tuple[str, float]],
    text_weight: float = 0.5,
    vector_weight: float = 0.5,
    normalize_scores: bool = True,
) -> list[tuple[str, float]]:
    """Weighted sum of two rankings' scores (each min-max normalized to [0, 1] first, unless
    ``normalize_scores=False``); an id one side did not rank counts 0 there; best first
    (dataknobs-data's function of the same name and result)."""
    text_scores, vector_scores = dict(text_results), dict(vector_results)
    if normalize_scores:
        text_scores, vector_scores = _minmax(text_scores), _minmax(vector_scores)
    combined = {
        rid: text_weight * text_scores.get(rid, 0.0) + vector_weight * vector_scores.get(rid, 0.0)
        for rid in {**text_scores, **vector_scores}
    }
    return sorted(combined.items(), key=lambda kv: kv[1], reverse=True)


#: One fused hit: id, combined score, text score, vector score, text rank, vector rank (the
#: scores and ranks ``None`` on the side that did not rank it).
Fused = tuple[str, float, float | None, float | None, int | None, int | None]


def fuse_ranked(
    text: Sequence[tuple[str, float]],
    vector: Sequence[tuple[str, float]],
    config: HybridSearchConfig,
    k: int,
) -> list[Fused]:
    """Fuse a text and a vector ranking of ``(id, score)`` (each best first) into the top ``k``
    (ties by id).

    RRF (and ``NATIVE``, which is RRF over both rankings of one snapshot here):
    :func:`reciprocal_rank_fusion` with the config's weights and ``rrf_k``. ``WEIGHTED_SUM``:
    :func:`weighted_score_fusion` with the normalized weights.
    """
    text_scores: dict[str, float] = {}
    vector_scores: dict[str, float] = {}
    for rid, score in text:
        text_scores.setdefault(rid, score)
    for rid, score in vector:
        vector_scores.setdefault(rid, score)
    text_rank = {rid: i + 1 for i, rid in enumerate(text_scores)}
    vector_rank = {rid: i + 1 for i, rid in enumerate(vector_scores)}
    pairs_t, pairs_v = list(text_scores.items()), list(vector_scores.items())
    if config.fusion_strategy is FusionStrategy.WEIGHTED_SUM:
        tw, vw = config.normalize_weights()
        combined = dict(weighted_score_fusion(pairs_t, pairs_v, tw, vw))
    else:
        combined = dict(
            reciprocal_rank_fusion(pairs_t, pairs_v, config.rrf_k, config.text_weight, config.vector_weight)
        )
    best = sorted(combined, key=lambda rid: (-combined[rid], rid))[:k]
    return [
        (rid, combined[rid], text_scores.get(rid), vector_scores.get(rid), text_rank.get(rid), vector_rank.get(rid))
        for rid in best
    ]


def hybrid_results(
    fused: Sequence[Fused], records: Sequence[Record], config: HybridSearchConfig
) -> list[HybridSearchResult]:
    """The results of :func:`fuse_ranked`'s hits, given their records (in the same order)."""
    meta = {
        "fusion_strategy": config.fusion_strategy.value,
        "text_weight": config.text_weight,
        "vector_weight": config.vector_weight,
    }
    return [
        HybridSearchResult(
            record=rec,
            combined_score=combined,
            text_score=ts,
            vector_score=vs,
            text_rank=tr,
            vector_rank=vr,
            metadata=dict(meta),
        )
        for (_, combined, ts, vs, tr, vr), rec in zip(fused, records)
    ]


def fuse(
    text: Sequence[TextSearchResult],
    vector: Sequence[VectorSearchResult],
    config: HybridSearchConfig,
    k: int,
) -> list[HybridSearchResult]:
    """Fuse text and vector search results (each best first) into the top ``k`` hybrid results
    (:func:`fuse_ranked` over their ids and scores)."""
    records: dict[str, Record] = {}
    for hit in text:
        records.setdefault(str(hit.record.id), hit.record)
    for vhit in vector:
        records.setdefault(str(vhit.record.id), vhit.record)
    fused = fuse_ranked(
        [(str(t.record.id), t.score) for t in text], [(str(v.record.id), v.score) for v in vector], config, k
    )
    return hybrid_results(fused, [records[f[0]] for f in fused], config)
