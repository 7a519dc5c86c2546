"""``dataknobs_data.vector.operations``: vector helpers (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins.vector_ops import (
    batch_compute_distances,
    compute_distance,
    compute_similarity,
    normalize_vector,
    validate_vector_dimensions,
)

__all__ = [
    "batch_compute_distances",
    "compute_distance",
    "compute_similarity",
    "normalize_vector",
    "validate_vector_dimensions",
]
