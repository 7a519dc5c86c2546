"""The async API: the same stores and calls, awaitable, for asyncio applications.

    python examples/async_vector_search.py

``AsyncDatabaseFactory().create(...)`` returns the async class of a backend (memory, file, S3);
every store method is a coroutine. ``create`` itself is synchronous, as in dataknobs-data. Large
searches, file and S3 I/O run in worker threads, so the event loop keeps serving other tasks: the
heartbeat below keeps ticking while a store is being written and searched.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from dk_vector_plugins import AsyncDatabaseFactory, Record

DIM = 128


def load_sample() -> list[dict[str, Any]]:
    text = files("dk_vector_plugins").joinpath("data/sample.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def heartbeat(ticks: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        ticks[0] += 1
        await asyncio.sleep(0.001)


async def main() -> None:
    factory = AsyncDatabaseFactory()
    hashing = factory.embedder("hashing", dimensions=DIM)

    async def embed(texts: list[str]) -> np.ndarray:
        """An async embedding function, as a call to a remote model service would be."""
        await asyncio.sleep(0)  # e.g. await an HTTP request here
        return hashing.embed(texts)

    ticks, stop = [0], asyncio.Event()
    beat = asyncio.create_task(heartbeat(ticks, stop))

    # 1. Memory: embed with an async function, then run several searches concurrently.
    async with factory.create(backend="memory", vector_enabled=True, vector_dimensions=DIM) as mem:
        records = [Record(d, id=d["id"]) for d in load_sample()]
        ids = await mem.bulk_embed_and_store(
            records, text_field="text", embedding_fn=embed, batch_size=10, progress=False
        )
        print(
            f"memory store ({type(mem).__name__}): embedded {len(ids)} records with an async embedding function"
        )
        questions = [
            "galaxies photographed by a telescope",
            "knead the dough",
            "python list comprehensions",
            "marathon distance",
            "honey bees and flowers",
        ]
        vectors = await embed(questions)
        results = await asyncio.gather(*(mem.vector_search(v, k=2) for v in vectors))
        for question, hits in zip(questions, results):
            print(f"  {question!r:<38} -> {[h.id for h in hits]}")
        nature = await mem.vector_search(
            vectors[4], k=3, filter={"category": "nature", "year": {"$lt": 2020}}
        )
        print(
            f"  'honey bees and flowers', nature before 2020 -> {[(h.id, h.record['year']) for h in nature]}"
        )

    # 2. File: the same calls; file I/O runs in worker threads.
    with tempfile.TemporaryDirectory(prefix="dkv-async-example-") as tmp:
        path = Path(tmp) / "store"
        config = {"backend": "file", "path": str(path), "vector_enabled": True, "vector_dimensions": DIM}
        async with factory.create(config) as db:
            await db.bulk_embed_and_store(records, text_field="text", batch_size=20, progress=False)
            await db.delete_batch(["cooking-1", "cooking-2"])
            print(
                f"\nfile store ({type(db).__name__}) at {path.name}/: {await db.count()} records after 2 deletes"
            )
        async with factory.create(config) as reopened:
            batch = await reopened.vector_search_batch(await embed(["telescope", "pasta"]), k=1)
            print(
                f"  reopened: {await reopened.count()} records; batch search best hits: {[b[0].id for b in batch]}"
            )

    stop.set()
    await beat
    print(f"\nthe event loop stayed free: the heartbeat task ran {ticks[0]} times meanwhile")


if __name__ == "__main__":
    asyncio.run(main())
