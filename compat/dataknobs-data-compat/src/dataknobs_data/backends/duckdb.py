"""``dataknobs_data.backends.duckdb``: a dataknobs-data backend that dk_vector_plugins does not re-do.

Its classes exist so that code naming them imports; creating one raises ``NotImplementedError``.
"""

from __future__ import annotations

from .._alias import OutOfScope

__all__ = ["AsyncDuckDBDatabase", "SyncDuckDBDatabase"]


class SyncDuckDBDatabase(OutOfScope):
    """dataknobs-data's SyncDuckDBDatabase: not available on dk_vector_plugins."""


class AsyncDuckDBDatabase(OutOfScope):
    """dataknobs-data's AsyncDuckDBDatabase: not available on dk_vector_plugins."""
