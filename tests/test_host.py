"""The plugin host: throwaway plugins registered in-process, fake entry points, env switches.

Every hook declared in ``hookspecs.py`` has a ``test_hook_<name>`` test here;
:func:`test_plugin_hooks_have_tests` checks that (as datasette does for its hooks).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import os
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pluggy
import pytest

from dk_vector_plugins import (
    AnalyzerSpec,
    AsyncDatabaseFactory,
    BulkEmbedReport,
    ConfigError,
    DatabaseFactory,
    InvalidRequestError,
    OptionSpec,
    PluginError,
    PluginLoadWarning,
    Record,
    SyncDatabase,
    TextSearchResult,
    VectorField,
    VectorSearchResult,
    hookimpl,
    host,
    list_plugins,
    make_plugin_manager,
)
from dk_vector_plugins import hookspecs as hookspecs_module
from dk_vector_plugins.core import StoreCore
from dk_vector_plugins.host import ENTRY_POINT_GROUP, ensure_hookspecs
from dk_vector_plugins.memtable import RecordTable
from dk_vector_plugins.types import BackendSpec

ENV_VARS = ("DKV_DISABLE_PLUGIN_AUTOLOAD", "DKV_PLUGINS", "DKV_TRACE_PLUGINS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def load_toy_module() -> types.ModuleType:
    """tests/plugins/dkv_toy_backend.py, imported under a unique module name."""
    name = "dkv_test_toy_backend"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).parent / "plugins" / "dkv_toy_backend.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def vec_records(n: int = 6) -> list[Record]:
    return [Record({"n": i, "embedding": VectorField([1.0, float(i)])}, id=f"r{i}") for i in range(n)]


# --- throwaway plugins -----------------------------------------------------------------------


class IndexOption:
    """Declares the ``index`` config key for memory stores."""

    @hookimpl
    def dkv_register_options(self) -> list[OptionSpec]:
        return [OptionSpec("index", (str,), None, "which fake index answers searches", backends=("memory",))]


class FakeIndexOverride(IndexOption):
    """Answers searches of stores configured with ``index="fake"``; declines for every other store."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def _answer(self, db: Any, request: Any) -> Any:
        hits = [
            [VectorSearchResult(record=Record({"fake": True}, id=f"fake-{j}"), score=1.0 - j / 10)]
            for j in range(len(request.queries))
        ]
        return hits  # one list of results per query, as the hook contract says

    @hookimpl(tryfirst=True)
    def dkv_vector_search(self, db: Any, request: Any) -> Any:
        if db.config.get("index") != "fake":
            return None
        self.calls.append((db.backend_name, request.k, request.metric, request.filter))
        return self._answer(db, request)

    @hookimpl(tryfirst=True)
    def dkv_vector_search_async(self, db: Any, request: Any) -> Any:
        if db.config.get("index") != "fake":
            return None

        async def answer() -> Any:
            self.calls.append(("async", request.k))
            return self._answer(db, request)

        return answer()


class Timing:
    """Instrumentation: a wrapper that sees every search, whoever answers it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    @hookimpl(wrapper=True)
    def dkv_vector_search(self, db: Any, request: Any) -> Iterator[None]:
        result = yield
        self.seen.append((db.backend_name, request.k, sum(len(hits) for hits in result)))
        return result  # type: ignore[no-any-return, return-value]


class CountingBulkEmbed:
    """Overrides bulk embedding: records what it was asked and stores nothing."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    @hookimpl(tryfirst=True)
    def dkv_bulk_embed(self, db: Any, request: Any) -> Any:
        if request.vector_field != "remote":
            return None
        self.requests.append(request)
        ids = [str(r.id) if not isinstance(r, dict) else r["id"] for r in request.records]
        return BulkEmbedReport(ids=ids, embedded=len(ids), skipped=0, batches=1)

    @hookimpl(tryfirst=True)
    def dkv_bulk_embed_async(self, db: Any, request: Any) -> Any:
        if request.vector_field != "remote":
            return None

        async def run() -> BulkEmbedReport:
            self.requests.append(request)
            return BulkEmbedReport(ids=["async"], embedded=1, skipped=0, batches=1)

        return run()


