"""The LlamaIndex integration: a ``VectorStoreIndex`` over ``DkvLlamaVectorStore`` on memory, file
and S3 (sync and async), filters checked against LlamaIndex's own reference store, and the
embedding adapters both ways.

The embedding model is local and deterministic: ``DkvEmbedding`` over the built-in hashing
embedder (texts sharing words get similar vectors, so retrieval is meaningful), and LlamaIndex's
``MockEmbedding`` where only the plumbing matters.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores import SimpleVectorStore
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from dk_vector_plugins import AsyncDatabaseFactory, DatabaseFactory, HashingEmbedder, Record
from dk_vector_plugins.integrations.llamaindex import (
    DkvEmbedding,
    DkvLlamaVectorStore,
    LlamaIndexEmbedder,
    to_dkv_filter,
)

BACKENDS = ["memory", "file", "s3"]
EMBED = DkvEmbedding(HashingEmbedder(64))

DOCS = [
    ("bread", "Buy flour, yeast and salt for the sourdough bread", {"tag": "shopping", "year": 2024}),
    ("dentist", "Book the dentist appointment for Tuesday morning", {"tag": "health", "year": 2024}),
    ("graphs", "Read the paper on approximate nearest neighbour graphs", {"tag": "work", "year": 2023}),
    ("dough", "The bread dough needs twelve hours to rise overnight", {"tag": "cooking", "year": 2023}),
    ("passport", "Renew the passport before the summer holiday", {"tag": "admin", "year": 2022}),
    ("bench", "Benchmark the vector search on one million embeddings", {"tag": "work", "year": 2024}),
]


def documents() -> list[Document]:
    return [Document(text=text, metadata=meta, doc_id=doc_id) for doc_id, text, meta in DOCS]


def backend_config(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    if backend == "memory":
        return {}
    if backend == "file":
        return {"backend": "file", "path": str(tmp_path / "li-store")}
    return {"backend": "s3", **request.getfixturevalue("s3_server").config()}


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Configuration keys of a fresh, empty table of each backend."""
    return backend_config(request.param, tmp_path, request)


def retrieved(index: VectorStoreIndex, question: str, **kwargs: Any) -> list[str | None]:
    """The source document ids of a retrieval, best first."""
    return [n.node.ref_doc_id for n in index.as_retriever(**kwargs).retrieve(question)]


def test_vector_store_index_sync(config: dict[str, Any]) -> None:
    store = DkvLlamaVectorStore(**config)
    assert store.stores_text and store.client.count() == 0
    index = VectorStoreIndex.from_documents(
        documents(), storage_context=StorageContext.from_defaults(vector_store=store), embed_model=EMBED
    )
    assert store.client.count() == len(DOCS)
    assert retrieved(index, "bread dough rising overnight", similarity_top_k=2) == ["dough", "bread"]
    hits = index.as_retriever(similarity_top_k=3).retrieve("bread dough rising overnight")
    scores = [h.score or 0.0 for h in hits]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    node = hits[0].node
    assert node.get_content() == DOCS[3][1] and node.metadata == DOCS[3][2]

    work = MetadataFilters(filters=[MetadataFilter(key="tag", value="work")])
    assert retrieved(index, "search", similarity_top_k=5, filters=work) == ["bench", "graphs"]
    recent_or_admin = MetadataFilters(
        filters=[
            MetadataFilter(key="year", value=2024, operator=FilterOperator.GTE),
            MetadataFilter(key="tag", value="admin"),
        ],
        condition=FilterCondition.OR,
    )
    assert set(retrieved(index, "the", similarity_top_k=9, filters=recent_or_admin)) == {
        "bread", "dentist", "bench", "passport"
    }

    index.delete_ref_doc("dough")
    assert store.client.count() == len(DOCS) - 1
    assert retrieved(index, "bread dough rising overnight", similarity_top_k=1) == ["bread"]
    store.close()


