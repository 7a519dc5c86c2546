"""Vector search in memory: store records with embeddings, search by text or vector, filter, update.

    python examples/basic_vector_search.py

Uses the bundled sample (40 short texts in 5 categories) and the built-in hashing embedder, so it
runs offline with nothing to download. Swap in a real model by registering an embedder plugin or
passing ``embedding_fn=`` to ``bulk_embed_and_store``.
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

import numpy as np

from dk_vector_plugins import DatabaseFactory, Query, Record, VectorField

DIM = 256


def load_sample() -> list[dict[str, Any]]:
    """The sample bundled with the package: id, category, year, text."""
    text = files("dk_vector_plugins").joinpath("data/sample.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def show(title: str, hits: list[Any]) -> None:
    print(f"\n{title}")
    for rank, hit in enumerate(hits, 1):
        rec = hit.record
        extra = f" distance={hit.distance:.3f}" if hit.distance is not None else ""
        text = (rec.get("text") or "")[:60]
        print(
            f"  {rank}. {hit.id:<14} score={hit.score:.3f}{extra}  [{rec.get('category')}, {rec.get('year')}] {text}"
        )


def main() -> None:
    factory = DatabaseFactory()
    db = factory.create(backend="memory", vector_enabled=True, vector_dimensions=DIM, vector_metric="cosine")
    print(f"backends installed: {', '.join(factory.get_available_backends())}")

    # 1. Text in, vectors stored: one batched, resumable call (the built-in hashing embedder).
    records = [Record(doc, id=doc["id"]) for doc in load_sample()]
    report = db.bulk_embed(records, text_field="text", batch_size=16, progress=False)
    print(f"embedded {report.embedded} records in {report.batches} batches; the store holds {db.count()}")
    again = db.bulk_embed(records, text_field="text", progress=False)
    print(f"running it again embeds {again.embedded} and skips {again.skipped} (already stored)")

    # 2. Search by text: embed the query with the same embedder.
    embedder = factory.embedder("hashing", dimensions=DIM)

    def by_text(text: str, **kwargs: Any) -> list[Any]:
        return db.vector_search(embedder.embed([text])[0], **kwargs)

    show("query 'planets orbiting the sun', k=3:", by_text("planets orbiting the sun", k=3))

    # 3. Filters are applied before top-k: a filtered search returns min(k, matches) results.
    show(
        "query 'bread and onions', category=cooking and year >= 2020 (dict shorthand):",
        by_text("bread and onions", k=3, filter={"category": "cooking", "year": {"$gte": 2020}}),
    )
    show(
        "the same filter, dataknobs-data style (Query().filter(...)):",
        by_text(
            "bread and onions",
            k=3,
            filter=Query().filter("category", "=", "cooking").filter("year", ">=", 2020),
        ),
    )

    # 4. Another metric for one search: scores stay higher-is-better, the distance comes along.
    show("query 'python arrays', euclidean:", by_text("python arrays", k=2, metric="euclidean"))

    # 5. Raw vectors with metadata, and a record you build yourself.
    rng = np.random.default_rng(7)
    ids = db.add_vectors(
        rng.standard_normal((3, DIM)), ids=["v1", "v2", "v3"], metadata=[{"category": "raw"}] * 3
    )
    probe = np.zeros(DIM, dtype=np.float32)
    probe[:4] = 1.0
    db.create(
        Record(
            {"category": "manual", "text": "built by hand", "embedding": VectorField(probe)}, id="manual-1"
        )
    )
    print(f"\nadded vectors {ids} and record 'manual-1'; the store holds {db.count()}")
    show("nearest to the hand-made vector:", db.vector_search(probe, k=1))

    # 6. Updates and deletes take effect at once.
    db.update("manual-1", Record({"category": "manual", "text": "moved", "embedding": VectorField(-probe)}))
    show(
        "after moving 'manual-1' to the opposite direction, nearest to the old vector:",
        db.vector_search(probe, k=1),
    )
    db.delete("manual-1")
    print(f"\ndeleted 'manual-1': exists={db.exists('manual-1')}, count={db.count()}")

    # 7. Many queries at once: one matrix product.
    batch = db.vector_search_batch(embedder.embed(["galaxies", "football", "honey bees"]), k=1)
    print("\nbatch of 3 queries, best hit each:", [hits[0].id for hits in batch])
    db.close()


if __name__ == "__main__":
    main()
