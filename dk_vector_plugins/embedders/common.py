"""What the embedder plugins share: their error, secrets, option checks, lazy imports, outputs.

Nothing here imports a third-party package: each plugin imports its own (``httpx``, ``model2vec``,
``fastembed``) when its factory runs, so the plugin modules load, and ``dkv plugins`` lists them,
without their extras installed.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, TypeVar, cast

import numpy as np
import numpy.typing as npt

from ..errors import ConfigError, DkvError, InvalidRequestError
from ..types import Secret

__all__ = [
    "EmbeddingError",
    "FloatMatrix",
    "LocalModelEmbedder",
    "ModelEmbedder",
    "Secret",
    "build_embedder",
    "cached",
    "check_dimensions",
    "check_texts",
    "import_extra",
    "local_stamp",
    "positive_float",
    "positive_int",
    "to_matrix",
]

FloatMatrix = npt.NDArray[np.float32]

T = TypeVar("T")


class EmbeddingError(DkvError):
    """An embedding model or service failed, or answered something unusable (an HTTP error after
    the retries, a malformed response, vectors of the wrong dimension). The message names the
    service's URL or the model and, for HTTP, the status; it never holds a credential."""


def import_extra(module: str, extra: str, embedder: str) -> ModuleType:
    """Import ``module`` for the ``embedder`` plugin, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"the {embedder!r} embedder needs the package {module.split('.')[0]!r}, which is not "
            f"installed: pip install 'dk_vector_plugins[{extra}]' ({type(e).__name__}: {e})"
        ) from e


def build_embedder(
    cls: Callable[..., T],
    embedder: str,
    dimensions: int | None,
    options: Mapping[str, Any],
    also: Sequence[str] = (),
) -> T:
    """``cls(dimensions=dimensions, **options)`` after checking the option names (``also``: the
    options the plugin's factory took itself, listed as accepted).

    An unknown option is a :class:`ConfigError` naming it and the accepted ones (never the values,
    which may hold a key), rather than the ``TypeError`` a plain call would raise.
    """
    params = inspect.signature(cls).parameters
    accepted = sorted(
        n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    )
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"unknown option(s) for the {embedder!r} embedder: {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted({*also, *accepted} - {'dimensions'}))}"
        )
    return cls(dimensions=dimensions, **options)


def check_dimensions(embedder: str, model: str, native: int, asked: int | None) -> int:
    """``native`` when ``asked`` is ``None`` or equal, else a :class:`ConfigError` naming both."""
    if asked is not None and asked != native:
        raise ConfigError(
            f"the {embedder!r} embedder's model {model!r} makes vectors of {native} dimensions, "
            f"but {asked} were asked for (the store's vector_dimensions or its first vector's)"
        )
    return native


def positive_int(embedder: str, name: str, value: Any, *, optional: bool = False) -> Any:
    """``value`` if it is an int > 0 (or ``None`` when ``optional``), else a :class:`ConfigError`."""
    if optional and value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"the {embedder!r} embedder's option {name!r} must be an int > 0, got {value!r}")
    return value


def positive_float(embedder: str, name: str, value: Any, *, zero: bool = False) -> float:
    """``value`` as a float if it is > 0 (``>= 0`` with ``zero``), else a :class:`ConfigError`."""
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and (value >= 0 if zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if zero else "> 0"
        raise ConfigError(
            f"the {embedder!r} embedder's option {name!r} must be a number {bound}, got {value!r}"
        )
    return float(value)


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, each checked to be a string."""
    if isinstance(texts, str):
        raise InvalidRequestError("embed() takes a sequence of texts, not one string")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidRequestError(f"texts[{i}] must be a string, got {type(text).__name__}")
    return out


def to_matrix(vectors: Any, n: int, dimensions: int, what: str) -> FloatMatrix:
    """A model's output as a float32 ``(n, dimensions)`` matrix of finite numbers, or an
    :class:`EmbeddingError` naming ``what`` made it."""
    mat = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if n == 0:
        return np.zeros((0, dimensions), dtype=np.float32)
    if mat.shape != (n, dimensions):
        raise EmbeddingError(
            f"{what} returned an array of shape {mat.shape} for {n} texts, expected ({n}, {dimensions})"
        )
    if not np.isfinite(mat).all():
        raise EmbeddingError(f"{what} returned NaN or infinite values")
    return mat


#: Models kept loaded in this process (least recently used dropped first).
_CACHE_SIZE = 4
_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_cache_lock = threading.Lock()


def local_stamp(model: str) -> tuple[tuple[str, int, int], ...] | None:
    """For a local model directory, the path, size and mtime of each file below it (what a cached
    model is keyed by, so a rewritten directory is loaded again); ``None`` for a hub name."""
    root = Path(model).expanduser()
    if not root.is_dir():
        return None
    files = (p for p in root.rglob("*") if p.is_file())
    return tuple(
        sorted((p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    )


def cached(key: tuple[Any, ...], load: Callable[[], T]) -> T:
    """The object cached under ``key``, made with ``load()`` when missing (a small LRU)."""
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return cast(T, _cache[key])
    value = load()
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


class ModelEmbedder:
    """What every embedder plugin's object has: ``model_name``, ``model_version``, ``dimensions``
    and ``is_async``; :meth:`_named` checks and sets the first two."""

    #: the plugin's (entry point's) name, for messages
    plugin: ClassVar[str] = ""
    is_async: ClassVar[bool] = False
    model_name: str
    model_version: str | None
    dimensions: int | None

    def _named(self, model: Any, model_version: Any) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigError(
                f"the {self.plugin!r} embedder's option 'model' must be a non-empty string, got {model!r}"
            )
        if model_version is not None and not isinstance(model_version, str):
            raise ConfigError(
                f"the {self.plugin!r} embedder's option 'model_version' must be a string, got {model_version!r}"
            )
        self.model_name, self.model_version = model, model_version


class LocalModelEmbedder(ModelEmbedder):
    """Base of the embedders that run their model in this process (``model2vec``, ``fastembed``).

    The model is loaded on first use and kept per process (:func:`cached`, keyed by
    :meth:`_cache_key`), so building the embedder again (each ``bulk_embed`` does) loads nothing;
    it is left out when the embedder is pickled and loaded again where it lands (a Dask worker).
    Subclasses give :meth:`_cache_key`, :meth:`_load` and :meth:`_encode`.
    """

    dimensions: int
    batch_size: int

    def _cache_key(self) -> tuple[Any, ...]:
        raise NotImplementedError  # pragma: no cover

    def _load(self) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _encode(self, texts: list[str]) -> Any:
        raise NotImplementedError  # pragma: no cover

    @property
    def model(self) -> Any:
        """The loaded model (loaded, or taken from this process's cache, on first use)."""
        loaded = self.__dict__.get("_model")
        if loaded is None:
            loaded = self.__dict__["_model"] = cached(self._cache_key(), self._load_or_explain)
        return loaded

    def _load_or_explain(self) -> Any:
        try:
            return self._load()
        except DkvError:
            raise
        except Exception as e:
            raise ConfigError(
                f"the {self.plugin!r} embedder could not load the model {self.model_name!r}: "
                f"{type(e).__name__}: {e}"
            ) from e

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_model", None)
        return state

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """Embed ``texts``: a float32 array of shape ``(len(texts), dimensions)``."""
        items = check_texts(texts)
        out = self._encode(items) if items else []
        return to_matrix(out, len(items), self.dimensions, f"the {self.plugin} model {self.model_name!r}")

    __call__ = embed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model_name!r}, dimensions={self.dimensions})"
