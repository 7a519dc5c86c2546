"""dataknobs-data's store surface: ``from_backend``, ``from_config``, the backend registries, the
vector-index methods, the S3 config aliases, ``DeterministicEmbedder`` and the S3 test switch."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import (
    AsyncDatabase,
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    DimensionMismatchError,
    Record,
    SyncDatabase,
    VectorField,
)
from dk_vector_plugins.backends.file import AsyncFileDatabase, FileDatabase
from dk_vector_plugins.backends.memory import AsyncMemoryDatabase, MemoryDatabase
from dk_vector_plugins.backends.s3 import AsyncS3Database, S3Database
from dk_vector_plugins.registry import BackendRegistry, async_backends, canonical_backend, sync_backends
from dk_vector_plugins.testing import DeterministicEmbedder

VECTOR_METHODS = (
    "update_vector",
    "delete_from_index",
    "create_vector_index",
    "drop_vector_index",
    "get_vector_index_stats",
)

# --- from_backend / from_config ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["memory", "MEMORY", " Memory ", "mem"])
def test_from_backend_builds_a_connected_store_through_the_registry(name: str) -> None:
    db = SyncDatabase.from_backend(name)
    assert isinstance(db, MemoryDatabase)
    assert db.create(Record({"a": 1})) and db.count() == 1


def test_from_backend_takes_a_config_and_validates_it(tmp_path: Path) -> None:
    db = SyncDatabase.from_backend("file", {"path": str(tmp_path / "s"), "vector_enabled": True})
    assert isinstance(db, FileDatabase) and db.config["path"] == str(tmp_path / "s")
    db.close()
    with pytest.raises(ValueError, match="definitely_not_a_key"):
        SyncDatabase.from_backend("memory", {"definitely_not_a_key": "x"})
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        SyncDatabase.from_backend("nope")
    with pytest.raises(ValueError, match="mapping"):
        SyncDatabase.from_backend("memory", ["not", "a", "mapping"])  # type: ignore[arg-type]


def test_async_from_backend_is_a_coroutine_that_connects(tmp_path: Path) -> None:
    assert inspect.iscoroutinefunction(AsyncDatabase.from_backend)

    async def go() -> None:
        db = await AsyncDatabase.from_backend("file", {"path": str(tmp_path / "s")})
        assert isinstance(db, AsyncFileDatabase)
        assert db.core.opened  # connect() was awaited: the table is loaded
        await db.create(Record({"x": 1}, id="a"))
        assert (await db.read("a")) is not None
        await db.close()
        with pytest.raises(ValueError, match="definitely_not_a_key"):
            await AsyncDatabase.from_backend("memory", {"definitely_not_a_key": "x"})

    asyncio.run(go())


def test_from_config_is_the_constructor() -> None:
    db = MemoryDatabase.from_config({"vector_dimensions": 3})
    assert isinstance(db, MemoryDatabase) and db.config["vector_dimensions"] == 3
    assert isinstance(AsyncMemoryDatabase.from_config({}), AsyncMemoryDatabase)
    assert isinstance(MemoryDatabase.from_config(), MemoryDatabase)
    for cls in (
        MemoryDatabase,
        FileDatabase,
        S3Database,
        AsyncMemoryDatabase,
        AsyncFileDatabase,
        AsyncS3Database,
    ):
        assert list(inspect.signature(cls.from_config).parameters) == ["config"]


# --- the registries ------------------------------------------------------------------------------


def test_the_registries_list_the_installed_backends() -> None:
    for registry in (sync_backends, async_backends):
        assert registry.list_canonical_keys() == ["file", "memory", "s3"]
        assert registry.list_keys() == ["file", "memory", "s3", "mem"]
        assert "MEMORY" in registry and registry.has("mem") and not registry.is_registered("sqlite")
        assert registry.load_declared_type("memory") is None
    assert sync_backends.get_factory("mem") is sync_backends.get_factory("Memory") is MemoryDatabase
    assert async_backends.get_factory("memory") is AsyncMemoryDatabase
    assert (
        sync_backends.get_factory("s3") is S3Database and async_backends.get_factory("s3") is AsyncS3Database
    )
    assert sync_backends.get_factory("nope") is None
    meta = sync_backends.get_metadata("file")
    assert "path" in meta["config_options"] and meta["description"]
    assert sync_backends.get_metadata("nope") == {}


def test_a_registry_follows_its_plugin_manager() -> None:
    """Built over the plugin host: a backend a plugin adds is listed; a sync-only one is not async."""
    from dk_vector_plugins import BackendSpec, hookimpl

    class Extra(MemoryDatabase):
        backend_name = "extra"

    class Plugin:
        @hookimpl
        def dkv_register_backends(self) -> list[BackendSpec]:
            return [BackendSpec(name="extra", sync_class=Extra)]

    pm = DatabaseFactory(plugins=[Plugin()]).plugin_manager
    sync, async_ = BackendRegistry("sync", pm), BackendRegistry("async", pm)
    assert "extra" in sync.list_canonical_keys() and sync.get_factory("EXTRA") is Extra
    assert "extra" not in async_.list_canonical_keys() and async_.get_factory("extra") is None
    assert isinstance(sync.create("extra"), Extra)
    assert repr(sync) == "BackendRegistry('sync')"


def test_canonical_backend() -> None:
    specs = DatabaseFactory().backends()
    assert [canonical_backend(specs, k) for k in ("file", "FILE", "mem", "x", None)] == [
        "file",
        "file",
        "memory",
        None,
        None,
    ]


def test_the_factory_instances() -> None:
    from dk_vector_plugins import registry

    assert registry.database_factory is registry.database_factory
    assert isinstance(registry.database_factory, DatabaseFactory)
    assert isinstance(registry.async_database_factory, AsyncDatabaseFactory)
    assert isinstance(registry.database_factory.create(backend="memory"), MemoryDatabase)
    with pytest.raises(AttributeError):
        registry.no_such_name  # noqa: B018


# --- the vector-index methods --------------------------------------------------------------------


def test_the_methods_are_sync_on_sync_classes_and_async_on_async_ones() -> None:
    for name in VECTOR_METHODS:
        for cls in (MemoryDatabase, FileDatabase, S3Database):
            assert not inspect.iscoroutinefunction(getattr(cls, name)), (cls, name)
        for acls in (AsyncMemoryDatabase, AsyncFileDatabase, AsyncS3Database):
            assert inspect.iscoroutinefunction(getattr(acls, name)), (acls, name)


@pytest.fixture
def vstore(make_store_for: Callable[..., Any]) -> Any:
    db = make_store_for(vector_enabled=True)
    db.create(Record({"content": "hello", "embedding": VectorField([1.0, 0.0])}, id="r1"))
    db.create(Record({"content": "other"}, id="r2"))
    return db


def test_update_vector(vstore: Any) -> None:
    assert vstore.update_vector("r1", "embedding", [0.0, 1.0], {"note": "n"}) is True
    stored = vstore.read("r1")
    assert list(stored.get_value("embedding")) == [0.0, 1.0]
    assert stored.fields["embedding"].metadata == {"note": "n"}
    assert stored.get_value("content") == "hello"
    assert vstore.update_vector("r2", "embedding", np.array([1.0, 1.0])) is True
    assert [h.id for h in vstore.vector_search([0.0, 1.0], k=2)] == ["r1", "r2"]
    assert vstore.update_vector("nope", "embedding", [0.0, 1.0]) is False
    with pytest.raises(DimensionMismatchError):
        vstore.update_vector("r1", "embedding", [0.0, 1.0, 2.0])
    assert list(vstore.read("r1").get_value("embedding")) == [0.0, 1.0]  # a refused write changes nothing


def test_delete_from_index_deletes_the_record_as_dataknobs_does(vstore: Any) -> None:
    assert vstore.delete_from_index("r1") is True
    assert vstore.read("r1") is None
    assert vstore.delete_from_index("r1", vector_field="embedding") is False


def test_the_index_helpers(vstore: Any) -> None:
    assert vstore.create_vector_index("embedding") is True
    assert (
        vstore.create_vector_index("embedding", dimensions=2, metric="euclidean", index_type="hnsw", m=16)
        is True
    )
    with pytest.raises(DimensionMismatchError, match="has 2 dimensions, not 3"):
        vstore.create_vector_index("embedding", dimensions=3)
    assert vstore.drop_vector_index("embedding") is True
    stats = vstore.get_vector_index_stats("embedding")
    assert stats == {
        "field": "embedding",
        "indexed": False,
        "index_type": "exact",
        "vector_count": 1,
        "dimensions": 2,
        "metric": "cosine",
    }
    assert vstore.get_vector_index_stats("other")["vector_count"] == 0
    vstore.delete("r1")
    assert vstore.get_vector_index_stats()["vector_count"] == 0
    with pytest.raises(ValueError, match="vector_field"):
        vstore.get_vector_index_stats("")


# --- S3 config keys ------------------------------------------------------------------------------


def _s3(**config: Any) -> Any:
    from dk_vector_plugins.factory import resolve_config

    return resolve_config(DatabaseFactory().plugin_manager, {"backend": "s3", "bucket": "b", **config})


@pytest.mark.parametrize(
    ("alias", "key", "value"),
    [
        ("max_workers", "concurrency", 3),
        ("max_pool_connections", "concurrency", 4),
        ("max_retries", "max_attempts", 7),
        ("region", "region_name", "eu-west-1"),
        ("access_key_id", "aws_access_key_id", "AKIA"),
        ("secret_access_key", "aws_secret_access_key", "s3cr3t"),
        ("session_token", "aws_session_token", "tok"),
    ],
)
def test_the_s3_aliases_reach_their_keys(alias: str, key: str, value: Any) -> None:
    assert _s3(**{alias: value})[key] == value


def test_the_s3_client_knobs() -> None:
    c = _s3()
    assert (c["max_attempts"], c["retry_mode"], c["multipart_chunksize"], c["extra_client_kwargs"]) == (
        3,
        "standard",
        16 << 20,
        None,
    )
    c = _s3(
        retry_mode="adaptive",
        multipart_threshold=1 << 20,
        multipart_chunksize=8 << 20,
        extra_client_kwargs={"verify": False},
    )
    assert (c["retry_mode"], c["multipart_threshold"], c["multipart_chunksize"]) == (
        "adaptive",
        1 << 20,
        8 << 20,
    )
    with pytest.raises(ConfigError, match="retry_mode"):
        _s3(retry_mode="sometimes")
    with pytest.raises(ConfigError, match="may not set 'endpoint_url'"):
        _s3(extra_client_kwargs={"endpoint_url": "http://x"})
    with pytest.raises(ConfigError, match="mean the same"):
        _s3(max_workers=2, concurrency=3)


def test_the_s3_knobs_reach_the_client(s3_server: Any) -> None:
    db = DatabaseFactory().create(
        backend="s3",
        **s3_server.config(),
        max_retries=5,
        retry_mode="adaptive",
        max_workers=12,
        multipart_chunksize=6 << 20,
        extra_client_kwargs={"use_ssl": False},
    )
    cfg = db.s3_client.meta.config
    assert cfg.retries == {"mode": "adaptive", "total_max_attempts": 6}  # the first try and 5 retries
    assert cfg.max_pool_connections == 12
    assert db.storage is not None
    db.create(Record({"a": 1}, id="x"))
    assert db.read("x") is not None
    db.close()
    with pytest.raises(ConfigError, match="rejected"):
        DatabaseFactory().create(
            backend="s3", **s3_server.config(), extra_client_kwargs={"no_such_argument": 1}
        )


def test_the_async_s3_client_gets_the_knobs(s3_server: Any) -> None:
    async def go() -> None:
        db = AsyncDatabaseFactory().create(backend="s3", **s3_server.config(), max_retries=4)
        await db.connect()
        assert db.s3_client.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}
        await db.close()

    asyncio.run(go())


# --- DeterministicEmbedder -----------------------------------------------------------------------


def test_the_deterministic_embedder() -> None:
    e = DeterministicEmbedder(dimensions=8, model_id="m")
    [a, b] = asyncio.run(e.embed(["alpha", "beta"]))
    assert a == asyncio.run(e.embed(["alpha"]))[0] and a != b
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-12 and len(a) == e.dimensions == 8
    assert asyncio.run(DeterministicEmbedder(8, "other").embed(["alpha"]))[0] != a
    assert (e.model_id, e.model_name) == ("m", "m")
    assert asyncio.run(e.embed([])) == []
    assert repr(e) == "DeterministicEmbedder(dimensions=8, model_id='m')"
    with pytest.raises(ValueError, match="at least 1"):
        DeterministicEmbedder(0)


def test_the_deterministic_embedder_serves_an_async_store() -> None:
    async def go() -> None:
        db = AsyncDatabaseFactory().create(backend="memory")
        e = DeterministicEmbedder(dimensions=8, model_id="nomic")
        await db.bulk_embed_and_store([Record({"title": "alpha"}, id="a")], "title", embedding_fn=e)
        stored = await db.read("a")
        assert list(stored.get_value("embedding")) == pytest.approx((await e.embed(["alpha"]))[0])
        assert stored.fields["embedding"].model_name == "nomic"

    asyncio.run(go())


def test_the_deterministic_embedder_matches_dataknobs() -> None:
    """The same vectors as dataknobs-data's own helper: those it gave (committed, made by
    ``DeterministicEmbedder(dimensions=5, model_id="q").embed(["one", "two"])`` in dataknobs-data
    0.11.0), and, when the compatibility runner's venv is there, what it gives now."""
    import json

    fixture = json.loads((Path(__file__).parent / "fixtures" / "dataknobs" / "deterministic_embedder.json").read_text())
    ours = DeterministicEmbedder(dimensions=fixture["dimensions"], model_id=fixture["model_id"])
    assert asyncio.run(ours.embed(fixture["texts"])) == fixture["vectors"]
    python = Path(__file__).parent.parent / ".compat-cache" / "venv" / "bin" / "python"
    if not python.exists():
        return
    code = (
        "import asyncio, json; from dataknobs_data.testing import DeterministicEmbedder as D; "
        "print(json.dumps(asyncio.run(D(dimensions=5, model_id='q').embed(['one', 'two']))))"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == asyncio.run(
        DeterministicEmbedder(dimensions=5, model_id="q").embed(["one", "two"])
    )


# --- the S3 test switch --------------------------------------------------------------------------


def test_the_s3_switch() -> None:
    import s3_server as s3mod

    assert s3mod.external({}) is None
    assert s3mod.external({"S3_ENDPOINT_URL": "http://elsewhere:9000"}) is None  # only TEST_S3 switches
    server = s3mod.external({"TEST_S3": "true"})
    assert server is not None and server.endpoint_url == "http://localhost:4566" and server.process is None
    assert server.credentials == s3mod.CREDENTIALS
    server = s3mod.external(
        {"TEST_S3": "TRUE", "S3_ENDPOINT_URL": "http://minio:9000", "AWS_ACCESS_KEY_ID": "k"}
    )
    assert server is not None and server.endpoint_url == "http://minio:9000" and server.credentials == {}
    assert s3mod.external({"TEST_S3": "false"}) is None


def test_the_s3_switch_says_when_nothing_answers(s3_server: Any) -> None:
    import s3_server as s3mod

    s3mod.check_reachable(s3_server)  # the session's server answers
    with pytest.raises(
        RuntimeError, match=re.escape("TEST_S3=true: no S3 server answers at http://127.0.0.1:9")
    ):
        s3mod.check_reachable(s3mod.S3Server("http://127.0.0.1:9", {}), timeout=2)


def test_a_missing_bucket_is_created_unless_told_not_to(s3_server: Any) -> None:
    import uuid

    from dk_vector_plugins import StorageError

    bucket = f"made-{uuid.uuid4().hex[:8]}"
    cfg = {k: v for k, v in s3_server.config(bucket=bucket).items() if k != "create_bucket"}
    with pytest.raises(StorageError, match="does not exist"):
        DatabaseFactory().create(backend="s3", **cfg, create_bucket=False)
    db = DatabaseFactory().create(backend="s3", **cfg)  # dataknobs-data's default: create it
    db.create(Record({"a": 1}, id="x"))
    assert db.read("x") is not None
    db.close()
    assert bucket in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
