"""``dataknobs_data.backends.postgres``: a dataknobs-data backend that dk_vector_plugins does not re-do.

Its classes exist so that code naming them imports; creating one raises ``NotImplementedError``.
"""

from __future__ import annotations

from .._alias import OutOfScope

__all__ = ["AsyncPostgresDatabase", "SyncPostgresDatabase"]


class SyncPostgresDatabase(OutOfScope):
    """dataknobs-data's SyncPostgresDatabase: not available on dk_vector_plugins."""


class AsyncPostgresDatabase(OutOfScope):
    """dataknobs-data's AsyncPostgresDatabase: not available on dk_vector_plugins."""
