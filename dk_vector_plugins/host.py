"""The plugin host: a fresh plugin manager per factory, entry-point discovery, switches, listing.

Discovery (see ``docs/ARCHITECTURE.md``) has one loader for every plugin:

* every plugin, the built-ins included (the ``memory``, ``file`` and ``s3`` backends, the
  ``defaults`` search and bulk embedding, the ``hashing`` embedder, the ``dask`` executor), is an
  entry point in the group ``dk_vector_plugins``; ``pip install`` of a distribution declaring one
  is all it takes. A built-in is an entry point of this package's own distribution;
* ``DKV_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the built-ins;
* ``DKV_PLUGINS=name,name`` loads only these third-party entry points (the built-ins are always
  loaded, unless blocked: the package is unusable without them);
* ``DKV_TRACE_PLUGINS=1`` prints every hook call, its implementations and its result to stderr;
* ``block=[name]`` blocks a plugin by entry-point name (a built-in too).

A plugin that fails to import or register is reported (a :class:`PluginLoadWarning` naming the
entry point and its distribution; the error is kept in :attr:`DkvPluginManager.load_errors` and
shown by ``dkv plugins``) and skipped, so the host keeps working with the rest. An exception
other than a :class:`DkvError` raised inside any plugin's hook implementation (a built-in's too)
is re-raised as a :class:`PluginError` naming the plugin: the plugin is registered as a
:class:`GuardedPlugin`, a namespace holding a guarding wrapper of each of its hook
implementations (pluggy's own objects are left as they are). With ``strict=True`` a load failure
raises at once instead.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import os
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import pluggy

from . import hookspecs
from .errors import DkvError, PluginError

__all__ = [
    "DkvPluginManager",
    "GuardedPlugin",
    "PluginInfo",
    "PluginLoadError",
    "PluginLoadWarning",
    "ENTRY_POINT_GROUP",
    "list_plugins",
    "make_plugin_manager",
]

#: The entry-point group that plugins declare (contract).
ENTRY_POINT_GROUP = hookspecs.PROJECT_NAME

_DIST_NAMES = {"dk_vector_plugins", "dk-vector-plugins"}
_TRUE = {"1", "true", "yes", "on"}


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded or registered; the host goes on without it."""


@attrs.frozen
class PluginLoadError:
    """Why an entry point could not be loaded or registered."""

    name: str
    distribution: str | None
    version: str | None
    error: BaseException

    def describe(self) -> str:
        """One line: the entry point, its distribution and the error."""
        dist = f"{self.distribution} {self.version}" if self.distribution else "unknown distribution"
        return f"plugin {self.name!r} (from {dist}) failed to load: {type(self.error).__name__}: {self.error}"


@attrs.frozen
class PluginInfo:
    """What ``dkv plugins`` lists for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...]
    builtin: bool
    error: str | None = None
    #: ``"builtin"``, ``"loaded"``, ``"error"``, ``"blocked"`` (``block=`` / ``--block``), or
    #: ``"not loaded"`` (autoload off, or left out by ``DKV_PLUGINS``); ``reason`` says which.
    status: str = "loaded"
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return attrs.asdict(self)


class DkvPluginManager(pluggy.PluginManager):
    """A pluggy manager for the ``dk_vector_plugins`` hooks, knowing where each plugin came from."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        #: Entry points that failed to load or register.
        self.load_errors: list[PluginLoadError] = []
        #: plugin name -> (distribution name, version) for plugins that came from entry points.
        self.origins: dict[str, tuple[str | None, str | None]] = {}
        #: Installed entry points that were not loaded: name -> (distribution, version, status, reason).
        self.skipped: dict[str, tuple[str | None, str | None, str, str]] = {}


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [p.strip() for p in raw.split(",") if p.strip()]


