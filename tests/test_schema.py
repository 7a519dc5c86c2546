"""Stores that know themselves: the persisted schema, text in / text out, the embedding cache,
and re-embedding, on memory, file and S3, sync and async."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import (
    DatabaseFactory,
    EmbedderSpec,
    InvalidRequestError,
    InvalidVectorError,
    Record,
    SchemaMismatchError,
    hookimpl,
)
from dk_vector_plugins.embed import HashingEmbedder
from dk_vector_plugins.embedders.common import Secret
from dk_vector_plugins.schema import PROBE_TEXT

#: What the "drifting" embedder's seed is; changing it is a model changing behind the same name.
DRIFT = {"seed": 0}


class Counting:
    """A plugin offering the ``counting`` embedder (hashing underneath) that records every call,
    and the ``drifting`` one whose output depends on :data:`DRIFT`, not on its options."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        #: How many more calls succeed (``None``: all); then each raises, as a lost connection.
        self.budget: int | None = None

    def texts(self) -> list[str]:
        """Every text embedded, except the fingerprint probes."""
        return [t for call in self.calls for t in call if t != PROBE_TEXT]

    @hookimpl
    def dkv_register_embedders(self) -> list[EmbedderSpec]:
        outer = self

        class CountingEmbedder:
            model_name = "counting-v1"

            def __init__(self, dimensions: int | None = None, seed: int = 0, api_key: Secret | None = None) -> None:
                self.inner = HashingEmbedder(dimensions or 32, seed=seed)

            def embed(self, texts: list[str]) -> Any:
                if outer.budget is not None:
                    if outer.budget == 0:
                        raise RuntimeError("connection reset")
                    outer.budget -= 1
                outer.calls.append(list(texts))
                return self.inner.embed(texts)

        class DriftingEmbedder(CountingEmbedder):
            def __init__(self, dimensions: int | None = None) -> None:
                super().__init__(dimensions, seed=DRIFT["seed"])

        return [EmbedderSpec("counting", CountingEmbedder), EmbedderSpec("drifting", DriftingEmbedder)]


@pytest.fixture
def counting() -> Counting:
    return Counting()


@pytest.fixture
def opener(open_at: Callable[..., Any], counting: Counting) -> Callable[..., Any]:
    """``open(**config)``: a store of each backend at one location per test (a second call
    reopens what the first wrote), with the ``counting`` plugin installed."""
    return _with_plugin(open_at, counting)


@pytest.fixture
def reopener(reopen_at: Callable[..., Any], counting: Counting) -> Callable[..., Any]:
    """:func:`opener` for the backends that persist (file and S3)."""
    return _with_plugin(reopen_at, counting)


def _with_plugin(open_: Callable[..., Any], counting: Counting) -> Callable[..., Any]:
    def opener(**config: Any) -> Any:
        return open_(factory_kwargs={"plugins": [counting]}, **config)

    opener.backend = open_.backend  # type: ignore[attr-defined]
    return opener


DOCS = {
    "d1": "fresh coffee beans roasted dark",
    "d2": "green tea leaves from the hills",
    "d3": "espresso machine for strong coffee",
    "d4": "herbal tea with mint",
    "d5": "a recipe for bread",
}


def docs() -> list[Record]:
    return [Record({"text": t, "n": i}, id=rid) for i, (rid, t) in enumerate(DOCS.items())]


def ids(hits: list[Any]) -> list[str]:
    return [h.record.id for h in hits]


# --- text in, text out ---------------------------------------------------------------------------


