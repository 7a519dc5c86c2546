"""``dataknobs_data.vector.sync``: keeping vectors in step with their text (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins.vector_sync import VectorTextSynchronizer

__all__ = ["VectorTextSynchronizer"]
