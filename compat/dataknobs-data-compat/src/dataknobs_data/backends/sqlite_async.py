"""``dataknobs_data.backends.sqlite_async``: a dataknobs-data backend that dk_vector_plugins does not re-do.

Its classes exist so that code naming them imports; creating one raises ``NotImplementedError``.
"""

from __future__ import annotations

from .._alias import OutOfScope

__all__ = ["AsyncSQLiteDatabase"]


class AsyncSQLiteDatabase(OutOfScope):
    """dataknobs-data's AsyncSQLiteDatabase: not available on dk_vector_plugins."""