class Exploding:
    """A broken third-party search implementation."""

    @hookimpl(tryfirst=True)
    def dkv_vector_search(self, db: Any, request: Any) -> Any:
        raise ValueError("index file is corrupt")

    @hookimpl(tryfirst=True)
    def dkv_vector_search_async(self, db: Any, request: Any) -> Any:
        async def boom() -> Any:
            raise RuntimeError("remote index unreachable")

        return boom()


# --- fake entry points -----------------------------------------------------------------------


class FakeDist:
    def __init__(self, name: str, version: str) -> None:
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    """Quacks like importlib.metadata.EntryPoint as far as the host uses it."""

    def __init__(
        self, name: str, loader: Callable[[], Any], dist: tuple[str, str] = ("dkv-fake", "0.1")
    ) -> None:
        self.name = name
        self.value = f"fake_module_{name}"
        self.group = ENTRY_POINT_GROUP
        self.dist = FakeDist(*dist)
        self._loader = loader

    def load(self) -> Any:
        return self._loader()


def _broken_loader() -> Any:
    raise ImportError("No module named 'dkv_broken_dependency'")


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Install fake entry points in the ``dk_vector_plugins`` group (beside the real built-ins)."""

    def install(*eps: FakeEntryPoint) -> None:
        real = importlib.metadata.entry_points

        def entry_points(**kwargs: Any) -> Any:
            found = list(real(**kwargs))
            if kwargs.get("group") == ENTRY_POINT_GROUP:
                found += list(eps)
            return found

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
        monkeypatch.setattr(host, "_ENTRY_POINTS_CACHE", {})

    return install


def _write_dist(where: Path, name: str) -> None:
    """A distribution ``name`` whose entry point is an empty plugin module of its own."""
    module = name.replace("-", "_")
    (where / f"{module}.py").write_text('"""An empty plugin."""\n')
    target = module
    info = where / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{name} = {target}\n")


def test_entry_point_scan_is_cached_until_something_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Factories reuse the scan of installed distributions while sys.path and its directories
    are unchanged; a distribution installed later is found by the next factory."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    _write_dist(site, "dkv-cached-one")
    first = make_plugin_manager()
    assert first.has_plugin("dkv-cached-one")
    scans: list[int] = []
    real = host._scan_entry_points
    monkeypatch.setattr(host, "_scan_entry_points", lambda: scans.append(1) or real())
    make_plugin_manager()
    assert scans == []  # nothing changed: the cached scan served
    _write_dist(site, "dkv-cached-two")
    os.utime(site, ns=(time.time_ns(), time.time_ns() + 1000))  # coarse clocks: make the change visible
    importlib.invalidate_caches()  # as after any install into a running interpreter
    later = make_plugin_manager()
    assert scans == [1]
    assert later.has_plugin("dkv-cached-two")


def toy_ep() -> FakeEntryPoint:
    return FakeEntryPoint("toy", load_toy_module, ("dkv-toy", "1.2.3"))


def broken_ep() -> FakeEntryPoint:
    return FakeEntryPoint("broken", _broken_loader, ("dkv-broken", "0.0.1"))


# --- one test per hook -----------------------------------------------------------------------


def test_hook_dkv_register_backends() -> None:
    toy = load_toy_module()
    factory = DatabaseFactory(plugins=[toy])
    assert "toy" in factory.get_available_backends()
    assert factory.is_backend_available("memory") and factory.is_backend_available("toy")
    db = factory.create(backend="toy", vector_enabled=True, flavour="mint")
    assert isinstance(db, toy.ToyDatabase)
    assert db.config["flavour"] == "mint"
    assert db.backend_name == "toy"
    db.create_batch(vec_records())
    assert [h.id for h in db.vector_search([1, 5], k=2, metric="dot")] == ["r5", "r4"]
    assert factory.create(backend="toy").config["flavour"] == "vanilla"
    adb = AsyncDatabaseFactory(plugins=[toy]).create(backend="toy")
    assert isinstance(adb, toy.AsyncToyDatabase)
    # the backend's own key is checked, and only accepted for that backend
    with pytest.raises(ConfigError, match="flavour"):
        factory.create(backend="toy", flavour=3)
    with pytest.raises(ConfigError, match="flavour"):
        factory.create(backend="memory", flavour="mint")


def test_two_plugins_offering_one_backend_name_is_an_error_when_used() -> None:
    toy = load_toy_module()

    class AnotherToy:
        @hookimpl
        def dkv_register_backends(self) -> list[BackendSpec]:
            return [BackendSpec("toy", toy.ToyDatabase)]

    factory = DatabaseFactory(plugins=[toy, AnotherToy()])
    factory.create(backend="memory")  # other backends are unaffected
    with pytest.raises(PluginError, match="several plugins"):
        factory.create(backend="toy")


def test_a_registration_hook_raising_skips_only_that_plugin() -> None:
    class BadRegistration:
        @hookimpl
        def dkv_register_backends(self) -> list[BackendSpec]:
            raise RuntimeError("cannot import driver")

    factory = DatabaseFactory(plugins=[BadRegistration()])
    with pytest.warns(UserWarning, match="BadRegistration.*cannot import driver"):
        db = factory.create(backend="memory", vector_enabled=True)
    db.create(Record({"x": 1}, id="a"))
    assert db.count() == 1


def test_hook_dkv_register_embedders() -> None:
    toy = load_toy_module()
    factory = DatabaseFactory(plugins=[toy])
    assert {"hashing", "toy-embed"} <= set(factory.embedders())
    emb = factory.embedder("toy-embed", dimensions=4, scale=2.0)
    assert emb.embed(["ab cd"]).tolist() == [[10.0, 2.0, 1.0, 0.0]]
    db = factory.create(backend="memory", vector_enabled=True)
    db.bulk_embed_and_store([Record({"t": "one two"}, id="a")], "t", embedding_fn="toy-embed")
    rec = db.read("a")
    assert rec["embedding"].tolist() == [7.0, 2.0, 1.0]
    assert rec.fields["embedding"].model_name == "toy-length"
    # chosen by configuration, with options
    db2 = factory.create(
        backend="memory", vector_enabled=True, embedder="toy-embed", embedder_options={"scale": 0.5}
    )
    db2.bulk_embed_and_store([Record({"t": "four"}, id="a")], "t")
    assert db2.read("a")["embedding"].tolist() == [2.0, 1.0, 1.0]
    # options the factory rejects are a ConfigError naming the embedder
    db3 = factory.create(backend="memory", vector_enabled=True, embedder_options={"colour": "red"})
    with pytest.raises(ConfigError, match="hashing"):
        db3.bulk_embed_and_store([Record({"t": "x"}, id="a")], "t")
    assert db3.count() == 0


def test_hook_dkv_register_options() -> None:
    factory = DatabaseFactory(plugins=[IndexOption(), load_toy_module()])
    db = factory.create(backend="memory", index="hnsw")
    assert db.config["index"] == "hnsw"
    assert factory.create(backend="memory").config["index"] is None
    with pytest.raises(ConfigError, match="index"):
        factory.create(backend="memory", index=5)
    with pytest.raises(ConfigError, match="unknown config key 'index'"):
        factory.create(backend="toy", index="hnsw")  # declared for memory only
    with pytest.raises(ConfigError, match="unknown config key 'index'"):
        DatabaseFactory().create(backend="memory", index="hnsw")  # without the plugin


def test_hook_dkv_vector_search() -> None:
    override, timing = FakeIndexOverride(), Timing()
    factory = DatabaseFactory(plugins=[override, timing])
    fake = factory.create(backend="memory", vector_enabled=True, index="fake")
    plain = factory.create(backend="memory", vector_enabled=True)
    for db in (fake, plain):
        db.create_batch(vec_records())
    hits = fake.vector_search([1, 2], k=3, filter={"n": {"$gt": 1}}, metric="l2")
    assert [h.id for h in hits] == ["fake-0"]
    backend, k, metric, flt = override.calls[-1]
    assert (backend, k, metric) == ("memory", 3, "euclidean")  # the request arrives validated
    assert flt is not None
    batch = fake.vector_search_batch([[1, 2], [2, 1]], k=3)
    assert [[h.id for h in hs] for hs in batch] == [["fake-0"], ["fake-1"]]
    # the override declines for the other store: the built-in exact search answers
    assert [h.id for h in plain.vector_search([1, 5], k=2, metric="dot")] == ["r5", "r4"]
    assert len(override.calls) == 2
    # the wrapper saw every search, overridden or not
    assert timing.seen == [("memory", 3, 1), ("memory", 3, 2), ("memory", 2, 2)]
    # validation happens before the hook: a bad request never reaches the override
    with pytest.raises(ValueError):
        fake.vector_search([1, 2], k=0)
    assert len(override.calls) == 2


async def test_hook_dkv_vector_search_async() -> None:
    override = FakeIndexOverride()
    factory = AsyncDatabaseFactory(plugins=[override])
    fake = factory.create(backend="memory", vector_enabled=True, index="fake")
    plain = factory.create(backend="memory", vector_enabled=True)
    for db in (fake, plain):
        await db.create_batch(vec_records())
    hits = await fake.vector_search([1, 2], k=4)
    assert [h.id for h in hits] == ["fake-0"]
    assert override.calls == [("async", 4)]
    batch = await fake.vector_search_batch(np.array([[1, 2], [3, 4]]), k=1)
    assert [[h.id for h in hs] for hs in batch] == [["fake-0"], ["fake-1"]]
    assert [h.id for h in await plain.vector_search([1, 5], k=2, metric="dot")] == ["r5", "r4"]
    assert len(override.calls) == 2
    await fake.close()
    await plain.close()


class RoutedTextSearch:
    """Answers text search for the stores it routes to an external engine (here: those using
    the ``whitespace`` analyzer), declines the others."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def _answer(self, db: Any, request: Any) -> Any:
        if db.config["analyzer"] != "whitespace":
            return None  # declined: the built-in BM25 answers
        self.requests.append(request)
        return [[TextSearchResult(Record({"q": q}, id=f"ext-{i}"), 1.0, request.text_fields)] for i, q in enumerate(request.queries)]

    @hookimpl(tryfirst=True)
    def dkv_text_search(self, db: Any, request: Any) -> Any:
        return self._answer(db, request)

    @hookimpl(tryfirst=True)
    def dkv_text_search_async(self, db: Any, request: Any) -> Any:
        answer = self._answer(db, request)
        if answer is None:
            return None

        async def done() -> Any:
            return answer

        return done()


