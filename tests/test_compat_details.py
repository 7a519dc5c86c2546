"""dataknobs-data details on our stores: a file store without ``path``, plain-list vectors,
``VectorField`` details, the factory's backend info and messages, ``BulkEmbedMixin``."""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    DimensionMismatchError,
    InvalidVectorError,
    Record,
    VectorField,
)
from dk_vector_plugins.backends.file import AsyncFileDatabase, FileDatabase
from dk_vector_plugins.content import (
    CONTENT_HASH_KEY,
    FIELD_SEPARATOR_KEY,
    SOURCE_FIELDS_KEY,
    compute_content_hash,
)

# --- a file store without a path: a temporary directory, removed on close ----------------------


@pytest.fixture
def tmp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tempfile's directory, for this test only (what a store without a path leaves is seen)."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def test_a_sync_file_store_without_a_path_lives_in_a_temporary_directory(tmp_root: Path) -> None:
    db = FileDatabase({})
    assert db._is_temp_file is True
    assert "dataknobs_sync_db_" in db.filepath and db.filepath.startswith(tempfile.gettempdir())
    assert db.config["path"] == db.filepath
    rid = db.create(Record({"test": "value"}))
    assert db.read(rid)["test"] == "value"
    assert os.path.isdir(db.filepath)
    db.close()
    assert not os.path.exists(db.filepath) and list(tmp_root.iterdir()) == []
    db.close()  # again: nothing to do


def test_an_async_file_store_without_a_path_lives_in_a_temporary_directory(tmp_root: Path) -> None:
    async def main() -> str:
        db = AsyncFileDatabase({})
        assert db._is_temp_file is True and "dataknobs_async_db_" in db.filepath
        rid = await db.create(Record({"test": "value"}))
        assert (await db.read(rid))["test"] == "value"
        assert os.path.isdir(db.filepath)
        await db.close()
        return db.filepath

    path = asyncio.run(main())
    assert not os.path.exists(path) and list(tmp_root.iterdir()) == []


def test_a_factory_configuration_still_needs_a_path(tmp_root: Path) -> None:
    """A configuration names its store's directory: without one, the records would be lost on
    close. Only the class called without a path (dataknobs-data's idiom) makes a temporary one."""
    for factory in (DatabaseFactory(), AsyncDatabaseFactory()):
        with pytest.raises(ConfigError, match="requires 'path'"):
            factory.create(backend="file")
        with pytest.raises(ConfigError, match="'path'"):
            factory.create(backend="file", path=None)
    with pytest.raises(ConfigError, match="requires 'path'"):
        FileDatabase({"backend": "file"})
    assert list(tmp_root.iterdir()) == []
    db = FileDatabase(vector_enabled=True)  # keywords, no path: a temporary store too
    assert db._is_temp_file
    db.close()
    assert list(tmp_root.iterdir()) == []


def test_a_file_store_with_a_path_is_kept(tmp_path: Path) -> None:
    db = FileDatabase({"path": str(tmp_path / "store")})
    assert db._is_temp_file is False and db.filepath == str(tmp_path / "store")
    db.create(Record({"a": 1}))
    db.close()
    assert (tmp_path / "store").is_dir()


def test_a_checkout_of_a_temporary_store_does_not_remove_it(tmp_root: Path) -> None:
    db = FileDatabase()
    db.create(Record({"a": 1}, id="x"))
    old = db.checkout(db.version)
    assert old._is_temp_file is False and old.read("x")["a"] == 1
    old.close()
    assert os.path.isdir(db.filepath)
    db.close()
    assert list(tmp_root.iterdir()) == []


def test_a_temporary_store_that_fails_to_build_leaves_nothing(tmp_root: Path) -> None:
    with pytest.raises(ConfigError):
        FileDatabase({"no_such_key": 1})
    assert list(tmp_root.iterdir()) == []


def test_sync_close_waits_for_the_instance_lock(tmp_root: Path) -> None:
    db = FileDatabase({})
    db.create(Record({"test": "value"}))
    holding, may_release, closed = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        with db._lock:
            holding.set()
            may_release.wait(timeout=10)

    def close_it() -> None:
        db.close()
        closed.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(timeout=10)
    closer = threading.Thread(target=close_it)
    closer.start()
    assert not closed.wait(timeout=0.3)
    assert os.path.exists(db.filepath)
    may_release.set()
    holder.join(timeout=10)
    closer.join(timeout=10)
    assert closed.is_set() and not os.path.exists(db.filepath)


def test_async_close_waits_for_the_instance_lock(tmp_root: Path) -> None:
    async def main() -> None:
        db = AsyncFileDatabase({})
        await db.create(Record({"test": "value"}))
        async with db._lock:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(db.close(), timeout=0.3)
            assert os.path.exists(db.filepath)
        await db.close()
        assert not os.path.exists(db.filepath)

    asyncio.run(main())


