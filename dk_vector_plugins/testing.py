"""Test helpers: a deterministic embedder with no model behind it (dataknobs-data's
``dataknobs_data.testing.DeterministicEmbedder``).

Same text in, same vector out, in every process and every run, and the same vectors as
dataknobs-data 0.11's helper of that name (a SHA-256 digest of the model id and the text seeds a
standard-normal draw, normalised to unit length), so a test written against either library
asserts the same numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

__all__ = ["DeterministicEmbedder"]


class DeterministicEmbedder:
    """An async embedder for tests: ``await embedder.embed(texts)`` returns one unit vector (a
    list of floats) per text.

    It is an embedder object as async stores take it (``embedding_fn=`` of
    ``bulk_embed_and_store``, and dataknobs-data's ``embedder=``); ``model_id`` is the identity a
    store records as the vectors' ``model_name``. Being async (as dataknobs-data's is), it serves
    async stores; a sync store rejects an async embedder (use
    :class:`~dk_vector_plugins.HashingEmbedder` there).

    :param dimensions: length of every vector (at least 1).
    :param model_id: the identity; another id puts the same text elsewhere.
    """

    #: The store awaits :meth:`embed` (see ``dk_vector_plugins.embed.embed_texts_async``).
    is_async = True

    def __init__(self, dimensions: int = 8, model_id: str = "deterministic") -> None:
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise ValueError(f"dimensions must be at least 1, got {dimensions!r}")
        self._dimensions = dimensions
        self._model_id = model_id

    @property
    def dimensions(self) -> int:
        """Length of every vector :meth:`embed` returns."""
        return self._dimensions

    @property
    def model_id(self) -> str:
        """The stable identity of this embedder."""
        return self._model_id

    @property
    def model_name(self) -> str:
        """The name a store records with the vectors (the ``model_id``)."""
        return self._model_id

    def vector(self, text: str) -> list[float]:
        """The unit vector of one text (what :meth:`embed` returns for it)."""
        digest = hashlib.sha256(f"{self._model_id}\x00{text}".encode()).digest()
        drawn = np.random.default_rng(int.from_bytes(digest[:8], "big")).standard_normal(self._dimensions)
        norm = float(np.linalg.norm(drawn))
        if norm == 0.0:  # probability zero; no division by zero in a test double
            drawn = np.ones(self._dimensions)
            norm = float(np.linalg.norm(drawn))
        return [float(x) for x in drawn / norm]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed every text, in order (an empty batch gives an empty list)."""
        return [self.vector(text) for text in texts]

    def __repr__(self) -> str:
        return f"DeterministicEmbedder(dimensions={self._dimensions}, model_id={self._model_id!r})"
