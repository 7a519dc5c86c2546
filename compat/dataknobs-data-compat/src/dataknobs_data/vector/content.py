"""``dataknobs_data.vector.content``: content-hash helpers (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins.content import (
    CONTENT_HASH_KEY,
    FIELD_SEPARATOR_KEY,
    SOURCE_FIELDS_KEY,
    compute_content_hash,
)

__all__ = ["CONTENT_HASH_KEY", "FIELD_SEPARATOR_KEY", "SOURCE_FIELDS_KEY", "compute_content_hash"]
