"""The ``fastembed`` embedder plugin: ONNX embedding models run by fastembed (onnxruntime, no torch).

``embedder_options={"model": "BAAI/bge-small-en-v1.5"}`` uses one of fastembed's models (downloaded
once into ``cache_dir``; ``local_files_only=True`` or ``HF_HUB_OFFLINE=1`` forbids the download).
``model_path`` loads the model's files from a directory instead (fastembed's
``specific_model_path``: nothing is downloaded). Any other ONNX model (a transformer exported with
``last_hidden_state`` or a pooled output) is registered by giving its ``pooling`` (``"mean"``,
``"cls"``, ``"last_token"``, ``"disabled"``) and its dimension (``dim``, or the store's
``dimensions``) — fastembed's ``TextEmbedding.add_custom_model`` — and loaded from ``model_path``.

The directory holds the ONNX graph (``model_file``, default ``onnx/model.onnx`` for a custom
model) and the tokenizer: ``tokenizer.json``, ``tokenizer_config.json`` (with
``model_max_length`` and ``pad_token``), and optionally ``special_tokens_map.json`` and
``config.json``. Loaded models are kept per process (a few), like the ``model2vec`` plugin's.

Extra: ``pip install 'dk_vector_plugins[fastembed]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..types import EmbedderSpec
from .common import (
    LocalModelEmbedder,
    build_embedder,
    check_dimensions,
    import_extra,
    local_stamp,
    positive_int,
)

__all__ = ["DEFAULT_MODEL", "POOLINGS", "FastEmbedEmbedder", "create", "dkv_register_embedders"]

NAME = "fastembed"
DEFAULT_MODEL = "BAAI/bge-small-en-v1.5"
POOLINGS = ("mean", "cls", "last_token", "disabled")
DESCRIPTION = (
    "ONNX embedding models run by fastembed: its catalogue, or a local ONNX model (extra: fastembed)"
)


def _fastembed() -> Any:
    return import_extra("fastembed", "fastembed", NAME)


def _registered(model: str) -> dict[str, Any] | None:
    """fastembed's description of ``model`` (built-in or custom), or ``None``."""
    for desc in _fastembed().TextEmbedding.list_supported_models():
        if str(desc["model"]).lower() == model.lower():
            return dict(desc)
    return None


