"""DatabaseFactory / AsyncDatabaseFactory: configuration validation and store creation."""

from __future__ import annotations

from typing import Any

import pytest

from dk_vector_plugins import (
    AsyncDatabase,
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    HashingEmbedder,
    Record,
    SyncDatabase,
    VectorField,
)
from dk_vector_plugins.factory import CORE_OPTIONS, resolve_config
from dk_vector_plugins.types import OptionSpec


@pytest.fixture(scope="module")
def factory() -> DatabaseFactory:
    return DatabaseFactory()


def test_dataknobs_style_create(factory: DatabaseFactory) -> None:
    db = factory.create(backend="memory", vector_enabled=True, vector_metric="cosine")
    assert isinstance(db, SyncDatabase)
    assert db.backend_name == "memory"
    assert db.config["backend"] == "memory"
    assert db.config["vector_enabled"] is True
    assert db.config["vector_metric"] == "cosine"
    assert db.config["vector_dimensions"] is None
    db.create(Record({"embedding": VectorField([1, 0])}, id="a"))
    assert db.vector_search([1, 0], k=1)[0].id == "a"


def test_config_dict_form_and_keywords_win(factory: DatabaseFactory) -> None:
    cfg = {"backend": "memory", "vector_enabled": True, "vector_dimensions": 3, "vector_metric": "l2"}
    db = factory.create(cfg)
    assert db.config["vector_dimensions"] == 3
    assert db.config["vector_metric"] == "euclidean"  # aliases are normalized
    db2 = factory.create(cfg, vector_metric="dot")
    assert db2.config["vector_metric"] == "dot_product"
    assert cfg["vector_metric"] == "l2"  # the caller's dict is not changed


def test_defaults(factory: DatabaseFactory) -> None:
    db = factory.create()
    assert db.backend_name == "memory"
    assert db.config["vector_enabled"] is False
    assert db.config["vector_metric"] == "cosine"
    assert db.config["embedder"] == "hashing"


def test_config_is_read_only(factory: DatabaseFactory) -> None:
    db = factory.create(backend="memory")
    with pytest.raises(TypeError):
        db.config["vector_enabled"] = True  # type: ignore[index]


def test_unknown_key_names_key_and_accepted_keys(factory: DatabaseFactory) -> None:
    with pytest.raises(ConfigError) as exc:
        factory.create(backend="memory", vector_dimension=3)  # a typo
    msg = str(exc.value)
    assert "'vector_dimension'" in msg
    for key in ("vector_dimensions", "vector_enabled", "vector_metric", "backend"):
        assert key in msg


@pytest.mark.parametrize(
    "key, value, expected_type",
    [
        ("vector_enabled", "yes", "bool"),
        ("vector_enabled", 1, "bool"),
        ("vector_dimensions", "3", "int"),
        ("vector_dimensions", 3.0, "int"),
        ("vector_dimensions", True, "int"),
        ("vector_metric", 2, "str"),
        ("embedder", 1, "str"),
        ("embedder_options", ["a"], "dict"),
    ],
)
def test_wrong_type_names_key_and_type(
    factory: DatabaseFactory, key: str, value: Any, expected_type: str
) -> None:
    with pytest.raises(ConfigError) as exc:
        factory.create(backend="memory", **{key: value})
    msg = str(exc.value)
    assert repr(key) in msg
    assert expected_type in msg


@pytest.mark.parametrize("dims", [0, -1])
def test_vector_dimensions_must_be_positive(factory: DatabaseFactory, dims: int) -> None:
    with pytest.raises(ConfigError, match="vector_dimensions"):
        factory.create(backend="memory", vector_dimensions=dims)


def test_unknown_metric_lists_choices(factory: DatabaseFactory) -> None:
    with pytest.raises(ConfigError) as exc:
        factory.create(backend="memory", vector_metric="manhattan")
    msg = str(exc.value)
    assert "manhattan" in msg
    for m in ("cosine", "euclidean", "dot_product"):
        assert m in msg


@pytest.mark.parametrize(
    "metric, canonical",
    [("dot", "dot_product"), ("inner_product", "dot_product"), ("l2", "euclidean"), ("COSINE", "cosine")],
)
def test_metric_aliases_in_config(factory: DatabaseFactory, metric: str, canonical: str) -> None:
    assert factory.create(vector_metric=metric).config["vector_metric"] == canonical


def test_unknown_backend_lists_installed(factory: DatabaseFactory) -> None:
    with pytest.raises(ConfigError) as exc:
        factory.create(backend="mongodb")
    msg = str(exc.value)
    assert "'mongodb'" in msg and "installed backends" in msg
    for name in factory.get_available_backends():
        assert name in msg
    assert "memory" in factory.get_available_backends()


@pytest.mark.parametrize("backend", [3, "", None])
def test_backend_must_be_a_name(factory: DatabaseFactory, backend: Any) -> None:
    with pytest.raises(ConfigError, match="backend"):
        factory.create(backend=backend)


