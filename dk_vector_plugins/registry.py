"""dataknobs-data's backend registries, over the plugin host: ``sync_backends``, ``async_backends``.

dataknobs-data 0.11 keeps two module-level registries of backend classes
(``dataknobs_data.backends.sync_backends`` / ``async_backends``) and the factory instances
``database_factory`` / ``async_database_factory``. Here they are views of the installed backend
plugins (:func:`~dk_vector_plugins.hookspecs.dkv_register_backends`): nothing is listed by hand,
and a backend installed as a third-party plugin is listed like a built-in one.

A key is matched case-insensitively (``"MEMORY"``), and dataknobs-data's own spellings of our
backends (:data:`ALIASES`, ``"mem"``) are accepted where that backend is installed.
:meth:`BackendRegistry.create` and the facades' ``from_backend`` build stores through the
registry's :class:`~dk_vector_plugins.DatabaseFactory` (the same plugin manager), so a
configuration is validated the one way the factory validates it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import pluggy

from .errors import ConfigError
from .factory import ALIASES, AsyncDatabaseFactory, DatabaseFactory, backends, canonical_backend

if TYPE_CHECKING:
    from .database import AsyncDatabase, SyncDatabase
    from .types import BackendSpec

__all__ = [
    "ALIASES",
    "BackendRegistry",
    "async_backends",
    "canonical_backend",
    "sync_backends",
]

StoreT = TypeVar("StoreT", "SyncDatabase", "AsyncDatabase")

class BackendRegistry(Generic[StoreT]):
    """The installed backends of one kind (``"sync"`` or ``"async"``), keyed by name.

    Read from a plugin manager (by default one made on first use, like the factory's): every
    call sees the backends that manager registered. A backend without a class of this kind is
    not listed.
    """

    def __init__(
        self, kind: Literal["sync", "async"], plugin_manager: pluggy.PluginManager | None = None
    ) -> None:
        self.kind = kind
        self._pm = plugin_manager
        self._factory: DatabaseFactory | AsyncDatabaseFactory | None = None
        self._lock = threading.Lock()

    @property
    def factory(self) -> DatabaseFactory | AsyncDatabaseFactory:
        """The factory that builds this registry's stores (it owns the plugin manager)."""
        with self._lock:
            if self._factory is None:
                kind = AsyncDatabaseFactory if self.kind == "async" else DatabaseFactory
                self._factory = kind(self._pm)
            return self._factory

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The plugin manager whose backends are listed."""
        return self.factory.plugin_manager

    def _specs(self) -> dict[str, BackendSpec]:
        specs = backends(self.plugin_manager)
        attr = "async_class" if self.kind == "async" else "sync_class"
        return {name: spec for name, spec in specs.items() if getattr(spec, attr) is not None}

    def canonical(self, key: str) -> str | None:
        """The backend name ``key`` selects (case-insensitive, aliases resolved), or ``None``."""
        return canonical_backend(self._specs(), key)

    def list_canonical_keys(self) -> list[str]:
        """One name per installed backend, sorted."""
        return sorted(self._specs())

    def list_keys(self) -> list[str]:
        """Every accepted key: the backend names and the aliases of installed ones."""
        specs = self._specs()
        return sorted(specs) + sorted(a for a, name in ALIASES.items() if name in specs and a not in specs)

    def is_registered(self, key: str) -> bool:
        """Whether ``key`` selects an installed backend."""
        return self.canonical(key) is not None

    has = is_registered
    __contains__ = is_registered

    def get_factory(self, key: str) -> Any:
        """The store class ``key`` selects (``None`` when no installed backend has that name)."""
        name = self.canonical(key)
        if name is None:
            return None
        spec = self._specs()[name]
        return spec.async_class if self.kind == "async" else spec.sync_class

    def load_declared_type(self, key: str) -> None:
        """dataknobs-data's class of a backend declared but not installable; every backend here is
        a plugin that is installed or absent, so there is none (``None``)."""
        return None

    def get_metadata(self, key: str, *, follow_alias: bool = True) -> dict[str, Any]:
        """What the backend says of itself: ``description`` and ``config_options`` (key -> doc)."""
        name = self.canonical(key)
        if name is None:
            return {}
        spec = self._specs()[name]
        return {
            "description": spec.description,
            "config_options": {opt.name: opt.doc for opt in spec.options},
        }

    def create(self, key: str, config: Mapping[str, Any] | None = None) -> StoreT:
        """A store of the backend ``key`` selects, built by :attr:`factory` from ``config``.

        Raises :class:`ConfigError` (a ``ValueError``) for a backend that is not installed and for
        an invalid configuration.
        """
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(
                f"configuration must be a mapping (a dict of config keys), got {type(config).__name__}"
            )
        name = self.canonical(key)
        merged = {**dict(config or {}), "backend": key if name is None else name}
        return self.factory.create(merged)  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"BackendRegistry({self.kind!r})"


#: The installed backends' sync classes (dataknobs-data: ``dataknobs_data.backends.sync_backends``).
sync_backends: BackendRegistry[SyncDatabase] = BackendRegistry("sync")
#: The installed backends' async classes (``dataknobs_data.backends.async_backends``).
async_backends: BackendRegistry[AsyncDatabase] = BackendRegistry("async")


def __getattr__(name: str) -> Any:
    """``database_factory`` / ``async_database_factory``: the registries' factories, made on first use."""
    if name == "database_factory":
        return sync_backends.factory
    if name == "async_database_factory":
        return async_backends.factory
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