class FastEmbedEmbedder(LocalModelEmbedder):
    """Embeds with a fastembed ``TextEmbedding`` (float32 output, one row per text).

    :param model: a fastembed model name, or the name to register a custom model under.
    :param dimensions: the store's dimension: must equal the model's, else
        :class:`~dk_vector_plugins.ConfigError` naming both (for a custom model without ``dim``,
        it is the model's dimension).
    :param model_path: a local directory with the model's files (nothing is downloaded).
    :param cache_dir: where fastembed keeps downloaded models (default ``$FASTEMBED_CACHE_PATH``).
    :param local_files_only: never download; use the files in ``cache_dir``.
    :param threads: onnxruntime threads (``None``: its default).
    :param providers: onnxruntime execution providers (e.g. ``["CPUExecutionProvider"]``).
    :param batch_size: texts per ONNX run.
    :param pooling: registers ``model`` as a custom model with this pooling.
    :param normalize: L2-normalize a custom model's vectors.
    :param dim: a custom model's dimension.
    :param model_file: a custom model's ONNX file, relative to its directory.
    :param output_name: a custom model's ONNX output to pool (``None``: the first).
    :param model_version: recorded with each vector.
    """

    plugin = NAME

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dimensions: int | None = None,
        model_path: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        batch_size: int = 256,
        pooling: str | None = None,
        normalize: bool = True,
        dim: int | None = None,
        model_file: str = "onnx/model.onnx",
        output_name: str | None = None,
        model_version: str | None = None,
    ) -> None:
        self._named(model, model_version)
        self.batch_size = positive_int(NAME, "batch_size", batch_size)
        dimensions = positive_int(NAME, "dimensions", dimensions, optional=True)
        self._custom: tuple[Any, ...] | None = None
        if pooling is not None:
            custom_dim = positive_int(NAME, "dim", dim, optional=True) or dimensions
            native = self._register(pooling, normalize, custom_dim, model_file, output_name)
            self._custom = (pooling, normalize, native, model_file, output_name)
        else:
            found = _registered(model)
            if found is None:
                raise ConfigError(
                    f"the {NAME!r} embedder does not know the model {model!r}: name one of fastembed's "
                    "(TextEmbedding.list_supported_models()), or register a custom ONNX model with "
                    "pooling=..., dim=... and model_path=..."
                )
            native = int(found["dim"])
        self.dimensions = check_dimensions(NAME, model, native, dimensions)
        self._load_options: dict[str, Any] = {
            "specific_model_path": model_path,
            "cache_dir": cache_dir,
            "local_files_only": bool(local_files_only),
            "threads": positive_int(NAME, "threads", threads, optional=True),
            "providers": list(providers) if providers is not None else None,
        }
        _ = self.model  # load now: a bad path or file is a ConfigError from the factory

    def _register(
        self, pooling: str, normalize: bool, dim: int | None, model_file: str, output_name: str | None
    ) -> int:
        """Register ``self.model_name`` as a custom fastembed model (once per process); its dim."""
        if not isinstance(pooling, str) or pooling.lower() not in POOLINGS:
            raise ConfigError(
                f"the {NAME!r} embedder's pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}"
            )
        if dim is None:
            raise ConfigError(
                f"the {NAME!r} embedder needs dim=... (or the store's dimensions) for a custom model"
            )
        fe = _fastembed()
        desc = _registered(self.model_name)
        wanted = {"dim": dim, "model_file": model_file}
        if desc is None:
            from fastembed.common.model_description import ModelSource, PoolingType

            try:
                fe.TextEmbedding.add_custom_model(
                    model=self.model_name,
                    pooling=PoolingType[pooling.upper()],
                    normalization=bool(normalize),
                    sources=ModelSource(hf=self.model_name),
                    dim=dim,
                    model_file=model_file,
                    output_name=output_name,
                )
            except ValueError as e:
                raise ConfigError(f"the {NAME!r} embedder could not register {self.model_name!r}: {e}") from e
        elif {k: desc.get(k) for k in wanted} != wanted:
            raise ConfigError(
                f"the {NAME!r} embedder's model {self.model_name!r} is already registered in this "
                f"process with dim={desc.get('dim')} and model_file={desc.get('model_file')!r}; "
                "register the other model under another name"
            )
        return dim

    def _cache_key(self) -> tuple[Any, ...]:
        path = self._load_options["specific_model_path"]
        stamp = local_stamp(path) if path else None
        return (NAME, self.model_name, stamp, *sorted((k, repr(v)) for k, v in self._load_options.items()))

    def _load(self) -> Any:
        if self._custom is not None:  # again in a process this embedder was unpickled in
            self._register(*self._custom)
        opts = {k: v for k, v in self._load_options.items() if v is not None}
        return _fastembed().TextEmbedding(model_name=self.model_name, **opts)

    def _encode(self, texts: list[str]) -> Any:
        return np.stack(list(self.model.embed(texts, batch_size=self.batch_size)))


def create(dimensions: int | None = None, **options: Any) -> FastEmbedEmbedder:
    """The ``fastembed`` embedder's factory: ``embedder_options`` are :class:`FastEmbedEmbedder`'s
    keyword arguments."""
    _fastembed()
    return build_embedder(FastEmbedEmbedder, NAME, dimensions, options)


@hookimpl
def dkv_register_embedders() -> list[EmbedderSpec]:
    """The ``fastembed`` embedder."""
    return [EmbedderSpec(NAME, create, DESCRIPTION)]
