"""``dataknobs_data.vector``: vector types, helpers and errors (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import DimensionMismatchError as VectorDimensionError
from dk_vector_plugins import (
    DistanceMetric,
    FusionStrategy,
    HybridSearchConfig,
    HybridSearchResult,
    VectorField,
    VectorSearchResult,
)
from dk_vector_plugins import InvalidVectorError as VectorValidationError
from dk_vector_plugins.embedding_fn import call_embedding_fn, call_embedding_fn_batch
from dk_vector_plugins.vector_ops import (
    VectorConfig,
    VectorIndexConfig,
    VectorMetadata,
    batch_compute_distances,
    compute_distance,
    compute_similarity,
    normalize_vector,
    validate_vector_dimensions,
)
from dk_vector_plugins.vector_sync import IncrementalVectorizer, VectorTextSynchronizer

__all__ = [
    "DistanceMetric",
    "FusionStrategy",
    "HybridSearchConfig",
    "HybridSearchResult",
    "IncrementalVectorizer",
    "VectorConfig",
    "VectorDimensionError",
    "VectorField",
    "VectorIndexConfig",
    "VectorMetadata",
    "VectorSearchResult",
    "VectorTextSynchronizer",
    "VectorValidationError",
    "batch_compute_distances",
    "call_embedding_fn",
    "call_embedding_fn_batch",
    "compute_distance",
    "compute_similarity",
    "normalize_vector",
    "validate_vector_dimensions",
]
