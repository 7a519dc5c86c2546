"""The S3 backend against a real S3 server over HTTP (moto's standalone server, or S3_ENDPOINT_URL)."""

from __future__ import annotations

import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from s3_server import S3Server, clients_from

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    DkvPerformanceWarning,
    DuplicateRecordError,
    Record,
    StorageError,
    SyncDatabase,
    VectorField,
)

HERE = Path(__file__).parent


class Requests:
    """Counts the HTTP requests a botocore client sends (retries included)."""

    def __init__(self, client: Any) -> None:
        self.sent: list[str] = []
        client.meta.events.register("before-send.s3.*", self._on_send)

    def _on_send(self, request: Any, **_: Any) -> None:
        self.sent.append(f"{request.method} {request.url.split('?')[0].rsplit('/', 1)[-1]}")

    def take(self) -> list[str]:
        out, self.sent = self.sent, []
        return out


def _make(s3_server: Any, **extra: Any) -> Any:
    return DatabaseFactory().create(backend="s3", vector_enabled=True, **{**s3_server.config(), **extra})


def _make_counted(s3_server: S3Server, **extra: Any) -> tuple[SyncDatabase, list[str]]:
    """A store made as by :func:`_make` and the URLs of every request it sends, from its
    construction (its cold load) on."""
    import boto3

    counted: list[str] = []
    boto3.DEFAULT_SESSION = None
    session = boto3.Session()
    session.events.register("before-send.s3.*", lambda request, **_: counted.append(request.url))
    with clients_from(session):
        return _make(s3_server, **extra), counted


def _records(n: int, dim: int = 8, start: int = 0, seed: int = 0) -> list[Record]:
    rng = np.random.default_rng(seed)
    return [
        Record({"i": i, "tag": f"t{i % 3}", "embedding": VectorField(rng.standard_normal(dim))}, id=f"r{i:05d}")
        for i in range(start, start + n)
    ]


def test_factory_creates_sync_and_async(s3_server: Any) -> None:
    cfg = s3_server.config()
    db = DatabaseFactory().create(backend="s3", vector_enabled=True, **cfg)
    db.create_batch(_records(20))
    q = db.read("r00003")["embedding"]
    assert db.vector_search(q, k=1)[0].id == "r00003"
    db.close()

    adb = AsyncDatabaseFactory().create(backend="s3", vector_enabled=True, **cfg)

    async def run() -> None:
        assert await adb.count() == 20
        hits = await adb.vector_search(q, k=3, filter={"tag": "t0"})
        assert [h.record["tag"] for h in hits] == ["t0"] * 3
        await adb.create(Record({"i": 99, "embedding": VectorField(q)}, id="extra"))
        await adb.close()

    import asyncio

    asyncio.run(run())
    again = _make(s3_server, prefix=cfg["prefix"])
    assert again.count() == 21
    assert again.verify()["live"] == 21


def test_warm_search_is_one_request_and_new_commit_fetches_only_new_segment(s3_server: Any) -> None:
    reader = _make(s3_server)
    prefix = reader.config["prefix"]
    reader.create_batch(_records(50))
    q = np.ones(8, dtype=np.float32)
    reader.vector_search(q, k=5)
    counter = Requests(reader.s3_client)
    for _ in range(3):
        reader.vector_search(q, k=5)
        assert counter.take() == ["GET LATEST.json"]  # answered 304

    writer = _make(s3_server, prefix=prefix, inline_bytes=0)  # the segment's objects on their own
    writer.create_batch(_records(5, start=50))
    hits = reader.vector_search(q, k=100)
    assert len(hits) == 55
    sent = counter.take()
    # the manifest request (200 with the new manifest) + one GET per object of the one new segment:
    # ids, rows, vectors and their norms
    assert sent[0] == "GET LATEST.json"
    assert len(sent) == 1 + 4, sent
    assert sorted(s.rsplit(".", 2)[-2] + "." + s.rsplit(".", 1)[-1] for s in sent[1:]) == [
        "f0.npy",
        "ids.txt",
        "rows.jsonl",
        "sq.npy",
    ]