def test_a_file_index_reopens(tmp_path: Path) -> None:
    path = str(tmp_path / "kept")
    store = DkvLlamaVectorStore(backend="file", path=path)
    VectorStoreIndex.from_documents(
        documents(), storage_context=StorageContext.from_defaults(vector_store=store), embed_model=EMBED
    )
    store.close()
    again = DkvLlamaVectorStore(backend="file", path=path)
    index = VectorStoreIndex.from_vector_store(again, embed_model=EMBED)
    assert retrieved(index, "passport holiday", similarity_top_k=1) == ["passport"]
    again.close()


async def test_vector_store_index_async(config: dict[str, Any]) -> None:
    store = DkvLlamaVectorStore(**config)
    index = VectorStoreIndex(
        [], storage_context=StorageContext.from_defaults(vector_store=store), embed_model=EMBED
    )
    nodes = [
        TextNode(
            text=text,
            metadata=meta,
            id_=f"{doc_id}-0",
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=doc_id)},
        )
        for doc_id, text, meta in DOCS
    ]
    await index.ainsert_nodes(nodes)
    assert await store.async_client.count() == len(DOCS)
    hits = await index.as_retriever(similarity_top_k=2).aretrieve("bread dough rising overnight")
    assert [h.node.node_id for h in hits] == ["dough-0", "bread-0"]
    assert hits[0].node.metadata == DOCS[3][2] and hits[0].node.ref_doc_id == "dough"

    recent = MetadataFilters(filters=[MetadataFilter(key="year", value=2024, operator=FilterOperator.GTE)])
    got = await store.aget_nodes(filters=recent)
    assert sorted(n.node_id for n in got) == ["bench-0", "bread-0", "dentist-0"]
    assert [n.node_id for n in await store.aget_nodes(node_ids=["graphs-0"])] == ["graphs-0"]
    await store.adelete_nodes(node_ids=["bench-0", "graphs-0"], filters=recent)  # only bench-0 is recent
    assert sorted(n.node_id for n in await store.aget_nodes()) == [
        "bread-0", "dentist-0", "dough-0", "graphs-0", "passport-0"
    ]
    result = await store.aquery(
        VectorStoreQuery(query_embedding=EMBED.get_query_embedding("passport"), similarity_top_k=1)
    )
    assert result.ids == ["passport-0"] and result.similarities and result.similarities[0] > 0
    await store.aclear()
    assert store.client.count() == 0  # the sync handle sees the async writes (one table)
    await store.aclose()


async def test_async_ingest_and_delete_by_document(config: dict[str, Any]) -> None:
    store = DkvLlamaVectorStore(**config)
    index = VectorStoreIndex(
        [], storage_context=StorageContext.from_defaults(vector_store=store), embed_model=EMBED
    )
    for doc in documents():
        await index.ainsert(doc)
    assert await store.async_client.count() == len(DOCS)
    await index.adelete_ref_doc("bread")
    hits = await index.as_retriever(similarity_top_k=1).aretrieve("sourdough bread flour")
    assert [h.node.ref_doc_id for h in hits] != ["bread"] and await store.async_client.count() == len(DOCS) - 1
    await store.aclose()


def test_mock_embedding_and_the_client_property() -> None:
    db = DatabaseFactory().create(backend="memory", vector_enabled=True, vector_metric="euclidean")
    store = DkvLlamaVectorStore(client=db)
    assert store.client is db and store.class_name() == "DkvLlamaVectorStore"
    index = VectorStoreIndex.from_documents(
        documents()[:3], storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=MockEmbedding(embed_dim=8),
    )
    hits = index.as_retriever(similarity_top_k=3).retrieve("anything")
    assert len(hits) == 3 and all(h.score == pytest.approx(1.0) for h in hits)  # identical vectors: distance 0
    store.close()
    assert db.count() == 3  # a client given stays the caller's
    db.close()


# --- filters: the same answers as LlamaIndex's reference store -----------------------------------

FILTER_NODES = [
    ("a", {"tag": "work", "year": 2024, "score": 0.5, "title": "Vector Search at Scale"}),
    ("b", {"tag": "home", "year": 2023, "score": 1.5, "title": "sourdough bread"}),
    ("c", {"tag": "work", "year": 2022, "title": "Graph search 2.0"}),
    ("d", {"tag": "travel", "score": 2.5, "title": ""}),
    ("e", {"year": 2021, "score": -1.0, "title": "vector databases 2x0"}),
]


