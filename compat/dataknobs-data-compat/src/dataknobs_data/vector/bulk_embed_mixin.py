"""``dataknobs_data.vector.bulk_embed_mixin``: the sync bulk-embed mixin (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import BulkEmbedMixin

__all__ = ["BulkEmbedMixin"]
