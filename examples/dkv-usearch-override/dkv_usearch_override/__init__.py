"""dkv-usearch-override: route vector searches of ``index="hnsw"`` stores to a usearch HNSW index.

Installing the distribution is all it takes: its entry point ``usearch`` in the group
``dk_vector_plugins`` is found by every ``DatabaseFactory``. Then::

    db = DatabaseFactory().create(backend="memory", vector_enabled=True, index="hnsw", hnsw_ef=64)
    hits = db.vector_search(q, k=10)          # answered by HNSW: hits[0].metadata["index"] == "hnsw"

Stores without ``index="hnsw"`` keep the built-in exact search.
"""

from __future__ import annotations

from typing import Any

from .hnsw import HnswMirror, Settings, mirror_for, mirrors_of

__all__ = ["HnswMirror", "Settings", "__version__", "index_info", "warm_up"]
__version__ = "0.1.0"


def warm_up(db: Any, vector_field: str = "embedding", metric: str | None = None) -> dict[str, Any]:
    """Build (or bring up to date) the HNSW index of a sync store now, instead of on its first search.

    For an async store run it in a thread after connecting:
    ``await db.connect(); await asyncio.to_thread(warm_up, db)``.
    """
    settings = Settings.from_config(db.config)
    if settings is None:
        raise ValueError("this store is not configured with index='hnsw'")
    metric = metric or db.config["vector_metric"]

    def build(table: Any) -> dict[str, Any]:
        vindex = table.indexes.get(vector_field)
        if vindex is None or vindex.count == 0:
            return {"size": 0}
        mirror = mirror_for(db.core, vector_field, metric, settings)
        mirror.sync(vindex)
        return mirror.info()

    return db.core.read_locked(build)  # type: ignore[no-any-return]


def index_info(db: Any) -> dict[str, dict[str, Any]]:
    """The HNSW indexes a store has built so far: ``"field/space"`` -> size and counters."""
    return {f"{field}/{space}": m.info() for (field, space), m in mirrors_of(db.core).items()}
