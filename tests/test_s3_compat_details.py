"""dataknobs-data 0.11's S3 details on our S3 stores, sync and async, against the local S3 server
(moto's standalone server over HTTP, the ``s3_server`` fixture; never an in-process mock).

Covered: the settings a dataknobs-data S3 store exposes as attributes (``bucket``, ``prefix``,
``region``, ``endpoint_url``, ``max_workers``), what assigning them does, and the region a
missing bucket is created in.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from dk_vector_plugins import AsyncDatabaseFactory, DatabaseFactory, Record
from dk_vector_plugins.backends.s3 import AsyncS3Database, S3Database

MODES = [False, True]


def _mode(is_async: bool) -> str:
    return "async" if is_async else "sync"


def _create(is_async: bool, config: dict[str, Any]) -> Any:
    factory = AsyncDatabaseFactory() if is_async else DatabaseFactory()
    return factory.create(backend="s3", **config)


def _use(db: Any, is_async: bool) -> Record | None:
    """Write one record and read it back (opens an async store's client)."""

    async def go() -> Record | None:
        await db.create(Record({"a": 1}, id="x"))
        got = await db.read("x")
        await db.close()
        return got  # type: ignore[no-any-return]

    if is_async:
        return asyncio.run(go())
    db.create(Record({"a": 1}, id="x"))
    got = db.read("x")
    db.close()
    return got  # type: ignore[no-any-return]


# --- settings as attributes, under dataknobs-data's names ------------------------------------


@pytest.mark.parametrize("is_async", MODES, ids=_mode)
def test_a_store_shows_its_settings_under_dataknobs_names(s3_server: Any, is_async: bool) -> None:
    config = {**s3_server.config(), "max_workers": 5}
    db = _create(is_async, config)
    assert db.bucket == config["bucket"] and db.prefix == config["prefix"]
    assert db.region == config["region_name"]
    assert db.endpoint_url == config["endpoint_url"]
    assert db.max_workers == 5 == db.config["concurrency"]  # dataknobs's name of `concurrency`
    if is_async:
        asyncio.run(db.close())
    else:
        db.close()


@pytest.mark.parametrize("is_async", MODES, ids=_mode)
def test_unset_settings_read_as_none_and_max_workers_as_its_default(s3_server: Any, is_async: bool) -> None:
    config = s3_server.config(bucket=f"dkv-root-{uuid.uuid4().hex[:8]}")
    db = _create(is_async, {k: v for k, v in config.items() if k not in ("prefix", "region_name")})
    assert db.region is None and db.prefix == ""
    assert db.max_workers == db.config["concurrency"] == 16
    if is_async:
        asyncio.run(db.close())
    else:
        db.close()


@pytest.mark.parametrize("is_async", MODES, ids=_mode)
@pytest.mark.parametrize(
    "name, key, value",
    [
        ("bucket", "bucket", "another-bucket"),
        ("prefix", "prefix", "elsewhere/"),
        ("region", "region_name", "eu-west-1"),
        ("endpoint_url", "endpoint_url", "http://127.0.0.1:9"),
        ("max_workers", "concurrency", 3),
    ],
)
def test_a_store_refuses_a_new_setting_and_keeps_its_own(
    s3_server: Any, is_async: bool, name: str, key: str, value: Any
) -> None:
    """A store's location and client are fixed when it is created: assigning one of them raises
    (naming the config key to create a store with) rather than being silently ignored."""
    config = s3_server.config()
    db = _create(is_async, config)
    before = getattr(db, name)
    with pytest.raises(AttributeError, match=rf"config key '{key}'.*create a store with {key}="):
        setattr(db, name, value)
    assert getattr(db, name) == before
    got = _use(db, is_async)  # the store still works where it was created
    assert got is not None and got["a"] == 1
    listed = s3_server.client().list_objects_v2(Bucket=config["bucket"], Prefix=config["prefix"] + "/")
    assert listed.get("KeyCount", 0) > 0


@pytest.mark.parametrize("cls", [S3Database, AsyncS3Database], ids=["sync", "async"])
def test_an_instance_made_without_init_keeps_assigned_settings(cls: type) -> None:
    """dataknobs-data's ``test_custom_endpoint`` builds a store with ``cls.__new__`` (no config,
    no connection) and sets its settings as attributes: on such an instance they are ordinary
    attributes."""
    db = cls.__new__(cls)
    db.bucket = "test-bucket"
    db.endpoint_url = "http://localhost:4566"
    db.prefix = "p/"
    db.region = "eu-west-1"
    db.max_workers = 4
    db.access_key_id = "test"
    assert (db.bucket, db.endpoint_url, db.prefix, db.region, db.max_workers) == (
        "test-bucket",
        "http://localhost:4566",
        "p/",
        "eu-west-1",
        4,
    )
    fresh = cls.__new__(cls)
    with pytest.raises(AttributeError, match="bucket"):
        fresh.bucket  # noqa: B018 - never assigned, no config: an ordinary missing attribute


def test_the_settings_are_documented_attributes_of_the_classes() -> None:
    for cls in (S3Database, AsyncS3Database):
        for name in ("bucket", "prefix", "region", "endpoint_url", "max_workers"):
            attr = getattr(cls, name)
            assert attr.__doc__ and "config key" in attr.__doc__, (cls, name)


# --- the region a missing bucket is created in -----------------------------------------------


@pytest.mark.parametrize("is_async", MODES, ids=_mode)
@pytest.mark.parametrize("region, constraint", [("eu-west-1", "eu-west-1"), ("us-east-1", None)])
def test_a_missing_bucket_is_created_in_the_stores_region(
    s3_server: Any, is_async: bool, region: str, constraint: str | None
) -> None:
    """Outside us-east-1 S3 wants the region named (``LocationConstraint``); us-east-1 takes none."""
    bucket = f"dkv-region-{uuid.uuid4().hex[:8]}"
    db = _create(is_async, {**s3_server.config(bucket=bucket), "region_name": region})
    got = _use(db, is_async)
    assert got is not None and got["a"] == 1
    location = s3_server.client().get_bucket_location(Bucket=bucket)["LocationConstraint"]
    assert location == constraint
