"""``dataknobs_data.backends.s3_async``: the async S3 store of dk_vector_plugins, under
dataknobs-data's name and defined in this module (an empty subclass, see ``dataknobs_data._alias``)."""

from __future__ import annotations

from dk_vector_plugins.backends import s3 as _ours

from .._alias import DataknobsName

__all__ = ["AsyncS3Database"]


class AsyncS3Database(_ours.AsyncS3Database, metaclass=DataknobsName):
    """dataknobs-data's name of :class:`dk_vector_plugins.backends.s3.AsyncS3Database`."""

    __dataknobs_alias_of__ = _ours.AsyncS3Database
