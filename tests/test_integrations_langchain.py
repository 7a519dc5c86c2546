"""The LangChain integration: LangChain's own standard vector-store tests on every backend, then ours.

``langchain-tests``' ``VectorStoreIntegrationTests`` (one class holding the sync and the async
tests, switched by its ``has_sync`` / ``has_async`` properties) runs unchanged against the memory
backend, the file backend (in ``tmp_path``) and the S3 backend (the real local S3 server of
``conftest.s3_server``): both halves, every test, nothing overridden but the ``vectorstore``
fixture it asks for.

Opt-outs: none. The base class documents three (``has_sync = False``, ``has_async = False``,
``has_get_by_ids = False``); ``DkvVectorStore`` implements the sync API, the async API (natively,
on the async stores) and ``get_by_ids``, so all three keep their default ``True``, asserted by
:func:`test_no_standard_test_is_opted_out`.

Then the adapter's own behaviour: filters in the dk_vector_plugins filter language, scores and
relevance per metric, MMR, deletes, metadata round trips, records written without LangChain,
the sync and async handles seeing one table, retrievers, and the embedding adapters both ways.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import VectorStoreIntegrationTests

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    DatabaseFactory,
    FilterError,
    FunctionEmbedder,
    HashingEmbedder,
    Query,
    Record,
)
from dk_vector_plugins.integrations.langchain import DkvEmbeddings, DkvVectorStore, LangChainEmbedder

BACKENDS = ["memory", "file", "s3"]


def backend_config(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Configuration keys of a fresh, empty table of ``backend``."""
    if backend == "memory":
        return {}
    if backend == "file":
        return {"backend": "file", "path": str(tmp_path / "lc-store")}
    return {"backend": "s3", **request.getfixturevalue("s3_server").config()}


# --- LangChain's standard tests ------------------------------------------------------------------


class _StandardTests(VectorStoreIntegrationTests):
    """``VectorStoreIntegrationTests`` on an empty ``DkvVectorStore`` of ``backend``."""

    backend = "memory"

    @pytest.fixture
    async def vectorstore(  # type: ignore[override]
        self, tmp_path: Path, request: pytest.FixtureRequest
    ) -> AsyncIterator[VectorStore]:
        """An empty store per test; closed (the async handle too) on the test's event loop."""
        store = DkvVectorStore(self.get_embeddings(), **backend_config(self.backend, tmp_path, request))
        try:
            yield store
        finally:
            await store.aclose()


class TestLangChainStandardMemory(_StandardTests):
    backend = "memory"


class TestLangChainStandardFile(_StandardTests):
    backend = "file"


class TestLangChainStandardS3(_StandardTests):
    backend = "s3"


def test_no_standard_test_is_opted_out() -> None:
    suite = TestLangChainStandardMemory()
    assert suite.has_sync and suite.has_async and suite.has_get_by_ids
    for cls in (TestLangChainStandardMemory, TestLangChainStandardFile, TestLangChainStandardS3):
        overridden = {
            name
            for klass in cls.__mro__[: cls.__mro__.index(VectorStoreIntegrationTests)]
            for name in vars(klass)
            if name.startswith("test_") or name.startswith("has_")
        }
        assert overridden == set(), f"{cls.__name__} overrides {overridden}"


# --- our own tests -------------------------------------------------------------------------------

