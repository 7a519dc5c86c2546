"""The typed plugin contract and the one-table facade (the architecture's promises, checked).

* every store operation exists on both facades with one signature and one docstring, and the
  async one is a coroutine function;
* a search hook answers one list of results per query; any other shape is a ``PluginError``
  naming the hook, and the facade alone unwraps a single query's list;
* the built-ins arrive through entry points only, are listed, blockable and error-attributed like
  any plugin, and pluggy's own hook implementation objects are never modified;
* ``types`` (and so ``hookspecs``) imports nothing of the package at run time but ``errors``;
  the core modules never import a backend or a plugin.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

import dk_vector_plugins
from dk_vector_plugins import (
    AsyncDatabase,
    AsyncDatabaseFactory,
    AsyncStore,
    DatabaseFactory,
    PluginError,
    Record,
    Store,
    SyncDatabase,
    VectorField,
    VectorSearchResult,
    hookimpl,
    list_plugins,
)
from dk_vector_plugins.core import StoreCore
from dk_vector_plugins.database import operation
from dk_vector_plugins.host import GuardedPlugin

PACKAGE = Path(dk_vector_plugins.__file__).parent


def operations() -> list[str]:
    return sorted(
        name for cls in SyncDatabase.__mro__ for name, v in vars(cls).items() if isinstance(v, operation)
    )


def test_every_operation_is_on_both_facades_with_one_signature() -> None:
    names = operations()
    assert {"create", "read", "vector_search", "vector_search_batch", "bulk_embed", "close"} <= set(names)
    for name in names:
        defined = [cls for cls in SyncDatabase.__mro__ if isinstance(vars(cls).get(name), operation)]
        assert defined and defined == [cls for cls in AsyncDatabase.__mro__ if isinstance(vars(cls).get(name), operation)]
        assert inspect.iscoroutinefunction(getattr(AsyncDatabase, name)), name  # through the class too
        assert not inspect.iscoroutinefunction(getattr(SyncDatabase, name)), name
        db_sync = DatabaseFactory().create(backend="memory")
        db_async = AsyncDatabaseFactory().create(backend="memory")
        bound_s, bound_a = getattr(db_sync, name), getattr(db_async, name)
        assert inspect.signature(bound_s) == inspect.signature(bound_a), name
        assert bound_s.__doc__ == bound_a.__doc__ and bound_s.__doc__, name
        assert not inspect.iscoroutinefunction(bound_s), name
        assert inspect.iscoroutinefunction(bound_a), name


def test_bulk_embed_and_store_shares_bulk_embeds_signature() -> None:
    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    a = inspect.signature(db.bulk_embed_and_store)
    b = inspect.signature(db.bulk_embed)
    assert list(a.parameters) == list(b.parameters)
    assert list(a.parameters)[:3] == ["records", "text_field", "vector_field"]
    ids = db.bulk_embed_and_store([Record({"t": "hello"}, id="h")], text_field="t")
    assert ids == ["h"]


def test_an_operation_raising_inside_a_step_runs_its_cleanup() -> None:
    """close() runs the storage close even when an on_close callback raises (sync and async)."""
    closed: list[str] = []

    def boom() -> None:
        raise RuntimeError("callback failed")

    db = DatabaseFactory().create(backend="memory")
    db.on_close(boom)
    db.core.storage.close = lambda: closed.append("sync")  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="callback failed"):
        db.close()
    adb = AsyncDatabaseFactory().create(backend="memory")
    adb.on_close(boom)
    adb.core.storage.close = lambda: closed.append("async")  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="callback failed"):
        asyncio.run(adb.close())
    assert closed == ["sync", "async"]


def test_stores_satisfy_the_store_protocols() -> None:
    assert isinstance(DatabaseFactory().create(backend="memory"), Store)
    assert isinstance(AsyncDatabaseFactory().create(backend="memory"), AsyncStore)


class FlatList:
    """A plugin written against the old contract: a flat list for a single query."""

    @hookimpl(tryfirst=True)
    def dkv_vector_search(self, db: Any, request: Any) -> Any:
        return [VectorSearchResult(record=Record({}, id="x"), score=1.0)]

    @hookimpl(tryfirst=True)
    def dkv_vector_search_async(self, db: Any, request: Any) -> Any:
        async def run() -> Any:
            return [[], []]  # one list too many for a single query

        return run()


def test_a_search_hook_must_answer_one_list_per_query() -> None:
    db = DatabaseFactory(plugins=[FlatList()]).create(backend="memory", vector_enabled=True)
    db.add_vectors([[1.0, 0.0]], ids=["a"])
    with pytest.raises(PluginError, match=r"dkv_vector_search answered list where one list of results per query \(1\)"):
        db.vector_search([1.0, 0.0], k=1)
    adb = AsyncDatabaseFactory(plugins=[FlatList()]).create(backend="memory", vector_enabled=True)
    with pytest.raises(PluginError, match=r"dkv_vector_search_async answered list .*\(1\)"):
        asyncio.run(adb.vector_search([1.0, 0.0], k=1))


class ListsPerQuery:
    """Sees what the hook answers: always one list per query, also for a single search."""

    def __init__(self) -> None:
        self.shapes: list[list[int]] = []

    @hookimpl(wrapper=True)
    def dkv_vector_search(self, db: Any, request: Any) -> Any:
        result = yield
        self.shapes.append([len(hits) for hits in result])
        return result


def test_a_single_search_is_unwrapped_once_by_the_facade() -> None:
    seen = ListsPerQuery()
    db = DatabaseFactory(plugins=[seen]).create(backend="memory", vector_enabled=True)
    db.add_vectors([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], ids=["a", "b", "c"])
    single = db.vector_search([1.0, 0.0], k=2)
    assert [h.id for h in single] == ["a", "c"]
    batch = db.vector_search_batch([[1.0, 0.0], [0.0, 1.0]], k=1)
    assert [[h.id for h in hits] for hits in batch] == [["a"], ["b"]]
    assert seen.shapes == [[2], [1, 1]]


def test_builtins_come_from_entry_points_and_are_listed() -> None:
    pm = DatabaseFactory().pm
    infos = {p.name: p for p in list_plugins(pm, all=True)}
    for name in ("memory", "file", "s3", "defaults", "analyzers", "hashing", "dask"):
        assert infos[name].builtin, name
        assert infos[name].distribution in ("dk_vector_plugins", "dk-vector-plugins"), name
    assert infos["defaults"].hooks == (
        "dkv_bulk_embed",
        "dkv_bulk_embed_async",
        "dkv_text_search",
        "dkv_text_search_async",
        "dkv_vector_search",
        "dkv_vector_search_async",
    )
    assert infos["analyzers"].hooks == ("dkv_register_analyzers",)
    for backend in ("memory", "file", "s3"):  # a backend plugin registers its spec only
        assert infos[backend].hooks == ("dkv_register_backends",)
    assert not hasattr(dk_vector_plugins.host, "BUILTIN_PLUGINS")  # one way in


def test_a_builtin_raising_is_attributed_and_pluggy_is_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = DatabaseFactory()
    db = factory.create(backend="memory", vector_enabled=True)
    db.add_vectors([[1.0, 0.0]], ids=["a"])

    def broken(self: StoreCore, request: Any) -> Any:
        raise RuntimeError("kernel bug")

    monkeypatch.setattr(StoreCore, "vector_search", broken)
    with pytest.raises(PluginError, match=r"plugin 'defaults' \(from dk.vector.plugins .*\) raised in dkv_vector_search: RuntimeError: kernel bug"):
        db.vector_search([1.0, 0.0], k=1)
    for impl in factory.pm.hook.dkv_vector_search.get_hookimpls():
        plugin = factory.pm.get_plugin(impl.plugin_name)
        assert isinstance(plugin, GuardedPlugin)
        # the registered function is the namespace's attribute, as pluggy found it
        assert impl.function is plugin.dkv_vector_search
        assert inspect.signature(impl.function).parameters.keys() == {"db", "request"}


def test_blocking_a_builtin_works_like_any_plugin() -> None:
    factory = DatabaseFactory(block=["defaults"])
    assert {p.name: p.status for p in list_plugins(factory.pm, all=True)}["defaults"] == "blocked"
    db = factory.create(backend="memory", vector_enabled=True)
    db.create(Record({"embedding": VectorField([1.0, 0.0])}, id="a"))
    with pytest.raises(PluginError, match="no plugin answered dkv_vector_search for backend 'memory'"):
        db.vector_search([1.0, 0.0], k=1)


def _runtime_imports(path: Path) -> set[str]:
    """Package modules imported by ``path`` at run time (not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()

    def visit(node: ast.AST, checking: bool) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, checking)
            return
        if isinstance(node, ast.ImportFrom) and not checking:
            if node.level:
                base = ".".join(path.relative_to(PACKAGE).with_suffix("").parts[: -node.level])
                mod = ".".join(p for p in (base, node.module or "") if p)
                out.add(mod or "__init__")
            elif (node.module or "").startswith("dk_vector_plugins"):
                out.add(node.module.removeprefix("dk_vector_plugins").lstrip("."))  # type: ignore[union-attr]
        for child in ast.iter_child_nodes(node):
            visit(child, checking)

    visit(tree, False)
    return out


def test_types_and_hookspecs_import_nothing_of_the_runtime() -> None:
    assert _runtime_imports(PACKAGE / "types.py") <= {"errors"}
    assert _runtime_imports(PACKAGE / "hookspecs.py") == {"types"}
    assert _runtime_imports(PACKAGE / "records.py") <= {"errors", "vectors"}  # types imports it for annotations


def test_the_core_never_imports_a_backend_or_a_plugin() -> None:
    leaves = ("backends", "plugins", "defaults", "cli")
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("backends/", "plugins/")) or rel in ("defaults.py", "cli.py", "__init__.py", "__main__.py"):
            continue
        for mod in _runtime_imports(path):
            assert not mod.startswith(leaves), f"{rel} imports {mod}"
