"""Building the vector-search request (validated once, then handed to the ``dkv_vector_search`` hooks)
and the score threshold every answer applies."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidRequestError, InvalidVectorError
from .kernel import EXACT_MODES
from .query import compile_filter
from .types import SearchRequest, VectorSearchResult
from .vectors import as_vector, as_vector_batch, normalize_metric

__all__ = ["apply_threshold", "build_search_request"]

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
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidRequestError(f"k must be an int, got {type(k).__name__} {k!r}")
    if k <= 0:
        raise InvalidRequestError(f"k must be > 0, got {k}")
    k = min(int(k), MAX_K)  # more than any store holds: as many results as there are
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


def apply_threshold(
    results: list[list[VectorSearchResult]], request: SearchRequest
) -> list[list[VectorSearchResult]]:
    """Drop hits below the request's ``score_threshold`` option (when it has one).

    The built-in search applies it; a plugin that answers searches itself calls this too.
    """
    thr = request.options.get("score_threshold")
    if thr is None:
        return results
    return [[h for h in hits if h.score >= thr] for hits in results]