EMBED = HashingEmbedder(64)
NOTES = [
    ("n1", "Buy flour, yeast and salt for the sourdough bread", {"tag": "shopping", "year": 2024}),
    ("n2", "Book the dentist appointment for Tuesday morning", {"tag": "health", "year": 2024}),
    ("n3", "Read the paper on approximate nearest neighbour graphs", {"tag": "work", "year": 2023}),
    ("n4", "The bread dough needs twelve hours to rise overnight", {"tag": "cooking", "year": 2023}),
    ("n5", "Renew the passport before the summer holiday", {"tag": "admin", "year": 2022}),
    ("n6", "Benchmark the vector search on one million embeddings", {"tag": "work", "year": 2024}),
]


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., DkvVectorStore]]:
    """``make(**config)`` -> a store on a fresh table of each backend; closed afterwards."""
    made: list[DkvVectorStore] = []

    def build(embedding: Embeddings | None = None, **config: Any) -> DkvVectorStore:
        full = {**backend_config(request.param, tmp_path / str(len(made)), request), **config}
        store = DkvVectorStore(embedding or DkvEmbeddings(EMBED), **full)
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


def add_notes(store: DkvVectorStore) -> list[str]:
    return store.add_texts([t for _, t, _ in NOTES], [m for _, _, m in NOTES], ids=[i for i, _, _ in NOTES])


def ids(docs: list[Document]) -> list[str | None]:
    return [d.id for d in docs]


def test_filters_use_the_dkv_filter_language(make: Callable[..., DkvVectorStore]) -> None:
    store = make()
    add_notes(store)
    assert ids(store.similarity_search("bread", k=5, filter={"tag": "cooking"})) == ["n4"]
    assert set(ids(store.similarity_search("x y", k=9, filter={"year": {"$gte": 2024}}))) == {"n1", "n2", "n6"}
    either = {"$or": [{"tag": "admin"}, {"year": {"$lt": 2023}}, {"tag": {"$in": ["health"]}}]}
    assert set(ids(store.similarity_search("passport", k=9, filter=either))) == {"n2", "n5"}
    assert ids(store.similarity_search("bread", k=9, filter=Query().filter("tag", "=", "work").filter("year", "<", 2024))) == ["n3"]
    assert ids(store.similarity_search("bread", k=9, filter={"id": "n1"})) == ["n1"]  # "id": the document id
    assert store.similarity_search("bread", k=3, filter={"tag": "nothing"}) == []
    with pytest.raises(FilterError):
        store.similarity_search("bread", filter={"$bogus": 1})


@pytest.mark.parametrize("metric", ["cosine", "dot_product", "euclidean"])
def test_scores_and_relevance(tmp_path: Path, metric: str) -> None:
    store = DkvVectorStore(DkvEmbeddings(EMBED), vector_metric=metric)
    add_notes(store)
    scored = store.similarity_search_with_score("dough rise overnight", k=6)
    scores = [s for _, s in scored]
    assert scores == sorted(scores, reverse=True) and scored[0][0].id == "n4"
    query = np.asarray(EMBED.embed(["dough rise overnight"])[0], dtype=np.float64)
    top = np.asarray(EMBED.embed([NOTES[3][1]])[0], dtype=np.float64)
    expected = {
        "cosine": float(query @ top),  # unit vectors
        "dot_product": float(query @ top),
        "euclidean": 1.0 / (1.0 + float(np.linalg.norm(query - top))),
    }[metric]
    assert scores[0] == pytest.approx(expected, rel=1e-5)
    relevance = store.similarity_search_with_relevance_scores("dough rise overnight", k=6)
    assert all(0.0 <= r <= 1.0 for _, r in relevance)
    assert [d.id for d, _ in relevance] == [d.id for d, _ in scored]
    if metric == "euclidean":
        assert [r for _, r in relevance] == pytest.approx(scores)
    else:
        assert [r for _, r in relevance] == pytest.approx([min(1.0, max(0.0, s)) for s in scores])
    kept = store.similarity_search_with_relevance_scores("dough rise overnight", k=6, score_threshold=relevance[1][1])
    assert [d.id for d, _ in kept] == [d.id for d, _ in relevance[:2]]
    # score_threshold on the raw score goes to the store
    assert len(store.similarity_search_with_score("dough rise overnight", k=6, score_threshold=scores[0])) == 1
    store.close()


