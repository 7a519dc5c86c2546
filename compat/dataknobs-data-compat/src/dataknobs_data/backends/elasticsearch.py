"""``dataknobs_data.backends.elasticsearch``: a dataknobs-data backend that dk_vector_plugins does not re-do.

Its classes exist so that code naming them imports; creating one raises ``NotImplementedError``.
"""

from __future__ import annotations

from .._alias import OutOfScope

__all__ = ["SyncElasticsearchDatabase"]


class SyncElasticsearchDatabase(OutOfScope):
    """dataknobs-data's SyncElasticsearchDatabase: not available on dk_vector_plugins."""