def test_hook_dkv_register_analyzers() -> None:
    class Reversing:
        @hookimpl
        def dkv_register_analyzers(self) -> list[AnalyzerSpec]:
            def make(suffix: str = "") -> Any:
                class Rev:
                    def analyze(self, text: str) -> list[str]:
                        return [w[::-1] + suffix for w in text.split()]

                return Rev()

            return [AnalyzerSpec("reversing", make, "each word backwards")]

    factory = DatabaseFactory(plugins=[Reversing()])
    db = factory.create(backend="memory", analyzer="reversing", analyzer_options={"suffix": "!"})
    db.create_batch([Record({"t": "stressed desserts"}, id="a"), Record({"t": "plain"}, id="b")])
    assert [h.id for h in db.text_search("stressed")] == ["a"]
    assert db.config["analyzer"] == "reversing"
    with pytest.raises(ConfigError, match="reversing"):
        factory.create(backend="memory", analyzer="reversing", analyzer_options={"colour": "red"})
    with pytest.raises(ConfigError, match="unknown analyzer 'reversing'"):
        DatabaseFactory().create(backend="memory", analyzer="reversing")


def test_hook_dkv_text_search() -> None:
    routed = RoutedTextSearch()
    factory = DatabaseFactory(plugins=[routed])
    external = factory.create(backend="memory", analyzer="whitespace")
    plain = factory.create(backend="memory")
    for db in (external, plain):
        db.create_batch([Record({"t": "Hello world"}, id="a"), Record({"t": "bye"}, id="b")])
    assert [h.id for h in external.text_search("Hello there", k=3, filter={"t": "bye"})] == ["ext-0"]
    (req,) = routed.requests
    assert req.queries == ("Hello there",) and req.terms == (("Hello", "there"),)  # analyzed, validated
    assert req.k == 3 and req.filter is not None and req.text_fields == ("t",)
    assert [h.id for h in plain.text_search("hello")] == ["a"]  # declined: the built-in BM25
    with pytest.raises(InvalidRequestError):
        external.text_search("", k=3)  # validation happens before the hook
    assert len(routed.requests) == 1


