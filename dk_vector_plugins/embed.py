"""Embedders and the bulk-embed driver.

An embedder is any object with ``embed(texts) -> ndarray`` (float32, one row per text). Embedders
are plugins (:func:`~dk_vector_plugins.hookspecs.dkv_register_embedders`); this module is itself
the built-in plugin ``hashing``, a deterministic feature-hashing embedder that needs no model
download and works offline.

``bulk_embed_and_store`` embeds texts in batches and stores each batch as one write (one commit on
file and S3), with a tqdm progress bar when the terminal is interactive. Records whose stored copy
already holds the vector for the same text are skipped, so re-running an interrupted job resumes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from .content import compute_content_hash, content_hash_metadata
from .errors import ConfigError, DkvError, InvalidRequestError, InvalidVectorError
from .hookspecs import hookimpl
from .records import Record, VectorField, new_id
from .types import AsyncStore, BulkEmbedReport, BulkEmbedRequest, Embedder, EmbedderSpec, Store
from .vectors import as_vector_batch

__all__ = [
    "BulkEmbedReport",
    "BulkEmbedRequest",
    "Embedder",
    "EmbedderSpec",
    "FunctionEmbedder",
    "HashingEmbedder",
    "attach_vectors",
    "batch_slices",
    "embed_texts",
    "embed_texts_async",
    "prepare_records",
    "progress_bar",
    "run_bulk_embed",
    "run_bulk_embed_async",
    "skip_mask",
]

DEFAULT_DIMENSIONS = 384


_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Deterministic signed feature hashing of words and character n-grams, L2-normalized.

    Works for any dimension, needs nothing downloaded, and gives the same vector for the same
    text in every process and on every machine (hashes are BLAKE2b, not Python's salted ``hash``).
    Texts sharing words or word pieces get similar vectors: good for demos, tests and keyword-ish
    retrieval; use a real model plugin for semantic search.

    :param dimensions: vector length.
    :param ngram: character n-gram length (``0`` for words only).
    :param char_weight: weight of n-gram features relative to whole words.
    :param seed: changes every hash (gives an independent embedding).
    """

    model_name = "dkv-hashing"
    model_version = "1"

    def __init__(
        self,
        dimensions: int = DEFAULT_DIMENSIONS,
        ngram: int = 3,
        char_weight: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions <= 0:
            raise ConfigError(f"hashing embedder dimensions must be a positive int, got {dimensions!r}")
        if not isinstance(ngram, int) or ngram < 0:
            raise ConfigError(f"hashing embedder ngram must be an int >= 0, got {ngram!r}")
        self.dimensions = dimensions
        self.ngram = ngram
        self.char_weight = float(char_weight)
        self._key = seed.to_bytes(8, "little", signed=True)
        self._hash = lru_cache(maxsize=1 << 16)(self._hash_uncached)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_hash"]  # a per-process cache (and an lru_cache does not pickle)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._hash = lru_cache(maxsize=1 << 16)(self._hash_uncached)

    def _hash_uncached(self, token: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8, key=self._key).digest(), "little")
        return h % self.dimensions, (1.0 if (h >> 63) & 1 else -1.0)

    def _features(self, text: str) -> Iterator[tuple[str, float]]:
        for word in _TOKEN.findall(text.lower()):
            yield "w:" + word, 1.0
            if self.ngram and self.char_weight:
                padded = f"<{word}>"
                for i in range(max(1, len(padded) - self.ngram + 1)):
                    yield "c:" + padded[i : i + self.ngram], self.char_weight

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed ``texts``: one L2-normalized row each (a text with no words gives a zero row)."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidRequestError(f"texts[{i}] must be a string, got {type(text).__name__}")
            idx: list[int] = []
            val: list[float] = []
            for feat, weight in self._features(text):
                j, sign = self._hash(feat)
                idx.append(j)
                val.append(sign * weight)
            if idx:
                np.add.at(out[i], np.asarray(idx), np.asarray(val, dtype=np.float32))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    __call__ = embed

    def __repr__(self) -> str:
        return f"HashingEmbedder(dimensions={self.dimensions}, ngram={self.ngram})"


