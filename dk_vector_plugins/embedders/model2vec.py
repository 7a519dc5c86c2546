"""The ``model2vec`` embedder plugin: static embeddings (a token table, averaged) with model2vec.

``embedder_options={"model": "minishlab/potion-base-8M"}`` loads a model from the Hugging Face hub
(downloaded once into its cache, reused offline after that; ``HF_HUB_OFFLINE=1`` forbids the
download) or ``{"model": "/path/to/dir"}`` from a directory in model2vec's format (``config.json``,
``model.safetensors``, ``tokenizer.json``), through ``model2vec.StaticModel.from_pretrained``.
Loaded models are kept per process (a few, keyed by their options and, for a directory, its files'
sizes and times), so each ``bulk_embed`` call does not load the model again.

Extra: ``pip install 'dk_vector_plugins[model2vec]'``.
"""

from __future__ import annotations

from typing import Any

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

__all__ = ["DEFAULT_MODEL", "Model2VecEmbedder", "create", "dkv_register_embedders"]

NAME = "model2vec"
DEFAULT_MODEL = "minishlab/potion-base-8M"
DESCRIPTION = "model2vec static embeddings from a local directory or the Hugging Face hub (extra: model2vec)"


class Model2VecEmbedder(LocalModelEmbedder):
    """Embeds with a model2vec ``StaticModel`` (float32 output, one row per text: the mean of its
    tokens' vectors, normalized if the model is).

    :param model: a hub name (``"minishlab/potion-base-8M"``) or a local directory.
    :param dimensions: the store's dimension: must equal the model's (after ``dimensionality``),
        else :class:`~dk_vector_plugins.ConfigError` naming both.
    :param dimensionality: keep the first this many dimensions (models trained with PCA/Matryoshka).
    :param normalize: L2-normalize the vectors (``None``: as the model's config says).
    :param max_length: tokens per text before truncation (``None``: the model's).
    :param subfolder: the model's folder inside ``model``.
    :param batch_size: texts per batch inside model2vec.
    :param model_version: recorded with each vector.
    """

    plugin = NAME

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dimensions: int | None = None,
        dimensionality: int | None = None,
        normalize: bool | None = None,
        max_length: int | None = None,
        subfolder: str | None = None,
        batch_size: int = 1024,
        model_version: str | None = None,
    ) -> None:
        self._named(model, model_version)
        if normalize is not None and not isinstance(normalize, bool):
            raise ConfigError(f"the {NAME!r} embedder's option 'normalize' must be a bool, got {normalize!r}")
        self.batch_size = positive_int(NAME, "batch_size", batch_size)
        self._load_options: dict[str, Any] = {
            "dimensionality": positive_int(NAME, "dimensionality", dimensionality, optional=True),
            "normalize": normalize,
            "max_length": positive_int(NAME, "max_length", max_length, optional=True),
            "subfolder": subfolder,
        }
        self.dimensions = check_dimensions(NAME, model, int(self.model.dim), dimensions)

    def _cache_key(self) -> tuple[Any, ...]:
        return (NAME, self.model_name, local_stamp(self.model_name), *sorted(self._load_options.items()))

    def _load(self) -> Any:
        m2v = import_extra("model2vec", "model2vec", NAME)
        opts = {k: v for k, v in self._load_options.items() if v is not None}
        return m2v.StaticModel.from_pretrained(self.model_name, force_download=False, **opts)

    def _encode(self, texts: list[str]) -> Any:
        return self.model.encode(
            texts, batch_size=self.batch_size, show_progress_bar=False, use_multiprocessing=False
        )


def create(dimensions: int | None = None, **options: Any) -> Model2VecEmbedder:
    """The ``model2vec`` embedder's factory: ``embedder_options`` are :class:`Model2VecEmbedder`'s
    keyword arguments."""
    import_extra("model2vec", "model2vec", NAME)
    return build_embedder(Model2VecEmbedder, NAME, dimensions, options)


@hookimpl
def dkv_register_embedders() -> list[EmbedderSpec]:
    """The ``model2vec`` embedder."""
    return [EmbedderSpec(NAME, create, DESCRIPTION)]
