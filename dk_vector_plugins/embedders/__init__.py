"""Embedding-model plugins: each module is its own plugin, with its own entry point and extra:

* ``openai`` (:mod:`.openai_compat`, extra ``openai``: httpx): any server speaking OpenAI's
  ``POST /embeddings`` (OpenAI, Azure OpenAI, Ollama, vLLM, LM Studio, text-embeddings-inference);
* ``model2vec`` (:mod:`.model2vec`, extra ``model2vec``): static embeddings;
* ``fastembed`` (:mod:`.fastembed`, extra ``fastembed``): ONNX models run by onnxruntime.

A store picks one with ``embedder="openai"`` and ``embedder_options={...}`` (or
``bulk_embed_and_store(..., embedding_fn="openai")``). Importing this package or a plugin module
imports no third-party package; a factory whose extra is missing raises
:class:`~dk_vector_plugins.ConfigError` with the ``pip install`` line.
"""

from __future__ import annotations

from .common import EmbeddingError, Secret

__all__ = ["EmbeddingError", "Secret"]
