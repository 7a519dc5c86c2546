"""``dataknobs_data.vector.exceptions``: vector errors (dk_vector_plugins's, under dataknobs-data's names)."""

from __future__ import annotations

from dk_vector_plugins import DimensionMismatchError as VectorDimensionError
from dk_vector_plugins import InvalidVectorError as VectorValidationError

__all__ = ["VectorDimensionError", "VectorValidationError"]