async def test_hook_dkv_text_search_async() -> None:
    routed = RoutedTextSearch()
    factory = AsyncDatabaseFactory(plugins=[routed])
    external = factory.create(backend="memory", analyzer="whitespace")
    plain = factory.create(backend="memory")
    for db in (external, plain):
        await db.create_batch([Record({"t": "Hello world"}, id="a"), Record({"t": "bye"}, id="b")])
    got = await external.text_search_batch(["x", "y"], k=1)
    assert [[h.id for h in hits] for hits in got] == [["ext-0"], ["ext-1"]]
    assert [h.id for h in await plain.text_search("bye")] == ["b"]
    await external.close()
    await plain.close()


def test_hook_dkv_bulk_embed() -> None:
    counting = CountingBulkEmbed()
    db = DatabaseFactory(plugins=[counting]).create(backend="memory", vector_enabled=True)
    recs = [Record({"t": "hello"}, id="a"), Record({"t": "world"}, id="b")]
    assert db.bulk_embed_and_store(recs, "t", vector_field="remote", batch_size=7) == ["a", "b"]
    (req,) = counting.requests
    assert req.batch_size == 7 and req.text_field == "t" and req.vector_field == "remote"
    assert hasattr(req.embedder, "embed")  # the embedder arrives resolved
    assert db.count() == 0  # the override stored nothing
    # declined for another vector field: the built-in driver embeds and stores
    report = db.bulk_embed(recs, "t", progress=False)
    assert (report.embedded, report.skipped) == (2, 0)
    assert db.count() == 2
    assert len(counting.requests) == 1


