"""``dataknobs_data.vector.migration``: incremental vectorization (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins.vector_sync import IncrementalVectorizer

__all__ = ["IncrementalVectorizer"]