def _dist_of(ep: importlib.metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def _is_builtin_dist(dist_name: str | None) -> bool:
    return dist_name is not None and dist_name.replace("-", "_").lower() in {
        d.replace("-", "_") for d in _DIST_NAMES
    }


def _path_fingerprint() -> tuple[tuple[str, int | None], ...]:
    """``sys.path`` with each entry's modification time: installing or removing a distribution
    changes the directory it goes to."""
    out: list[tuple[str, int | None]] = []
    for entry in sys.path:
        try:
            out.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            out.append((entry, None))
    return tuple(out)


Found = tuple[importlib.metadata.EntryPoint, tuple[str | None, str | None]]

# Scanning every distribution's metadata costs milliseconds; a factory per store (or per request)
# must not pay it again while nothing was installed. Cleared by tests that install plugins.
_ENTRY_POINTS_CACHE: dict[tuple[tuple[str, int | None], ...], list[Found]] = {}


def _iter_entry_points() -> list[Found]:
    """The group's entry points with their distributions' (name, version)."""
    key = _path_fingerprint()
    cached = _ENTRY_POINTS_CACHE.get(key)
    if cached is None:
        cached = [(ep, _dist_of(ep)) for ep in _scan_entry_points()]
        _ENTRY_POINTS_CACHE.clear()
        _ENTRY_POINTS_CACHE[key] = cached
    return list(cached)


def _scan_entry_points() -> list[importlib.metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    eps: list[importlib.metadata.EntryPoint] = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.name, ep.value)
        if key not in seen:  # one distribution visible twice on sys.path
            seen.add(key)
            eps.append(ep)
    return eps


def _guarded(func: Callable[..., Any], where: str, hook: str) -> Callable[..., Any]:
    def wrap_error(e: Exception) -> PluginError:
        return PluginError(f"{where} raised in {hook}: {type(e).__name__}: {e}")

    async def guard_awaitable(aw: Awaitable[Any]) -> Any:
        try:
            return await aw
        except DkvError:
            raise
        except Exception as e:
            raise wrap_error(e) from e

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            result = func(*args, **kwargs)
        except DkvError:
            raise
        except Exception as e:
            raise wrap_error(e) from e
        if result is None or type(result) is list or not inspect.isawaitable(result):
            return result
        return guard_awaitable(result)

    functools.update_wrapper(guarded, func)  # name, docstring, the marker's options, __wrapped__
    return guarded


class GuardedPlugin:
    """What the host registers for a plugin: its hook implementations, each wrapped so that an
    exception (other than a :class:`DkvError`) names the plugin as a :class:`PluginError`.

    ``wrapped`` is the plugin object itself (a module, class or instance). Hook wrappers
    (``wrapper=True``) are kept as they are: they see the other implementations' errors as
    raised.
    """

    def __init__(self, plugin: object, where: str, project: str) -> None:
        self.wrapped = plugin
        self.__name__ = getattr(plugin, "__name__", type(plugin).__name__)
        marker = f"{project}_impl"
        for attr in dir(plugin):
            try:
                value = getattr(plugin, attr)
            except Exception:  # a property that raises is no hook implementation
                continue
            opts = getattr(value, marker, None)
            if not isinstance(opts, dict) or not inspect.isroutine(value):
                continue
            if opts.get("wrapper") or opts.get("hookwrapper"):
                setattr(self, attr, value)
            else:
                setattr(self, attr, _guarded(value, where, opts.get("specname") or attr))

    def __repr__(self) -> str:
        return f"<GuardedPlugin {self.wrapped!r}>"


def _register(
    pm: DkvPluginManager,
    plugin: object,
    name: str,
    *,
    dist: tuple[str | None, str | None] = (None, None),
    strict: bool,
) -> None:
    where = f"plugin {name!r}" + (f" (from {dist[0]} {dist[1]})" if dist[0] else "")
    try:
        if pm.register(GuardedPlugin(plugin, where, pm.project_name), name=name) is None:  # blocked
            return
        pm.origins[name] = dist
    except Exception as e:
        _report(pm, name, dist, e, strict)


def _report(
    pm: DkvPluginManager,
    name: str,
    dist: tuple[str | None, str | None],
    e: BaseException,
    strict: bool,
) -> None:
    err = PluginLoadError(name, dist[0], dist[1], e)
    if strict:
        raise PluginError(err.describe()) from e
    pm.load_errors.append(err)
    warnings.warn(
        f"dk_vector_plugins: {err.describe()}; continuing without it", PluginLoadWarning, stacklevel=4
    )


def make_plugin_manager(
    *,
    load_entrypoints: bool | None = None,
    only: Sequence[str] | None = None,
    block: Iterable[str] = (),
    plugins: Iterable[object] = (),
    strict: bool = False,
    trace: bool | None = None,
) -> DkvPluginManager:
    """Build a fresh plugin manager: blocked names, then entry points, then explicit plugins.

    :param load_entrypoints: load third-party entry points; default: unless
        ``DKV_DISABLE_PLUGIN_AUTOLOAD`` is set. The built-ins (this distribution's entry points)
        are always loaded unless blocked.
    :param only: load only these third-party entry-point names; default: ``DKV_PLUGINS``.
    :param block: plugin names (entry-point names) never to register, built-ins included.
    :param plugins: plugin objects (modules, classes, instances) to register explicitly.
    :param strict: raise :class:`PluginError` on a broken plugin instead of warning.
    :param trace: print each hook call to stderr; default: ``DKV_TRACE_PLUGINS``.
    """
    pm = DkvPluginManager()
    for name in block:
        pm.set_blocked(name)
    if load_entrypoints is None:
        load_entrypoints = not _env_true("DKV_DISABLE_PLUGIN_AUTOLOAD")
    if only is None:
        only = _env_list("DKV_PLUGINS")
    found = _iter_entry_points()
    for ep, dist in found:
        builtin = _is_builtin_dist(dist[0])
        if pm.has_plugin(ep.name):
            continue
        if pm.is_blocked(ep.name):
            pm.skipped[ep.name] = (*dist, "blocked", "blocked by block= / --block")
            continue
        if not builtin and not load_entrypoints:
            pm.skipped[ep.name] = (*dist, "not loaded", "DKV_DISABLE_PLUGIN_AUTOLOAD / load_entrypoints=False")
            continue
        if not builtin and only is not None and ep.name not in only:
            pm.skipped[ep.name] = (*dist, "not loaded", "not named in DKV_PLUGINS")
            continue
        try:
            plugin = ep.load()
        except Exception as e:
            _report(pm, ep.name, dist, e, strict)
            continue
        _register(pm, plugin, ep.name, dist=dist, strict=strict)
    _warn_unmatched(found, block, only)
    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        name = pm.get_canonical_name(plugin) if name in ("", None) else str(name)
        if pm.has_plugin(name):
            name = f"{name}-{id(plugin):x}"
        _register(pm, plugin, name, strict=True)
    pm.check_pending()
    if trace is None:
        trace = _env_true("DKV_TRACE_PLUGINS")
    if trace:
        enable_tracing(pm)
    return pm


def _warn_unmatched(found: list[Found], block: Iterable[str], only: Sequence[str] | None) -> None:
    """Warn about names in ``block`` / ``DKV_PLUGINS`` that name no installed entry point (a typo
    would otherwise be ignored silently)."""
    installed = sorted({ep.name for ep, _ in found})
    for what, names in (("block= / --block", list(block)), ("DKV_PLUGINS", list(only or ()))):
        unknown = [n for n in names if n not in installed]
        if unknown:
            warnings.warn(
                f"dk_vector_plugins: {what} names no installed plugin: {', '.join(map(repr, unknown))} "
                f"(installed: {', '.join(installed) or 'none'})",
                PluginLoadWarning,
                stacklevel=3,
            )


def enable_tracing(pm: pluggy.PluginManager, out: Any = None) -> Callable[[], None]:
    """Print each hook call, the implementations it runs and its result; returns an undo function."""

    def write(msg: str) -> None:
        print(msg, file=out or sys.stderr)

    def before(hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        names = ", ".join(i.plugin_name for i in reversed(impls))
        write(f"[dkv] {hook_name}({', '.join(sorted(kwargs))}) -> impls: {names}")

    def after(outcome: Any, hook_name: str, impls: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        exc = outcome.exception
        if exc is not None:
            write(f"[dkv] {hook_name} raised {type(exc).__name__}: {exc}")
        else:
            result = outcome.get_result()
            if isinstance(result, list) and all(isinstance(r, list) for r in result):
                hits = sum(len(r) for r in result)
                desc = f"{len(result)} result list{'s' if len(result) != 1 else ''} ({hits} hits)"
            elif isinstance(result, list):
                desc = f"list of {len(result)}"
            else:
                desc = type(result).__name__
            write(f"[dkv] {hook_name} returned {desc}")

    return pm.add_hookcall_monitoring(before, after)


def ensure_hookspecs(pm: pluggy.PluginManager) -> pluggy.PluginManager:
    """Make a foreign plugin manager usable: add our hook specs if it lacks them."""
    if pm.project_name != hookspecs.PROJECT_NAME:
        raise PluginError(
            f"plugin manager is for project {pm.project_name!r}, expected {hookspecs.PROJECT_NAME!r}"
        )
    caller = getattr(pm.hook, "dkv_vector_search", None)
    if caller is None or caller.spec is None:
        pm.add_hookspecs(hookspecs)
    return pm


def is_builtin(pm: pluggy.PluginManager, name: str) -> bool:
    """Whether the registered plugin ``name`` is one of this package's own entry points."""
    origins: dict[str, tuple[str | None, str | None]] = getattr(pm, "origins", {})
    return _is_builtin_dist(origins.get(name, (None, None))[0])


def list_plugins(pm: pluggy.PluginManager, all: bool = False) -> list[PluginInfo]:
    """Every registered plugin (built-ins only with ``all=True``) and every plugin that failed."""
    origins: dict[str, tuple[str | None, str | None]] = getattr(pm, "origins", {})
    out: list[PluginInfo] = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist, version = origins.get(name, (None, None))
        builtin = is_builtin(pm, name)
        if builtin and not all:
            continue
        hooks = tuple(sorted(c.name for c in pm.get_hookcallers(plugin) or []))
        out.append(PluginInfo(name, dist, version, hooks, builtin, status="builtin" if builtin else "loaded"))
    for err in getattr(pm, "load_errors", []):
        message = f"{type(err.error).__name__}: {err.error}"
        out.append(PluginInfo(err.name, err.distribution, err.version, (), False, message, "error", message))
    skipped: dict[str, tuple[str | None, str | None, str, str]] = getattr(pm, "skipped", {})
    for name, (dist, version, status, reason) in skipped.items():
        builtin = _is_builtin_dist(dist)
        if all or not builtin:
            out.append(PluginInfo(name, dist, version, (), builtin, None, status, reason))
    return sorted(out, key=lambda p: (not p.builtin, p.name))