async def test_hook_dkv_bulk_embed_async() -> None:
    counting = CountingBulkEmbed()
    db = AsyncDatabaseFactory(plugins=[counting]).create(backend="memory", vector_enabled=True)
    recs = [Record({"t": "hello"}, id="a")]
    assert await db.bulk_embed_and_store(recs, "t", vector_field="remote") == ["async"]
    assert len(counting.requests) == 1
    assert await db.count() == 0
    assert await db.bulk_embed_and_store(recs, "t", progress=False) == ["a"]
    assert await db.count() == 1
    await db.close()


def test_plugin_hooks_have_tests() -> None:
    """Every hook declared in hookspecs.py has a test_hook_<name> test in this module."""
    hooks = [
        name
        for name, fn in inspect.getmembers(hookspecs_module, inspect.isfunction)
        if hasattr(fn, "dk_vector_plugins_spec")
    ]
    assert len(hooks) >= 6
    tested = {name for name in globals() if name.startswith("test_hook_")}
    missing = [h for h in hooks if f"test_hook_{h}" not in tested]
    assert missing == [], f"hooks without a test_hook_<name> test: {missing}"


# --- overrides, wrappers, errors -------------------------------------------------------------


def test_hookimpl_raising_becomes_plugin_error_naming_plugin() -> None:
    db = DatabaseFactory(plugins=[Exploding()]).create(backend="memory", vector_enabled=True)
    db.create_batch(vec_records(2))
    with pytest.raises(PluginError, match=r"Exploding.*dkv_vector_search.*index file is corrupt") as exc:
        db.vector_search([1, 0], k=1)
    assert isinstance(exc.value.__cause__, ValueError)
    assert db.count() == 2


