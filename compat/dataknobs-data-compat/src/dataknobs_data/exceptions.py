"""``dataknobs_data.exceptions``: errors (dk_vector_plugins's, under dataknobs-data's names)."""

from __future__ import annotations

from dk_vector_plugins import ConfigError as ConfigurationError
from dk_vector_plugins import DkvError as DataknobsDataError
from dk_vector_plugins import DuplicateRecordError, RecordNotFoundError

__all__ = ["ConfigurationError", "DataknobsDataError", "DuplicateRecordError", "RecordNotFoundError"]
