"""``dataknobs_data.records``: the record (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import Record

__all__ = ["Record"]