class FunctionEmbedder:
    """Adapts a callable ``fn(texts) -> array`` (dataknobs-data's ``embedding_fn``) to :class:`Embedder`.

    The callable may be a coroutine function: the async driver awaits it.
    """

    def __init__(self, fn: Callable[[list[str]], Any], model_name: str | None = None) -> None:
        self.fn = fn
        self.model_name = model_name or getattr(fn, "__name__", None)
        self.is_async = inspect.iscoroutinefunction(fn)

    def embed(self, texts: Sequence[str]) -> Any:
        """Call the function on a list of texts."""
        return self.fn(list(texts))


@hookimpl
def dkv_register_embedders() -> list[EmbedderSpec]:
    """The built-in ``hashing`` embedder."""
    return [
        EmbedderSpec(
            "hashing",
            HashingEmbedder,
            "deterministic feature hashing of words and character 3-grams (offline, no model)",
        )
    ]


# --- bulk embedding --------------------------------------------------------------------------


def _text_of(rec: Record, request: BulkEmbedRequest, i: int) -> str:
    fields = [request.text_field] if isinstance(request.text_field, str) else list(request.text_field)
    parts = []
    for f in fields:
        value = rec.get_value(f)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidRequestError(
                f"record {rec.id!r} (records[{i}]) field {f!r} must be text, got {type(value).__name__}"
            )
        parts.append(value)
    if not parts:
        raise InvalidRequestError(
            f"record {rec.id!r} (records[{i}]) has no text in field(s) {', '.join(map(repr, fields))}"
        )
    return request.field_separator.join(parts)


def prepare_records(request: BulkEmbedRequest) -> tuple[list[Record], list[str]]:
    """Copies of the input records with ids assigned, and their texts (validated up front)."""
    recs: list[Record] = []
    texts: list[str] = []
    for i, rec in enumerate(request.records):
        if isinstance(rec, dict):
            rec = Record(rec)
        if not isinstance(rec, Record):
            raise InvalidRequestError(f"records[{i}] must be a Record or dict, got {type(rec).__name__}")
        rec = rec.copy(deep=False)
        if rec.id is None:
            rec.id = new_id()
        texts.append(_text_of(rec, request, i))
        recs.append(rec)
    return recs, texts


def skip_mask(
    stored: Sequence[Record | None], texts: Sequence[str], request: BulkEmbedRequest
) -> list[bool]:
    """Records whose stored copy already holds the vector for the same text."""
    out = []
    for rec, text in zip(stored, texts):
        ok = False
        if rec is not None and request.vector_field in rec:
            try:
                ok = _text_of(rec, request, 0) == text
            except DkvError:
                ok = False
        out.append(ok)
    return out


def attach_vectors(
    batch: Sequence[Record],
    vectors: Any,
    request: BulkEmbedRequest,
    dim: int | None,
    texts: Sequence[str] | None = None,
) -> list[Record]:
    """Copies of ``batch`` holding the embedder's ``vectors`` (checked: one per record, of ``dim``);
    with ``texts`` (the embedded text of each record), each vector's metadata describes it (the
    source fields, separator and content hash, as dataknobs-data records them)."""
    mat = as_vector_batch(vectors, dim, what="embedder output")
    if mat.shape[0] != len(batch):
        raise InvalidVectorError(f"the embedder returned {mat.shape[0]} vectors for {len(batch)} texts")
    source = request.text_field if isinstance(request.text_field, str) else None
    model = request.model_name or getattr(request.embedder, "model_name", None)
    version = request.model_version or getattr(request.embedder, "model_version", None)
    fields = [request.text_field] if isinstance(request.text_field, str) else list(request.text_field)
    out = []
    for i, (rec, vec) in enumerate(zip(batch, mat)):
        rec = rec.copy(deep=False)
        meta = (
            content_hash_metadata(fields, request.field_separator, compute_content_hash(texts[i]))
            if texts is not None
            else None
        )
        rec[request.vector_field] = VectorField(
            vec,
            name=request.vector_field,
            source_field=source,
            model_name=model,
            model_version=version,
            metadata=meta,
        )
        out.append(rec)
    return out