def test_metric_override_per_search() -> None:
    store = DkvVectorStore(DkvEmbeddings(EMBED))
    add_notes(store)
    hits = store.similarity_search_with_score("bread", k=2, metric="euclidean")
    assert all(0.0 < s <= 1.0 for _, s in hits)
    rel = store.similarity_search_with_relevance_scores("bread", k=2, metric="euclidean")
    assert [r for _, r in rel] == pytest.approx([s for _, s in hits])


async def test_mmr_prefers_diverse_documents(make: Callable[..., DkvVectorStore]) -> None:
    texts = ["bread dough rising", "bread dough rising overnight", "bread dough rising slowly", "passport office"]
    vectors = [[1.0, 0.0, 0.0], [0.99, 0.05, 0.0], [0.98, 0.0, 0.05], [0.6, 0.8, 0.0]]
    emb = FixedEmbeddings(dict(zip(texts, vectors)), default=[1.0, 0.05, 0.0])
    store = make(emb)
    store.add_texts(texts, ids=["a", "b", "c", "d"])
    assert ids(store.similarity_search("q", k=2)) == ["b", "a"]
    assert ids(store.max_marginal_relevance_search("q", k=2, fetch_k=4, lambda_mult=0.3)) == ["b", "d"]
    assert ids(store.max_marginal_relevance_search("q", k=2, fetch_k=4, lambda_mult=1.0)) == ["b", "a"]
    assert ids(await store.amax_marginal_relevance_search("q", k=2, fetch_k=4, lambda_mult=0.3)) == ["b", "d"]
    assert ids(store.max_marginal_relevance_search("q", k=3, filter={"id": {"$in": ["a", "c"]}})) == ["a", "c"]
    retriever = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4, "lambda_mult": 0.3})
    assert ids(retriever.invoke("q")) == ["b", "d"]
    assert ids(await retriever.ainvoke("q")) == ["b", "d"]
    await store.aclose()


class FixedEmbeddings(Embeddings):
    """Embeddings from a table (``default`` for anything else): exact, hand-made geometry."""

    def __init__(self, table: dict[str, list[float]], default: list[float]) -> None:
        self.table, self.default = table, default

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.table.get(t, self.default) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self.table.get(text, self.default)


def test_metadata_round_trips_exactly(make: Callable[..., DkvVectorStore]) -> None:
    store = make()
    metadata = {
        "source": "a.pdf",
        "page": 3,
        "score": 0.25,
        "ok": True,
        "none": None,
        "tags": ["x", "y"],
        "nested": {"a": [1, {"b": "c"}], "d": 1.5},
        "id": 7,
        "metadata": {"also": "fine"},
        "ünï": "cödé",
    }
    store.add_documents([Document(page_content="some text", metadata=metadata, id="doc-1")])
    [doc] = store.get_by_ids(["doc-1"])
    assert doc == Document(page_content="some text", metadata=metadata, id="doc-1")
    assert json.dumps(doc.metadata, sort_keys=True) == json.dumps(metadata, sort_keys=True)
    assert ids(store.similarity_search("text", k=1, filter={"nested.d": 1.5, "page": {"$gt": 2}})) == ["doc-1"]


