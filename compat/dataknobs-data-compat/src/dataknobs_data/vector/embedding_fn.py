"""``dataknobs_data.vector.embedding_fn``: calling an embedding function of any shape (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins.embedding_fn import call_embedding_fn, call_embedding_fn_batch

__all__ = ["call_embedding_fn", "call_embedding_fn_batch"]
