"""Keeping a vector field in step with its source text, record by record, under dataknobs-data
0.11's names (``dataknobs_data.vector.sync.VectorTextSynchronizer`` and
``dataknobs_data.vector.migration.IncrementalVectorizer``).

Both take any store (sync or async) and an ``embedding_fn`` of any shape (one text in, one vector
out; see :func:`~dk_vector_plugins.embedding_fn.call_embedding_fn`). A record whose vector was
made from its current text (same content hash in the vector's metadata) is left alone; the others
are embedded and updated, with the metadata that describes the text. For a whole store at once,
prefer the store's own ``bulk_embed_and_store`` / ``reembed``, which batch the embedding and the
writes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .content import (
    CONTENT_HASH_KEY,
    assemble_source_text,
    compute_content_hash,
    content_hash_metadata,
)
from .embedding_fn import call_embedding_fn
from .records import Record, VectorField

__all__ = ["IncrementalVectorizer", "VectorTextSynchronizer"]


async def _resolved(value: Any) -> Any:
    """``value``, awaited when a store's method returned an awaitable (an async store)."""
    return await value if inspect.isawaitable(value) else value


class VectorTextSynchronizer:
    """Embeds the records whose vector does not match their text (dataknobs-data's name).

    :param database: a sync or async store.
    :param embedding_fn: ``text -> vector``, any callable shape.
    :param text_fields: the source field(s), joined on ``field_separator``.
    :param vector_field: where the vector goes.
    :param model_name: recorded with each vector.
    """

    def __init__(
        self,
        database: Any,
        embedding_fn: Callable[..., Any],
        text_fields: str | Sequence[str],
        vector_field: str = "embedding",
        field_separator: str = " ",
        model_name: str | None = None,
        model_version: str | None = None,
    ) -> None:
        self.database = database
        self.embedding_fn = embedding_fn
        self.text_fields = [text_fields] if isinstance(text_fields, str) else list(text_fields)
        self.vector_field = vector_field
        self.field_separator = field_separator
        self.model_name = model_name
        self.model_version = model_version

    def _text(self, record: Record) -> str:
        return assemble_source_text(record.to_dict(), self.text_fields, self.field_separator)

    def is_current(self, record: Record) -> bool:
        """Whether the record's vector was made from its current text."""
        field = record.fields.get(self.vector_field)
        meta = getattr(field, "metadata", None) or {}
        return bool(meta.get(CONTENT_HASH_KEY) == compute_content_hash(self._text(record)))

    async def _process_record(self, record: Record) -> bool:
        """Embed one record's text and update it; ``False`` when it has no text or the write did
        not land."""
        text = self._text(record)
        if not text:
            return False
        vector = await call_embedding_fn(self.embedding_fn, text)
        updated = record.copy(deep=False)
        updated[self.vector_field] = VectorField(
            vector,
            name=self.vector_field,
            source_field=self.text_fields[0] if len(self.text_fields) == 1 else None,
            model_name=self.model_name,
            model_version=self.model_version,
            metadata=content_hash_metadata(
                self.text_fields, self.field_separator, compute_content_hash(text)
            ),
        )
        return bool(await _resolved(self.database.update(str(record.id), updated)))

    async def sync_all(self, force: bool = False) -> dict[str, int]:
        """Embed every record whose vector is missing or stale (every record with ``force``);
        returns the counts ``total``, ``updated``, ``skipped`` and ``failed``."""
        records = await _resolved(self.database.all())
        counts = {"total": len(records), "updated": 0, "skipped": 0, "failed": 0}
        for record in records:
            if not force and self.is_current(record):
                counts["skipped"] += 1
            elif await self._process_record(record):
                counts["updated"] += 1
            else:
                counts["failed"] += 1
        return counts


class IncrementalVectorizer(VectorTextSynchronizer):
    """Vectorizes a store's records incrementally (dataknobs-data's name): :meth:`run` embeds the
    records whose vector is missing or stale, one at a time, and can be run again to resume."""

    async def run(self) -> dict[str, int]:
        """Same as :meth:`sync_all`."""
        return await self.sync_all()