def progress_bar(show: bool | None, total: int | None, desc: str = "embedding") -> Any:
    """A tqdm bar over ``total`` records (``None``: unknown): shown when ``show`` is true, or
    (``None``) when stderr is a terminal."""
    from tqdm.auto import tqdm

    visible = show if show is not None else sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="rec", disable=not visible, leave=False)


def batch_slices(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` of ``range(n)``."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


#: A step of a bulk embed: ("read", ids) -> stored records, ("embed", texts) -> vectors,
#: ("write", records) -> ids. The sync and async drivers perform them.
EmbedStep = tuple[str, Any]


def bulk_embed_steps(request: BulkEmbedRequest, dim: int | None) -> Generator[EmbedStep, Any, BulkEmbedReport]:
    """The bulk-embed algorithm, once for both drivers: per batch, read the stored copies, skip
    records whose stored vector was made from the same text, embed the rest, write them."""
    recs, texts = prepare_records(request)
    embedded = skipped = batches = 0
    with progress_bar(request.progress, len(recs)) as bar:
        for sl in batch_slices(len(recs), request.batch_size):
            stored = yield ("read", [r.id for r in recs[sl]])
            skip = skip_mask(stored, texts[sl], request)
            todo = [i for i, s in zip(range(sl.start, sl.stop), skip) if not s]
            skipped += len(skip) - len(todo)
            if todo:
                vectors = yield ("embed", [texts[i] for i in todo])
                done = attach_vectors(
                    [recs[i] for i in todo], vectors, request, dim, [texts[i] for i in todo]
                )
                dim = done[0][request.vector_field].shape[0]
                yield ("write", done)
                embedded += len(done)
                batches += 1
            bar.update(sl.stop - sl.start)
    return BulkEmbedReport([str(r.id) for r in recs], embedded, skipped, batches)


def _advance(steps: Generator[EmbedStep, Any, BulkEmbedReport], value: Any) -> EmbedStep | BulkEmbedReport:
    """The next step of a bulk embed, or its report when it is done."""
    try:
        return steps.send(value)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def embed_texts(embedder: Embedder, texts: list[str]) -> Any:
    """``embedder.embed(texts)`` for a sync caller (an async embedder is an error here)."""
    value = embedder.embed(texts)
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # no "coroutine was never awaited" warning on top of the error
        raise InvalidRequestError("an async embedding function needs the async store")
    return value


async def embed_texts_async(embedder: Embedder, texts: list[str]) -> Any:
    """Embed for an async caller: an async function or ``aembed`` is awaited, a sync embedder
    runs in a worker thread."""
    if getattr(embedder, "is_async", False):
        return await embedder.embed(texts)  # type: ignore[misc]
    if callable(getattr(embedder, "aembed", None)):  # an embedder with an async path
        return await embedder.aembed(texts)  # type: ignore[attr-defined]
    value = await asyncio.to_thread(embedder.embed, texts)
    if inspect.isawaitable(value):
        value = await value
    return value


def run_bulk_embed(db: Store, request: BulkEmbedRequest) -> BulkEmbedReport:
    """The default bulk-embed driver for sync stores (one ``upsert_batch`` per batch)."""
    steps = bulk_embed_steps(request, db.vector_dimension(request.vector_field))
    step = _advance(steps, None)
    while not isinstance(step, BulkEmbedReport):
        kind, arg = step
        if kind == "read":
            value: Any = db.read_batch(arg)
        elif kind == "write":
            value = db.upsert_batch(arg)
        else:
            value = embed_texts(request.embedder, arg)
        step = _advance(steps, value)
    return step


async def run_bulk_embed_async(db: AsyncStore, request: BulkEmbedRequest) -> BulkEmbedReport:
    """The default bulk-embed driver for async stores; a sync embedder runs in a worker thread."""
    steps = bulk_embed_steps(request, db.vector_dimension(request.vector_field))
    step = _advance(steps, None)
    while not isinstance(step, BulkEmbedReport):
        kind, arg = step
        if kind == "read":
            value: Any = await db.read_batch(arg)
        elif kind == "write":
            value = await db.upsert_batch(arg)
        else:
            value = await embed_texts_async(request.embedder, arg)
        step = _advance(steps, value)
    return step