def F(key: str, value: Any, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:
    return MetadataFilter(key=key, value=value, operator=op)


FILTERS = {
    "eq": MetadataFilters(filters=[F("tag", "work")]),
    "eq-number": MetadataFilters(filters=[F("year", 2023)]),
    "ne": MetadataFilters(filters=[F("tag", "work", FilterOperator.NE)]),
    "gt": MetadataFilters(filters=[F("year", 2022, FilterOperator.GT)]),
    "gte": MetadataFilters(filters=[F("year", 2022, FilterOperator.GTE)]),
    "lt": MetadataFilters(filters=[F("score", 1.5, FilterOperator.LT)]),
    "lte-float": MetadataFilters(filters=[F("score", 1.5, FilterOperator.LTE)]),
    "in": MetadataFilters(filters=[F("tag", ["home", "travel"], FilterOperator.IN)]),
    "in-numbers": MetadataFilters(filters=[F("year", [2021, 2024], FilterOperator.IN)]),
    "nin": MetadataFilters(filters=[F("tag", ["work"], FilterOperator.NIN)]),
    "text-match": MetadataFilters(filters=[F("title", "search", FilterOperator.TEXT_MATCH)]),
    "text-match-case": MetadataFilters(filters=[F("title", "Vector", FilterOperator.TEXT_MATCH)]),
    "text-match-regex-chars": MetadataFilters(filters=[F("title", "2.0", FilterOperator.TEXT_MATCH)]),
    "text-match-insensitive": MetadataFilters(
        filters=[F("title", "VECTOR", FilterOperator.TEXT_MATCH_INSENSITIVE)]
    ),
    "is-empty": MetadataFilters(filters=[F("title", None, FilterOperator.IS_EMPTY)]),
    "is-empty-missing": MetadataFilters(filters=[F("year", None, FilterOperator.IS_EMPTY)]),
    "and": MetadataFilters(filters=[F("tag", "work"), F("year", 2023, FilterOperator.GTE)]),
    "or": MetadataFilters(
        filters=[F("tag", "travel"), F("year", 2021, FilterOperator.LTE)], condition=FilterCondition.OR
    ),
    "not": MetadataFilters(filters=[F("tag", "work"), F("tag", "home")], condition=FilterCondition.NOT),
}

NESTED = {  # the reference store does not nest groups: expected ids by hand
    "nested": (
        MetadataFilters(
            filters=[
                F("score", 0.0, FilterOperator.GT),
                MetadataFilters(filters=[F("tag", "work"), F("tag", "travel")], condition=FilterCondition.OR),
            ]
        ),
        {"a", "d"},
    ),
    "empty-group": (MetadataFilters(filters=[F("tag", "work"), MetadataFilters(filters=[])]), {"a", "c"}),
    "eq-none": (MetadataFilters(filters=[F("year", None)]), {"d"}),
    "ne-none": (MetadataFilters(filters=[F("year", None, FilterOperator.NE)]), {"a", "b", "c", "e"}),
    "in-scalar": (MetadataFilters(filters=[F("tag", "home", FilterOperator.IN)]), {"b"}),
}


def filter_nodes() -> list[TextNode]:
    rng = np.random.default_rng(0)
    return [
        TextNode(id_=nid, text=f"node {nid}", metadata=meta, embedding=rng.standard_normal(4).tolist())
        for nid, meta in FILTER_NODES
    ]


@pytest.fixture(scope="module")
def both_stores() -> Iterator[tuple[SimpleVectorStore, DkvLlamaVectorStore]]:
    reference = SimpleVectorStore()
    reference.add(filter_nodes())
    ours = DkvLlamaVectorStore()
    ours.add(filter_nodes())
    yield reference, ours
    ours.close()


def matching(store: Any, filters: MetadataFilters) -> set[str]:
    query = VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0, 0.0], similarity_top_k=10, filters=filters)
    return set(store.query(query).ids or [])