def test_text_query_and_upsert_reembeds(opener: Any, counting: Counting) -> None:
    db = opener(text_field="text", embedder="counting")
    db.create_batch(docs())
    assert db.count() == 5
    hits = db.vector_search("coffee", k=2)
    assert set(ids(hits)) == {"d1", "d3"}
    # the case: upserting new text must not drop the vector
    db.upsert(Record({"text": "bread baked with rye flour"}, id="d3"))
    assert db.count() == 5
    assert len(db.vector_search("coffee", k=5)) == 5
    assert ids(db.vector_search("rye bread", k=1)) == ["d3"]
    stored = db.get("d3").fields["embedding"]
    assert stored.metadata["content_hash"] and stored.source_field == "text"
    # a batch of queries (list of texts): one list per query
    batch = db.vector_search(["coffee", "tea"], k=1)
    assert [len(b) for b in batch] == [1, 1]
    assert [ids(b) for b in db.vector_search_batch(["mint tea"], k=1)] == [["d4"]]


def test_unchanged_text_is_not_embedded_again(opener: Any, counting: Counting) -> None:
    db = opener(text_field="text", embedder="counting")
    db.create_batch([*docs(), Record({"text": DOCS["d1"]}, id="twin")])  # duplicate text: embedded once
    assert sorted(counting.texts()) == sorted(DOCS.values())
    counting.calls.clear()
    db.update("d2", Record({"text": DOCS["d2"], "n": 99}))  # same text: the stored vector is reused
    db.upsert(Record({"text": DOCS["d4"], "extra": True}, id="d4"))
    assert counting.texts() == []
    db.update("d2", Record({"text": "changed text"}))
    assert counting.texts() == ["changed text"]
    assert db.get("d2").get("n") is None  # update replaces the record
    vec = db.get("d4").fields["embedding"].value
    np.testing.assert_array_equal(vec, HashingEmbedder(32).embed([DOCS["d4"]])[0])


def test_a_write_that_would_lose_the_vector_is_rejected(opener: Any) -> None:
    db = opener(text_field="text")
    db.create_batch(docs())
    with pytest.raises(InvalidRequestError, match="neither text"):
        db.upsert(Record({"title": "no text"}, id="d1"))
    with pytest.raises(InvalidRequestError, match="neither text"):
        db.create_batch([Record({"text": "fine"}, id="ok"), Record({"other": 1})])
    assert db.count() == 5 and not db.exists("ok")
    assert db.get("d1")["text"] == DOCS["d1"]
    # a record that brings its own vector keeps it
    own = np.ones(384, dtype=np.float32)
    db.upsert(Record({"title": "mine", "embedding": own}, id="d9"))
    np.testing.assert_array_equal(db.get("d9").fields["embedding"].value, own)


def test_text_query_without_embedder_says_what_to_do(opener: Any) -> None:
    db = opener()
    db.add_vectors(np.eye(3, dtype=np.float32), ids=["a", "b", "c"])
    with pytest.raises(InvalidVectorError, match="text_field"):
        db.vector_search("coffee")


def test_bulk_embed_uses_the_stores_embedder_and_text_field(opener: Any, counting: Counting) -> None:
    db = opener(text_field="text", embedder="counting", embedder_options={"seed": 3})
    db.bulk_embed_and_store([{"id": rid, "text": t} for rid, t in DOCS.items()])
    assert sorted(counting.texts()) == sorted(DOCS.values())
    vec = db.get("d5").fields["embedding"].value
    np.testing.assert_array_equal(vec, HashingEmbedder(32, seed=3).embed([DOCS["d5"]])[0])


# --- the persisted schema ------------------------------------------------------------------------


