"""``dataknobs_data.query_logic``: boolean query logic (dk_vector_plugins's)."""

from __future__ import annotations

from dk_vector_plugins import ComplexQuery, FilterCondition, LogicCondition, LogicOperator, QueryBuilder
from dk_vector_plugins.query_logic import Condition, condition_from_dict

__all__ = [
    "ComplexQuery",
    "Condition",
    "FilterCondition",
    "LogicCondition",
    "LogicOperator",
    "QueryBuilder",
    "condition_from_dict",
]
