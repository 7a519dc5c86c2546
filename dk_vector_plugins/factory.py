"""DatabaseFactory / AsyncDatabaseFactory: configuration -> a store, through the plugin hooks.

A factory owns one plugin manager (a fresh one unless given), asks its plugins for backends
(:func:`~dk_vector_plugins.hookspecs.dkv_register_backends`), embedders and extra option keys, and
validates a configuration against them: an unknown backend, an unknown key or a value of the
wrong type is a :class:`ConfigError` that names the key and the choices.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import pluggy

from .errors import ConfigError, PluginError
from .schema import is_credential_key, text_fields
from .types import Analyzer, AnalyzerSpec, AsyncStore, BackendSpec, Embedder, EmbedderSpec, OptionSpec, Store
from .vectors import normalize_metric

if TYPE_CHECKING:
    from .database import AsyncDatabase, SyncDatabase

StoreT = TypeVar("StoreT", "SyncDatabase", "AsyncDatabase")

__all__ = [
    "ALIASES",
    "AsyncDatabaseFactory",
    "BackendSpec",
    "CORE_OPTIONS",
    "DatabaseFactory",
    "OptionSpec",
    "StoreConfig",
    "canonical_backend",
    "make_embedder",
    "resolve_config",
]


def _nonempty(key: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if not value:
            raise ConfigError(f"config key {key!r} must be a non-empty field name")
        return value

    return convert


def _text_fields(value: str | list[Any]) -> str | list[str]:
    names = text_fields(value)
    assert names is not None
    return value if isinstance(value, str) else list(names)


#: Keys every backend accepts.
CORE_OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("backend", (str,), "memory", "which backend plugin stores the data"),
    OptionSpec(
        "vector_enabled",
        (bool,),
        False,
        "accepted for dataknobs-data compatibility; vector search works on every store that holds vectors",
    ),
    OptionSpec(
        "vector_field",
        (str,),
        "embedding",
        "the vector field that the vector_*, text_field and embedder keys describe, and that "
        "searches and writes use by default",
        convert=_nonempty("vector_field"),
    ),
    OptionSpec(
        "vector_dimensions",
        (int,),
        None,
        "dimension of every vector field (default: the first vector's)",
        above=0,
    ),
    OptionSpec(
        "vector_metric",
        (str,),
        "cosine",
        "default metric: cosine, euclidean or dot_product",
        convert=normalize_metric,
    ),
    OptionSpec(
        "text_field",
        (str, list),
        None,
        "source text field(s) of the vector field: writes embed it with the embedder (unchanged "
        "text is not embedded again), and vector_search takes a string; stored with the table",
        convert=_text_fields,
    ),
    OptionSpec("text_separator", (str,), " ", "joins the values of several text fields before embedding"),
    OptionSpec(
        "embedder",
        (str,),
        "hashing",
        "registered embedder for text_field, string queries and bulk_embed_and_store; stored with "
        "the table (by name, options and a fingerprint)",
    ),
    OptionSpec(
        "embedder_options",
        (dict,),
        None,
        "keyword arguments for the embedder's factory (credentials are never stored)",
    ),
    OptionSpec(
        "text_search_fields",
        (str, list),
        None,
        "fields whose full-text postings every write stores with its rows (text_search and "
        "hybrid_search index any other string field on its first search); stored with the table",
        convert=_text_fields,
    ),
    OptionSpec(
        "analyzer",
        (str,),
        "standard",
        "registered text analyzer of full-text search (standard, whitespace, or a plugin's); "
        "stored with the table",
        convert=_nonempty("analyzer"),
    ),
    OptionSpec(
        "analyzer_options",
        (dict,),
        None,
        "keyword arguments for the analyzer (standard: stopwords, stemmer, lowercase, min_length)",
    ),
    OptionSpec("bm25_k1", (int, float), 1.5, "BM25 term-frequency saturation of text_search", minimum=0),
    OptionSpec("bm25_b", (int, float), 0.75, "BM25 length normalization of text_search", minimum=0, maximum=1),
    OptionSpec("schema", (object,), None, "accepted for dataknobs-data compatibility; unused"),
)


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


def embedders(pm: pluggy.PluginManager) -> dict[str, EmbedderSpec]:
    """Installed embedder specs by name (the last registered wins a name clash)."""
    return {spec.name: spec for _, spec in _collect(pm, "dkv_register_embedders")}


def analyzers(pm: pluggy.PluginManager) -> dict[str, AnalyzerSpec]:
    """Installed analyzer specs by name (the last registered wins a name clash)."""
    return {spec.name: spec for _, spec in _collect(pm, "dkv_register_analyzers")}


def make_analyzer(pm: pluggy.PluginManager, name: str, options: Mapping[str, Any] | None = None) -> Analyzer:
    """Build the registered analyzer ``name`` with ``options``."""
    specs = analyzers(pm)
    spec = specs.get(name)
    if spec is None:
        raise ConfigError(
            f"unknown analyzer {name!r}; installed analyzers: {', '.join(sorted(specs)) or 'none'}"
        )
    try:
        analyzer: Analyzer = spec.factory(**dict(options or {}))
    except TypeError as e:
        raise ConfigError(f"analyzer {name!r} rejected its options {dict(options or {})!r}: {e}") from e
    if not callable(getattr(analyzer, "analyze", None)):
        raise PluginError(f"analyzer {name!r} has no analyze(text) method")
    return analyzer


def extra_options(pm: Any) -> list[OptionSpec]:
    """Option keys declared by plugins through ``dkv_register_options``."""
    return [spec for _, spec in _collect(pm, "dkv_register_options")]


#: dataknobs-data's other spellings of a backend name -> our backend name.
ALIASES: Mapping[str, str] = {"mem": "memory"}


def canonical_backend(specs: Mapping[str, BackendSpec], key: Any) -> str | None:
    """The installed backend that ``key`` names (any case, or a dataknobs-data alias), or ``None``."""
    if not isinstance(key, str):
        return None
    if key in specs:
        return key
    name = key.strip().lower()
    name = ALIASES.get(name, name)
    return name if name in specs else None


def _unknown_backend(pm: Any, name: Any, known: Iterable[str]) -> ConfigError | PluginError:
    failed = getattr(pm, "load_errors", [])
    for err in failed:
        if err.name == name:
            return PluginError(f"backend {name!r} is unavailable: {err.describe()}")
    msg = f"unknown backend {name!r}; installed backends: {', '.join(sorted(known)) or 'none'}"
    if failed:
        msg += "; plugins that failed to load: " + "; ".join(e.describe() for e in failed)
    return ConfigError(msg)


def _masked(value: Any) -> str:
    """``repr(value)``, with the values of credential-like keys of a dict shown as ``'***'``."""
    if isinstance(value, Mapping):
        items = (f"{k!r}: {'***' if is_credential_key(k) else _masked(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return repr(value)


class StoreConfig(Mapping[str, Any]):
    """A store's validated configuration: a read-only mapping whose ``repr`` hides secrets."""

    __slots__ = ("_data", "_secret", "given")

    def __init__(self, data: Mapping[str, Any], secret: Iterable[str] = (), given: Iterable[str] = ()) -> None:
        self._data = dict(data)
        self._secret = frozenset(k for k in secret if self._data.get(k) is not None)
        #: The keys the caller gave (by their canonical names); the others hold defaults.
        self.given: frozenset[str] = frozenset(given)

    def updated(self, values: Mapping[str, Any]) -> StoreConfig:
        """A copy with ``values`` replacing those of their keys."""
        return StoreConfig({**self._data, **values}, self._secret, self.given)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k!r}: {'***' if k in self._secret else _masked(v)}" for k, v in self._data.items())
        return "{" + shown + "}"

    __str__ = __repr__