async def test_async_hookimpl_raising_becomes_plugin_error() -> None:
    db = AsyncDatabaseFactory(plugins=[Exploding()]).create(backend="memory", vector_enabled=True)
    await db.create_batch(vec_records(2))
    with pytest.raises(PluginError, match=r"Exploding.*remote index unreachable"):
        await db.vector_search([1, 0], k=1)
    await db.close()


def test_block_memory_makes_backend_unknown() -> None:
    factory = DatabaseFactory(block=["memory"])
    assert "memory" not in factory.get_available_backends()
    with pytest.raises(ConfigError, match=r"unknown backend 'memory'.*installed backends"):
        factory.create(backend="memory")
    toy = DatabaseFactory(block=["memory"], plugins=[load_toy_module()])
    with pytest.raises(ConfigError, match=r"installed backends: .*toy"):
        toy.create(backend="memory")


def test_no_plugin_answering_is_a_plugin_error() -> None:
    class BareDatabase(SyncDatabase):
        """A backend whose plugin registers the class but implements no search hook (with the
        built-in ``defaults`` plugin blocked, nothing answers)."""

        backend_name = "bare"

        def _make_core(self) -> StoreCore:
            return StoreCore(RecordTable())

    class BarePlugin:
        @hookimpl
        def dkv_register_backends(self) -> list[BackendSpec]:
            return [BackendSpec("bare", BareDatabase)]

    served = DatabaseFactory(plugins=[BarePlugin()]).create(backend="bare", vector_enabled=True)
    served.create_batch(vec_records(2))  # a store on the shared core: the defaults plugin answers
    assert len(served.vector_search([1, 0], k=1)) == 1
    factory = DatabaseFactory(plugins=[BarePlugin()], block=["defaults"])
    db = factory.create(backend="bare", vector_enabled=True)
    db.create_batch(vec_records(2))  # CRUD lives in the shared core
    assert db.count() == 2
    with pytest.raises(PluginError, match="no plugin answered dkv_vector_search"):
        db.vector_search([1, 0], k=1)
    with pytest.raises(PluginError, match="dkv_bulk_embed"):
        db.bulk_embed_and_store([Record({"t": "x"}, id="z")], "t")
    with pytest.raises(ConfigError, match="no async implementation"):
        AsyncDatabaseFactory(plugins=[BarePlugin()]).create(backend="bare")


def test_explicit_plugin_manager() -> None:
    pm = make_plugin_manager(plugins=[FakeIndexOverride()])
    factory = DatabaseFactory(plugin_manager=pm)
    assert factory.pm is pm
    db = factory.create(backend="memory", vector_enabled=True, index="fake")
    db.create_batch(vec_records(2))
    assert [h.id for h in db.vector_search([1, 0], k=1)] == ["fake-0"]
    # a plugin added to a host's manager later takes part too
    timing = Timing()
    factory2 = DatabaseFactory(plugin_manager=pm, plugins=[timing])
    factory2.create(backend="memory", vector_enabled=True).vector_search([1, 0], k=1)
    assert timing.seen == [("memory", 1, 0)]


def test_ensure_hookspecs() -> None:
    pm = pluggy.PluginManager("dk_vector_plugins")
    ensure_hookspecs(pm)
    assert pm.hook.dkv_vector_search.spec is not None
    import dk_vector_plugins.backends.memory as memory
    import dk_vector_plugins.defaults as defaults

    pm.register(memory, name="memory")
    pm.register(defaults, name="defaults")  # the exact search, for every store on the shared core
    db = DatabaseFactory(plugin_manager=pm).create(backend="memory", vector_enabled=True)
    db.create_batch(vec_records(2))
    assert len(db.vector_search([1, 0], k=5)) == 2
    with pytest.raises(PluginError, match="project"):
        ensure_hookspecs(pluggy.PluginManager("someone_else"))


