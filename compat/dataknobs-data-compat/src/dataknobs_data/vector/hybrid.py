"""``dataknobs_data.vector.hybrid``: hybrid search types and fusion (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import FusionStrategy, HybridSearchConfig, HybridSearchResult
from dk_vector_plugins.search import reciprocal_rank_fusion, weighted_score_fusion

__all__ = [
    "FusionStrategy",
    "HybridSearchConfig",
    "HybridSearchResult",
    "reciprocal_rank_fusion",
    "weighted_score_fusion",
]
