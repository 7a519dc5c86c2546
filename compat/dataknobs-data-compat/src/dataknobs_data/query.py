"""``dataknobs_data.query``: queries and filters (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import (
    Filter,
    Operator,
    Query,
    SortOrder,
    SortSpec,
    VectorQuery,
    coerce_operator,
    coerce_sort_order,
)

__all__ = [
    "Filter",
    "Operator",
    "Query",
    "SortOrder",
    "SortSpec",
    "VectorQuery",
    "coerce_operator",
    "coerce_sort_order",
]