def test_config_must_be_a_mapping(factory: DatabaseFactory) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config(factory.pm, ["backend", "memory"])  # type: ignore[arg-type]
    with pytest.raises((ConfigError, TypeError, ValueError)):
        factory.create("memory")  # type: ignore[arg-type]


def test_nones_mean_defaults(factory: DatabaseFactory) -> None:
    db = factory.create(backend="memory", vector_metric=None, vector_dimensions=None)
    assert db.config["vector_metric"] == "cosine"
    assert db.config["vector_dimensions"] is None


def test_schema_key_is_accepted_for_compatibility(factory: DatabaseFactory) -> None:
    assert factory.create(backend="memory", schema={"fields": []}).config["schema"] == {"fields": []}


def test_store_class_constructed_directly_validates_too() -> None:
    from dk_vector_plugins.backends.memory import MemoryDatabase

    db = MemoryDatabase({"vector_enabled": True})
    assert db.config["backend"] == "memory"
    with pytest.raises(ConfigError, match="bogus"):
        MemoryDatabase(bogus=1)


def test_async_factory_creates_async_stores() -> None:
    factory = AsyncDatabaseFactory()
    db = factory.create(backend="memory", vector_enabled=True, vector_metric="cosine")
    assert isinstance(db, AsyncDatabase)
    assert db.backend_name == "memory"
    with pytest.raises(ConfigError, match="bogus"):
        factory.create(backend="memory", bogus=1)
    with pytest.raises(ConfigError, match="installed backends"):
        factory.create(backend="nope")


async def test_async_store_round_trip() -> None:
    async with AsyncDatabaseFactory().create(backend="memory", vector_enabled=True) as db:
        await db.create(Record({"embedding": VectorField([0, 1])}, id="a"))
        assert await db.exists("a")
        hits = await db.vector_search([0, 1], k=3)
        assert [h.id for h in hits] == ["a"]


def test_sync_store_context_manager(factory: DatabaseFactory) -> None:
    with factory.create(backend="memory") as db:
        db.connect()
        db.create(Record({"x": 1}, id="a"))
        assert db.count() == 1
    db.close()  # closing twice is fine


def test_embedder_lookup(factory: DatabaseFactory) -> None:
    assert "hashing" in factory.embedders()
    emb = factory.embedder("hashing", dimensions=16)
    assert isinstance(emb, HashingEmbedder) and emb.dimensions == 16
    assert factory.embedder().dimensions == 384
    with pytest.raises(ConfigError) as exc:
        factory.embedder("word2vec")
    assert "'word2vec'" in str(exc.value) and "hashing" in str(exc.value)
    with pytest.raises(ConfigError, match="hashing"):
        factory.embedder("hashing", colour="red")
    with pytest.raises(ConfigError):
        factory.embedder("hashing", dimensions=0)


def test_unknown_embedder_in_config_fails_on_use(factory: DatabaseFactory) -> None:
    db = factory.create(backend="memory", vector_enabled=True, embedder="word2vec")
    with pytest.raises(ConfigError, match="word2vec"):
        db.bulk_embed_and_store([Record({"t": "x"}, id="a")], "t")
    assert db.count() == 0


def test_embedder_uses_configured_dimensions(factory: DatabaseFactory) -> None:
    db = factory.create(backend="memory", vector_enabled=True, vector_dimensions=32)
    db.bulk_embed_and_store([Record({"t": "hello"}, id="a")], "t")
    assert db.read("a")["embedding"].shape == (32,)


def test_option_spec_check() -> None:
    spec = OptionSpec("n", (int,), 1)
    assert spec.check(3, "memory") == 3
    assert spec.check(None, "memory") is None
    with pytest.raises(ConfigError, match="'n'"):
        spec.check(True, "memory")  # bool is not an int here
    flag = OptionSpec("flag", (bool,), False)
    assert flag.check(True, "memory") is True
    assert {o.name for o in CORE_OPTIONS} >= {
        "backend",
        "vector_enabled",
        "vector_dimensions",
        "vector_metric",
    }


def test_required_option_and_alias() -> None:
    class Options:
        from dk_vector_plugins import hookimpl

        @hookimpl
        def dkv_register_options(self) -> list[OptionSpec]:
            return [
                OptionSpec("token", (str,), None, "API token", required=True, aliases=("api_key",)),
            ]

    factory = DatabaseFactory(plugins=[Options()])
    with pytest.raises(ConfigError, match="token"):
        factory.create(backend="memory")
    assert factory.create(backend="memory", api_key="s3cr3t").config["token"] == "s3cr3t"
    with pytest.raises(ConfigError, match="same"):
        factory.create(backend="memory", api_key="a", token="b")
    with pytest.raises(ConfigError, match="same"):  # in either order
        factory.create({"backend": "memory", "token": "b", "api_key": "a"})
