"""``dataknobs_data.backends.memory``: the in-memory stores of dk_vector_plugins, under
dataknobs-data's names and defined in this module (empty subclasses, see ``dataknobs_data._alias``)."""

from __future__ import annotations

from dk_vector_plugins.backends import memory as _ours

from .._alias import DataknobsName

__all__ = ["AsyncMemoryDatabase", "SyncMemoryDatabase"]


class SyncMemoryDatabase(_ours.MemoryDatabase, metaclass=DataknobsName):
    """dataknobs-data's name of :class:`dk_vector_plugins.backends.memory.MemoryDatabase`."""

    __dataknobs_alias_of__ = _ours.MemoryDatabase


class AsyncMemoryDatabase(_ours.AsyncMemoryDatabase, metaclass=DataknobsName):
    """dataknobs-data's name of :class:`dk_vector_plugins.backends.memory.AsyncMemoryDatabase`."""

    __dataknobs_alias_of__ = _ours.AsyncMemoryDatabase
