"""``dataknobs_data.fields``: fields (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import Field, FieldType, VectorField

__all__ = ["Field", "FieldType", "VectorField"]