def test_small_commits_cost_two_requests_and_a_reader_one_per_commit(s3_server: Any) -> None:
    reader = _make(s3_server)
    prefix = reader.config["prefix"]
    reader.create_batch(_records(50))
    q = np.ones(8, dtype=np.float32)
    reader.vector_search(q, k=5)
    writer = _make(s3_server, prefix=prefix)
    wcount = Requests(writer.s3_client)
    writer.create(_records(1, start=50)[0])  # a small commit: its segment inside the manifest
    # the writer's check for newer commits (a conditional GET), the manifest, LATEST.json
    assert sorted(r.split()[0] for r in wcount.take()) == ["GET", "PUT", "PUT"]
    rcount = Requests(reader.s3_client)
    assert len(reader.vector_search(q, k=100)) == 51
    assert rcount.take() == ["GET LATEST.json"]  # the new manifest carries the new rows
    for i in range(3):  # three commits while the reader is away: LATEST + the two older manifests
        writer.create(_records(1, start=51 + i)[0])
    assert len(reader.vector_search(q, k=100)) == 54
    sent = rcount.take()
    assert sent[0] == "GET LATEST.json" and len(sent) == 3, sent
    assert all(s.startswith("GET 000") and s.endswith(".json") for s in sent[1:]), sent  # manifests
    assert reader.verify()["live"] == 54


def test_a_writer_opens_and_appends_without_reading_vectors_or_rows(s3_server: S3Server) -> None:
    """``load_vectors=False, lazy_rows=True``: a writer process reads what a commit needs (the
    manifest, each segment's ids) and never a segment's vectors, norms or rows."""
    first = _make(s3_server, inline_bytes=0)
    prefix = first.config["prefix"]
    for start in (0, 300, 600):
        first.create_batch(_records(300, start=start))
    first.close()
    writer, sent = _make_counted(s3_server, prefix=prefix, load_vectors=False, lazy_rows=True)
    writer.create(_records(1, start=900)[0])
    with pytest.raises(DuplicateRecordError):  # the ids it read answer for uniqueness
        writer.create(_records(1, start=5)[0])
    read = [u.split("?")[0].rsplit("/", 1)[-1] for u in sent]
    assert len([k for k in read if k.endswith(".ids.txt")]) == 3, read  # one per segment
    assert not [k for k in read if k.endswith((".npy", ".jsonl"))], read
    hits = writer.vector_search(writer.read("r00005")["embedding"], k=1)  # read when needed
    assert hits[0].id == "r00005" and writer.count() == 901
    writer.close()


def test_a_writer_answers_as_on_the_newest_version(s3_server: S3Server) -> None:
    """Writes of a store that another store's commits left behind: a create of a taken id, an
    update and a delete of records created since, a re-create of an id deleted since."""
    a = _make(s3_server)
    prefix = a.config["prefix"]
    a.create(_records(1)[0])
    b = _make(s3_server, prefix=prefix)
    b.create_batch(_records(4, start=1))  # a has not seen these
    with pytest.raises(DuplicateRecordError):
        a.create(_records(1, start=2)[0])
    b.create(_records(1, start=5)[0])
    assert a.update("r00005", Record({"i": -5})) is True  # created after a's last look
    b.create(_records(1, start=6)[0])
    assert a.delete("r00006") is True
    assert b.read("r00005")["i"] == -5 and not b.exists("r00006") and b.count() == 6
    b.delete("r00003")
    a.create(Record({"i": 33}, id="r00003"))  # a still held r00003: refused there, not in storage
    assert b.read("r00003")["i"] == 33 and b.count() == 6