def test_holding_the_instance_lock_holds_the_store(tmp_root: Path) -> None:
    """``db._lock`` is the lock every operation of the store takes."""
    db = FileDatabase({})
    done = threading.Event()
    with db._lock:
        t = threading.Thread(target=lambda: (db.create(Record({"a": 1})), done.set()))
        t.start()
        assert not done.wait(timeout=0.2)
    t.join(timeout=10)
    assert done.is_set() and db.count() == 1
    db.close()


# --- a plain list of numbers in the store's vector field is a vector ---------------------------


def test_a_list_in_the_vector_field_is_searched_and_reads_back_as_given(make_store_for: Any) -> None:
    db = make_store_for(vector_enabled=True)
    db.create(Record({"content": "hello world", "embedding": [0.1, 0.7]}, id="r1"))
    db.create(Record({"content": "other", "embedding": (1, 0)}, id="r2"))
    hits = db.vector_search([0.1, 0.7], vector_field="embedding", k=2)
    assert [h.record.id for h in hits] == ["r1", "r2"]
    got = db.read("r1")
    assert got["embedding"] == [0.1, 0.7] and type(got["embedding"]) is list  # exactly as given
    assert hits[0].record["embedding"] == [0.1, 0.7]
    assert db.read("r2")["embedding"] == (1, 0)
    assert db.get_vector_index_stats("embedding")["vector_count"] == 2
    assert db.vector_dimension() == 2
    assert [r.id for r in db.search({"embedding": [0.1, 0.7]})] == ["r1"]  # still a value to filter on
    hybrid = db.hybrid_search("nothing matches this", np.array([1.0, 0.0]), text_fields=["content"], k=1)
    assert [h.record.id for h in hybrid] == ["r2"]


def test_update_vector_replaces_a_list_vector(make_store_for: Any) -> None:
    db = make_store_for(vector_enabled=True)
    db.create(Record({"content": "x", "embedding": [1.0, 0.0]}, id="r1"))
    assert db.update_vector("r1", "embedding", [0.0, 1.0]) is True
    got = db.read("r1")
    assert isinstance(got.fields["embedding"], VectorField) and list(got["embedding"]) == [0.0, 1.0]
    assert db.vector_search([0.0, 1.0], k=1)[0].score == pytest.approx(1.0)
    db.update("r1", Record({"content": "x", "embedding": [1.0, 1.0]}))  # a list again
    assert db.read("r1")["embedding"] == [1.0, 1.0]
    assert db.get_vector_index_stats()["vector_count"] == 1


def test_only_numbers_in_the_vector_field_make_a_vector(make_store_for: Any) -> None:
    db = make_store_for()
    db.create(Record({"embedding": ["a", "b"]}, id="strings"))
    db.create(Record({"embedding": []}, id="empty"))
    db.create(Record({"embedding": [True, False]}, id="bools"))
    db.create(Record({"embedding": [1, "a"]}, id="mixed"))
    db.create(Record({"embedding": [[1.0, 2.0]]}, id="nested"))
    db.create(Record({"tags": [1.0, 2.0]}, id="other-field"))
    assert db.get_vector_index_stats()["vector_count"] == 0
    assert db.read("strings")["embedding"] == ["a", "b"] and db.read("other-field")["tags"] == [1.0, 2.0]
    assert db.read("bools")["embedding"] == [True, False] and db.read("nested")["embedding"] == [[1.0, 2.0]]


def test_a_list_vector_is_checked_as_every_vector_is(make_store_for: Any) -> None:
    db = make_store_for(vector_dimensions=2)
    with pytest.raises(InvalidVectorError, match=r"vector field 'embedding'.*NaN"):
        db.create(Record({"embedding": [math.nan, 1.0]}))
    with pytest.raises(DimensionMismatchError):
        db.create(Record({"embedding": [1.0, 2.0, 3.0]}, id="r"))
    assert db.count() == 0


def test_the_configured_vector_field_is_the_one(make_store_for: Any) -> None:
    db = make_store_for(vector_field="vec")
    db.create(Record({"vec": [1.0, 0.0], "embedding": [0.0, 1.0]}, id="r"))
    assert [h.record.id for h in db.vector_search([1.0, 0.0], k=1)] == ["r"]
    assert db.get_vector_index_stats("vec")["vector_count"] == 1
    assert db.read("r")["embedding"] == [0.0, 1.0]
    assert db.get_vector_index_stats("embedding")["vector_count"] == 0


def test_a_list_vector_next_to_source_text_is_kept(make_store_for: Any) -> None:
    db = make_store_for(text_field="body", vector_dimensions=3)
    db.create(Record({"body": "some text", "embedding": [1.0, 0.0, 0.0]}, id="r"))
    assert db.read("r")["embedding"] == [1.0, 0.0, 0.0]
    assert db.vector_search([1.0, 0.0, 0.0], k=1)[0].score == pytest.approx(1.0)


def test_a_list_vector_survives_reopening(reopen_at: Any) -> None:
    db = reopen_at()
    db.create_batch([Record({"n": i, "embedding": [float(i), 1.0]}, id=str(i)) for i in range(3)])
    db.compact()
    again = reopen_at()
    assert again.read("2")["embedding"] == [2.0, 1.0]
    assert [h.record.id for h in again.vector_search([2.0, 1.0], k=1, metric="euclidean")] == ["2"]


