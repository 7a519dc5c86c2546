"""Vector helpers and configuration records under dataknobs-data 0.11's names
(``dataknobs_data.vector``: ``VectorConfig``, ``VectorIndexConfig``, ``VectorMetadata``,
``normalize_vector``, ``compute_distance``, ``compute_similarity``,
``batch_compute_distances``, ``validate_vector_dimensions``).

They compute what dataknobs-data's do (same definitions of distance and similarity per metric,
same messages), on numpy. A store's own search does not use them: it ranks exactly with its
kernel. ``VectorIndexConfig.get_optimal_params`` reports what dataknobs-data would choose; every
search of ours is exact, so nothing here builds an index.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt

from .query import DistanceMetric

__all__ = [
    "VectorConfig",
    "VectorIndexConfig",
    "VectorMetadata",
    "batch_compute_distances",
    "compute_distance",
    "compute_similarity",
    "normalize_vector",
    "validate_vector_dimensions",
]

#: The largest dimension :meth:`VectorConfig.validate` accepts (dataknobs-data's limit).
MAX_DIMENSIONS = 65536


def _metric(metric: DistanceMetric | str) -> DistanceMetric:
    """``metric`` as a :class:`DistanceMetric` (a member, its value or an alias)."""
    if isinstance(metric, DistanceMetric):
        return metric
    name = str(metric).lower()
    for member in DistanceMetric:
        if name == member.value or name in member.get_aliases():
            return member
    raise ValueError(f"Unknown distance metric: {metric}")


def _kind(metric: DistanceMetric | str) -> str:
    """The family of ``metric``: ``cosine``, ``euclidean``, ``dot`` or ``l1``."""
    m = _metric(metric)
    if m is DistanceMetric.COSINE:
        return "cosine"
    if m in (DistanceMetric.EUCLIDEAN, DistanceMetric.L2):
        return "euclidean"
    if m in (DistanceMetric.DOT_PRODUCT, DistanceMetric.INNER_PRODUCT):
        return "dot"
    return "l1"


def normalize_vector(vector: npt.ArrayLike) -> npt.NDArray[Any]:
    """``vector`` scaled to unit length (a zero vector is returned unchanged)."""
    arr = np.asarray(vector)
    norm = float(np.linalg.norm(arr))
    return arr if norm == 0 else arr / norm


def compute_distance(vec1: npt.ArrayLike, vec2: npt.ArrayLike, metric: DistanceMetric | str) -> float:
    """The distance between two vectors (smaller is closer): ``1 - cosine``, Euclidean, the
    negated dot product, or L1. Cosine with a zero vector is ``1.0``."""
    a, b = np.asarray(vec1, dtype=np.float64), np.asarray(vec2, dtype=np.float64)
    kind = _kind(metric)
    if kind == "cosine":
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        return 1.0 if na == 0 or nb == 0 else float(1.0 - np.dot(a, b) / (na * nb))
    if kind == "euclidean":
        return float(np.linalg.norm(a - b))
    if kind == "dot":
        return float(-np.dot(a, b))
    return float(np.sum(np.abs(a - b)))


def compute_similarity(vec1: npt.ArrayLike, vec2: npt.ArrayLike, metric: DistanceMetric | str) -> float:
    """The similarity of two vectors (larger is closer): cosine, ``1 / (1 + distance)`` for
    Euclidean and L1, the dot product. Cosine with a zero vector is ``0.0``."""
    a, b = np.asarray(vec1, dtype=np.float64), np.asarray(vec2, dtype=np.float64)
    kind = _kind(metric)
    if kind == "cosine":
        na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
        return 0.0 if na == 0 or nb == 0 else float(np.dot(a, b) / (na * nb))
    if kind == "dot":
        return float(np.dot(a, b))
    return 1.0 / (1.0 + compute_distance(a, b, metric))


def batch_compute_distances(
    query_vector: npt.ArrayLike, vectors: npt.ArrayLike, metric: DistanceMetric | str
) -> npt.NDArray[np.float64]:
    """:func:`compute_distance` from ``query_vector`` to each row of ``vectors``."""
    q = np.asarray(query_vector, dtype=np.float64)
    m = np.asarray(vectors, dtype=np.float64)
    if m.ndim == 1:
        m = m.reshape(1, -1)
    kind = _kind(metric)
    if kind == "cosine":
        norms = np.linalg.norm(m, axis=1) * float(np.linalg.norm(q))
        sims = np.zeros(len(m))
        ok = norms != 0
        sims[ok] = (m[ok] @ q) / norms[ok]
        return 1.0 - sims
    if kind == "euclidean":
        return np.asarray(np.linalg.norm(m - q, axis=1), dtype=np.float64)
    if kind == "dot":
        return np.asarray(-(m @ q), dtype=np.float64)
    return np.asarray(np.sum(np.abs(m - q), axis=1), dtype=np.float64)


def validate_vector_dimensions(
    vector: npt.ArrayLike, expected_dims: int, field_name: str | None = None
) -> npt.NDArray[Any]:
    """``vector`` as an array (a list becomes float32), checked to have ``expected_dims``
    components (the last axis of a matrix); ``ValueError`` ("dimension mismatch") otherwise."""
    arr = np.asarray(vector, dtype=np.float32) if isinstance(vector, list) else np.asarray(vector)
    actual = arr.shape[-1] if arr.ndim >= 1 else 0
    if actual != expected_dims:
        where = f" for field '{field_name}'" if field_name else ""
        raise ValueError(f"Vector dimension mismatch{where}: expected {expected_dims}, got {actual}")
    return arr


@dataclasses.dataclass
class VectorConfig:
    """Settings of a vector field, as dataknobs-data describes them."""

    dimensions: int
    metric: DistanceMetric = DistanceMetric.COSINE
    normalize: bool = False
    source_field: str | None = None
    model_name: str | None = None
    model_version: str | None = None

    def validate(self) -> None:
        """``ValueError`` unless ``0 < dimensions <= 65536``."""
        if self.dimensions <= 0:
            raise ValueError(f"Dimensions must be positive, got {self.dimensions}")
        if self.dimensions > MAX_DIMENSIONS:
            raise ValueError(f"Dimensions {self.dimensions} exceeds maximum supported ({MAX_DIMENSIONS})")


@dataclasses.dataclass
class VectorIndexConfig:
    """Index settings as dataknobs-data takes them (``auto``, ``flat``, ``ivfflat``, ``hnsw``).

    Accepted for compatibility: every search of dk_vector_plugins is exact and builds no index.
    """

    index_type: str = "auto"
    lists: int | None = None
    m: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None
    probes: int | None = None
    quantization: str | None = None

    def get_optimal_params(self, num_vectors: int) -> dict[str, Any]:
        """The index parameters dataknobs-data would choose for ``num_vectors`` vectors."""
        params: dict[str, Any] = {}
        kind = self.index_type
        if kind == "auto":
            kind = "flat" if num_vectors < 10_000 else "ivfflat" if num_vectors < 1_000_000 else "hnsw"
        params["type"] = kind
        if kind == "ivfflat":
            default_lists = max(num_vectors // 1000, 100) if self.index_type == "auto" else 100
            params["lists"] = self.lists or default_lists
            params["probes"] = self.probes or 10
        elif kind == "hnsw":
            params["m"] = self.m or 16
            params["ef_construction"] = self.ef_construction or 200
            params["ef_search"] = self.ef_search or 64
        if self.quantization:
            params["quantization"] = self.quantization
        return params


@dataclasses.dataclass
class VectorMetadata:
    """What describes a vector field: dimensions, source, model, times, index and metric."""

    dimensions: int
    source_field: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    index_type: str | None = None
    metric: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A dict in dataknobs-data's layout (the model as ``{"name", "version"}`` or ``None``)."""
        return {
            "dimensions": self.dimensions,
            "source_field": self.source_field,
            "model": {"name": self.model_name, "version": self.model_version} if self.model_name else None,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "index_type": self.index_type,
            "metric": self.metric,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VectorMetadata:
        """The inverse of :meth:`to_dict`."""
        model = data.get("model") or {}
        return cls(
            dimensions=data["dimensions"],
            source_field=data.get("source_field"),
            model_name=model.get("name"),
            model_version=model.get("version"),
            created_at=data.get("created_at"),
            updated_at=data.get("updated_at"),
            index_type=data.get("index_type"),
            metric=data.get("metric"),
        )
