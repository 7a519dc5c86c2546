"""Embedders and the bulk-embed driver: determinism, normalization, resumability, async functions."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    Embedder,
    FunctionEmbedder,
    HashingEmbedder,
    InvalidRequestError,
    Record,
)

TEXTS = ["The quick brown fox", "jumps over the lazy dog", "", "Ünïcödé wörds ok", "123 456"]


def test_hashing_embedder_deterministic_across_processes() -> None:
    here = HashingEmbedder(64).embed(TEXTS)
    code = (
        "import json, sys\n"
        "from dk_vector_plugins import HashingEmbedder\n"
        "texts = json.loads(sys.argv[1])\n"
        "print(json.dumps(HashingEmbedder(64).embed(texts).tolist()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": "", "SYSTEMROOT": ""},
    )
    there = np.array(json.loads(out.stdout), dtype=np.float32)
    np.testing.assert_array_equal(here, there)


def test_hashing_embedder_deterministic_and_batch_independent() -> None:
    emb = HashingEmbedder(32)
    together = emb.embed(TEXTS)
    one_by_one = np.vstack([emb.embed([t]) for t in TEXTS])
    np.testing.assert_array_equal(together, one_by_one)
    np.testing.assert_array_equal(together, HashingEmbedder(32).embed(TEXTS))
    assert not np.array_equal(together, HashingEmbedder(32, seed=1).embed(TEXTS))


def test_hashing_embedder_shape_dtype_and_normalization() -> None:
    for dims in (1, 8, 384):
        out = HashingEmbedder(dims).embed(TEXTS)
        assert out.shape == (len(TEXTS), dims)
        assert out.dtype == np.float32
        norms = np.linalg.norm(out, axis=1)
        for text, norm in zip(TEXTS, norms):
            if text:
                assert norm == pytest.approx(1.0, abs=1e-5)
            else:
                assert norm == 0.0  # a text without words gives a zero row
    assert HashingEmbedder(8).embed([]).shape == (0, 8)
    assert HashingEmbedder(8)(["x"]).shape == (1, 8)  # callable like an embedding_fn
    assert isinstance(HashingEmbedder(), Embedder)


def test_hashing_embedder_similar_texts_closer() -> None:
    emb = HashingEmbedder(256)
    a, b, c = emb.embed(
        [
            "the cat sat on the mat",
            "a cat sat on the mat today",
            "quarterly revenue grew in europe",
        ]
    )
    assert float(a @ b) > float(a @ c) + 0.3
    # case and punctuation do not matter
    x, y = emb.embed(["Hello, World!", "hello world"])
    assert float(x @ y) == pytest.approx(1.0, abs=1e-6)
    # character n-grams make word variants similar
    w1, w2, w3 = emb.embed(["embedding", "embeddings", "zoology"])
    assert float(w1 @ w2) > float(w1 @ w3) + 0.3


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_hashing_embedder_rejects_bad_dimensions(bad: Any) -> None:
    with pytest.raises(ConfigError):
        HashingEmbedder(bad)


def test_hashing_embedder_rejects_non_text() -> None:
    with pytest.raises(InvalidRequestError):
        HashingEmbedder(8).embed(["ok", 3])  # type: ignore[list-item]


# --- bulk embedding --------------------------------------------------------------------------


def docs(n: int, start: int = 0) -> list[Record]:
    return [
        Record({"text": f"document number {i} about topic {i % 3}", "i": i}, id=f"d{i}")
        for i in range(start, start + n)
    ]


@pytest.fixture
def db() -> Any:
    store = DatabaseFactory().create(backend="memory", vector_enabled=True, vector_dimensions=32)
    yield store
    store.close()


@pytest.mark.parametrize("progress", [False, True, None])
def test_bulk_embed_progress_flag(db: Any, progress: bool | None, capsys: pytest.CaptureFixture[str]) -> None:
    report = db.bulk_embed(docs(12), "text", batch_size=5, progress=progress)
    assert (report.embedded, report.skipped, report.batches) == (12, 0, 3)
    assert db.count() == 12
    err = capsys.readouterr().err
    if progress is False:
        assert err == ""


def test_bulk_embed_is_resumable(db: Any) -> None:
    first = db.bulk_embed(docs(10), "text", batch_size=4, progress=False)
    assert (first.embedded, first.skipped, first.batches) == (10, 0, 3)
    vec_before = db.read("d3")["embedding"].copy()
    # an interrupted job re-run with more records: only the new ones are embedded
    calls: list[int] = []
    hashing = HashingEmbedder(32)

    def counting(texts: list[str]) -> Any:
        calls.append(len(texts))
        return hashing.embed(texts)

    second = db.bulk_embed(docs(15), "text", embedding_fn=counting, batch_size=4, progress=False)
    assert (second.embedded, second.skipped) == (5, 10)
    assert sum(calls) == 5
    assert second.ids == [f"d{i}" for i in range(15)]
    assert db.count() == 15
    np.testing.assert_array_equal(db.read("d3")["embedding"], vec_before)
    # the stored vectors are the hashing embedder's
    np.testing.assert_allclose(db.read("d12")["embedding"], hashing.embed([docs(1, 12)[0]["text"]])[0])


def test_bulk_embed_changed_text_is_re_embedded(db: Any) -> None:
    db.bulk_embed(docs(6), "text", progress=False)
    changed = docs(6)
    changed[1]["text"] = "a completely new text"
    changed[4]["text"] = "another new text"
    report = db.bulk_embed(changed, "text", progress=False)
    assert (report.embedded, report.skipped) == (2, 4)
    assert db.read("d1")["text"] == "a completely new text"
    expected = HashingEmbedder(32).embed(["a completely new text"])[0]
    np.testing.assert_allclose(db.read("d1")["embedding"], expected)
    hits = db.vector_search(expected, k=1)
    assert hits[0].id == "d1"
    assert hits[0].source_text == "a completely new text"


def test_bulk_embed_into_a_record_stored_without_vector(db: Any) -> None:
    db.create_batch(docs(3))  # stored first, no vectors yet
    report = db.bulk_embed(docs(3), "text", progress=False)
    assert (report.embedded, report.skipped) == (3, 0)
    assert db.read("d0")["i"] == 0


def test_bulk_embed_assigns_ids_and_accepts_dicts(db: Any) -> None:
    ids = db.bulk_embed_and_store([{"text": "no id here"}, Record({"text": "nor here"})], "text")
    assert len(ids) == 2 and all(ids) and ids[0] != ids[1]
    assert db.read(ids[0])["text"] == "no id here"


def test_bulk_embed_bad_arguments(db: Any) -> None:
    with pytest.raises(TypeError):
        db.bulk_embed(docs(1), "text", colour="red")
    with pytest.raises(InvalidRequestError, match="text_field"):  # the store has no text_field setting
        db.bulk_embed(docs(1))
    with pytest.raises(InvalidRequestError):
        db.bulk_embed(docs(1), "")
    with pytest.raises(InvalidRequestError):
        db.bulk_embed(docs(1), "text", vector_field="")
    with pytest.raises(InvalidRequestError):
        db.bulk_embed(docs(1), "text", batch_size=True)
    with pytest.raises(InvalidRequestError):
        db.bulk_embed(["not a record"], "text")
    assert db.count() == 0


def test_function_embedder_wraps_callables() -> None:
    def my_model(texts: list[str]) -> Any:
        return [[1.0, float(len(t))] for t in texts]

    fe = FunctionEmbedder(my_model)
    assert fe.model_name == "my_model" and fe.is_async is False
    assert fe.embed(("ab",)) == [[1.0, 2.0]]

    async def amodel(texts: list[str]) -> Any:
        return [[1.0]]

    assert FunctionEmbedder(amodel, "named").is_async is True
    assert FunctionEmbedder(amodel, "named").model_name == "named"


def test_async_embedding_fn_on_sync_store_is_rejected(db: Any) -> None:
    async def amodel(texts: list[str]) -> Any:
        return np.ones((len(texts), 32), dtype=np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the coroutine is closed, not left un-awaited
        with pytest.raises(InvalidRequestError, match="async"):
            db.bulk_embed_and_store(docs(2), "text", embedding_fn=amodel)
        gc.collect()
    assert db.count() == 0


async def test_async_embedding_fn_on_async_store() -> None:
    db = AsyncDatabaseFactory().create(backend="memory", vector_enabled=True)
    seen: list[list[str]] = []

    async def amodel(texts: list[str]) -> Any:
        seen.append(list(texts))
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)

    recs = [Record({"t": w}, id=w) for w in ("a", "bb", "ccc", "dddd", "eeeee")]
    report = await db.bulk_embed(recs, "t", embedding_fn=amodel, batch_size=2, progress=False)
    assert (report.embedded, report.skipped, report.batches) == (5, 0, 3)
    assert seen == [["a", "bb"], ["ccc", "dddd"], ["eeeee"]]
    got = await db.read("ccc")
    assert got["embedding"].tolist() == [3.0, 1.0, 0.0]
    assert got.fields["embedding"].model_name == "amodel"
    again = await db.bulk_embed([*recs, Record({"t": "ffffff"}, id="f")], "t", embedding_fn=amodel)
    assert (again.embedded, again.skipped) == (1, 5)
    hits = await db.vector_search([6, 1, 0], k=1, metric="euclidean")
    assert hits[0].id == "f"
    await db.close()


async def test_sync_embedder_on_async_store() -> None:
    db = AsyncDatabaseFactory().create(backend="memory", vector_enabled=True, vector_dimensions=16)
    ids = await db.bulk_embed_and_store(docs(7), "text", batch_size=3)
    assert ids == [f"d{i}" for i in range(7)]
    assert await db.count() == 7
    report = await db.bulk_embed(docs(7), "text")
    assert (report.embedded, report.skipped) == (0, 7)
    await db.close()


def test_hashing_embedder_pickles() -> None:
    """It travels to other processes (Dask workers, multiprocessing) and embeds the same there."""
    import pickle

    from dk_vector_plugins import HashingEmbedder

    emb = HashingEmbedder(32, seed=3)
    texts = ["a pickled embedder", "gives the same vectors"]
    again = pickle.loads(pickle.dumps(emb))
    assert np.array_equal(again.embed(texts), emb.embed(texts))
