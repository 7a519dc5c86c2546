"""LangChain: :class:`DkvVectorStore`, a ``langchain_core`` vector store on any dk_vector_plugins backend.

Needs ``langchain-core`` (``pip install 'dk_vector_plugins[langchain]'``)::

    from langchain_core.embeddings import DeterministicFakeEmbedding
    from dk_vector_plugins.integrations.langchain import DkvVectorStore

    store = DkvVectorStore.from_texts(
        ["bread needs yeast", "the passport office"], DeterministicFakeEmbedding(size=64),
        metadatas=[{"year": 2024}, {"year": 2019}], backend="file", path="./lc-store",
    )
    store.similarity_search("baking", k=1, filter={"year": {"$gte": 2020}})

How a ``Document`` is stored: one record per document, with the document's id as the record id,
``page_content`` in the field ``text_field`` (``"text"``), the embedding in ``vector_field``
(``"embedding"``), and each ``metadata`` key as a record field of its own, so that filters are
ordinary dk_vector_plugins filters on the metadata keys (``{"year": {"$gte": 2020}}``, a
:class:`~dk_vector_plugins.Query`, ``$or``/``$not``...; see :mod:`dk_vector_plugins.query`) and
records written by other code (``dkv ingest``, ``bulk_embed_and_store``) read back as documents
whose metadata is every field but the text and the vectors. Metadata round-trips exactly for
JSON-like values; a metadata key equal to ``text_field`` or ``vector_field`` is refused
(:class:`ValueError`). The filter key ``"id"`` means the document id.

Sync methods use a :class:`~dk_vector_plugins.SyncDatabase`, the ``a*`` methods an
:class:`~dk_vector_plugins.AsyncDatabase` on the same table (aioboto3 on S3, the embeddings'
``aembed_*`` methods): no sync call runs in a thread pool on their behalf.

Also here: :class:`LangChainEmbedder` (a LangChain ``Embeddings`` as a dk_vector_plugins
embedder) and :class:`DkvEmbeddings` (a dk_vector_plugins embedder as a LangChain ``Embeddings``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

try:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.vectorstores import VectorStore
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dk_vector_plugins.integrations.langchain needs langchain-core: "
        "pip install 'dk_vector_plugins[langchain]'"
    ) from e

from ..database import AsyncDatabase, SyncDatabase
from ..records import Record, VectorField
from ..types import Embedder, VectorSearchResult
from ..vectors import normalize_metric
from ._common import (
    StorePair,
    aembed_with,
    check_field_names,
    embed_with,
    embedding_matrix,
    fields_of_metadata,
    metadata_of_record,
    mmr_select,
    new_ids,
    text_of_record,
    unique,
)

__all__ = ["DkvEmbeddings", "DkvVectorStore", "LangChainEmbedder"]

_VS = TypeVar("_VS", bound="DkvVectorStore")

#: The keyword arguments ``add_texts`` / ``add_documents`` accept besides ``ids``.
_ADD_KWARGS = frozenset({"batch_size"})


def _clip01(score: float) -> float:
    return min(1.0, max(0.0, score))


def _same(score: float) -> float:
    return score


class DkvVectorStore(VectorStore):
    """A LangChain ``VectorStore`` on a dk_vector_plugins store: memory, file, S3 or any plugin's.

    ``DkvVectorStore(embedding, **config)`` builds the store with
    :class:`~dk_vector_plugins.DatabaseFactory` from configuration keys (default
    ``backend="memory", vector_enabled=True``; e.g. ``backend="file", path="./store"`` or
    ``backend="s3", bucket=..., prefix=...``); or pass an existing store as ``client=`` (sync)
    and/or ``async_client=`` (async, on the same table).

    :param embedding: the LangChain ``Embeddings`` that embeds documents (``embed_documents``,
        ``aembed_documents``) and queries (``embed_query``, ``aembed_query``).
    :param client: a sync store to use instead of building one.
    :param async_client: an async store to use (on the same table as ``client``, if both).
    :param text_field: the record field holding ``Document.page_content``.
    :param vector_field: the record field holding the embedding.
    :param config: configuration keys of :meth:`DatabaseFactory.create
        <dk_vector_plugins.DatabaseFactory.create>` (only without ``client``/``async_client``).

    **Scores.** ``similarity_search_with_score`` returns the store's score, higher is better for
    every metric: the cosine similarity (``vector_metric="cosine"``, the default, in [-1, 1]),
    the dot product (``"dot_product"``), or ``1 / (1 + distance)`` (``"euclidean"``, in (0, 1]).
    It accepts ``score_threshold=`` (drops hits scoring below it) and ``metric=`` (overrides the
    store's metric). ``similarity_search_with_relevance_scores`` maps that score to [0, 1]:
    unchanged for euclidean, clipped to [0, 1] for cosine and dot product (that is, the cosine
    similarity as LangChain's own cosine relevance is, with negative similarities as 0; for the
    dot product this assumes normalized embeddings, as LangChain's conventions do).

    **Search keyword arguments**: ``filter`` (a dk_vector_plugins filter on metadata keys: the
    dict shorthand, a :class:`~dk_vector_plugins.Query`, a :class:`~dk_vector_plugins.Filter`
    or a list of them), ``score_threshold``, ``metric``. ``add_texts`` / ``add_documents`` accept
    ``ids`` and ``batch_size`` (embed and write that many documents at a time: one commit each on
    file and S3; default all at once). ``delete(ids)`` deletes those ids (missing ones are
    ignored), ``delete(filter=...)`` the documents matching a filter, ``delete()`` every document.

    Close what it built with :meth:`close` (sync use) or ``await`` :meth:`aclose` (async use),
    or use it as a (async) context manager.
    """

    def __init__(
        self,
        embedding: Embeddings,
        *,
        client: SyncDatabase | None = None,
        async_client: AsyncDatabase | None = None,
        text_field: str = "text",
        vector_field: str = "embedding",
        **config: Any,
    ) -> None:
        check_field_names(text_field, vector_field)
        self._embedding = embedding
        self._stores = StorePair(client, async_client, config)
        self.text_field = text_field
        self.vector_field = vector_field

    # -- properties ---------------------------------------------------------------------------
    @property
    def embeddings(self) -> Embeddings:
        """The LangChain embeddings that embed documents and queries."""
        return self._embedding

    @property
    def client(self) -> SyncDatabase:
        """The sync dk_vector_plugins store (made from the async one's config on first use)."""
        return self._stores.sync

    @property
    def async_client(self) -> AsyncDatabase:
        """The async dk_vector_plugins store on the same table (made on first use)."""
        return self._stores.async_

    def __repr__(self) -> str:
        return (
            f"DkvVectorStore(backend={self._stores.any.backend_name!r}, embedding={type(self._embedding).__name__}, "
            f"text_field={self.text_field!r}, vector_field={self.vector_field!r})"
        )

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the sync store this object built (not a ``client`` given to it)."""
        self._stores.close()

    async def aclose(self) -> None:
        """Close every store this object built, the async one included."""
        await self._stores.aclose()

    def __enter__(self: _VS) -> _VS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self: _VS) -> _VS:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- conversion ---------------------------------------------------------------------------
    def _prepare(
        self,
        texts: Iterable[str],
        metadatas: Sequence[Mapping[str, Any] | None] | None,
        ids: Sequence[str | None] | None,
        kwargs: Mapping[str, Any],
    ) -> tuple[list[str], list[dict[str, Any]], list[str], int]:
        unknown = set(kwargs) - _ADD_KWARGS
        if unknown:
            raise TypeError(f"unexpected keyword argument(s) {', '.join(sorted(unknown))}")
        texts = list(texts)
        n = len(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__}")
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"got {n} texts but {len(metadatas)} metadatas")
        if ids is not None and len(ids) != n:
            raise ValueError(f"got {n} texts but {len(ids)} ids")
        fields = [
            fields_of_metadata(m, self.text_field, self.vector_field, what=f"metadatas[{i}]")
            for i, m in enumerate(metadatas if metadatas is not None else [None] * n)
        ]
        batch_size = kwargs.get("batch_size")
        if batch_size is None:
            batch_size = max(n, 1)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return texts, fields, new_ids(ids, n), batch_size

    def _records(
        self, texts: Sequence[str], fields: Sequence[dict[str, Any]], ids: Sequence[str], vectors: Any
    ) -> list[Record]:
        mat = embedding_matrix(vectors, len(texts), what="the embeddings' embed_documents")
        model = _model_name(self._embedding)
        out = []
        for text, data, rid, vec in zip(texts, fields, ids, mat):
            data = dict(data)
            data[self.text_field] = text
            data[self.vector_field] = VectorField(
                vec, name=self.vector_field, source_field=self.text_field, model_name=model
            )
            out.append(Record(data, id=rid))
        return out

    def _document(self, rec: Record) -> Document:
        return Document(
            id=rec.id,
            page_content=text_of_record(rec, self.text_field),
            metadata=metadata_of_record(rec, self.text_field),
        )

    def _scored(self, hits: Sequence[VectorSearchResult]) -> list[tuple[Document, float]]:
        return [(self._document(h.record), float(h.score)) for h in hits]

    def _query_vector(self, embedding: Sequence[float]) -> npt.NDArray[np.float32]:
        return np.asarray(embedding, dtype=np.float32)

    def _search_kwargs(self, k: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"k": k, "vector_field": self.vector_field, **kwargs}

    def _mmr(
        self, query: npt.NDArray[np.float32], hits: Sequence[VectorSearchResult], k: int, lambda_mult: float
    ) -> list[Document]:
        vectors = [h.record[self.vector_field] for h in hits]
        return [self._document(hits[i].record) for i in mmr_select(query, vectors, k, lambda_mult)]

    # -- adding -------------------------------------------------------------------------------
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed ``texts`` and upsert them (a document with an existing id replaces it); returns
        the ids (given ones, fresh UUIDs for the others)."""
        texts, fields, rids, size = self._prepare(texts, metadatas, ids, kwargs)
        out: list[str] = []
        for start in range(0, len(texts), size):
            part = slice(start, start + size)
            vectors = self._embedding.embed_documents(texts[part])
            out += self.client.upsert_batch(self._records(texts[part], fields[part], rids[part], vectors))
        return out

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[str, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """The async :meth:`add_texts` (``aembed_documents``, then the async store)."""
        texts, fields, rids, size = self._prepare(texts, metadatas, ids, kwargs)
        out: list[str] = []
        for start in range(0, len(texts), size):
            part = slice(start, start + size)
            vectors = await self._embedding.aembed_documents(texts[part])
            out += await self.async_client.upsert_batch(
                self._records(texts[part], fields[part], rids[part], vectors)
            )
        return out

    def add_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """Embed and upsert documents; ``ids=`` wins over the documents' own ids; returns the ids."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [doc.id for doc in documents]
        return self.add_texts(
            [doc.page_content for doc in documents], [doc.metadata for doc in documents], ids=ids, **kwargs
        )

    async def aadd_documents(self, documents: list[Document], **kwargs: Any) -> list[str]:
        """The async :meth:`add_documents`."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [doc.id for doc in documents]
        return await self.aadd_texts(
            [doc.page_content for doc in documents], [doc.metadata for doc in documents], ids=ids, **kwargs
        )

    # -- reading and deleting -----------------------------------------------------------------
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents with these ids, in the order given; missing ids are skipped."""
        return [self._document(r) for r in self.client.read_batch(unique(ids)) if r is not None]

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The async :meth:`get_by_ids`."""
        return [self._document(r) for r in await self.async_client.read_batch(unique(ids)) if r is not None]

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents with these ids (missing ones are ignored), or with ``filter=`` the
        documents matching a filter, or with neither every document (as LangChain's interface
        says). Returns ``True``."""
        flt = _delete_filter(ids, kwargs)
        db = self.client
        if ids is not None:
            db.delete_batch(list(ids))
        elif flt is not None:
            db.delete_batch([str(r.id) for r in db.search(flt)])
        else:
            db.clear()
        return True

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """The async :meth:`delete`."""
        flt = _delete_filter(ids, kwargs)
        db = self.async_client
        if ids is not None:
            await db.delete_batch(list(ids))
        elif flt is not None:
            await db.delete_batch([str(r.id) for r in await db.search(flt)])
        else:
            await db.clear()
        return True

    # -- searching ----------------------------------------------------------------------------
    def similarity_search_with_score_by_vector(
        self, embedding: Sequence[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents nearest to ``embedding`` with their scores (higher is better)."""
        hits = self.client.vector_search(self._query_vector(embedding), **self._search_kwargs(k, kwargs))
        return self._scored(hits)

    async def asimilarity_search_with_score_by_vector(
        self, embedding: Sequence[float], k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The async :meth:`similarity_search_with_score_by_vector`."""
        hits = await self.async_client.vector_search(
            self._query_vector(embedding), **self._search_kwargs(k, kwargs)
        )
        return self._scored(hits)

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The ``k`` documents most similar to ``query``, with the store's score (higher is
        better: cosine similarity, dot product, or ``1 / (1 + distance)`` for euclidean)."""
        return self.similarity_search_with_score_by_vector(self._embedding.embed_query(query), k, **kwargs)

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The async :meth:`similarity_search_with_score`."""
        vector = await self._embedding.aembed_query(query)
        return await self.asimilarity_search_with_score_by_vector(vector, k, **kwargs)

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` documents most similar to ``query``, best first."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Document]:
        """The async :meth:`similarity_search`."""
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4, **kwargs: Any) -> list[Document]:
        """The ``k`` documents nearest to ``embedding``, best first."""
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, **kwargs)]

    async def asimilarity_search_by_vector(
        self, embedding: list[float], k: int = 4, **kwargs: Any
    ) -> list[Document]:
        """The async :meth:`similarity_search_by_vector`."""
        return [doc for doc, _ in await self.asimilarity_search_with_score_by_vector(embedding, k, **kwargs)]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """``k`` documents chosen by maximal marginal relevance among the ``fetch_k`` nearest
        (exact top-``fetch_k`` with the filter applied, then MMR on cosine similarity)."""
        query = self._query_vector(embedding)
        hits = self.client.vector_search(query, **self._search_kwargs(max(k, fetch_k), kwargs))
        return self._mmr(query, hits, k, lambda_mult)

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """The async :meth:`max_marginal_relevance_search_by_vector`."""
        query = self._query_vector(embedding)
        hits = await self.async_client.vector_search(query, **self._search_kwargs(max(k, fetch_k), kwargs))
        return self._mmr(query, hits, k, lambda_mult)

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """:meth:`max_marginal_relevance_search_by_vector` for the embedding of ``query``."""
        return self.max_marginal_relevance_search_by_vector(
            self._embedding.embed_query(query), k, fetch_k, lambda_mult, **kwargs
        )

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> list[Document]:
        """The async :meth:`max_marginal_relevance_search`."""
        vector = await self._embedding.aembed_query(query)
        return await self.amax_marginal_relevance_search_by_vector(vector, k, fetch_k, lambda_mult, **kwargs)

    # -- relevance scores ---------------------------------------------------------------------
    def _relevance_fn(self, metric: Any = None) -> Callable[[float], float]:
        name = normalize_metric(metric if metric is not None else self._stores.any.config["vector_metric"])
        return _same if name == "euclidean" else _clip01

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Our score to a relevance in [0, 1]: ``1 / (1 + distance)`` as it is for euclidean; the
        cosine similarity (or dot product) clipped to [0, 1] otherwise."""
        return self._relevance_fn()

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        fn = self._relevance_fn(kwargs.get("metric"))
        return [(doc, fn(score)) for doc, score in self.similarity_search_with_score(query, k, **kwargs)]

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        fn = self._relevance_fn(kwargs.get("metric"))
        hits = await self.asimilarity_search_with_score(query, k, **kwargs)
        return [(doc, fn(score)) for doc, score in hits]

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_texts(
        cls: type[_VS],
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> _VS:
        """A store built from ``kwargs`` (configuration keys, or ``client=``; ``batch_size`` goes
        to :meth:`add_texts`) holding ``texts``."""
        add = {key: kwargs.pop(key) for key in _ADD_KWARGS & set(kwargs)}
        store = cls(embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids, **add)
        return store

    @classmethod
    async def afrom_texts(
        cls: type[_VS],
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[str, Any]] | None = None,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> _VS:
        """The async :meth:`from_texts` (the texts are added through the async store)."""
        add = {key: kwargs.pop(key) for key in _ADD_KWARGS & set(kwargs)}
        store = cls(embedding, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids, **add)
        return store


def _delete_filter(ids: Sequence[str] | None, kwargs: dict[str, Any]) -> Any:
    flt = kwargs.pop("filter", None)
    if kwargs:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
    if ids is not None and flt is not None:
        raise ValueError("give ids or filter, not both")
    return flt


def _model_name(embeddings: Any) -> str:
    for attr in ("model", "model_name"):
        value = getattr(embeddings, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(embeddings).__name__


# --- embedders both ways -----------------------------------------------------------------------


class LangChainEmbedder:
    """A LangChain ``Embeddings`` as a dk_vector_plugins embedder.

    ``embed(texts)`` calls ``embed_documents`` and returns a float32 array of shape
    ``(len(texts), d)``; ``aembed(texts)`` does the same with ``aembed_documents``. Give the
    object to a sync store (``db.bulk_embed_and_store(records, "text", embedding_fn=embedder)``)
    and its ``aembed`` method to an async store (``embedding_fn=embedder.aembed``: the async
    bulk embed then awaits it instead of running ``embed`` in a worker thread).
    """

    def __init__(self, embeddings: Embeddings, model_name: str | None = None) -> None:
        self.embeddings = embeddings
        self.model_name = model_name or _model_name(embeddings)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed a batch of texts with ``embed_documents``."""
        texts = list(texts)
        return embedding_matrix(self.embeddings.embed_documents(texts), len(texts), what="embed_documents")

    async def aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed a batch of texts with ``aembed_documents``."""
        texts = list(texts)
        rows = await self.embeddings.aembed_documents(texts)
        return embedding_matrix(rows, len(texts), what="aembed_documents")

    def __repr__(self) -> str:
        return f"LangChainEmbedder({type(self.embeddings).__name__}, model_name={self.model_name!r})"


class DkvEmbeddings(Embeddings):
    """A dk_vector_plugins embedder as a LangChain ``Embeddings``.

    Wraps any object with ``embed(texts) -> array`` (:class:`~dk_vector_plugins.HashingEmbedder`,
    an embedder plugin's, a :class:`~dk_vector_plugins.FunctionEmbedder`); :meth:`from_plugin`
    builds a registered one by name. The async methods await the embedder's ``aembed`` when it
    has one, or its ``embed`` when it is async (``is_async``), and otherwise run ``embed`` in a
    worker thread.
    """

    def __init__(self, embedder: Embedder) -> None:
        if not callable(getattr(embedder, "embed", None)):
            raise TypeError(f"embedder must have an embed(texts) method, got {type(embedder).__name__}")
        self.embedder = embedder

    @classmethod
    def from_plugin(cls, name: str = "hashing", dimensions: int | None = None, **options: Any) -> DkvEmbeddings:
        """The registered embedder ``name`` (``"hashing"``, or an installed plugin's)."""
        from ..factory import DatabaseFactory

        return cls(DatabaseFactory().embedder(name, dimensions, **options))

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector (a list of floats) per text."""
        return embed_with(self.embedder, texts).tolist()  # type: ignore[no-any-return]

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query."""
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, without blocking the event loop."""
        return (await aembed_with(self.embedder, texts)).tolist()  # type: ignore[no-any-return]

    async def aembed_query(self, text: str) -> list[float]:
        """The vector of one query, without blocking the event loop."""
        return (await self.aembed_documents([text]))[0]

    def __repr__(self) -> str:
        return f"DkvEmbeddings({self.embedder!r})"