# --- entry points and environment ------------------------------------------------------------


def test_entry_point_plugin_is_loaded_with_its_distribution(fake_entry_points: Any) -> None:
    fake_entry_points(toy_ep())
    factory = DatabaseFactory()
    assert "toy" in factory.get_available_backends()
    infos = {p.name: p for p in list_plugins(factory.pm)}
    assert infos["toy"].distribution == "dkv-toy"
    assert infos["toy"].version == "1.2.3"
    assert "dkv_register_backends" in infos["toy"].hooks and "dkv_register_embedders" in infos["toy"].hooks
    assert infos["toy"].builtin is False and infos["toy"].error is None


def test_broken_entry_point_warns_and_the_rest_keeps_working(fake_entry_points: Any) -> None:
    fake_entry_points(broken_ep(), toy_ep())
    with pytest.warns(PluginLoadWarning, match=r"'broken'.*dkv-broken 0\.0\.1.*dkv_broken_dependency"):
        factory = DatabaseFactory()
    db = factory.create(backend="memory", vector_enabled=True)
    db.create_batch(vec_records(3))
    assert len(db.vector_search([1, 0], k=5)) == 3
    assert factory.create(backend="toy").backend_name == "toy"
    infos = {p.name: p for p in list_plugins(factory.pm)}
    assert infos["broken"].error is not None and "ImportError" in infos["broken"].error
    assert infos["broken"].distribution == "dkv-broken"
    assert infos["toy"].error is None
    # asking for the broken plugin's backend names the failure
    with pytest.raises(PluginError, match=r"'broken'.*dkv-broken.*failed to load"):
        factory.create(backend="broken")
    # an unrelated unknown backend mentions the failed plugin too
    with pytest.raises(ConfigError, match=r"unknown backend 'nope'.*failed to load.*broken"):
        factory.create(backend="nope")


def test_broken_entry_point_strict_raises(fake_entry_points: Any) -> None:
    fake_entry_points(broken_ep())
    with pytest.raises(PluginError, match=r"'broken'.*dkv-broken"):
        DatabaseFactory(strict=True)


def test_blocking_an_entry_point(fake_entry_points: Any) -> None:
    fake_entry_points(broken_ep(), toy_ep())
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        factory = DatabaseFactory(block=["broken", "toy"])
    assert "toy" not in factory.get_available_backends()
    # listed as blocked (never imported, so no hooks), not hidden
    assert [(p.name, p.status, p.hooks) for p in list_plugins(factory.pm)] == [
        ("broken", "blocked", ()),
        ("toy", "blocked", ()),
    ]


