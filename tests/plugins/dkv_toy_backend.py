"""A throwaway third-party plugin module: a ``toy`` backend (reusing the memory store) and an embedder.

The host tests load it the way an installed distribution would be loaded: as the object an entry
point in the ``dk_vector_plugins`` group resolves to (see ``tests/test_host.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from dk_vector_plugins import BackendSpec, EmbedderSpec, OptionSpec, hookimpl
from dk_vector_plugins.backends.memory import AsyncMemoryDatabase, MemoryDatabase


class ToyDatabase(MemoryDatabase):
    """The memory store under another name: the built-in memory search answers for it."""

    backend_name = "toy"


class AsyncToyDatabase(AsyncMemoryDatabase):
    backend_name = "toy"


class LengthEmbedder:
    """Embeds a text as [len(text), number of words, 1, 0, ...] (``dimensions`` long)."""

    model_name = "toy-length"
    model_version = "0"

    def __init__(self, dimensions: int | None = None, scale: float = 1.0) -> None:
        self.dimensions = dimensions or 3
        self.scale = scale

    def embed(self, texts: Sequence[str]) -> Any:
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, 0] = len(t) * self.scale
            if self.dimensions > 1:
                out[i, 1] = len(t.split())
            if self.dimensions > 2:
                out[i, 2] = 1.0
        return out


@hookimpl
def dkv_register_backends() -> list[BackendSpec]:
    return [
        BackendSpec(
            "toy",
            ToyDatabase,
            AsyncToyDatabase,
            options=(OptionSpec("flavour", (str,), "vanilla", "the toy's flavour"),),
            description="a test backend",
        )
    ]


@hookimpl
def dkv_register_embedders() -> list[EmbedderSpec]:
    return [EmbedderSpec("toy-embed", LengthEmbedder, "length of the text")]
