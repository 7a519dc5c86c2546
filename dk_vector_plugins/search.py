"""The vector-search request: built and validated once, then handed to the ``dkv_vector_search`` hooks."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from .engine import as_vector, as_vector_batch, normalize_metric
from .errors import ConfigError, InvalidRequestError, InvalidVectorError
from .query import Expr, compile_filter

__all__ = ["SearchRequest", "apply_threshold", "build_search_request"]

_OPTIONS = {"score_threshold", "include_source"}


@attrs.frozen
class SearchRequest:
    """A validated vector search.

    :ivar queries: float32 array of shape ``(b, d)``: one row per query vector.
    :ivar vector_field: the vector field to search.
    :ivar k: how many results per query (> 0; more than the store holds is fine).
    :ivar filter: the compiled filter expression, or ``None``.
    :ivar metric: ``"cosine"``, ``"euclidean"`` or ``"dot_product"``.
    :ivar batch: whether the caller expects one result list per query.
    :ivar options: extra options (``score_threshold``; plugin-specific keys).
    """

    queries: npt.NDArray[np.float32]
    vector_field: str = "embedding"
    k: int = 10
    filter: Expr | None = None
    metric: str = "cosine"
    batch: bool = False
    options: dict[str, Any] = attrs.field(factory=dict)

    @property
    def query(self) -> npt.NDArray[np.float32]:
        """The first (for a single search, the only) query vector."""
        q: npt.NDArray[np.float32] = self.queries[0]
        return q


def build_search_request(
    query_vector: Any,
    *,
    vector_field: str,
    k: Any,
    filter: Any,
    metric: Any,
    default_metric: str,
    dimension: int | None,
    vector_enabled: bool,
    batch: bool | None,
    options: dict[str, Any],
) -> SearchRequest:
    """Validate the arguments of ``vector_search`` and return the request (nothing is searched)."""
    if not vector_enabled:
        raise ConfigError("vector search is disabled on this store: create it with vector_enabled=True")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidRequestError(f"k must be an int, got {type(k).__name__} {k!r}")
    if k <= 0:
        raise InvalidRequestError(f"k must be > 0, got {k}")
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
        k=int(k),
        filter=compile_filter(filter),
        metric=metric_name,
        batch=bool(batch),
        options={k2: v for k2, v in options.items() if v is not None},
    )


def apply_threshold(results: list[list[Any]], request: SearchRequest) -> list[list[Any]]:
    """Drop hits below the request's ``score_threshold`` option (when it has one)."""
    thr = request.options.get("score_threshold")
    if thr is None:
        return results
    return [[h for h in hits if h.score >= thr] for hits in results]