@pytest.mark.parametrize("name", list(FILTERS))
def test_filters_agree_with_the_reference_store(
    name: str, both_stores: tuple[SimpleVectorStore, DkvLlamaVectorStore]
) -> None:
    reference, ours = both_stores
    expected = matching(reference, FILTERS[name])
    assert matching(ours, FILTERS[name]) == expected
    assert expected and expected != {nid for nid, _ in FILTER_NODES}  # each case tells nodes apart


@pytest.mark.parametrize("name", list(NESTED))
def test_nested_and_edge_filters(name: str, both_stores: tuple[SimpleVectorStore, DkvLlamaVectorStore]) -> None:
    filters, expected = NESTED[name]
    assert matching(both_stores[1], filters) == expected


@pytest.mark.parametrize("op", [FilterOperator.CONTAINS, FilterOperator.ANY, FilterOperator.ALL])
def test_list_operators_are_refused(op: FilterOperator) -> None:
    value: Any = "x" if op == FilterOperator.CONTAINS else ["x"]
    with pytest.raises(NotImplementedError, match=op.name):
        to_dkv_filter(MetadataFilters(filters=[F("tags", value, op)]))
    with pytest.raises(ValueError, match="needs a string"):
        to_dkv_filter(MetadataFilters(filters=[F("t", 1, FilterOperator.TEXT_MATCH)]))
    assert to_dkv_filter(None) is None and to_dkv_filter(MetadataFilters(filters=[])) is None


def test_query_options(both_stores: tuple[SimpleVectorStore, DkvLlamaVectorStore]) -> None:
    _, ours = both_stores
    q = [1.0, 0.0, 0.0, 0.0]
    assert ours.query(VectorStoreQuery(query_embedding=q, similarity_top_k=0)).ids == []
    assert set(ours.query(VectorStoreQuery(query_embedding=q, similarity_top_k=9, node_ids=["a", "c"])).ids or []) == {
        "a", "c"
    }
    with pytest.raises(NotImplementedError, match="hybrid"):
        ours.query(VectorStoreQuery(query_embedding=q, mode=VectorStoreQueryMode.HYBRID))
    with pytest.raises(ValueError, match="query_embedding"):
        ours.query(VectorStoreQuery(query_str="text only"))


async def test_mmr_mode() -> None:
    store = DkvLlamaVectorStore()
    vectors = {"a": [1.0, 0.0, 0.0], "b": [0.99, 0.05, 0.0], "c": [0.98, 0.0, 0.05], "d": [0.6, 0.8, 0.0]}
    store.add([TextNode(id_=i, text=i, embedding=v) for i, v in vectors.items()])
    q = [1.0, 0.05, 0.0]
    plain = store.query(VectorStoreQuery(query_embedding=q, similarity_top_k=2))
    assert plain.ids == ["b", "a"]
    mmr = VectorStoreQuery(query_embedding=q, similarity_top_k=2, mode=VectorStoreQueryMode.MMR, mmr_threshold=0.3)
    assert store.query(mmr).ids == ["b", "d"]
    assert (await store.aquery(mmr)).ids == ["b", "d"]
    lam1 = VectorStoreQuery(query_embedding=q, similarity_top_k=2, mode=VectorStoreQueryMode.MMR)
    assert store.query(lam1, mmr_threshold=1.0, mmr_prefetch_k=4).ids == ["b", "a"]
    scores = store.query(mmr).similarities or []
    assert scores[0] == pytest.approx(plain.similarities[0])  # type: ignore[index]
    await store.aclose()


def test_records_written_without_llamaindex_read_as_text_nodes(tmp_path: Path) -> None:
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "s"), vector_enabled=True)
    db.bulk_embed_and_store(
        [Record({"text": text, **meta}, id=doc_id) for doc_id, text, meta in DOCS],
        text_field="text",
        embedding_fn=HashingEmbedder(64),
    )
    store = DkvLlamaVectorStore(client=db)
    index = VectorStoreIndex.from_vector_store(store, embed_model=EMBED)
    [hit] = index.as_retriever(similarity_top_k=1).retrieve("renew the passport")
    assert isinstance(hit.node, TextNode)
    assert hit.node.node_id == "passport" and hit.node.metadata == DOCS[4][2]
    assert hit.node.get_content() == DOCS[4][1]
    db.close()


