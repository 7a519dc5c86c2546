"""Configuration and input that used to escape as builtin exceptions, secrets that used to show.

Each defect below was reproduced on the code before the fix (the test failed there):

* the S3 secret key was printed by ``repr(db)`` / ``str(db)``, and a mistyped credential value
  was echoed in the ``ConfigError``;
* ``k=2**63`` (``OverflowError``), a filter nested 5,000 deep (``RecursionError``), a path with
  NUL, ``endpoint_url="not a url"`` and ``create(["backend", "memory"])`` (``ValueError``) raised
  builtin exceptions instead of ``DkvError`` subclasses;
* ``path=""`` wrote the table into the current directory; negative ``concurrency``,
  ``max_staleness_s`` and ``warn_download_bytes`` were accepted;
* an async S3 store used from a second event loop (``asyncio.run`` twice) failed with
  ``Event loop is closed``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    DkvError,
    FilterError,
    InvalidRequestError,
    OptionSpec,
    Record,
    VectorField,
)
from dk_vector_plugins.cli import main as dkv_main
from dk_vector_plugins.factory import CORE_OPTIONS, backends, extra_options

SECRET_KEYS = ("aws_secret_access_key", "aws_session_token", "aws_access_key_id")


def all_options() -> list[OptionSpec]:
    pm = DatabaseFactory().pm
    out = list(CORE_OPTIONS)
    for spec in backends(pm).values():
        out.extend(spec.options)
    out.extend(extra_options(pm))
    return out


# --- secrets ---------------------------------------------------------------------------------


def test_secret_options_are_marked() -> None:
    marked = {o.name for o in all_options() if o.secret}
    assert set(SECRET_KEYS) <= marked


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secrets_never_show_in_repr_str_or_errors(
    key: str, s3_server: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = f"SeCrEt-{key}-0123456789"
    cfg = {**s3_server.config(), key: secret}
    caplog.set_level(logging.DEBUG, logger="dk_vector_plugins")
    sync_db = DatabaseFactory().create(backend="s3", vector_enabled=True, **cfg)
    async_db = AsyncDatabaseFactory().create(backend="s3", vector_enabled=True, **cfg)
    for db in (sync_db, async_db):
        for text in (repr(db), str(db), repr(db.config), str(db.config)):
            assert secret not in text, text
        assert "***" in repr(db)
    sync_db.close()
    # a value of the wrong type is not echoed
    with pytest.raises(ConfigError) as err:
        DatabaseFactory().create(backend="s3", **{**cfg, key: secret.encode()})
    assert secret not in str(err.value) and key in str(err.value)
    # the CLI's answers and errors
    code = dkv_main(["search", "hello", "--backend", "s3", *(a for k, v in cfg.items() for a in ("-o", f"{k}={v}"))])
    out = capsys.readouterr()
    assert secret not in out.out and secret not in out.err, (code, out)
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_db_config_repr_hides_secrets_but_keeps_values(s3_server: Any) -> None:
    cfg = {**s3_server.config(), "aws_secret_access_key": "hunter2hunter2"}
    db = DatabaseFactory().create(backend="s3", **cfg)
    try:
        assert db.config["aws_secret_access_key"] == "hunter2hunter2"  # the store can use it
        assert "hunter2" not in repr(db.config) and "hunter2" not in repr(db)
    finally:
        db.close()


# --- config values ---------------------------------------------------------------------------


def test_every_numeric_option_has_a_checked_range() -> None:
    for opt in all_options():
        numeric = any(t in (int, float) for t in opt.types) and bool not in opt.types
        if numeric:
            assert opt.minimum is not None or opt.above is not None, f"{opt.name} has no lower bound"


@pytest.mark.parametrize(
    "key,value",
    [
        ("concurrency", -5),
        ("concurrency", 0),
        ("max_staleness_s", -1),
        ("warn_download_bytes", -1),
        ("multipart_threshold", -1),
        ("commit_retries", -1),
        ("grace_s", -0.5),
    ],
)
def test_s3_numeric_options_are_range_checked(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        DatabaseFactory().create(backend="s3", bucket="b", endpoint_url="http://127.0.0.1:9", **{key: value})


@pytest.mark.parametrize("path", ["", "a\0b", "\0"])
def test_bad_file_paths_are_config_errors(path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="path"):
        DatabaseFactory().create(backend="file", path=path)
    assert list(tmp_path.iterdir()) == []  # nothing written into the current directory


@pytest.mark.parametrize("url", ["not a url", "ftp://x", "http://", "127.0.0.1:9000", "http://a b"])
def test_bad_endpoint_urls_are_config_errors(url: str) -> None:
    for factory in (DatabaseFactory(), AsyncDatabaseFactory()):
        with pytest.raises(ConfigError, match="endpoint_url"):
            factory.create(backend="s3", bucket="b", endpoint_url=url)


@pytest.mark.parametrize("config", [["backend", "memory"], "memory", 3, [("backend", "memory")]])
def test_a_config_that_is_not_a_mapping_is_a_config_error(config: Any) -> None:
    for factory in (DatabaseFactory(), AsyncDatabaseFactory()):
        with pytest.raises(ConfigError, match="mapping"):
            factory.create(config)


# --- input -----------------------------------------------------------------------------------


@pytest.fixture
def mem() -> Any:
    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    db.add_vectors([[1.0, 0.0], [0.0, 1.0]], ids=["a", "b"], metadata=[{"n": 1}, {"n": 2}])
    return db


@pytest.mark.parametrize("k", [2**63, 2**64 + 5, 10**30])
def test_a_huge_k_is_as_many_as_there_are(mem: Any, k: int) -> None:
    assert [h.id for h in mem.vector_search([1.0, 0.0], k=k)] == ["a", "b"]


def test_a_deeply_nested_filter_is_a_filter_error(mem: Any) -> None:
    deep: Any = {"n": 1}
    for _ in range(5000):
        deep = {"$and": [deep]}
    for call in (lambda: mem.count(deep), lambda: mem.vector_search([1.0, 0.0], k=1, filter=deep)):
        with pytest.raises(FilterError, match="nested"):
            call()
    nots: Any = {"n": 1}
    for _ in range(3000):
        nots = {"$not": nots}
    with pytest.raises(FilterError, match="nested"):
        mem.search(nots)
    listed: Any = {"n": 1}
    for _ in range(3000):
        listed = [listed]
    with pytest.raises(FilterError, match="nested"):
        mem.count(listed)
    ok: Any = {"n": 1}
    for _ in range(99):  # just inside the limit (a $and and its list are two levels): answered
        ok = {"$and": [ok]}
    assert mem.count(ok) == 1
    assert [h.id for h in mem.vector_search([1.0, 0.0], k=2, filter=ok)] == ["a"]


def test_every_error_above_is_a_dkv_error() -> None:
    for cls in (ConfigError, FilterError, InvalidRequestError):
        assert issubclass(cls, DkvError) and issubclass(cls, ValueError)


# --- async S3 across event loops ----------------------------------------------------------------


def test_an_async_s3_store_works_from_a_second_event_loop(s3_server: Any) -> None:
    db = AsyncDatabaseFactory().create(backend="s3", vector_enabled=True, **s3_server.config())

    async def first() -> None:
        await db.create(Record({"embedding": VectorField([1.0, 0.0])}, id="a"))

    async def second() -> list[str]:
        await db.create(Record({"embedding": VectorField([0.0, 1.0])}, id="b"))
        hits = await db.vector_search([0.0, 1.0], k=2)
        return [h.id for h in hits]

    asyncio.run(first())
    assert asyncio.run(second()) == ["b", "a"]
    asyncio.run(db.close())


def test_env_has_no_stray_credentials_in_errors(s3_server: Any) -> None:
    """A store that cannot reach its bucket says so without repeating the credentials."""
    secret = "NotReallySecret-987654321"
    with pytest.raises(DkvError) as err:
        DatabaseFactory().create(
            backend="s3",
            bucket="b",
            endpoint_url="http://127.0.0.1:9",
            aws_access_key_id="AKIAEXAMPLE",
            aws_secret_access_key=secret,
        )
    assert secret not in str(err.value)
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") is None or os.environ["AWS_SECRET_ACCESS_KEY"] not in str(
        err.value
    )


def test_credentials_inside_embedder_options_are_not_shown() -> None:
    db = DatabaseFactory().create(
        backend="memory", embedder_options={"api_key": "sk-VERYSECRET", "model": "m", "headers": {"X-Token": "t0k"}}
    )
    text = repr(db) + str(db.config)
    assert "sk-VERYSECRET" not in text and "t0k" not in text
    assert "'model': 'm'" in text
    assert db.config["embedder_options"]["api_key"] == "sk-VERYSECRET"


def test_the_async_bulk_embed_awaits_an_embedders_async_path() -> None:
    calls: list[str] = []

    class TwoPaths:
        def embed(self, texts: Any) -> Any:
            calls.append("sync")
            return [[1.0, float(len(t))] for t in texts]

        async def aembed(self, texts: Any) -> Any:
            calls.append("async")
            return [[1.0, float(len(t))] for t in texts]

    async def run() -> list[str]:
        db = AsyncDatabaseFactory().create(backend="memory", vector_enabled=True)
        return await db.bulk_embed_and_store([Record({"t": "abc"}, id="a")], "t", embedding_fn=TwoPaths())

    assert asyncio.run(run()) == ["a"]
    assert calls == ["async"]
    sync_db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    sync_db.bulk_embed_and_store([Record({"t": "abc"}, id="a")], "t", embedding_fn=TwoPaths())
    assert calls == ["async", "sync"]
