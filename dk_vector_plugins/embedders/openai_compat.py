"""The ``openai`` embedder plugin: any server that speaks OpenAI's ``POST {base_url}/embeddings``.

OpenAI, Azure OpenAI, Ollama, vLLM, LM Studio and Hugging Face text-embeddings-inference all
answer ``{"model": ..., "input": [...]}`` with ``{"data": [{"index": i, "embedding": [...]}]}``;
only the base URL and the authentication differ (see ``docs/VECTOR_GETTING_STARTED.md``):

=====================  ==========================================================================
OpenAI                 ``https://api.openai.com/v1`` (the default, or ``$OPENAI_BASE_URL``)
Azure OpenAI           ``https://<resource>.openai.azure.com/openai/deployments/<deployment>`` with
                       ``api_version="2024-10-21"`` and ``api_key_header="api-key"``
Ollama                 ``http://localhost:11434/v1``
vLLM                   ``http://localhost:8000/v1``
LM Studio              ``http://localhost:1234/v1``
text-embeddings-inf.   ``http://localhost:8080/v1``
=====================  ==========================================================================

Texts are sent in requests of ``batch_size`` inputs, at most ``max_concurrency`` at a time (worker
threads on the sync path, tasks on the async one). A request that fails with 408, 409, 429 or a
5xx status, a timeout or a connection error is retried up to ``max_retries`` times with
exponential backoff and jitter, waiting at least what ``Retry-After`` (or ``retry-after-ms``) asks.
Rows are put in the order of the response's ``index``.

The API key comes from ``$OPENAI_API_KEY`` (``api_key_env`` names another variable) or the
``api_key`` option (best given as :class:`~dk_vector_plugins.embedders.Secret`); it goes into one
request header and nowhere else: not into a ``repr``, an error or a log line (a server that echoes
it in an error body has it replaced by ``***``).

The factory returns :class:`OpenAIEmbedder` (sync ``embed``, which the sync and the async stores
both use; the async store runs it in a worker thread), or with ``use_async=True``
:class:`AsyncOpenAIEmbedder` (``is_async = True``, ``async def embed``: the async store's bulk
embed awaits it on its event loop; a sync store rejects it). Each has the other as ``as_async()`` /
``as_sync()``, and both have ``aembed`` (a coroutine).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..embed import batch_slices
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..types import Embedder, EmbedderSpec
from .common import (
    EmbeddingError,
    FloatMatrix,
    ModelEmbedder,
    Secret,
    build_embedder,
    check_dimensions,
    check_texts,
    import_extra,
    positive_float,
    positive_int,
)

if TYPE_CHECKING:
    import httpx

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncOpenAIEmbedder",
    "OpenAIEmbedder",
    "create",
    "dkv_register_embedders",
    "retry_after_seconds",
]

logger = logging.getLogger(__name__)

NAME = "openai"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "text-embedding-3-small"

#: OpenAI's models: (native dimension, whether the API shortens it on request).
KNOWN_MODELS: dict[str, tuple[int, bool]] = {
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
}

#: Statuses worth another try (OpenAI's SDK retries the same ones).
RETRY_STATUSES = frozenset({408, 409, 429})

#: What a request step yields: ("send", payload) -> a response or a Failure; ("sleep", seconds).
Step = tuple[str, Any]

TwinT = TypeVar("TwinT", bound="_OpenAICompatible")


class Failure:
    """A request that got no HTTP response (``error``), and whether trying again may help."""

    def __init__(self, error: BaseException, retryable: bool) -> None:
        self.error, self.retryable = error, retryable


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """How long a response asks to wait: ``retry-after-ms``, else ``Retry-After`` as seconds or
    as an HTTP date; ``None`` when it asks nothing (or nothing readable)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _advance(steps: Generator[Step, Any, FloatMatrix], reply: Any) -> Step | FloatMatrix:
    """The next step of a request, or its vectors when it is done."""
    try:
        return steps.send(reply)
    except StopIteration as done:
        return cast(FloatMatrix, done.value)


def _pause(seconds: float) -> Any:
    """Sleep ``seconds`` (the sync runner's answer to a ``("sleep", seconds)`` step: nothing)."""
    time.sleep(seconds)
    return None