def test_disable_plugin_autoload_env(fake_entry_points: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(broken_ep(), toy_ep())
    monkeypatch.setenv("DKV_DISABLE_PLUGIN_AUTOLOAD", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)  # the broken one is not even imported
        factory = DatabaseFactory()
    assert "toy" not in factory.get_available_backends()
    assert "memory" in factory.get_available_backends()
    assert "hashing" in factory.embedders()
    # explicit plugins still register
    assert "toy" in DatabaseFactory(plugins=[load_toy_module()]).get_available_backends()
    # the keyword overrides the environment
    with pytest.warns(PluginLoadWarning):
        assert "toy" in DatabaseFactory(load_entrypoints=True).get_available_backends()


def test_dkv_plugins_env_selects_entry_points(
    fake_entry_points: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry_points(broken_ep(), toy_ep())
    monkeypatch.setenv("DKV_PLUGINS", "toy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        factory = DatabaseFactory()
    assert "toy" in factory.get_available_backends()
    assert "memory" in factory.get_available_backends()  # built-ins always load
    monkeypatch.setenv("DKV_PLUGINS", " broken , other ")
    with pytest.warns(PluginLoadWarning, match="broken"):
        factory = DatabaseFactory()
    assert "toy" not in factory.get_available_backends()
    monkeypatch.setenv("DKV_PLUGINS", "")
    assert "toy" not in DatabaseFactory().get_available_backends()


def test_trace_plugins_env_prints_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DKV_TRACE_PLUGINS", "1")
    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    db.create_batch(vec_records(3))
    db.vector_search([1, 0], k=2)
    err = capsys.readouterr().err
    assert "dkv_vector_search" in err
    assert "defaults" in err.split("impls:")[1]  # the built-in exact search answered
    assert "returned 1 result list (2 hits)" in err
    monkeypatch.delenv("DKV_TRACE_PLUGINS")
    DatabaseFactory().create(backend="memory", vector_enabled=True).vector_search([1, 0], k=2)
    assert capsys.readouterr().err == ""


def test_list_plugins_all_includes_builtins() -> None:
    timing = Timing()
    pm = DatabaseFactory(plugins=[timing]).pm
    everything = {p.name: p for p in list_plugins(pm, all=True)}
    assert everything["memory"].builtin and everything["hashing"].builtin
    assert everything["memory"].distribution in ("dk_vector_plugins", "dk-vector-plugins")
    assert everything["memory"].hooks == ("dkv_register_backends",)  # a backend registers its spec only
    assert everything["defaults"].builtin and "dkv_vector_search" in everything["defaults"].hooks
    assert everything["hashing"].hooks == ("dkv_register_embedders",)
    third_party = [p.name for p in list_plugins(pm)]
    assert third_party == ["Timing"]
    assert everything["Timing"].hooks == ("dkv_vector_search",)
    assert everything["Timing"].as_dict()["builtin"] is False
    # built-ins are listed first
    flags = [p.builtin for p in list_plugins(pm, all=True)]
    assert flags == sorted(flags, reverse=True)


def test_same_plugin_class_twice_gets_distinct_names() -> None:
    a, b = Timing(), Timing()
    factory = DatabaseFactory(plugins=[a, b])
    factory.create(backend="memory", vector_enabled=True).vector_search([1, 0], k=1)
    assert len(a.seen) == 1 and len(b.seen) == 1
    assert len([p for p in list_plugins(factory.pm) if p.name.startswith("Timing")]) == 2


# --- listing what was not loaded, and names that match nothing ---------------------------------------


def test_blocked_and_filtered_plugins_are_listed_as_such(
    fake_entry_points: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dk_vector_plugins.cli import main

    fake_entry_points(toy_ep())
    infos = {p.name: p for p in list_plugins(DatabaseFactory(block=["toy"]).pm)}
    assert infos["toy"].status == "blocked" and infos["toy"].distribution == "dkv-toy"
    monkeypatch.setenv("DKV_PLUGINS", "someone-else")
    with pytest.warns(PluginLoadWarning, match="DKV_PLUGINS names no installed plugin: 'someone-else'"):
        infos = {p.name: p for p in list_plugins(DatabaseFactory().pm)}
    assert infos["toy"].status == "not loaded" and "DKV_PLUGINS" in str(infos["toy"].reason)
    monkeypatch.delenv("DKV_PLUGINS")
    assert main(["--block", "toy", "plugins"]) == 0
    out = capsys.readouterr().out
    assert "no third-party plugins" not in out
    assert "toy" in out and "blocked" in out
    monkeypatch.setenv("DKV_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "not loaded" in out and "DKV_DISABLE_PLUGIN_AUTOLOAD" in out


def test_a_misspelled_block_name_is_warned_about(fake_entry_points: Any) -> None:
    fake_entry_points(toy_ep())
    with pytest.warns(PluginLoadWarning, match=r"block= / --block names no installed plugin: 'tyo' \(installed: .*toy"):
        DatabaseFactory(block=["tyo"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DatabaseFactory(block=["toy", "memory"])  # names that exist: no warning