# --- VectorField ---------------------------------------------------------------------------------


def test_a_vector_field_of_a_str_is_a_type_error() -> None:
    for bad in ("not a vector", b"bytes", None):
        with pytest.raises(TypeError, match="must be numpy array or list"):
            VectorField(value=bad, name="embedding")  # type: ignore[arg-type]
        with pytest.raises(InvalidVectorError):
            VectorField(bad)  # type: ignore[arg-type]


def test_vector_field_metadata_answers_dataknobs_keys_without_storing_them() -> None:
    vf = VectorField(
        value=[0.1, 0.2],
        name="embedding",
        source_field="text",
        model_name="test-model",
        model_version="1.0",
        metadata={"custom": "value"},
    )
    meta = vf.metadata
    assert "dimensions" in meta and meta["dimensions"] == 2
    assert "source_field" in meta and meta["source_field"] == "text"
    assert "model" in meta and meta["model"] == {"name": "test-model", "version": "1.0"}
    assert meta.get("dimensions") == 2 and meta.get("absent", "d") == "d"
    assert meta["custom"] == "value"
    assert meta == {"custom": "value"} and dict(meta) == {"custom": "value"}
    assert json.loads(json.dumps(meta)) == {"custom": "value"}
    assert vf.info() == {
        "source_field": "text",
        "model_name": "test-model",
        "model_version": "1.0",
        "metadata": {"custom": "value"},
    }
    plain = VectorField([1.0])
    assert plain.metadata["model"] is None and plain.metadata["source_field"] is None
    with pytest.raises(KeyError):
        plain.metadata["absent"]
    vf.metadata["more"] = 1
    assert vf.metadata == {"custom": "value", "more": 1}
    vf.model_name = None
    assert vf.metadata["model"] is None
    vf.metadata = {"k": 1}
    assert vf.metadata == {"k": 1} and vf.metadata["dimensions"] == 2


def test_a_stored_vector_fields_metadata(make_store_for: Any) -> None:
    db = make_store_for()
    db.create(Record({"embedding": VectorField([1.0, 2.0, 3.0], source_field="t", metadata={"k": 1})}, id="r"))
    vf = db.read("r").fields["embedding"]
    assert vf.metadata == {"k": 1} and vf.metadata["dimensions"] == 3 and vf.metadata["source_field"] == "t"
    assert vf.copy().metadata == {"k": 1}


# --- the factory -------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", [DatabaseFactory, AsyncDatabaseFactory])
def test_get_backend_info(factory: Any) -> None:
    f = factory()
    info = f.get_backend_info("memory")
    assert info["persistent"] is False and info["description"] and info["name"] == "memory"
    assert f.get_backend_info("MEM")["name"] == "memory"
    for name in ("file", "s3"):
        info = f.get_backend_info(name)
        assert info["persistent"] is True and "config_options" in info
    assert "path" in f.get_backend_info("file")["config_options"]
    unknown = f.get_backend_info("unknown")
    assert "error" in unknown and "unknown" in unknown["error"] and "description" in unknown


def test_a_missing_required_key_says_what_is_required() -> None:
    with pytest.raises(ValueError, match="requires 'bucket'"):
        DatabaseFactory().create(backend="s3")


# --- BulkEmbedMixin ----------------------------------------------------------------------------


def _embed(texts: list[str]) -> np.ndarray:
    return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


def test_bulk_embed_mixin_serves_a_store_of_ones_own() -> None:
    from dk_vector_plugins import BulkEmbedMixin

    class Store(BulkEmbedMixin):
        def __init__(self) -> None:
            self.written: dict[str, Record] = {"old": Record({"title": "x"}, id="old")}

        def exists(self, id: str) -> bool:
            return id in self.written

        def update(self, id: str, record: Record) -> bool:
            self.written[id] = record
            return True

        def create(self, record: Record) -> str:
            self.written["minted"] = record
            return "minted"

    store = Store()
    recs = [Record({"title": "alpha"}), Record({"title": "beta", "body": "b"}, id="old")]
    ids = store.bulk_embed_and_store(recs, ["title", "body"], embedding_fn=_embed, batch_size=1, model_name="m")
    assert ids == ["minted", "old"]
    vf = store.written["minted"].fields["embedding"]
    assert isinstance(vf, VectorField) and vf.model_name == "m" and list(vf.value) == [5.0, 1.0]
    assert vf.metadata[CONTENT_HASH_KEY] == compute_content_hash("alpha")
    assert vf.metadata[SOURCE_FIELDS_KEY] == ["title", "body"] and vf.metadata[FIELD_SEPARATOR_KEY] == " "
    assert store.written["old"].fields["embedding"].metadata[CONTENT_HASH_KEY] == compute_content_hash("beta b")
    with pytest.raises(ValueError, match="embedding_fn is required"):
        store.bulk_embed_and_store(recs, "title")
