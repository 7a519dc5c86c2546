"""Adapters for the frameworks where RAG code lives; each module needs its framework installed.

* :mod:`dk_vector_plugins.integrations.langchain`: ``DkvVectorStore``, a LangChain
  ``VectorStore``, and embedding adapters both ways (``pip install 'dk_vector_plugins[langchain]'``).
* :mod:`dk_vector_plugins.integrations.llamaindex`: ``DkvLlamaVectorStore``, a LlamaIndex
  ``BasePydanticVectorStore``, and embedding adapters both ways
  (``pip install 'dk_vector_plugins[llamaindex]'``).

They are not plugins (they implement no hook) and the core never imports them: importing
``dk_vector_plugins`` imports neither framework. Import the module you need. See
``docs/INTEGRATIONS.md``.
"""