def _check_url(url: Any) -> None:
    """A :class:`ConfigError` unless ``url`` is an ``http(s)://host[:port]/...`` URL."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        ok = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port if parts is not None else None
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"the {NAME!r} embedder's base_url must be an http(s) URL with a host, got {url!r}")


def _shown_url(url: str) -> str:
    """``url`` without a ``user:password@`` part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _server_detail(response: httpx.Response) -> str:
    """The error message a server put in its body (OpenAI, Ollama, vLLM and TEI shapes)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            value = body.get(key)
            if isinstance(value, dict):
                value = value.get("message", value)
            if value:
                return str(value)[:300]
    return str(body)[:300]


class _OpenAICompatible(ModelEmbedder):
    """Configuration, requests and retries of the ``openai`` embedder; :class:`OpenAIEmbedder` and
    :class:`AsyncOpenAIEmbedder` add the ``embed`` of their kind.

    :param model: the model (``"text-embedding-3-small"``, ``"nomic-embed-text"``, ...; for Azure
        the deployment's model, the deployment itself being in ``base_url``).
    :param dimensions: vector length wanted (``None``: the model's). Sent to the API when
        ``send_dimensions`` says so; every response is checked against it.
    :param base_url: the API root; ``/embeddings`` is appended (default ``$OPENAI_BASE_URL`` or
        ``https://api.openai.com/v1``).
    :param api_key: the key (a :class:`Secret` or a string); default: ``$api_key_env``.
    :param api_key_env: the environment variable holding the key (``OPENAI_API_KEY``; no key is
        sent when it is unset, as local servers need none).
    :param api_key_header: ``"Authorization"`` (sent as ``Bearer <key>``) or another header that
        takes the bare key (Azure: ``"api-key"``).
    :param api_version: sent as the ``api-version`` query parameter (Azure).
    :param headers: extra request headers (shown by ``embedder.headers``: put a credential in
        ``api_key`` / ``api_key_header`` instead, which nothing shows).
    :param batch_size: inputs per request.
    :param max_concurrency: requests in flight at once per ``embed`` call.
    :param max_retries: tries after the first for a retryable failure.
    :param timeout: seconds for reading, writing and waiting for a pooled connection.
    :param connect_timeout: seconds for connecting.
    :param backoff_base: the first retry waits about this long (seconds), each next one twice as
        long, each with jitter (a random 50-100% of it).
    :param backoff_max: no backoff wait exceeds this (seconds).
    :param max_retry_wait: a ``Retry-After`` asking for longer than this ends the retries.
    :param send_dimensions: send ``dimensions`` in the request; ``None``: when ``dimensions`` is
        given and the model is an OpenAI ``text-embedding-3`` model.
    :param encoding_format: ``"float"`` or ``"base64"`` (smaller responses); ``None`` sends none.
    :param model_version: recorded with each vector.
    """

    plugin = NAME

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dimensions: int | None = None,
        base_url: str | None = None,
        api_key: str | Secret | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        api_key_header: str = "Authorization",
        api_version: str | None = None,
        headers: Mapping[str, str] | None = None,
        batch_size: int = 128,
        max_concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_wait: float = 60.0,
        send_dimensions: bool | None = None,
        encoding_format: str | None = None,
        model_version: str | None = None,
    ) -> None:
        self._named(model, model_version)
        self.dimensions = asked = positive_int(NAME, "dimensions", dimensions, optional=True)
        known = KNOWN_MODELS.get(model)
        if known is not None and (self.dimensions is None or not known[1] or self.dimensions > known[0]):
            self.dimensions = check_dimensions(NAME, model, known[0], self.dimensions)
        base = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        _check_url(base)
        self.url = base.rstrip("/") + "/embeddings"
        self.params = {"api-version": api_version} if api_version else {}
        self.shown_url = _shown_url(self.url) + (f"?api-version={api_version}" if api_version else "")
        self._key = self._api_key(api_key, api_key_env)
        self.api_key_header = api_key_header
        self.headers = {"Accept": "application/json", **dict(headers or {})}  # the key is added when sent
        self.batch_size = positive_int(NAME, "batch_size", batch_size)
        self.max_concurrency = positive_int(NAME, "max_concurrency", max_concurrency)
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ConfigError(
                f"the {NAME!r} embedder's option 'max_retries' must be an int >= 0, got {max_retries!r}"
            )
        self.max_retries = max_retries
        self.timeout = positive_float(NAME, "timeout", timeout)
        self.connect_timeout = positive_float(NAME, "connect_timeout", connect_timeout)
        self.backoff_base = positive_float(NAME, "backoff_base", backoff_base, zero=True)
        self.backoff_max = positive_float(NAME, "backoff_max", backoff_max, zero=True)
        self.max_retry_wait = positive_float(NAME, "max_retry_wait", max_retry_wait, zero=True)
        if send_dimensions is None:
            send_dimensions = asked is not None and model.startswith("text-embedding-3")
        self.send_dimensions = bool(send_dimensions)
        if encoding_format not in (None, "float", "base64"):
            raise ConfigError(
                f"the {NAME!r} embedder's encoding_format must be 'float' or 'base64', got {encoding_format!r}"
            )
        self.encoding_format = encoding_format
        self._setup()

    @staticmethod
    def _api_key(api_key: str | Secret | None, env: str) -> Secret | None:
        if api_key is not None:
            return Secret(api_key)
        value = os.environ.get(env)
        if value is None and env != "OPENAI_API_KEY":
            raise ConfigError(f"the {NAME!r} embedder's api_key_env names {env!r}, which is not set")
        return Secret(value) if value else None

    def _headers(self) -> dict[str, str]:
        """The request headers: :attr:`headers` and the API key's (kept out of every attribute)."""
        if not self._key:
            return dict(self.headers)
        bearer = self.api_key_header.lower() == "authorization"
        return {
            **self.headers,
            self.api_key_header: f"Bearer {self._key.get()}" if bearer else self._key.get(),
        }

    def _setup(self) -> None:
        """The per-process parts: a lock and (on first use) the sync HTTP client."""
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_lock", "_client"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._setup()

    def __repr__(self) -> str:
        key = "'***'" if self._key else "None"
        return (
            f"{type(self).__name__}(model={self.model_name!r}, url={self.shown_url!r}, "
            f"dimensions={self.dimensions!r}, batch_size={self.batch_size}, api_key={key})"
        )

    def _twin(self, cls: type[TwinT]) -> TwinT:
        twin = object.__new__(cls)
        twin.__setstate__(self.__getstate__())
        return twin

    # -- requests, sans I/O ------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return text.replace(self._key.get(), "***") if self._key else text

    def _payload(self, texts: list[str]) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model_name, "input": texts}
        if self.send_dimensions and self.dimensions is not None:
            payload["dimensions"] = self.dimensions
        if self.encoding_format is not None:
            payload["encoding_format"] = self.encoding_format
        return payload

    def _error(self, problem: str) -> EmbeddingError:
        return EmbeddingError(self._redact(f"embedding request to {self.shown_url} failed: {problem}"))

    def _delay(self, failures: int, asked: float | None) -> float:
        """Seconds before try ``failures + 1``: jittered exponential backoff, at least ``asked``."""
        backoff = min(self.backoff_max, self.backoff_base * 2.0 ** (failures - 1)) * random.uniform(0.5, 1.0)
        return max(backoff, asked or 0.0)

    def _steps(self, texts: list[str]) -> Generator[Step, Any, FloatMatrix]:
        """One request of ``texts`` with its retries: yields ``("send", payload)`` (answered with an
        ``httpx.Response`` or a :class:`Failure`) and ``("sleep", seconds)``; returns the vectors."""
        payload = self._payload(texts)
        failures = 0
        while True:
            outcome = yield ("send", payload)
            asked: float | None = None
            if isinstance(outcome, Failure):
                problem = f"{type(outcome.error).__name__}: {outcome.error}"
                if not outcome.retryable:
                    raise self._error(problem) from outcome.error
            else:
                status = outcome.status_code
                if 200 <= status < 300:
                    return self._parse(outcome, len(texts))
                problem = f"HTTP {status} {outcome.reason_phrase}: {_server_detail(outcome)}"
                if status in (401, 403) and not self._key:
                    problem += " (no API key was sent: set $OPENAI_API_KEY, api_key_env or api_key)"
                if status not in RETRY_STATUSES and status < 500:
                    raise self._error(problem)
                asked = retry_after_seconds(outcome.headers)
                if asked is not None and asked > self.max_retry_wait:
                    wait = f"the server asks to retry after {asked:.1f}s, more than max_retry_wait"
                    raise self._error(f"{problem} ({wait}={self.max_retry_wait:g}s)")
            failures += 1
            if failures > self.max_retries:
                raise self._error(f"{problem} (gave up after {failures} attempts)")
            delay = self._delay(failures, asked)
            logger.warning(
                "%s; retry %d of %d in %.2fs", self._error(problem), failures, self.max_retries, delay
            )
            yield ("sleep", delay)

    def _parse(self, response: httpx.Response, n: int) -> FloatMatrix:
        """The vectors of a 2xx response, in the order of their ``index``."""
        try:
            body = response.json()
        except ValueError:
            snippet = response.text[:100]
            raise self._error(
                f"HTTP {response.status_code} with a body that is not JSON: {snippet!r}"
            ) from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise self._error(f"the response has no 'data' list: {str(body)[:200]!r}")
        if len(data) != n:
            raise self._error(f"the response has {len(data)} embeddings for {n} inputs")
        rows: list[Any] = [None] * n
        for pos, item in enumerate(data):
            index = item.get("index", pos) if isinstance(item, dict) else None
            if (
                not isinstance(index, int)
                or isinstance(index, bool)
                or not 0 <= index < n
                or rows[index] is not None
            ):
                raise self._error(f"data[{pos}] has a missing, duplicate or out-of-range index {index!r}")
            rows[index] = self._vector(item.get("embedding"), pos)
        lengths = sorted({len(row) for row in rows})
        if len(lengths) != 1 or lengths[0] == 0:
            raise self._error(f"the response's embeddings have lengths {lengths}")
        if self.dimensions is not None and lengths[0] != self.dimensions:
            raise self._error(
                f"the model {self.model_name!r} returned vectors of {lengths[0]} dimensions, "
                f"expected {self.dimensions}"
            )
        mat = np.vstack(rows)
        if not np.isfinite(mat).all():
            raise self._error("the response holds NaN or infinite values")
        self.dimensions = lengths[0]
        return mat

    def _vector(self, value: Any, pos: int) -> FloatMatrix:
        """One embedding: a list of numbers, or base64 of little-endian float32."""
        try:
            if isinstance(value, str):
                vec = np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4").astype(np.float32)
            else:
                vec = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise self._error(f"data[{pos}].embedding is not a vector ({e})") from None
        if vec.ndim != 1:
            raise self._error(f"data[{pos}].embedding is not a flat list of numbers")
        return vec

    def _timeout(self) -> httpx.Timeout:
        httpx_ = import_extra("httpx", "openai", NAME)
        return cast("httpx.Timeout", httpx_.Timeout(self.timeout, connect=self.connect_timeout))

    @staticmethod
    def _failure(error: httpx.HTTPError) -> Failure:
        import httpx

        retryable = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
        return Failure(error, isinstance(error, retryable))

    # -- the async path ----------------------------------------------------------------------------
    async def aembed(self, texts: Sequence[str]) -> FloatMatrix:
        """Embed ``texts`` on the running event loop: requests of ``batch_size`` inputs, at most
        ``max_concurrency`` in flight."""
        items = check_texts(texts)
        httpx_ = import_extra("httpx", "openai", NAME)
        limit = asyncio.Semaphore(self.max_concurrency)
        async with httpx_.AsyncClient(timeout=self._timeout(), headers=self._headers()) as client:

            async def one(batch: list[str]) -> FloatMatrix:
                async with limit:
                    return await self._request_async(client, batch)

            tasks = [
                asyncio.ensure_future(one(items[sl])) for sl in batch_slices(len(items), self.batch_size)
            ]
            try:
                parts = await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        return self._join(parts)

    async def _request_async(self, client: httpx.AsyncClient, texts: list[str]) -> FloatMatrix:
        steps = self._steps(texts)
        step = _advance(steps, None)
        while not isinstance(step, np.ndarray):
            kind, payload = step
            reply = await (asyncio.sleep(payload) if kind == "sleep" else self._apost(client, payload))
            step = _advance(steps, reply)
        return step

    async def _apost(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> httpx.Response | Failure:
        import httpx

        try:
            return await client.post(self.url, json=payload, params=self.params)
        except httpx.HTTPError as e:
            return self._failure(e)

    def _join(self, parts: Sequence[FloatMatrix]) -> FloatMatrix:
        if not parts:
            return np.zeros((0, self.dimensions or 0), dtype=np.float32)
        return np.ascontiguousarray(np.vstack(parts), dtype=np.float32)


class OpenAIEmbedder(_OpenAICompatible):
    """The ``openai`` embedder with a sync :meth:`embed` (for sync and async stores alike).

    Its HTTP client (keep-alive connections) opens on first use and closes with :meth:`close`, at
    the end of a ``with`` block, or when the embedder is garbage-collected.
    """

    is_async = False

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """Embed ``texts``: requests of ``batch_size`` inputs, at most ``max_concurrency`` in flight
        (worker threads), each retried on 408/409/429/5xx, timeouts and connection errors."""
        items = check_texts(texts)
        batches = [items[sl] for sl in batch_slices(len(items), self.batch_size)]
        client = self._sync_client()
        if len(batches) <= 1 or self.max_concurrency == 1:
            return self._join([self._request(client, b) for b in batches])
        workers = min(self.max_concurrency, len(batches))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dkv-openai") as pool:
            futures = [pool.submit(self._request, client, b) for b in batches]
            try:
                return self._join([f.result() for f in futures])
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    __call__ = embed

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                httpx_ = import_extra("httpx", "openai", NAME)
                client = httpx_.Client(timeout=self._timeout(), headers=self._headers())
                weakref.finalize(self, client.close)
                self._client = client
            return self._client

    def _request(self, client: httpx.Client, texts: list[str]) -> FloatMatrix:
        steps = self._steps(texts)
        step = _advance(steps, None)
        while not isinstance(step, np.ndarray):
            kind, payload = step
            step = _advance(steps, _pause(payload) if kind == "sleep" else self._post(client, payload))
        return step

    def _post(self, client: httpx.Client, payload: dict[str, Any]) -> httpx.Response | Failure:
        import httpx

        try:
            return client.post(self.url, json=payload, params=self.params)
        except httpx.HTTPError as e:
            return self._failure(e)

    def close(self) -> None:
        """Close the HTTP client's connections (a later :meth:`embed` opens a new client)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def as_async(self) -> AsyncOpenAIEmbedder:
        """The same embedder with ``is_async = True`` and ``async def embed``."""
        return self._twin(AsyncOpenAIEmbedder)


class AsyncOpenAIEmbedder(_OpenAICompatible):
    """The ``openai`` embedder with ``async def embed`` (``is_async = True``): the async store's
    bulk embed awaits it, its requests run as tasks on the store's event loop."""

    is_async = True

    async def embed(self, texts: Sequence[str]) -> FloatMatrix:
        """Embed ``texts`` (see :meth:`aembed`)."""
        return await self.aembed(texts)

    def as_sync(self) -> OpenAIEmbedder:
        """The same embedder with a sync ``embed``."""
        return self._twin(OpenAIEmbedder)


def create(dimensions: int | None = None, *, use_async: bool = False, **options: Any) -> Embedder:
    """The ``openai`` embedder's factory: ``embedder_options`` are :class:`OpenAIEmbedder`'s
    keyword arguments, plus ``use_async=True`` for :class:`AsyncOpenAIEmbedder`."""
    if not isinstance(use_async, bool):
        raise ConfigError(f"the {NAME!r} embedder's option 'use_async' must be a bool, got {use_async!r}")
    import_extra("httpx", "openai", NAME)
    cls = AsyncOpenAIEmbedder if use_async else OpenAIEmbedder
    return cast(Embedder, build_embedder(cls, NAME, dimensions, options, also=("use_async",)))


@hookimpl
def dkv_register_embedders() -> list[EmbedderSpec]:
    """The ``openai`` embedder."""
    return [
        EmbedderSpec(
            NAME,
            create,
            "any OpenAI-compatible POST /embeddings API: OpenAI, Azure OpenAI, Ollama, vLLM, "
            "LM Studio, text-embeddings-inference (extra: openai)",
        )
    ]