def merged_config(config: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A config mapping (or ``None``) and keyword arguments as one dict (keywords win)."""
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(
            f"configuration must be a mapping (a dict of config keys), got {type(config).__name__}"
        )
    return {**dict(config or {}), **kwargs}


def resolve_config(pm: Any, config: Mapping[str, Any]) -> StoreConfig:
    """Validate a configuration and fill in defaults; raises :class:`ConfigError` naming the key."""
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"configuration must be a mapping (a dict of config keys), got {type(config).__name__}"
        )
    config = dict(config)
    backend = config.get("backend", "memory")
    if not isinstance(backend, str) or not backend:
        raise ConfigError(f"config key 'backend' must be a backend name, got {backend!r}")
    specs = backends(pm)
    backend = canonical_backend(specs, backend) or backend
    config["backend"] = backend
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
    for name in list(out):  # defaults implied by the given values (not overriding given keys)
        opt = by_name[name]
        if opt.implies is not None and out[name] is not None:
            for key, value in opt.implies(out[name]).items():
                if out.get(key) is None and key in by_name:
                    out[key] = by_name[key].check(value, backend)
    for opt in options:
        if opt.name not in out or out[opt.name] is None:
            if opt.required:
                raise ConfigError(f"backend {backend!r} requires {opt.name!r} in its configuration: {opt.doc}")
            if opt.name not in out or opt.default is not None:
                out[opt.name] = opt.default() if callable(opt.default) else opt.default
    explicit = (name for name, key in given.items() if config[key] is not None)
    return StoreConfig(out, (o.name for o in options if o.secret), explicit)


def make_embedder(
    pm: pluggy.PluginManager, name: str, dimensions: int | None, options: Mapping[str, Any] | None = None
) -> Embedder:
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
        embedder: Embedder = spec.factory(**kwargs)
        return embedder
    except TypeError as e:
        raise ConfigError(f"embedder {name!r} rejected its options {kwargs!r}: {e}") from e


class _Factory(Generic[StoreT]):
    """What the sync and async factories share: one plugin manager, backends, embedders."""

    _async: ClassVar[bool] = False

    @property
    def _store_type(self) -> type[StoreT]:
        raise NotImplementedError  # pragma: no cover - each factory names its store type

    def __init__(
        self,
        plugin_manager: pluggy.PluginManager | None = None,
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
    def pm(self) -> pluggy.PluginManager:
        """The plugin manager (short name)."""
        return self.plugin_manager

    def create(self, config: Mapping[str, Any] | None = None, /, **kwargs: Any) -> StoreT:
        """Create a store from a config mapping and/or keyword arguments (keywords win).

        The store is an instance of the backend's class (e.g. ``MemoryDatabase``), a subclass of
        :class:`~dk_vector_plugins.SyncDatabase` (:class:`~dk_vector_plugins.AsyncDatabase` from
        the async factory).
        """
        merged = merged_config(config, kwargs)
        backend = merged.get("backend", "memory")
        specs = backends(self.plugin_manager)
        backend = canonical_backend(specs, backend) or backend
        if isinstance(backend, str):
            merged["backend"] = backend
        spec = specs.get(backend) if isinstance(backend, str) else None
        if spec is None:
            resolve_config(self.plugin_manager, merged)  # raises the precise error
            raise ConfigError(f"unknown backend {backend!r}")  # pragma: no cover
        cls = spec.async_class if self._async else spec.sync_class
        if cls is None:
            kind = "async" if self._async else "sync"
            raise ConfigError(f"backend {backend!r} has no {kind} implementation")
        store = cls(merged, plugin_manager=self.plugin_manager)
        if not isinstance(store, self._store_type):
            raise PluginError(
                f"backend {backend!r} built a {type(store).__name__}, not a {self._store_type.__name__}: "
                "a backend class subclasses SyncDatabase (sync) or AsyncDatabase (async)"
            )
        return store

    def get_available_backends(self) -> list[str]:
        """Names of the installed backends."""
        return sorted(backends(self.plugin_manager))

    def is_backend_available(self, name: str) -> bool:
        """Whether a backend of that name is installed."""
        return name in backends(self.plugin_manager)

    def backends(self) -> dict[str, BackendSpec]:
        """Installed backends by name."""
        return backends(self.plugin_manager)

    def get_backend_info(self, name: str) -> dict[str, Any]:
        """What an installed backend says of itself (dataknobs-data's ``get_backend_info``):
        ``name``, ``description``, ``persistent`` (whether it keeps records after the store is
        closed), ``requires_install`` (``False``: an installed plugin needs nothing more),
        ``config_options`` (its own keys and their docs), ``sync`` and ``async`` (which
        facades it has). The name is matched as :meth:`create` matches it (any case, aliases).
        For a backend that is not installed: ``description`` and ``error``.
        """
        specs = backends(self.plugin_manager)
        key = canonical_backend(specs, name)
        if key is None:
            return {"description": "Unknown backend", "error": str(_unknown_backend(self.plugin_manager, name, specs))}
        spec = specs[key]
        cls = spec.async_class if self._async else spec.sync_class
        return {
            "name": key,
            "description": spec.description,
            "persistent": _persistent(cls if cls is not None else spec.sync_class),
            "requires_install": False,
            "config_options": {opt.name: opt.doc for opt in spec.options},
            "sync": spec.sync_class is not None,
            "async": spec.async_class is not None,
        }

    def embedders(self) -> dict[str, EmbedderSpec]:
        """Installed embedders by name."""
        return embedders(self.plugin_manager)

    def embedder(self, name: str = "hashing", dimensions: int | None = None, **options: Any) -> Embedder:
        """Build a registered embedder."""
        return make_embedder(self.plugin_manager, name, dimensions, options)


def _persistent(cls: Callable[..., Store] | Callable[..., AsyncStore]) -> bool:
    """Whether a backend's store class keeps its records after the store is closed: what the
    class declares (``persistent``), else whether its stores keep a table storage."""
    declared = getattr(cls, "persistent", None)
    if isinstance(declared, bool):
        return declared
    return isinstance(getattr(cls, "storage", None), property)


class DatabaseFactory(_Factory["SyncDatabase"]):
    """Creates sync stores: ``DatabaseFactory().create(backend="memory", vector_enabled=True)``.

    :param plugin_manager: use this plugin manager (a host application's) instead of a fresh one.
    :param plugins: plugin objects to register explicitly (e.g. a test's throwaway plugin).
    :param block: plugin (entry-point) names to block (built-ins too).
    :param strict: raise on a broken plugin instead of warning and going on without it.
    :param load_entrypoints: load third-party entry points (default: unless
        ``DKV_DISABLE_PLUGIN_AUTOLOAD`` is set).
    """

    @property
    def _store_type(self) -> type[SyncDatabase]:
        from .database import SyncDatabase

        return SyncDatabase


class AsyncDatabaseFactory(_Factory["AsyncDatabase"]):
    """Creates async stores: ``AsyncDatabaseFactory().create(backend="memory", vector_enabled=True)``.

    ``create`` itself is synchronous (as in dataknobs-data); the store's methods are awaitable.
    """

    _async = True

    @property
    def _store_type(self) -> type[AsyncDatabase]:
        from .database import AsyncDatabase

        return AsyncDatabase
