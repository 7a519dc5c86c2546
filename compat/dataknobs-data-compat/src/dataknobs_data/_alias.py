"""How a dk_vector_plugins class gets a dataknobs-data name in dataknobs-data's module.

``class SyncMemoryDatabase(MemoryDatabase, metaclass=DataknobsName)`` defines the name in
``dataknobs_data.backends.memory`` (code that enumerates the classes a module defines finds it
there) and adds nothing to the class. The metaclass only makes the name denote the whole class:
an instance of ``MemoryDatabase`` (for example one that ``DatabaseFactory`` built) is an instance
of ``SyncMemoryDatabase``, and ``MemoryDatabase`` is a subclass of it. A user's subclass of
``SyncMemoryDatabase`` is an ordinary class.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DataknobsName", "OutOfScope"]


class DataknobsName(type):
    """Metaclass of an empty subclass that gives one of our classes its dataknobs-data name.

    The class body names the class it stands for, ``__dataknobs_alias_of__ = MemoryDatabase``;
    instance and subclass checks against it are checks against that class.
    """

    def __instancecheck__(cls, instance: Any) -> bool:
        target = cls.__dict__.get("__dataknobs_alias_of__")
        if target is not None:
            return isinstance(instance, target)
        return super().__instancecheck__(instance)

    def __subclasscheck__(cls, subclass: type) -> bool:
        target = cls.__dict__.get("__dataknobs_alias_of__")
        if target is not None:
            return issubclass(subclass, target)
        return super().__subclasscheck__(subclass)


class OutOfScope:
    """A dataknobs-data backend that dk_vector_plugins does not re-do (SQL, DuckDB, Postgres,
    Elasticsearch): importable, so that modules naming it import; creating one raises."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            f"{type(self).__module__}.{type(self).__name__}: dk_vector_plugins has no such backend "
            "(it offers memory, file and S3; see docs/COMPATIBILITY.md)"
        )
