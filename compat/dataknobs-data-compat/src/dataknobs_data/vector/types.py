"""``dataknobs_data.vector.types``: vector types (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import DistanceMetric, VectorSearchResult
from dk_vector_plugins.vector_ops import VectorConfig, VectorIndexConfig, VectorMetadata

__all__ = ["DistanceMetric", "VectorConfig", "VectorIndexConfig", "VectorMetadata", "VectorSearchResult"]
