"""``dataknobs_data.backends.file``: the file stores of dk_vector_plugins, under dataknobs-data's
names and defined in this module (empty subclasses, see ``dataknobs_data._alias``).

Ours is a directory holding a log-structured table, not one JSON/CSV/Parquet file, so
dataknobs-data's file codecs and lock (``FileFormat``, ``JSONFormat``, ``CSVFormat``,
``ParquetFormat``, ``FileLock``) have no counterpart here; ``dkv import`` reads such a file.
"""

from __future__ import annotations

from dk_vector_plugins.backends import file as _ours

from .._alias import DataknobsName

__all__ = ["AsyncFileDatabase", "SyncFileDatabase"]


class SyncFileDatabase(_ours.FileDatabase, metaclass=DataknobsName):
    """dataknobs-data's name of :class:`dk_vector_plugins.backends.file.FileDatabase`."""

    __dataknobs_alias_of__ = _ours.FileDatabase


class AsyncFileDatabase(_ours.AsyncFileDatabase, metaclass=DataknobsName):
    """dataknobs-data's name of :class:`dk_vector_plugins.backends.file.AsyncFileDatabase`."""

    __dataknobs_alias_of__ = _ours.AsyncFileDatabase
