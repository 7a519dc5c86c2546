"""``dataknobs_data.testing``: test helpers (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins.testing import DeterministicEmbedder

__all__ = ["DeterministicEmbedder"]
