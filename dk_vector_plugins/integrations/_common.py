"""What the framework adapters share: a store's sync and async handles, and MMR selection.

Imports nothing of any framework. A framework's vector store offers sync and async methods on one
collection; :class:`StorePair` gives it a :class:`~dk_vector_plugins.SyncDatabase` for the sync
methods and an :class:`~dk_vector_plugins.AsyncDatabase` for the async ones, both on the same
table:

* file, S3 and every other backend that persists: two handles built from one configuration (the
  async one through :class:`~dk_vector_plugins.AsyncDatabaseFactory`: aioboto3 on S3, file I/O in
  worker threads), which see each other's commits as any two handles on a table do;
* the memory backend (any store whose core has no storage, so that its records exist only in
  that core): the second handle is the backend's other class *on the same core*, as the sync and
  async facades are designed to share one (``docs/ARCHITECTURE.md``).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core import NullStorage, StoreCore
from ..database import AsyncDatabase, SyncDatabase
from ..factory import AsyncDatabaseFactory, DatabaseFactory
from ..records import Record, is_vector_value, new_id

__all__ = [
    "DEFAULT_CONFIG",
    "StorePair",
    "aembed_with",
    "check_field_names",
    "embed_with",
    "embedding_matrix",
    "fields_of_metadata",
    "metadata_of_record",
    "mmr_select",
    "new_ids",
    "text_of_record",
    "unique",
]

#: What a store built from keyword arguments starts from (the caller's keys win).
DEFAULT_CONFIG: Mapping[str, Any] = {"backend": "memory", "vector_enabled": True}


def _on_core(cls: type[Any], core: StoreCore, config: Mapping[str, Any], pm: Any) -> Any:
    """An instance of the backend class ``cls`` whose core is ``core`` (instead of a new one)."""

    class Shared(cls):  # type: ignore[misc, valid-type]
        def _make_core(self) -> StoreCore:
            return core

    Shared.__name__ = Shared.__qualname__ = cls.__name__
    return Shared(config, plugin_manager=pm)


def twin(store: SyncDatabase | AsyncDatabase) -> SyncDatabase | AsyncDatabase:
    """A handle of the other kind (async for a sync store, and back) on the same table."""
    pm = store.plugin_manager
    config = dict(store.config)
    want_async = isinstance(store, SyncDatabase)
    factory: DatabaseFactory | AsyncDatabaseFactory = (
        AsyncDatabaseFactory(plugin_manager=pm) if want_async else DatabaseFactory(plugin_manager=pm)
    )
    if isinstance(store.core.storage, NullStorage):  # the records live in this core only: share it
        spec = factory.backends()[store.backend_name]
        cls = spec.async_class if want_async else spec.sync_class
        if not isinstance(cls, type):
            kind = "async" if want_async else "sync"
            raise TypeError(f"backend {store.backend_name!r} has no {kind} store class")
        shared: SyncDatabase | AsyncDatabase = _on_core(cls, store.core, config, pm)
        return shared
    return factory.create(config)


class StorePair:
    """A sync and an async handle on one table, each made when first needed.

    Give ``client`` (a sync store), ``async_client`` (an async store) or both (then on the same
    table: they are used as given), or neither and configuration keys for
    :class:`~dk_vector_plugins.DatabaseFactory` (defaults: :data:`DEFAULT_CONFIG`). Stores the pair
    made itself are closed by :meth:`close` / :meth:`aclose`; stores given are the caller's.
    """

    def __init__(
        self,
        client: SyncDatabase | None = None,
        async_client: AsyncDatabase | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if client is not None and not isinstance(client, SyncDatabase):
            raise TypeError(f"client must be a sync store (SyncDatabase), got {type(client).__name__}")
        if async_client is not None and not isinstance(async_client, AsyncDatabase):
            raise TypeError(
                f"async_client must be an async store (AsyncDatabase), got {type(async_client).__name__}"
            )
        self._lock = threading.Lock()
        self._owned: list[SyncDatabase | AsyncDatabase] = []
        if client is None and async_client is None:
            client = DatabaseFactory().create({**DEFAULT_CONFIG, **(config or {})})
            self._owned.append(client)
        elif config:
            raise TypeError(
                f"give a store (client= or async_client=) or configuration keys, not both: {sorted(config)}"
            )
        self._sync = client
        self._async = async_client

    @property
    def sync(self) -> SyncDatabase:
        """The sync handle."""
        if self._sync is None:
            with self._lock:
                if self._sync is None:
                    assert self._async is not None
                    made = twin(self._async)
                    assert isinstance(made, SyncDatabase)
                    self._owned.append(made)
                    self._sync = made
        return self._sync

    @property
    def async_(self) -> AsyncDatabase:
        """The async handle."""
        if self._async is None:
            with self._lock:
                if self._async is None:
                    assert self._sync is not None
                    made = twin(self._sync)
                    assert isinstance(made, AsyncDatabase)
                    self._owned.append(made)
                    self._async = made
        return self._async

    @property
    def any(self) -> SyncDatabase | AsyncDatabase:
        """A handle that exists (for its configuration), making none."""
        store = self._sync if self._sync is not None else self._async
        assert store is not None
        return store

    def close(self) -> None:
        """Close the sync store this pair made. An async one it made needs :meth:`aclose`: it may
        hold connections opened on an event loop."""
        with self._lock:
            for store in list(self._owned):
                if isinstance(store, SyncDatabase):
                    self._owned.remove(store)
                    store.close()

    async def aclose(self) -> None:
        """Close every store this pair made (the sync one in a worker thread)."""
        with self._lock:
            owned, self._owned = self._owned, []
        for store in reversed(owned):
            if isinstance(store, AsyncDatabase):
                await store.close()
            else:
                await asyncio.to_thread(store.close)


def mmr_select(
    query: npt.ArrayLike, candidates: Sequence[npt.ArrayLike], k: int, lambda_mult: float = 0.5
) -> list[int]:
    """Maximal marginal relevance: positions of up to ``k`` of ``candidates``, in selection order.

    Each step takes the candidate maximizing ``lambda_mult * sim(query, c) - (1 - lambda_mult) *
    max(sim(c, s) for s selected)``, with ``sim`` the cosine similarity (as LangChain and
    LlamaIndex compute MMR, whatever the store's metric); ties go to the earlier candidate, so
    with candidates best first the result is deterministic. ``lambda_mult=1`` is plain relevance
    order, ``0`` maximal diversity.
    """
    if not 0.0 <= lambda_mult <= 1.0:
        raise ValueError(f"lambda_mult must be between 0 and 1, got {lambda_mult!r}")
    if k <= 0 or len(candidates) == 0:
        return []
    mat = _unit_rows(np.asarray(candidates, dtype=np.float64))
    q = _unit_rows(np.asarray(query, dtype=np.float64).reshape(1, -1))[0]
    relevance = mat @ q
    first = int(np.argmax(relevance))
    selected = [first]
    redundancy = mat @ mat[first]
    while len(selected) < min(k, len(candidates)):
        score = lambda_mult * relevance - (1.0 - lambda_mult) * redundancy
        score[selected] = -np.inf
        best = int(np.argmax(score))
        selected.append(best)
        redundancy = np.maximum(redundancy, mat @ mat[best])
    return selected


def _unit_rows(mat: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    out: npt.NDArray[np.float64] = np.divide(mat, norms, out=np.zeros_like(mat), where=norms > 0)
    return out


# --- records <-> framework objects ---------------------------------------------------------------


def check_field_names(text_field: str, vector_field: str) -> None:
    """The text and vector field names: two different non-empty strings."""
    for name, value in (("text_field", text_field), ("vector_field", vector_field)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if text_field == vector_field:
        raise ValueError(f"text_field and vector_field must differ, both are {text_field!r}")


def fields_of_metadata(
    metadata: Mapping[str, Any] | None, text_field: str, vector_field: str, what: str = "metadata"
) -> dict[str, Any]:
    """A document's metadata as record fields (a new dict; the values are not copied).

    Refuses what would not read back as it was: a key that is not a string, a key equal to the
    text or the vector field, and a vector value (a 1-D numeric array is stored as a vector).
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"{what} must be a mapping, got {type(metadata).__name__}")
    out: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ValueError(f"{what} keys must be strings, got {key!r}")
        if key in (text_field, vector_field):
            raise ValueError(
                f"{what} has the key {key!r}, the store's {'text' if key == text_field else 'vector'} "
                f"field: rename it, or build the store with another text_field= / vector_field="
            )
        if is_vector_value(value):
            raise ValueError(f"{what}[{key!r}] is a vector; metadata values must be JSON-like")
        out[key] = value
    return out


