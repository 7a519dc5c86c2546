"""DatabaseFactory / AsyncDatabaseFactory: configuration -> a store, through the plugin hooks.

A factory owns one plugin manager (a fresh one unless given), asks its plugins for backends
(:func:`~dk_vector_plugins.hookspecs.dkv_register_backends`), embedders and extra option keys, and
validates a configuration against them: an unknown backend, an unknown key or a value of the
wrong type is a :class:`ConfigError` that names the key and the choices.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from .engine import normalize_metric
from .errors import ConfigError, PluginError

__all__ = [
    "AsyncDatabaseFactory",
    "BackendSpec",
    "CORE_OPTIONS",
    "DatabaseFactory",
    "OptionSpec",
    "make_embedder",
    "resolve_config",
]


@attrs.frozen
class OptionSpec:
    """A configuration key: its type(s), default, and which backends accept it.

    :ivar types: accepted Python types (``None`` is always accepted for an optional key).
    :ivar backends: backend names that accept the key; ``None`` means every backend.
    :ivar convert: normalizes a value (and raises :class:`ConfigError` for a bad one).
    :ivar aliases: other spellings accepted for the key.
    """

    name: str
    types: tuple[type, ...]
    default: Any = None
    doc: str = ""
    required: bool = False
    backends: tuple[str, ...] | None = None
    convert: Callable[[Any], Any] | None = None
    aliases: tuple[str, ...] = ()

    def check(self, value: Any, backend: str) -> Any:
        """Validate and normalize ``value``."""
        if value is None and not self.required:
            return None
        ok = isinstance(value, self.types) and not (
            isinstance(value, bool) and bool not in self.types and int in self.types
        )
        if not ok:
            names = " or ".join(t.__name__ for t in self.types)
            raise ConfigError(
                f"config key {self.name!r} (backend {backend!r}) must be {names}, "
                f"got {type(value).__name__} {value!r}"
            )
        return self.convert(value) if self.convert else value


def _positive_int(name: str) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        if v <= 0:
            raise ConfigError(f"config key {name!r} must be > 0, got {v}")
        return v

    return convert


#: Keys every backend accepts.
CORE_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("backend", (str,), "memory", "which backend plugin stores the data"),
    OptionSpec("vector_enabled", (bool,), False, "allow vector search on this store"),
    OptionSpec(
        "vector_dimensions",
        (int,),
        None,
        "dimension of every vector field (default: the first vector's)",
        convert=_positive_int("vector_dimensions"),
    ),
    OptionSpec(
        "vector_metric",
        (str,),
        "cosine",
        "default metric: cosine, euclidean or dot_product",
        convert=normalize_metric,
    ),
    OptionSpec("embedder", (str,), "hashing", "name of the registered embedder bulk_embed uses"),
    OptionSpec("embedder_options", (dict,), None, "keyword arguments for the embedder's factory"),
    OptionSpec("schema", (object,), None, "accepted for dataknobs-data compatibility; unused"),
)


@attrs.frozen
class BackendSpec:
    """A storage backend offered by a plugin.

    :ivar name: the ``backend`` config value that selects it.
    :ivar sync_class: the class built by :class:`DatabaseFactory` (called as ``cls(config, plugin_manager=pm)``).
    :ivar async_class: the class built by :class:`AsyncDatabaseFactory`.
    :ivar options: the backend's own config keys.
    """

    name: str
    sync_class: Any
    async_class: Any = None
    options: tuple[OptionSpec, ...] = ()
    description: str = ""


def _collect(pm: Any, hook: str) -> list[tuple[str, Any]]:
    """Call a registration hook plugin by plugin, so one broken plugin cannot hide the others."""
    caller = getattr(pm.hook, hook)
    out: list[tuple[str, Any]] = []
    for impl in caller.get_hookimpls():
        if impl.wrapper or impl.hookwrapper:
            continue
        try:
            items = impl.function()
        except Exception as e:
            origins = getattr(pm, "origins", {})
            dist = origins.get(impl.plugin_name, (None, None))
            where = f"plugin {impl.plugin_name!r}" + (f" (from {dist[0]} {dist[1]})" if dist[0] else "")
            warnings.warn(
                f"dk_vector_plugins: {where} raised in {hook}: {type(e).__name__}: {e}; skipping it",
                stacklevel=3,
            )
            continue
        for item in items or ():
            out.append((impl.plugin_name, item))
    return out


def backends(pm: Any) -> dict[str, BackendSpec]:
    """Installed backends by name. Two plugins offering one name make that name an error."""
    found: dict[str, list[tuple[str, BackendSpec]]] = {}
    for plugin, spec in _collect(pm, "dkv_register_backends"):
        found.setdefault(spec.name, []).append((plugin, spec))
    out: dict[str, BackendSpec] = {}
    for name, offers in found.items():
        if len(offers) > 1:
            plugins = ", ".join(p for p, _ in offers)
            out[name] = BackendSpec(name, _Duplicate(name, plugins))
        else:
            out[name] = offers[0][1]
    return out


class _Duplicate:
    def __init__(self, name: str, plugins: str) -> None:
        self.message = f"backend {name!r} is offered by several plugins ({plugins}); block all but one"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise PluginError(self.message)


def embedders(pm: Any) -> dict[str, Any]:
    """Installed embedder specs by name (the last registered wins a name clash)."""
    return {spec.name: spec for _, spec in _collect(pm, "dkv_register_embedders")}


def extra_options(pm: Any) -> list[OptionSpec]:
    """Option keys declared by plugins through ``dkv_register_options``."""
    return [spec for _, spec in _collect(pm, "dkv_register_options")]


def _unknown_backend(pm: Any, name: Any, known: Iterable[str]) -> ConfigError | PluginError:
    failed = getattr(pm, "load_errors", [])
    for err in failed:
        if err.name == name:
            return PluginError(f"backend {name!r} is unavailable: {err.describe()}")
    msg = f"unknown backend {name!r}; installed backends: {', '.join(sorted(known)) or 'none'}"
    if failed:
        msg += "; plugins that failed to load: " + "; ".join(e.describe() for e in failed)
    return ConfigError(msg)


def resolve_config(pm: Any, config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a configuration and fill in defaults; raises :class:`ConfigError` naming the key."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"configuration must be a mapping, got {type(config).__name__}")
    config = dict(config)
    backend = config.get("backend", "memory")
    if not isinstance(backend, str) or not backend:
        raise ConfigError(f"config key 'backend' must be a backend name, got {backend!r}")
    specs = backends(pm)
    spec = specs.get(backend)
    if spec is None:
        raise _unknown_backend(pm, backend, specs)
    options = [*CORE_OPTIONS, *spec.options]
    options += [o for o in extra_options(pm) if o.backends is None or backend in o.backends]
    by_name: dict[str, OptionSpec] = {}
    for opt in options:
        by_name[opt.name] = opt
        for alias in opt.aliases:
            by_name.setdefault(alias, opt)
    out: dict[str, Any] = {}
    given: dict[str, str] = {}  # option name -> the config key that set it
    for key, value in config.items():
        found = by_name.get(key)
        if found is None:
            accepted = ", ".join(sorted({o.name for o in options}))
            raise ConfigError(
                f"unknown config key {key!r} for backend {backend!r}; accepted keys: {accepted}"
            )
        opt = found
        first = given.setdefault(opt.name, key)  # an alias and its key, in either order
        if first != key:
            raise ConfigError(f"config keys {first!r} and {key!r} mean the same; give one")
        out[opt.name] = opt.check(value, backend)
    for opt in options:
        if opt.name not in out or out[opt.name] is None:
            if opt.required:
                raise ConfigError(f"backend {backend!r} needs config key {opt.name!r}: {opt.doc}")
            if opt.name not in out or opt.default is not None:
                out[opt.name] = opt.default() if callable(opt.default) else opt.default
    return out


def make_embedder(
    pm: Any, name: str, dimensions: int | None, options: Mapping[str, Any] | None = None
) -> Any:
    """Build the registered embedder ``name`` for vectors of ``dimensions`` (None: its default)."""
    specs = embedders(pm)
    spec = specs.get(name)
    if spec is None:
        raise ConfigError(
            f"unknown embedder {name!r}; installed embedders: {', '.join(sorted(specs)) or 'none'}"
        )
    kwargs = dict(options or {})
    if dimensions is not None:
        kwargs["dimensions"] = dimensions
    try:
        return spec.factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"embedder {name!r} rejected its options {kwargs!r}: {e}") from e


class DatabaseFactory:
    """Creates stores from configuration: ``DatabaseFactory().create(backend="memory", vector_enabled=True)``.

    :param plugin_manager: use this plugin manager (a host application's) instead of a fresh one.
    :param plugins: plugin objects to register explicitly (e.g. a test's throwaway plugin).
    :param block: plugin (entry-point) names to block.
    :param strict: raise on a broken plugin instead of warning and going on without it.
    :param load_entrypoints: load third-party entry points (default: unless
        ``DKV_DISABLE_PLUGIN_AUTOLOAD`` is set).
    """

    _async = False

    def __init__(
        self,
        plugin_manager: Any = None,
        *,
        plugins: Sequence[object] = (),
        block: Iterable[str] = (),
        strict: bool = False,
        load_entrypoints: bool | None = None,
    ) -> None:
        from .host import ensure_hookspecs, make_plugin_manager

        if plugin_manager is not None:
            self.plugin_manager = ensure_hookspecs(plugin_manager)
            for name in block:
                self.plugin_manager.set_blocked(name)
            for plugin in plugins:
                self.plugin_manager.register(plugin)
        else:
            self.plugin_manager = make_plugin_manager(
                plugins=plugins, block=block, strict=strict, load_entrypoints=load_entrypoints
            )

    @property
    def pm(self) -> Any:
        """The plugin manager (short name)."""
        return self.plugin_manager

    def create(self, config: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Any:
        """Create a store from a config mapping and/or keyword arguments (keywords win)."""
        merged = {**dict(config or {}), **kwargs}
        backend = merged.get("backend", "memory")
        specs = backends(self.plugin_manager)
        spec = specs.get(backend) if isinstance(backend, str) else None
        if spec is None:
            resolve_config(self.plugin_manager, merged)  # raises the precise error
            raise ConfigError(f"unknown backend {backend!r}")  # pragma: no cover
        cls = spec.async_class if self._async else spec.sync_class
        if cls is None:
            kind = "async" if self._async else "sync"
            raise ConfigError(f"backend {backend!r} has no {kind} implementation")
        return cls(merged, plugin_manager=self.plugin_manager)

    def get_available_backends(self) -> list[str]:
        """Names of the installed backends."""
        return sorted(backends(self.plugin_manager))

    def is_backend_available(self, name: str) -> bool:
        """Whether a backend of that name is installed."""
        return name in backends(self.plugin_manager)

    def backends(self) -> dict[str, BackendSpec]:
        """Installed backends by name."""
        return backends(self.plugin_manager)

    def embedders(self) -> dict[str, Any]:
        """Installed embedders by name."""
        return embedders(self.plugin_manager)

    def embedder(self, name: str = "hashing", dimensions: int | None = None, **options: Any) -> Any:
        """Build a registered embedder."""
        return make_embedder(self.plugin_manager, name, dimensions, options)


class AsyncDatabaseFactory(DatabaseFactory):
    """Creates async stores: ``AsyncDatabaseFactory().create(backend="memory", vector_enabled=True)``.

    ``create`` itself is synchronous (as in dataknobs-data); the store's methods are awaitable.
    """

    _async = True