def test_async_warm_search_is_one_request(s3_server: Any) -> None:
    import asyncio

    cfg = s3_server.config()
    _make(s3_server, prefix=cfg["prefix"]).create_batch(_records(30))

    async def run() -> list[list[str]]:
        adb = AsyncDatabaseFactory().create(backend="s3", vector_enabled=True, **cfg)
        q = np.ones(8, dtype=np.float32)
        await adb.vector_search(q, k=3)  # cold load
        counter = Requests(adb.s3_client)
        out = []
        for _ in range(3):
            await adb.vector_search(q, k=3)
            out.append(counter.take())
        await adb.close()
        return out

    assert asyncio.run(run()) == [["GET LATEST.json"]] * 3


def test_eventual_consistency_skips_the_check(s3_server: Any) -> None:
    db = _make(s3_server, consistency="eventual", max_staleness_s=3600)
    db.create_batch(_records(10))
    counter = Requests(db.s3_client)
    for _ in range(3):
        db.vector_search(np.ones(8), k=2)
    assert counter.take() == []


def test_bad_consistency_value(s3_server: Any) -> None:
    with pytest.raises(ConfigError, match="consistency"):
        _make(s3_server, consistency="sometimes")


def test_cold_load_warning(s3_server: Any) -> None:
    cfg = s3_server.config()
    _make(s3_server, prefix=cfg["prefix"]).create_batch(_records(200, dim=32))
    with pytest.warns(DkvPerformanceWarning, match="MiB"):
        _make(s3_server, prefix=cfg["prefix"], warn_download_bytes=1000).count()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DkvPerformanceWarning)
        assert _make(s3_server, prefix=cfg["prefix"]).count() == 200


def test_segment_cache_avoids_downloads(s3_server: Any, tmp_path: Path) -> None:
    cfg = s3_server.config()
    _make(s3_server, prefix=cfg["prefix"], inline_bytes=0).create_batch(_records(40))
    first = _make(s3_server, prefix=cfg["prefix"], cache_dir=str(tmp_path / "cache"))
    assert first.count() == 40
    assert any((tmp_path / "cache").iterdir())
    second, counted = _make_counted(s3_server, prefix=cfg["prefix"], cache_dir=str(tmp_path / "cache"))
    assert second.count() == 40
    assert not [u for u in counted if "/segments/" in u], counted


def test_multipart_upload_of_a_large_segment(s3_server: Any) -> None:
    db = _make(s3_server, multipart_threshold=1 << 20)
    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((4000, 384)).astype(np.float32)  # 6 MiB of vectors: 2 parts
    db.add_vectors(vecs, ids=[f"v{i}" for i in range(4000)])
    counter = Requests(db.s3_client)
    again = _make(s3_server, prefix=db.config["prefix"])
    assert again.count() == 4000
    np.testing.assert_array_equal(again.read("v123")["embedding"], vecs[123])
    assert again.vector_search(vecs[77], k=1)[0].id == "v77"
    counter.take()


def test_missing_bucket_is_a_clear_error(s3_server: Any) -> None:
    cfg = {**s3_server.config(bucket=f"nope-{uuid.uuid4().hex[:8]}"), "create_bucket": False}
    with pytest.raises(StorageError, match="nope-"):
        DatabaseFactory().create(backend="s3", vector_enabled=True, **cfg)


def test_unreachable_endpoint_is_a_clear_error(s3_server: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {**s3_server.config(), "endpoint_url": f"http://127.0.0.1:{port}"}
    with pytest.raises(StorageError, match="dkv-tests"):
        DatabaseFactory().create(backend="s3", vector_enabled=True, **cfg)


def test_error_mapping_names_bucket_and_key() -> None:
    from botocore.exceptions import ClientError

    from dk_vector_plugins.storage.ops import Get
    from dk_vector_plugins.storage.s3 import S3Keys

    base = S3Keys("bkt", prefix="p")
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetObject")
    err = base.error(Get("LATEST.json"), denied)
    assert "access denied" in str(err) and "s3://bkt/p/LATEST.json" in str(err)
    gone = ClientError({"Error": {"Code": "NoSuchBucket", "Message": "no"}}, "GetObject")
    assert "'bkt' does not exist" in str(base.error(Get("x"), gone))


def test_missing_s3_extra_names_the_extra(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"dk_vector_plugins\[s3\]"):
        _make(s3_server)


def test_two_writer_processes_race_without_losing_commits(s3_server: Any) -> None:
    cfg = s3_server.config()
    _make(s3_server, prefix=cfg["prefix"]).count()  # create the bucket
    n = 200
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "helpers_s3_writer.py"), s3_server.endpoint_url, cfg["bucket"],
             cfg["prefix"], str(w), str(n)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for w in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    db = _make(s3_server, prefix=cfg["prefix"])
    assert db.count() == 2 * n
    ids = {r.id for r in db.all()}
    assert ids == {f"w{w}-{i}" for w in range(2) for i in range(n)}
    assert db.verify()["live"] == 2 * n