def test_metadata_that_would_not_read_back_is_refused() -> None:
    store = DkvVectorStore(DkvEmbeddings(EMBED))
    with pytest.raises(ValueError, match="'text', the store's text field"):
        store.add_texts(["a"], [{"text": "clash"}])
    with pytest.raises(ValueError, match="vector field"):
        store.add_texts(["a"], [{"embedding": [1, 2]}])
    with pytest.raises(ValueError, match="is a vector"):
        store.add_texts(["a"], [{"v": np.ones(3)}])
    with pytest.raises(ValueError, match="keys must be strings"):
        store.add_texts(["a"], [{1: "x"}])  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="2 texts but 1 metadatas"):
        store.add_texts(["a", "b"], [{}])
    with pytest.raises(ValueError, match="1 texts but 2 ids"):
        store.add_texts(["a"], ids=["x", "y"])
    with pytest.raises(TypeError, match="unexpected keyword"):
        store.add_texts(["a"], bogus=1)
    with pytest.raises(ValueError, match="batch_size"):
        store.add_texts(["a"], batch_size=0)
    with pytest.raises(TypeError, match="must be a string"):
        store.add_texts([b"bytes"])  # type: ignore[list-item]
    assert store.client.count() == 0
    other = DkvVectorStore(DkvEmbeddings(EMBED), text_field="body", vector_field="vec")
    other.add_texts(["a"], [{"text": "fine here", "embedding": "also fine"}], ids=["x"])
    assert other.get_by_ids(["x"])[0].metadata == {"text": "fine here", "embedding": "also fine"}
    assert set(other.client.read("x").data) == {"body", "vec", "text", "embedding"}  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="must differ"):
        DkvVectorStore(DkvEmbeddings(EMBED), text_field="x", vector_field="x")


def test_records_written_without_langchain_read_as_documents(tmp_path: Path) -> None:
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"), vector_enabled=True)
    db.bulk_embed_and_store(
        [Record({"text": t, **m}, id=i) for i, t, m in NOTES], text_field="text", embedding_fn=EMBED
    )
    db.add_vectors(EMBED.embed(["vectors only"]), ids=["bare"], metadata=[{"year": 1999}])
    store = DkvVectorStore(DkvEmbeddings(EMBED), client=db)
    [doc] = store.similarity_search("sourdough bread", k=1, filter={"year": 2024})
    assert doc == Document(id="n1", page_content=NOTES[0][1], metadata=NOTES[0][2])
    assert store.get_by_ids(["bare"]) == [Document(id="bare", page_content="", metadata={"year": 1999})]
    store.close()
    assert db.count() == 7  # a client given is the caller's: still open
    db.close()


def test_deletes(make: Callable[..., DkvVectorStore]) -> None:
    store = make()
    add_notes(store)
    assert store.delete(["n1", "missing"]) is True
    assert store.delete(filter={"tag": "work"}) is True
    assert sorted(d.id or "" for d in store.get_by_ids([i for i, _, _ in NOTES])) == ["n2", "n4", "n5"]
    with pytest.raises(ValueError, match="not both"):
        store.delete(["n2"], filter={"tag": "x"})
    with pytest.raises(TypeError, match="unexpected keyword"):
        store.delete(["n2"], where={})
    assert store.delete() is True  # LangChain's interface: no ids, every document
    assert store.client.count() == 0


async def test_async_deletes_and_adds(make: Callable[..., DkvVectorStore]) -> None:
    store = make()
    texts = [t for _, t, _ in NOTES]
    got = await store.aadd_texts(texts, [m for _, _, m in NOTES], ids=[i for i, _, _ in NOTES], batch_size=4)
    assert got == [i for i, _, _ in NOTES]
    assert await store.adelete(filter={"year": 2024}) is True
    assert sorted(d.id or "" for d in await store.aget_by_ids(got)) == ["n3", "n4", "n5"]
    assert ids(await store.asimilarity_search("bread dough", k=1)) == ["n4"]
    [(doc, score)] = await store.asimilarity_search_with_score("bread dough", k=1)
    assert doc.id == "n4" and score == pytest.approx(store.similarity_search_with_score("bread dough", k=1)[0][1])
    vector = EMBED.embed(["passport"])[0].tolist()
    assert ids(await store.asimilarity_search_by_vector(vector, k=1)) == ["n5"]
    rel = await store.asimilarity_search_with_relevance_scores("bread dough", k=2)
    assert rel[0][0].id == "n4" and 0 <= rel[0][1] <= 1
    assert await store.adelete() is True
    assert await store.async_client.count() == 0
    await store.aclose()