def metadata_of_record(rec: Record, text_field: str, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Every field of a record but the text, the vectors and ``skip``: a document's metadata."""
    return {
        k: v
        for k, v in rec.data.items()
        if k != text_field and k not in skip and not is_vector_value(v)
    }


def text_of_record(rec: Record, text_field: str) -> str:
    """A record's text (``""`` when it has none; a non-string value as ``str``)."""
    value = rec.get(text_field)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def new_ids(ids: Sequence[str | None] | None, n: int) -> list[str]:
    """The ids given, with a fresh UUID where one is ``None`` (all of them without ids)."""
    if ids is None:
        return [new_id() for _ in range(n)]
    out = []
    for i, rid in enumerate(ids):
        if rid is None:
            out.append(new_id())
        elif isinstance(rid, str) and rid:
            out.append(rid)
        else:
            raise ValueError(f"ids[{i}] must be a non-empty string or None, got {rid!r}")
    return out


def unique(ids: Sequence[str]) -> list[str]:
    """``ids`` without repeats, in first-seen order."""
    return list(dict.fromkeys(ids))


def embedding_matrix(vectors: Any, n: int, what: str = "the embedder") -> npt.NDArray[np.float32]:
    """An embedder's answer for ``n`` texts as a float32 matrix of ``n`` rows (checked)."""
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    mat = np.asarray(vectors, dtype=np.float32)
    if mat.ndim != 2 or mat.shape[0] != n:
        raise ValueError(f"{what} returned an array of shape {mat.shape} for {n} texts; expected ({n}, d)")
    return mat



def embed_with(embedder: Any, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """``embedder.embed(texts)`` as a checked float32 matrix (an async embedder is refused)."""
    texts = list(texts)
    out = embedder.embed(texts)
    if inspect.isawaitable(out):
        if inspect.iscoroutine(out):
            out.close()  # no "never awaited" warning on top of the error
        raise TypeError("this embedder is async: use the async embedding methods")
    return embedding_matrix(out, len(texts))


async def aembed_with(embedder: Any, texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Embed without blocking the event loop: the embedder's ``aembed`` when it has one, its
    ``embed`` awaited when it is async (``is_async``), else ``embed`` in a worker thread."""
    texts = list(texts)
    aembed = getattr(embedder, "aembed", None)
    if callable(aembed):
        out = await aembed(texts)
    elif getattr(embedder, "is_async", False):
        out = await embedder.embed(texts)
    else:
        out = await asyncio.to_thread(embedder.embed, texts)
        if inspect.isawaitable(out):
            out = await out
    return embedding_matrix(out, len(texts))
