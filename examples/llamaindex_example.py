"""LlamaIndex on dk_vector_plugins: a VectorStoreIndex, retrievers, metadata filters, async.

    python -m pip install 'dk_vector_plugins[llamaindex]'
    python examples/llamaindex_example.py

Runs offline: the bundled sample (40 short texts in 5 categories), the memory backend, and the
built-in hashing embedder wrapped as a LlamaIndex embedding model (``DkvEmbedding``). No LLM is
needed for retrieval; a query engine would use ``Settings.llm``. With a real model pass any
LlamaIndex embedding model as ``embed_model``; with ``backend="file", path=...`` or
``backend="s3", ...`` the same code persists the index.
"""

from __future__ import annotations

import asyncio
import json
from importlib.resources import files

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQueryMode,
)

from dk_vector_plugins.integrations.llamaindex import DkvEmbedding, DkvLlamaVectorStore


def load_sample() -> list[Document]:
    """The sample bundled with the package as LlamaIndex documents (id, text, category, year)."""
    lines = files("dk_vector_plugins").joinpath("data/sample.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [
        Document(doc_id=r["id"], text=r["text"], metadata={"category": r["category"], "year": r["year"]})
        for r in rows
    ]


def sources(index: VectorStoreIndex, question: str, **kwargs: object) -> list[str | None]:
    """The source documents of a retrieval, best first."""
    return [hit.node.ref_doc_id for hit in index.as_retriever(**kwargs).retrieve(question)]


def main() -> None:
    embed_model = DkvEmbedding.from_plugin("hashing", dimensions=256)
    store = DkvLlamaVectorStore()  # memory backend by default
    index = VectorStoreIndex.from_documents(
        load_sample(), storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed_model
    )
    print(f"indexed {store.client.count()} nodes in the {store.client.backend_name} backend")

    # 1. Retrieve: nodes come back with their text, metadata and score.
    for hit in index.as_retriever(similarity_top_k=3).retrieve("the moon and the earth"):
        print(f"  {hit.score:.3f}  {hit.node.ref_doc_id:<12} {hit.node.metadata}  {hit.node.get_content()[:45]}")

    # 2. Metadata filters become dk_vector_plugins filters (AND / OR / NOT, nested).
    recent_cooking = MetadataFilters(
        filters=[
            MetadataFilter(key="category", value="cooking"),
            MetadataFilter(key="year", value=2020, operator=FilterOperator.GTE),
        ]
    )
    print(f"cooking, year >= 2020: {sources(index, 'bread and onions', similarity_top_k=3, filters=recent_cooking)}")
    sport_or_nature = MetadataFilters(
        filters=[
            MetadataFilter(key="category", value=["sports", "nature"], operator=FilterOperator.IN),
            MetadataFilter(key="category", value="astronomy"),
        ],
        condition=FilterCondition.OR,
    )
    print(f"sports, nature or astronomy: {sources(index, 'the sun and the stars', similarity_top_k=3, filters=sport_or_nature)}")

    # 3. Maximal marginal relevance.
    mmr = sources(
        index, "planet in the solar system", similarity_top_k=3, vector_store_query_mode=VectorStoreQueryMode.MMR
    )
    print(f"mmr 'planet in the solar system': {mmr}")

    # 4. Delete a source document's nodes.
    index.delete_ref_doc("astronomy-8")
    print(f"after delete_ref_doc('astronomy-8'): {sources(index, 'the moon and the earth', similarity_top_k=2)}")

    # 5. The async API runs on the async store (same table).
    async def ask_async() -> None:
        await index.ainsert(Document(doc_id="note-1", text="Comets grow a bright tail near the sun", metadata={"category": "astronomy", "year": 2025}))
        retriever = index.as_retriever(similarity_top_k=1)
        answers = await asyncio.gather(*(retriever.aretrieve(q) for q in ("comet tail", "knead the dough", "marathon runners")))
        print(f"async answers: {[hits[0].node.ref_doc_id for hits in answers]}")
        await index.adelete_ref_doc("note-1")
        print(f"after the async delete: {store.client.count()} nodes")
        await store.aclose()

    asyncio.run(ask_async())


if __name__ == "__main__":
    main()