async def test_sync_and_async_share_one_table(make: Callable[..., DkvVectorStore]) -> None:
    store = make()
    store.add_texts(["written by the sync API"], ids=["s"])
    await store.aadd_texts(["written by the async API"], ids=["a"])
    assert sorted(d.id or "" for d in await store.aget_by_ids(["s", "a"])) == ["a", "s"]
    assert sorted(d.id or "" for d in store.get_by_ids(["s", "a"])) == ["a", "s"]
    await store.adelete(["s"])
    assert store.client.count() == 1 and await store.async_client.count() == 1
    await store.aclose()


async def test_async_client_alone(tmp_path: Path) -> None:
    adb = AsyncDatabaseFactory().create(backend="memory", vector_enabled=True)
    store = DkvVectorStore(DkvEmbeddings(EMBED), async_client=adb)
    await store.aadd_texts(["bread"], ids=["b"])
    assert store.similarity_search("bread", k=1)[0].id == "b"  # a sync twin on the same memory table
    assert store.client.core is adb.core
    await store.aclose()
    assert await adb.count() == 1  # the caller's store stays open
    await adb.close()
    with pytest.raises(TypeError, match="not both"):
        DkvVectorStore(DkvEmbeddings(EMBED), async_client=adb, backend="memory")
    with pytest.raises(TypeError, match="sync store"):
        DkvVectorStore(DkvEmbeddings(EMBED), client=adb)  # type: ignore[arg-type]


def test_from_texts_builds_the_configured_backend(tmp_path: Path) -> None:
    emb = DeterministicFakeEmbedding(size=8)
    path = tmp_path / "store"
    store = DkvVectorStore.from_texts(
        ["foo", "bar"], emb, metadatas=[{"n": 1}, {"n": 2}], ids=["1", "2"], backend="file", path=str(path),
        vector_metric="euclidean", batch_size=1,
    )
    assert store.client.backend_name == "file" and store.client.config["vector_metric"] == "euclidean"
    assert store.embeddings is emb
    assert "backend='file'" in repr(store)
    store.close()
    with DkvVectorStore(emb, backend="file", path=str(path)) as again:  # persisted
        assert again.similarity_search("bar", k=1) == [Document(id="2", page_content="bar", metadata={"n": 2})]
    docs = [Document(page_content="x", metadata={"k": "v"}, id="d")]
    assert DkvVectorStore.from_documents(docs, emb).get_by_ids(["d"]) == docs


async def test_afrom_texts_and_async_context_manager() -> None:
    emb = DeterministicFakeEmbedding(size=8)
    async with await DkvVectorStore.afrom_texts(["foo", "bar"], emb, ids=["1", "2"]) as store:
        assert ids(await store.asimilarity_search("foo", k=1)) == ["1"]
        docs = [Document(page_content="baz", id="3")]
        store2 = await DkvVectorStore.afrom_documents(docs, emb)
        assert await store2.aget_by_ids(["3"]) == docs
        await store2.aclose()


async def test_retrievers(make: Callable[..., DkvVectorStore]) -> None:
    store = make()
    add_notes(store)
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"year": 2024}})
    first = retriever.invoke("sourdough bread")
    assert len(first) == 2 and first[0].id == "n1"
    assert all(d.metadata["year"] == 2024 for d in await retriever.ainvoke("sourdough bread"))
    threshold = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"k": 6, "score_threshold": 0.3}
    )
    got = threshold.invoke("the bread dough needs to rise")
    assert ids(got)[:1] == ["n4"] and len(got) < 6
    assert ids(await threshold.ainvoke("the bread dough needs to rise")) == ids(got)
    await store.aclose()