def test_reopen_with_location_only(reopener: Any) -> None:
    db = reopener(text_field="text", vector_metric="euclidean", embedder="counting", embedder_options={"seed": 7})
    db.create_batch(docs())
    expected = ids(db.vector_search("coffee", k=3))
    db.close()
    again = reopener()  # no vector_enabled, no metric, no embedder: all from the table
    again.connect()  # an async store loads its table here (a sync one did when created)
    assert again.config["vector_metric"] == "euclidean"
    assert again.config["text_field"] == "text"
    assert again.config["embedder"] == "counting"
    assert again.config["embedder_options"] == {"seed": 7}
    assert again.vector_dimension() == 32
    hits = again.vector_search("coffee", k=3)
    assert ids(hits) == expected and hits[0].metadata["metric"] == "euclidean"
    again.upsert(Record({"text": "coffee coffee"}, id="d5"))  # re-embedded with the stored embedder
    assert ids(again.vector_search("coffee coffee", k=1)) == ["d5"]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"vector_metric": "dot_product"}, "vector_metric='dot_product'.*vector_metric='euclidean'"),
        ({"vector_dimensions": 8}, "vector_dimensions=8.*vector_dimensions=32"),
        ({"text_field": "title"}, r"text_field='title'.*text_field='text'"),
        ({"embedder": "hashing"}, "embedder='hashing'.*embedder='counting'"),
        ({"embedder_options": {"seed": 1}}, "embedder_options=.*'seed': 1.*'seed': 7"),
    ],
    ids=["metric", "dimensions", "text_field", "embedder", "embedder_options"],
)
def test_settings_that_contradict_the_stored_schema(reopener: Any, given: dict[str, Any], named: str) -> None:
    db = reopener(text_field="text", vector_metric="euclidean", embedder="counting", embedder_options={"seed": 7})
    db.create_batch(docs())
    db.close()
    with pytest.raises(SchemaMismatchError, match=named):
        db = reopener(**given)
        db.count()  # an async store loads on its first call
    same = reopener(vector_metric="euclidean", text_field="text", embedder="counting", embedder_options={"seed": 7})
    assert same.count() == 5


def test_a_model_changed_behind_the_same_name_is_caught(reopener: Any) -> None:
    DRIFT["seed"] = 0
    try:
        db = reopener(text_field="text", embedder="drifting")
        db.create_batch(docs())
        db.close()
        DRIFT["seed"] = 1  # same name, same options, different vectors
        again = reopener()
        assert again.count() == 5  # reading needs no embedder
        with pytest.raises(SchemaMismatchError, match="fingerprint"):
            again.vector_search("coffee")
        with pytest.raises(SchemaMismatchError, match="fingerprint"):
            again.create(Record({"text": "new"}))
        assert again.count() == 5
    finally:
        DRIFT["seed"] = 0


def test_credentials_are_never_stored(reopener: Any, tmp_path: Path) -> None:
    db = reopener(text_field="text", embedder="counting", embedder_options={"seed": 2, "api_key": Secret("sk-hidden")})
    db.create(Record({"text": "hello"}, id="h"))
    schema = db.schema.to_json({})
    assert "sk-hidden" not in json.dumps(schema, default=str)
    assert schema["fields"]["embedding"]["embedder"]["options"] == {"seed": 2}
    for f in tmp_path.rglob("*"):  # a file store's every object (an S3 store's live on the server)
        assert not f.is_file() or b"sk-hidden" not in f.read_bytes()
    db.close()
    again = reopener()
    again.connect()
    assert again.schema.field().embedder.options == {"seed": 2}
    assert again.count() == 1


def test_memory_store_keeps_its_schema_object(make_store_for: Any) -> None:
    db = make_store_for(text_field="text", vector_metric="dot_product")
    db.create(Record({"text": "abc"}, id="a"))
    assert db.schema.field().metric == "dot_product"
    assert db.schema.field().embedder.fingerprint is not None
    assert db.config["vector_metric"] == "dot_product"


def test_old_table_without_schema_gets_one(tmp_path: Path) -> None:
    path = tmp_path / "old"
    db = DatabaseFactory().create(backend="file", path=str(path))
    db.add_vectors(np.eye(4, dtype=np.float32), ids=list("abcd"))
    db.close()
    # make it look written by format 3 (no schema in its manifests)
    for f in [path / "LATEST.json", *sorted((path / "manifests").iterdir())]:
        m = json.loads(f.read_text())
        m.pop("schema", None)
        m["format"] = 3
        f.write_text(json.dumps(m))
    again = DatabaseFactory().create(backend="file", path=str(path), vector_metric="dot_product")
    assert again.count() == 4 and again.schema.stored_at is None
    again.add_vectors(np.ones((1, 4), dtype=np.float32), ids=["e"])
    latest = json.loads(sorted((path / "manifests").iterdir())[-1].read_text())  # the newest manifest
    assert latest["format"] == 5
    assert latest["schema"]["fields"]["embedding"] == {"dim": 4, "metric": "dot_product"}


