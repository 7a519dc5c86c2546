"""LlamaIndex: :class:`DkvLlamaVectorStore`, a ``BasePydanticVectorStore`` on any dk_vector_plugins backend.

Needs ``llama-index-core`` (``pip install 'dk_vector_plugins[llamaindex]'``)::

    from llama_index.core import StorageContext, VectorStoreIndex
    from dk_vector_plugins.integrations.llamaindex import DkvEmbedding, DkvLlamaVectorStore

    store = DkvLlamaVectorStore(backend="file", path="./li-store")
    index = VectorStoreIndex.from_documents(
        documents, storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=DkvEmbedding.from_plugin("hashing", dimensions=256),
    )
    index.as_retriever(similarity_top_k=3).retrieve("question")

How a node is stored: one record per node, with the node id as the record id, the node's text in
``text_field`` (``"text"``), its embedding in ``vector_field`` (``"embedding"``), and the fields
of LlamaIndex's own flat metadata dict (``node_to_metadata_dict``: each ``node.metadata`` key,
plus ``_node_content``, ``_node_type``, ``ref_doc_id``, ``doc_id``, ``document_id``) as record
fields, so that ``MetadataFilters`` become dk_vector_plugins filters on those fields and the node
reads back exactly as it was written (``stores_text=True``: no docstore is needed). Records
written without LlamaIndex read back as ``TextNode``\\ s whose metadata is every field but the
text and the vectors.

Filters (:func:`to_dkv_filter`): ``EQ``, ``NE``, ``GT``, ``GTE``, ``LT``, ``LTE``, ``IN``, ``NIN``,
``TEXT_MATCH``, ``TEXT_MATCH_INSENSITIVE`` and ``IS_EMPTY``, combined with ``AND``, ``OR`` and
``NOT`` and nested, with LlamaIndex's semantics (a node without the key matches ``NE`` and
``NIN``, as in its ``SimpleVectorStore``). ``CONTAINS``, ``ANY`` and ``ALL`` (a list field
holding values) have no equivalent in the dk_vector_plugins filter language and raise
:class:`NotImplementedError`.

Sync methods use a :class:`~dk_vector_plugins.SyncDatabase`, the async ones (``async_add``,
``adelete``, ``aquery``, ...) an :class:`~dk_vector_plugins.AsyncDatabase` on the same table.

Also here: :class:`DkvEmbedding` (a dk_vector_plugins embedder as a LlamaIndex embedding model)
and :class:`LlamaIndexEmbedder` (a LlamaIndex embedding model as a dk_vector_plugins embedder).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.schema import BaseNode, MetadataMode, TextNode
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        FilterCondition,
        FilterOperator,
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
        VectorStoreQueryMode,
        VectorStoreQueryResult,
    )
    from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "dk_vector_plugins.integrations.llamaindex needs llama-index-core: "
        "pip install 'dk_vector_plugins[llamaindex]'"
    ) from e

from ..database import AsyncDatabase, SyncDatabase
from ..records import Record, VectorField
from ..types import Embedder, VectorSearchResult
from ._common import (
    StorePair,
    aembed_with,
    check_field_names,
    embed_with,
    embedding_matrix,
    metadata_of_record,
    mmr_select,
    text_of_record,
)

__all__ = ["DkvEmbedding", "DkvLlamaVectorStore", "LlamaIndexEmbedder", "to_dkv_filter"]

_MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR)


# --- filters -------------------------------------------------------------------------------------


def _missing(key: str) -> dict[str, Any]:
    return {key: {"$exists": False}}


def _condition(flt: MetadataFilter) -> dict[str, Any]:
    key, op, value = flt.key, FilterOperator(flt.operator), flt.value
    if op == FilterOperator.EQ:
        return _missing(key) if value is None else {key: {"$eq": value}}
    if op == FilterOperator.NE:
        if value is None:
            return {key: {"$exists": True}}
        return {"$or": [{key: {"$ne": value}}, _missing(key)]}
    simple = {
        FilterOperator.GT: "$gt",
        FilterOperator.GTE: "$gte",
        FilterOperator.LT: "$lt",
        FilterOperator.LTE: "$lte",
    }
    if op in simple:
        return {key: {simple[op]: value}}
    if op in (FilterOperator.IN, FilterOperator.NIN):
        values = value if isinstance(value, list) else [value]
        if op == FilterOperator.IN:
            return {key: {"$in": values}}
        return {"$or": [{key: {"$nin": values}}, _missing(key)]}
    if op in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        if not isinstance(value, str):
            raise ValueError(f"{op.name} on {key!r} needs a string, got {value!r}")
        flags = "(?i)" if op == FilterOperator.TEXT_MATCH_INSENSITIVE else ""
        return {key: {"$regex": flags + re.escape(value)}}
    if op == FilterOperator.IS_EMPTY:
        return {"$or": [_missing(key), {key: {"$eq": ""}}, {key: {"$eq": []}}]}
    raise NotImplementedError(
        f"filter operator {op.name} ({op.value!r}) on {key!r} has no equivalent in the "
        "dk_vector_plugins filter language (no operator tests what a list field holds)"
    )


def to_dkv_filter(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex ``MetadataFilters`` as a dk_vector_plugins filter dict (``None``: no filter)."""
    if filters is None or not filters.filters:
        return None
    parts: list[dict[str, Any]] = []
    for item in filters.filters:
        if isinstance(item, MetadataFilters):
            parts.append(to_dkv_filter(item) or {})  # an empty group is no condition
        else:
            parts.append(_condition(item))
    condition = FilterCondition(filters.condition or FilterCondition.AND)
    if condition == FilterCondition.AND:
        return {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    return {"$not": {"$or": parts}}  # NOT: none of the filters matches


def _all_of(*parts: dict[str, Any] | None) -> dict[str, Any] | None:
    kept = [p for p in parts if p is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else {"$and": kept}


def _id_filter(node_ids: Sequence[str] | None) -> dict[str, Any] | None:
    return None if node_ids is None else {"id": {"$in": list(node_ids)}}


# --- the vector store ----------------------------------------------------------------------------


class DkvLlamaVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store on a dk_vector_plugins store: memory, file, S3 or any plugin's.

    ``DkvLlamaVectorStore(**config)`` builds the store with
    :class:`~dk_vector_plugins.DatabaseFactory` from configuration keys (default
    ``backend="memory", vector_enabled=True``; e.g. ``backend="file", path="./store"``); or pass
    an existing store as ``client=`` (sync) and/or ``async_client=`` (async, same table).

    :param client: a sync store to use instead of building one.
    :param async_client: an async store to use (on the same table as ``client``, if both).
    :param text_field: the record field holding the node's text.
    :param vector_field: the record field holding the node's embedding.
    :param flat_metadata: refuse node metadata that is not flat (str, int, float or None
        values), as LlamaIndex's stores that need flat metadata do; nested values are stored
        and filtered (dotted keys) without it.
    :param config: configuration keys of :meth:`DatabaseFactory.create
        <dk_vector_plugins.DatabaseFactory.create>` (only without ``client``/``async_client``).

    ``query`` answers ``VectorStoreQueryMode.DEFAULT`` (exact top ``similarity_top_k``) and
    ``MMR`` (MMR with ``mmr_threshold`` as lambda, default 0.5, among the
    ``mmr_prefetch_k`` — default ``4 * similarity_top_k`` and at least 20 — nearest); it
    honours ``filters``, ``node_ids`` and ``doc_ids`` (empty lists restrict nothing, as a
    ``VectorStoreIndex`` passes them). ``similarities`` are the store's scores,
    higher is better (cosine similarity by default; ``1 / (1 + distance)`` for euclidean).
    """

    stores_text: bool = True
    is_embedding_query: bool = True
    flat_metadata: bool = False
    text_field: str = "text"
    vector_field: str = "embedding"

    _stores: StorePair = PrivateAttr()

    def __init__(
        self,
        *,
        client: SyncDatabase | None = None,
        async_client: AsyncDatabase | None = None,
        text_field: str = "text",
        vector_field: str = "embedding",
        flat_metadata: bool = False,
        **config: Any,
    ) -> None:
        check_field_names(text_field, vector_field)
        super().__init__(  # type: ignore[call-arg]  # pydantic fields of this class
            text_field=text_field, vector_field=vector_field, flat_metadata=flat_metadata
        )
        self._stores = StorePair(client, async_client, config)

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "DkvLlamaVectorStore"

    @property
    def client(self) -> SyncDatabase:
        """The sync dk_vector_plugins store (made from the async one's config on first use)."""
        return self._stores.sync

    @property
    def async_client(self) -> AsyncDatabase:
        """The async dk_vector_plugins store on the same table (made on first use)."""
        return self._stores.async_

    def close(self) -> None:
        """Close the sync store this object built (not a ``client`` given to it)."""
        self._stores.close()

    async def aclose(self) -> None:
        """Close every store this object built, the async one included."""
        await self._stores.aclose()

    # -- conversion ---------------------------------------------------------------------------
    def _record(self, node: BaseNode) -> Record:
        meta = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
        data = {k: v for k, v in meta.items() if k not in (self.text_field, self.vector_field)}
        data[self.text_field] = node.get_content(metadata_mode=MetadataMode.NONE)
        embedding = node.get_embedding()  # raises when the node has none
        data[self.vector_field] = VectorField(embedding, name=self.vector_field, source_field=self.text_field)
        return Record(data, id=node.node_id)

    def _node(self, rec: Record) -> BaseNode:
        text = text_of_record(rec, self.text_field)
        meta = metadata_of_record(rec, self.text_field)
        if isinstance(meta.get("_node_content"), str):
            return metadata_dict_to_node(meta, text=text)
        return TextNode(id_=str(rec.id), text=text, metadata=meta)

    def _result(self, hits: Sequence[VectorSearchResult]) -> VectorStoreQueryResult:
        return VectorStoreQueryResult(
            nodes=[self._node(h.record) for h in hits],
            similarities=[float(h.score) for h in hits],
            ids=[str(h.id) for h in hits],
        )

    def _search(self, query: VectorStoreQuery, kwargs: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
        """The ``vector_search`` arguments of a query, and the MMR lambda (``None``: no MMR)."""
        if query.mode not in _MODES:
            raise NotImplementedError(
                f"query mode {query.mode.value!r} is not supported: use 'default' or 'mmr'"
            )
        if query.query_embedding is None:
            raise ValueError("DkvLlamaVectorStore answers queries by embedding: query_embedding is None")
        # an empty node_ids or doc_ids restricts nothing: a VectorStoreIndex over a store that
        # stores text passes node_ids=[] (its index struct lists no nodes)
        flt = _all_of(
            to_dkv_filter(query.filters),
            _id_filter(query.node_ids or None),
            {"ref_doc_id": {"$in": list(query.doc_ids)}} if query.doc_ids else None,
        )
        k = query.similarity_top_k
        lam: float | None = None
        if query.mode == VectorStoreQueryMode.MMR:
            lam = query.mmr_threshold if query.mmr_threshold is not None else kwargs.get("mmr_threshold")
            lam = 0.5 if lam is None else float(lam)
            prefetch = kwargs.get("mmr_prefetch_k")
            if prefetch is None:
                factor = float(kwargs.get("mmr_prefetch_factor", 4.0))
                prefetch = max(20, math.ceil(factor * k))
            k = max(k, int(prefetch))
        args = {
            "query_vector": np.asarray(query.query_embedding, dtype=np.float32),
            "k": k,
            "filter": flt,
            "vector_field": self.vector_field,
        }
        return args, lam

    def _answer(
        self, query: VectorStoreQuery, hits: Sequence[VectorSearchResult], lam: float | None
    ) -> VectorStoreQueryResult:
        if lam is None:
            return self._result(hits)
        vectors = [h.record[self.vector_field] for h in hits]
        chosen = mmr_select(np.asarray(query.query_embedding), vectors, query.similarity_top_k, lam)
        return self._result([hits[i] for i in chosen])

    # -- the interface ------------------------------------------------------------------------
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Upsert nodes (with their embeddings) in one write; returns their ids."""
        if not nodes:
            return []
        return self.client.upsert_batch([self._record(n) for n in nodes])

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """The async :meth:`add`."""
        if not nodes:
            return []
        return await self.async_client.upsert_batch([self._record(n) for n in nodes])

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        db = self.client
        db.delete_batch([str(r.id) for r in db.search({"ref_doc_id": ref_doc_id})])

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """The async :meth:`delete`."""
        db = self.async_client
        await db.delete_batch([str(r.id) for r in await db.search({"ref_doc_id": ref_doc_id})])

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids and/or matching ``filters`` (neither: every node)."""
        db = self.client
        flt = _all_of(_id_filter(node_ids), to_dkv_filter(filters))
        if flt is None:
            db.clear()
        else:
            db.delete_batch([str(r.id) for r in db.search(flt)])

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """The async :meth:`delete_nodes`."""
        db = self.async_client
        flt = _all_of(_id_filter(node_ids), to_dkv_filter(filters))
        if flt is None:
            await db.clear()
        else:
            await db.delete_batch([str(r.id) for r in await db.search(flt)])

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The nodes with these ids and/or matching ``filters`` (neither: every node)."""
        return [self._node(r) for r in self.client.search(_all_of(_id_filter(node_ids), to_dkv_filter(filters)))]

    async def aget_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
    ) -> list[BaseNode]:
        """The async :meth:`get_nodes`."""
        flt = _all_of(_id_filter(node_ids), to_dkv_filter(filters))
        return [self._node(r) for r in await self.async_client.search(flt)]

    def clear(self) -> None:
        """Delete every node."""
        self.client.clear()

    async def aclear(self) -> None:
        """The async :meth:`clear`."""
        await self.async_client.clear()

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes nearest to ``query.query_embedding`` that match its
        filters, best first, with their scores (higher is better)."""
        if query.similarity_top_k <= 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        args, lam = self._search(query, kwargs)
        return self._answer(query, self.client.vector_search(**args), lam)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The async :meth:`query`."""
        if query.similarity_top_k <= 0:
            return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        args, lam = self._search(query, kwargs)
        return self._answer(query, await self.async_client.vector_search(**args), lam)


# --- embedding models both ways ------------------------------------------------------------------


class DkvEmbedding(BaseEmbedding):
    """A dk_vector_plugins embedder as a LlamaIndex embedding model.

    Wraps any object with ``embed(texts) -> array`` (:class:`~dk_vector_plugins.HashingEmbedder`,
    an embedder plugin's, a :class:`~dk_vector_plugins.FunctionEmbedder`); :meth:`from_plugin`
    builds a registered one by name. Batches go to ``embed`` whole; the async methods await the
    embedder's ``aembed`` or async ``embed``, or run ``embed`` in a worker thread.
    """

    _embedder: Any = PrivateAttr()

    def __init__(self, embedder: Embedder, **kwargs: Any) -> None:
        if not callable(getattr(embedder, "embed", None)):
            raise TypeError(f"embedder must have an embed(texts) method, got {type(embedder).__name__}")
        kwargs.setdefault("model_name", str(getattr(embedder, "model_name", None) or type(embedder).__name__))
        super().__init__(**kwargs)
        self._embedder = embedder

    @classmethod
    def from_plugin(cls, name: str = "hashing", dimensions: int | None = None, **options: Any) -> DkvEmbedding:
        """The registered embedder ``name`` (``"hashing"``, or an installed plugin's)."""
        from ..factory import DatabaseFactory

        return cls(DatabaseFactory().embedder(name, dimensions, **options))

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex component name."""
        return "DkvEmbedding"

    @property
    def embedder(self) -> Embedder:
        """The wrapped dk_vector_plugins embedder."""
        return self._embedder  # type: ignore[no-any-return]

    def _get_query_embedding(self, query: str) -> list[float]:
        return embed_with(self._embedder, [query])[0].tolist()  # type: ignore[no-any-return]

    def _get_text_embedding(self, text: str) -> list[float]:
        return embed_with(self._embedder, [text])[0].tolist()  # type: ignore[no-any-return]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return embed_with(self._embedder, texts).tolist()  # type: ignore[no-any-return]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return (await aembed_with(self._embedder, [query]))[0].tolist()  # type: ignore[no-any-return]

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return (await aembed_with(self._embedder, [text]))[0].tolist()  # type: ignore[no-any-return]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return (await aembed_with(self._embedder, texts)).tolist()  # type: ignore[no-any-return]


class LlamaIndexEmbedder:
    """A LlamaIndex embedding model as a dk_vector_plugins embedder.

    ``embed(texts)`` calls ``get_text_embedding_batch`` and returns a float32 array of shape
    ``(len(texts), d)``; ``aembed(texts)`` calls ``aget_text_embedding_batch``. Give the object to
    a sync store's ``bulk_embed_and_store(..., embedding_fn=embedder)`` and ``embedder.aembed`` to
    an async store's.
    """

    def __init__(self, embed_model: BaseEmbedding, model_name: str | None = None) -> None:
        self.embed_model = embed_model
        self.model_name = model_name or embed_model.model_name

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed a batch of texts with ``get_text_embedding_batch``."""
        texts = list(texts)
        rows = self.embed_model.get_text_embedding_batch(texts) if texts else []
        return embedding_matrix(rows, len(texts), what="get_text_embedding_batch")

    async def aembed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed a batch of texts with ``aget_text_embedding_batch``."""
        texts = list(texts)
        rows = await self.embed_model.aget_text_embedding_batch(texts) if texts else []
        return embedding_matrix(rows, len(texts), what="aget_text_embedding_batch")

    def __repr__(self) -> str:
        return f"LlamaIndexEmbedder({type(self.embed_model).__name__}, model_name={self.model_name!r})"