def test_load_vectors_false_reads_rows_when_needed(s3_server: Any) -> None:
    """``load_vectors=False`` opens without downloading vectors: a record reads its own vector
    with a ranged GET, a local search reads the segment whole, and both answer as usual."""
    from dk_vector_plugins.index import LazyArray

    eager = _make(s3_server, inline_bytes=0)
    prefix = eager.config["prefix"]
    eager.create_batch(_records(200))
    eager.create_batch(_records(100, start=200))
    lazy = _make(s3_server, prefix=prefix, load_vectors=False)
    index = lazy.core.table.indexes["embedding"]
    arrays = [p.matrix for p in index._parts]
    assert len(arrays) == 2 and all(isinstance(a, LazyArray) and not a.loaded for a in arrays)
    assert lazy.count() == 300
    counter = Requests(lazy.s3_client)
    got = lazy.read("r00007")
    assert got == eager.read("r00007")
    sent = counter.take()
    assert [s for s in sent if s.endswith(".npy")] == [s for s in sent if "f0.npy" in s]  # no norms
    assert len([s for s in sent if s.endswith("f0.npy")]) == 2  # the header, then the row
    assert not any(a.loaded for a in arrays)
    q = np.ones(8, dtype=np.float32)
    assert lazy.vector_search(q, k=5) == eager.vector_search(q, k=5)
    assert all(a.loaded for a in arrays)


def test_load_vectors_defaults_to_false_for_dask_stores(s3_server: Any) -> None:
    """The Dask plugin's ``executor="dask"`` implies ``load_vectors=False`` (an ``OptionSpec.implies``:
    the table code knows no plugin key); a value given by the user wins."""
    from dk_vector_plugins.backends.tabled import table_options
    from dk_vector_plugins.factory import resolve_config

    pm = DatabaseFactory().pm
    base = {"backend": "s3", "bucket": "b"}
    assert table_options(resolve_config(pm, base), True).load_vectors
    cfg = resolve_config(pm, {**base, "executor": "dask"})
    assert cfg["load_vectors"] is False and not table_options(cfg, True).load_vectors
    assert table_options(resolve_config(pm, {**base, "executor": "dask", "load_vectors": True}), True).load_vectors
    assert resolve_config(pm, {**base, "executor": "local"})["load_vectors"] is None


def test_ranged_read_from_the_end_of_an_object_is_empty(s3_server: S3Server, tmp_path: Path) -> None:
    """A ranged read that starts at or past an object's end answers no bytes on S3 (where the
    server answers 416) as on a local directory, instead of failing."""
    from dk_vector_plugins.storage.local import LocalObjectStore
    from dk_vector_plugins.storage.ops import GetRange, Put
    from dk_vector_plugins.storage.s3 import S3ObjectStore

    cfg = s3_server.config()
    s3 = S3ObjectStore(s3_server.client(), cfg["bucket"], prefix=cfg["prefix"])
    s3.check_bucket(True)
    local = LocalObjectStore(str(tmp_path / "objects"))
    for store in (s3, local):
        store.do(Put("segments/x.bin", b"0123456789"))
        assert store.do(GetRange("segments/x.bin", 8, 5)) == b"89"
        assert store.do(GetRange("segments/x.bin", 10, 5)) == b""
        assert store.do(GetRange("segments/x.bin", 30, 5)) == b""