# --- re-embedding ----------------------------------------------------------------------------------


def test_reembed_changes_the_embedder_and_resumes(opener: Any, counting: Counting) -> None:
    db = opener(text_field="text", embedder="counting")
    db.create_batch(docs())
    counting.calls.clear()
    report = db.reembed(embedder_options={"seed": 4}, batch_size=2)
    assert (report.embedded, report.skipped, report.batches) == (5, 0, 3)
    assert sorted(counting.texts()) == sorted(DOCS.values())
    vec = db.get("d1").fields["embedding"].value
    np.testing.assert_array_equal(vec, HashingEmbedder(32, seed=4).embed([DOCS["d1"]])[0])
    assert db.config["embedder_options"] == {"seed": 4} == db.schema.field().embedder.options
    # a second run finds everything done (what an interrupted run resumes from)
    counting.calls.clear()
    again = db.reembed(embedder_options={"seed": 4}, batch_size=2)
    assert (again.embedded, again.skipped) == (0, 5) and counting.texts() == []
    # text queries now use the new embedder
    assert ids(db.vector_search(DOCS["d4"], k=1)) == ["d4"]
    if opener.backend != "memory":
        db.close()
        reopened = opener()
        reopened.connect()
        assert reopened.schema.field().embedder.options == {"seed": 4}
        with pytest.raises(SchemaMismatchError):
            opener(embedder_options={"seed": 0}).count()


def test_reembed_interrupted_then_resumed(opener: Any, counting: Counting) -> None:
    db = opener(text_field="text", embedder="counting")
    db.create_batch(docs())
    counting.budget = 2  # the probe and one batch succeed, then the "network" fails
    with pytest.raises(RuntimeError, match="connection reset"):
        db.reembed(embedder_options={"seed": 4}, batch_size=2)
    assert db.schema.field().embedder.options == {}  # the schema changes only at the end
    counting.budget = None
    done = db.reembed(embedder_options={"seed": 4}, batch_size=2)
    assert (done.embedded, done.skipped) == (3, 2)
    assert db.schema.field().embedder.options == {"seed": 4}


def test_reembed_into_a_new_field_of_another_dimension(opener: Any) -> None:
    db = opener(text_field="text", embedder="counting")
    db.create_batch(docs())
    with pytest.raises(InvalidRequestError, match="new vector field"):
        db.reembed(embedder_options={"dimensions": 8})
    db.reembed(embedder_options={"dimensions": 8}, vector_field="small")
    assert db.vector_dimension("small") == 8 and db.vector_dimension() == 32
    assert ids(db.vector_search(DOCS["d2"], vector_field="small", k=1)) == ["d2"]
    db.create(Record({"text": "new doc about tea"}, id="n"))  # both fields embedded
    rec = db.get("n")
    assert rec.fields["small"].dimensions == 8 and rec.fields["embedding"].dimensions == 32


def test_a_read_changed_and_written_back_record_is_embedded_again(opener: Any, counting: Counting) -> None:
    db = opener(text_field="text", embedder="counting")
    db.create_batch(docs())
    counting.calls.clear()
    got = db.get("d2")  # holds its stored vector, made from its old text
    got["text"] = "a recipe for sourdough bread"
    db.update("d2", got)
    assert counting.texts() == ["a recipe for sourdough bread"]  # the stale vector was not kept
    np.testing.assert_array_equal(
        db.get("d2").fields["embedding"].value, HashingEmbedder(32).embed(["a recipe for sourdough bread"])[0]
    )
    same = db.get("d3")
    db.upsert(same)  # unchanged text: its vector is current, nothing embedded
    assert counting.texts() == ["a recipe for sourdough bread"]
    gone = db.get("d4")
    del gone["text"]
    with pytest.raises(InvalidRequestError, match="no longer has"):
        db.upsert(gone)