def test_node_round_trip_keeps_relationships_and_metadata() -> None:
    store = DkvLlamaVectorStore(text_field="body", vector_field="vec")
    [node] = [
        n
        for n in VectorStoreIndex.from_documents(
            [Document(text="hello world", metadata={"nested": {"a": [1, 2]}, "text": "meta text"}, doc_id="src")],
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=EMBED,
        )
        .as_retriever(similarity_top_k=1)
        .retrieve("hello")
    ]
    assert node.node.get_content() == "hello world"
    assert node.node.metadata == {"nested": {"a": [1, 2]}, "text": "meta text"}
    assert node.node.ref_doc_id == "src"
    assert store.client.read(node.node.node_id)["body"] == "hello world"  # type: ignore[index]
    with pytest.raises(ValueError, match="must differ"):
        DkvLlamaVectorStore(text_field="x", vector_field="x")
    flat = DkvLlamaVectorStore(flat_metadata=True)
    with pytest.raises(ValueError, match="must be one of"):
        flat.add([TextNode(text="x", metadata={"nested": {"a": 1}}, embedding=[1.0, 0.0])])


# --- embedding models both ways ------------------------------------------------------------------


def test_dkv_embedding_as_a_llamaindex_model() -> None:
    emb = DkvEmbedding.from_plugin("hashing", dimensions=16)
    assert emb.model_name == "dkv-hashing" and emb.class_name() == "DkvEmbedding"
    vec = emb.get_query_embedding("bread")
    assert vec == pytest.approx(HashingEmbedder(16).embed(["bread"])[0].tolist())
    assert emb.get_text_embedding_batch(["a b", "bread"])[1] == vec
    assert asyncio.run(emb.aget_query_embedding("bread")) == vec
    assert asyncio.run(emb.aget_text_embedding_batch(["bread"])) == [vec]
    assert asyncio.run(emb.aget_text_embedding("bread")) == vec
    assert isinstance(emb.embedder, HashingEmbedder)
    with pytest.raises(TypeError, match="embed"):
        DkvEmbedding(object())  # type: ignore[arg-type]


def test_llamaindex_model_as_our_embedder() -> None:
    model = MockEmbedding(embed_dim=5)
    embedder = LlamaIndexEmbedder(model)
    out = embedder.embed(["a", "b"])
    assert out.dtype == np.float32 and out.shape == (2, 5) and embedder.embed([]).shape[0] == 0
    assert "MockEmbedding" in repr(embedder)
    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    db.bulk_embed_and_store([Record({"text": "a"}, id="a")], "text", embedding_fn=embedder)
    assert db.get("a")["embedding"].tolist() == [0.5] * 5

    async def run() -> None:
        adb = AsyncDatabaseFactory().create(backend="memory", vector_enabled=True)
        await adb.bulk_embed_and_store([Record({"text": "b"}, id="b")], "text", embedding_fn=embedder.aembed)
        assert (await adb.get("b"))["embedding"].tolist() == [0.5] * 5
        assert (await embedder.aembed([])).shape[0] == 0
        await adb.close()

    asyncio.run(run())


def test_the_docs_llamaindex_block_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "INTEGRATIONS.md"
    blocks = [b for b in re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), re.S) if ".llamaindex import" in b]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "integrations_doc"}
    exec(compile(blocks[0], "INTEGRATIONS.md[llamaindex]", "exec"), namespace)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("bread ") and lines[1].startswith("passport ")
    assert lines[2:] == ["['bread']", "cake"]
    reopened = namespace["index"]
    assert [h.node.ref_doc_id for h in reopened.as_retriever(similarity_top_k=1).retrieve("bake a cake")] == ["cake"]
    reopened.vector_store.close()
