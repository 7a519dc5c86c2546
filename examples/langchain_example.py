"""LangChain on dk_vector_plugins: a VectorStore, a retriever, MMR, filters, the async API.

    python -m pip install 'dk_vector_plugins[langchain]'
    python examples/langchain_example.py

Runs offline: the bundled sample (40 short texts in 5 categories), the memory backend, and the
built-in hashing embedder wrapped as LangChain ``Embeddings`` (``DkvEmbeddings``). With a real
model, pass any LangChain ``Embeddings`` instead (``OpenAIEmbeddings()``,
``HuggingFaceEmbeddings(...)``); with ``backend="file", path=...`` or ``backend="s3", ...`` the
same code persists the documents.
"""

from __future__ import annotations

import asyncio
import json
from importlib.resources import files

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from dk_vector_plugins import DatabaseFactory, Record
from dk_vector_plugins.integrations.langchain import DkvEmbeddings, DkvVectorStore, LangChainEmbedder


def load_sample() -> list[Document]:
    """The sample bundled with the package as LangChain documents (id, text, category, year)."""
    lines = files("dk_vector_plugins").joinpath("data/sample.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [
        Document(id=r["id"], page_content=r["text"], metadata={"category": r["category"], "year": r["year"]})
        for r in rows
    ]


def show(title: str, docs: list[Document]) -> None:
    print(f"{title}: {[d.id for d in docs]}")


def main() -> None:
    embeddings = DkvEmbeddings.from_plugin("hashing", dimensions=256)
    store = DkvVectorStore.from_documents(load_sample(), embeddings)  # memory backend by default
    print(f"{store!r} holds {store.client.count()} documents")

    # 1. Search: best first; filters are dk_vector_plugins filters on the metadata keys.
    show("similarity_search 'the moon and the earth', k=3", store.similarity_search("the moon and the earth", k=3))
    recent_cooking = {"category": "cooking", "year": {"$gte": 2020}}
    hits = store.similarity_search("bread and onions", k=3, filter=recent_cooking)
    print(f"filter {recent_cooking}: {[(d.id, d.metadata['year']) for d in hits]}")
    either = {"$or": [{"category": "sports"}, {"year": {"$lt": 2016}}]}
    print(f"filter {either}: {len(store.similarity_search('game', k=50, filter=either))} documents")

    # 2. Scores: the store's (cosine similarity here, higher is better) and LangChain's relevance.
    for doc, score in store.similarity_search_with_score("python arrays", k=2):
        print(f"  score {score:.3f}  {doc.id}: {doc.page_content[:50]}")
    relevant = store.similarity_search_with_relevance_scores("python arrays", k=5, score_threshold=0.2)
    print(f"relevance >= 0.2: {[(d.id, round(r, 2)) for d, r in relevant]}")

    # 3. Maximal marginal relevance: relevant, and different from each other.
    show("similarity 'planet in the solar system', k=3", store.similarity_search("planet in the solar system", k=3))
    mmr = store.max_marginal_relevance_search("planet in the solar system", k=3, fetch_k=10, lambda_mult=0.5)
    show("mmr        'planet in the solar system', k=3", mmr)

    # 4. A retriever, for chains: search_type and search_kwargs as usual.
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"category": "nature"}})
    show("retriever.invoke('forest animals')", retriever.invoke("forest animals"))

    # 5. Upsert by id, read by id, delete.
    store.add_documents([Document(id="note-1", page_content="Comets grow a tail near the sun", metadata={"category": "astronomy", "year": 2025})])
    print(f"get_by_ids: {store.get_by_ids(['note-1', 'missing'])}")
    store.delete(["note-1"])
    store.delete(filter={"category": "programming"})
    print(f"after deleting note-1 and the programming documents: {store.client.count()} documents")

    # 6. The async API runs on the async store (same table).
    async def ask_async() -> None:
        answers = await asyncio.gather(
            store.asimilarity_search("knead the bread dough", k=1),
            store.asimilarity_search("marathon runners", k=1),
            store.amax_marginal_relevance_search("trees and leaves", k=2),
        )
        print(f"async answers: {[[d.id for d in docs] for docs in answers]}")
        await store.aadd_texts(["Saturn has rings of ice"], [{"category": "astronomy", "year": 2025}], ids=["note-2"])
        print(f"async add, sync read: {[d.page_content for d in store.get_by_ids(['note-2'])]}")
        await store.aclose()

    asyncio.run(ask_async())

    # 7. A LangChain Embeddings as a dk_vector_plugins embedder (any model LangChain wraps).
    db = DatabaseFactory().create(backend="memory", vector_enabled=True)
    embedder = LangChainEmbedder(DeterministicFakeEmbedding(size=16))
    report = db.bulk_embed([Record({"text": d.page_content}, id=d.id) for d in load_sample()[:5]], "text", embedding_fn=embedder)
    print(f"bulk_embed with {embedder!r}: {report.embedded} records, dimension {db.vector_dimension()}")
    db.close()


if __name__ == "__main__":
    main()
