"""``dataknobs_data.streaming``: streaming configuration and results (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import ConflictPolicy, StreamConfig, StreamResult
from dk_vector_plugins.streaming import resolve_conflict_write

__all__ = ["ConflictPolicy", "StreamConfig", "StreamResult", "resolve_conflict_write"]