def test_langchain_embeddings_as_our_embedder_sync_and_async() -> None:
    emb = DeterministicFakeEmbedding(size=12)
    embedder = LangChainEmbedder(emb)
    out = embedder.embed(["a", "b"])
    assert out.dtype == np.float32 and out.shape == (2, 12)
    np.testing.assert_allclose(out, np.asarray(emb.embed_documents(["a", "b"]), dtype=np.float32))
    assert embedder.embed([]).shape[0] == 0
    assert "DeterministicFakeEmbedding" in repr(embedder)

    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    report = db.bulk_embed([Record({"text": "a"}, id="a"), Record({"text": "b"}, id="b")], "text", embedding_fn=embedder)
    assert report.embedded == 2
    assert db.get("a")["embedding"].tolist() == pytest.approx(emb.embed_query("a"))
    assert db.get("a").fields["embedding"].model_name == "DeterministicFakeEmbedding"  # type: ignore[union-attr]

    calls: list[list[str]] = []

    class AsyncOnly(DeterministicFakeEmbedding):
        async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
            calls.append(texts)
            return self.embed_documents(texts)

    async def run() -> None:
        adb = AsyncDatabaseFactory().create(backend="memory", vector_enabled=True)
        asyncer = LangChainEmbedder(AsyncOnly(size=12))
        await adb.bulk_embed_and_store([Record({"text": "c"}, id="c")], "text", embedding_fn=asyncer.aembed)
        assert calls == [["c"]]
        assert (await adb.get("c"))["embedding"].tolist() == pytest.approx(emb.embed_query("c"))
        await adb.close()

    asyncio.run(run())


def test_our_embedder_as_langchain_embeddings() -> None:
    emb = DkvEmbeddings(HashingEmbedder(16))
    vec = emb.embed_query("bread")
    assert isinstance(vec, list) and len(vec) == 16 and all(isinstance(x, float) for x in vec)
    assert vec == pytest.approx(HashingEmbedder(16).embed(["bread"])[0].tolist())
    assert emb.embed_documents(["a", "b"]) == [emb.embed_query("a"), emb.embed_query("b")]
    assert asyncio.run(emb.aembed_query("bread")) == vec
    assert DkvEmbeddings.from_plugin("hashing", dimensions=16).embed_query("bread") == pytest.approx(vec)
    assert "HashingEmbedder" in repr(emb)

    async def afn(texts: list[str]) -> Any:
        return HashingEmbedder(16).embed(texts)

    async_emb = DkvEmbeddings(FunctionEmbedder(afn))
    assert asyncio.run(async_emb.aembed_documents(["bread"])) == [vec]
    with pytest.raises(TypeError, match="async"):
        async_emb.embed_documents(["bread"])
    with pytest.raises(TypeError, match="embed"):
        DkvEmbeddings(object())  # type: ignore[arg-type]


def test_importing_the_package_imports_no_framework() -> None:
    code = (
        "import sys, dk_vector_plugins\n"
        "from dk_vector_plugins import DatabaseFactory\n"
        "db = DatabaseFactory().create(backend='memory', vector_enabled=True)\n"
        "db.add_vectors([[1.0, 0.0]], ids=['a']); db.vector_search([1.0, 0.0], k=1)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'langchain', "
        "'llama_index', 'langchain_tests') or m.startswith('dk_vector_plugins.integrations'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_docs_langchain_blocks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "INTEGRATIONS.md"
    blocks = [b for b in re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.S) if ".langchain import" in b]
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "integrations_doc"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"INTEGRATIONS.md[langchain {i}]", "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert "id='n1'" in lines[0] and "id='n3'" in lines[0]
    assert "id='n1'" in lines[1] and "id='n2'" not in lines[1] and "id='n3'" not in lines[1]
    assert lines[2].startswith("n1 0.") and lines[3].startswith("n3 0.")
    assert "id='n2'" in lines[5] and "id='n1'" in lines[6] and "id='n2'" not in lines[6]
    assert "id='n3'" in lines[7]
    assert (tmp_path / "lc-store" / "manifests").is_dir()
    db = namespace["db"]
    assert db.get("h")["embedding"].shape == (64,)
