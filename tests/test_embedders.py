"""The embedder plugins (``openai``, ``model2vec``, ``fastembed``), each without downloading anything.

* ``openai``: against a real HTTP server on 127.0.0.1 (``tests/embedder_http_server.py``), with
  scripted answers: batching, the order of ``index``, retries (429 with ``Retry-After``, 5xx,
  timeouts, refused connections), errors that are not retried, the concurrency limit (the server
  counts requests in flight), the auth headers, and the key never shown.
* ``model2vec`` and ``fastembed``: tiny models built in ``tmp_path`` in their real formats
  (``tests/embedder_models.py``) and loaded by the libraries' own loading code, with every
  connection off this machine refused.
* each through ``bulk_embed_and_store(..., embedding_fn=name)`` on sync and async memory stores.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from embedder_http_server import EmbeddingServer, Reply, closed_port_url
from embedder_models import SENTENCES, build_fastembed, build_model2vec, expected_vectors

from dk_vector_plugins import AsyncDatabaseFactory, ConfigError, DatabaseFactory, InvalidRequestError, Record
from dk_vector_plugins.embedders import EmbeddingError, Secret
from dk_vector_plugins.embedders.openai_compat import AsyncOpenAIEmbedder, OpenAIEmbedder, retry_after_seconds

KEY = "sk-test-" + "0123456789abcdef" * 2
TEXTS = [
    f"text number {i} about {w}"
    for i, w in enumerate(["cats", "dogs", "fish", "birds", "trees", "rocks", "sky", "sea", "ice", "sun"])
]
FAST = {"backoff_base": 0.01, "backoff_max": 0.05}  # retries without slow tests


@pytest.fixture
def server() -> Iterator[EmbeddingServer]:
    with EmbeddingServer(dim=8) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def openai(server: EmbeddingServer, **options: Any) -> Any:
    """The ``openai`` embedder as a store builds it: through the registered factory."""
    options = {"base_url": server.url, "model": "nomic-embed-text", **FAST, **options}
    return DatabaseFactory().embedder("openai", options.pop("dimensions", None), **options)


# --- the openai embedder: requests --------------------------------------------------------------


def test_batches_in_input_order_with_bearer_key(server: EmbeddingServer) -> None:
    emb = openai(server, batch_size=3, api_key=Secret(KEY), max_concurrency=1)
    out = emb.embed(TEXTS)
    assert out.dtype == np.float32 and out.shape == (10, 8) and out.flags.c_contiguous
    np.testing.assert_allclose(out, server.vectors(TEXTS), rtol=1e-6)
    assert [len(r.body["input"]) for r in server.requests] == [3, 3, 3, 1]
    assert [t for r in server.requests for t in r.body["input"]] == TEXTS
    assert {r.path for r in server.requests} == {"/v1/embeddings"}
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)
    assert all(r.body["model"] == "nomic-embed-text" and "dimensions" not in r.body for r in server.requests)
    assert emb.dimensions == 8 and emb.model_name == "nomic-embed-text"


def test_rows_follow_the_response_index_not_its_order(server: EmbeddingServer) -> None:
    server.reverse = True
    np.testing.assert_allclose(openai(server).embed(TEXTS), server.vectors(TEXTS), rtol=1e-6)


def test_base64_encoding_format(server: EmbeddingServer) -> None:
    out = openai(server, encoding_format="base64").embed(TEXTS[:3])
    assert server.requests[0].body["encoding_format"] == "base64"
    np.testing.assert_array_equal(out, server.vectors(TEXTS[:3]))


def test_no_key_no_auth_header(server: EmbeddingServer) -> None:
    openai(server).embed(["x"])
    assert "authorization" not in server.requests[0].headers and "api-key" not in server.requests[0].headers


def test_key_from_environment(server: EmbeddingServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    openai(server).embed(["x"])
    monkeypatch.setenv("MY_EMBEDDINGS_KEY", "other-key-123")
    openai(server, api_key_env="MY_EMBEDDINGS_KEY").embed(["x"])
    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {KEY}", "Bearer other-key-123"]
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        openai(server, api_key_env="NOT_SET_ANYWHERE")


def test_azure_deployment_url_api_key_header_and_version(server: EmbeddingServer) -> None:
    emb = openai(
        server,
        base_url=server.url + "/openai/deployments/my-embeddings/",
        api_key=KEY,
        api_key_header="api-key",
        api_version="2024-10-21",
    )
    emb.embed(["x", "y"])
    seen = server.requests[0]
    assert seen.path == "/v1/openai/deployments/my-embeddings/embeddings"
    assert seen.query == {"api-version": ["2024-10-21"]}
    assert seen.headers["api-key"] == KEY and "authorization" not in seen.headers
    assert "api-version=2024-10-21" in repr(emb) and KEY not in repr(emb)


def test_dimensions_sent_to_text_embedding_3_only(server: EmbeddingServer) -> None:
    out = openai(server, model="text-embedding-3-small", dimensions=6).embed(["a", "b"])
    assert out.shape == (2, 6) and server.requests[-1].body["dimensions"] == 6
    openai(server, dimensions=8).embed(["a"])
    assert "dimensions" not in server.requests[-1].body
    openai(server, dimensions=8, send_dimensions=True).embed(["a"])
    assert server.requests[-1].body["dimensions"] == 8
    large = openai(server, model="text-embedding-3-large")
    assert large.dimensions == 3072 and not large.send_dimensions


@pytest.mark.parametrize(
    ("model", "dims", "native"),
    [("text-embedding-ada-002", 8, 1536), ("text-embedding-3-small", 4096, 1536)],
)
def test_fixed_dimension_models_reject_other_dimensions(
    server: EmbeddingServer, model: str, dims: int, native: int
) -> None:
    with pytest.raises(ConfigError, match=rf"{native}.*{dims}"):
        openai(server, model=model, dimensions=dims)


def test_wrong_dimensions_in_the_response(server: EmbeddingServer) -> None:
    server.push(Reply(dim=5))
    with pytest.raises(EmbeddingError, match=r"5 dimensions, expected 8") as err:
        openai(server, dimensions=8).embed(["a", "b"])
    assert server.url in str(err.value)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{this is not json", "not JSON"),
        ({"data": "nope"}, "no 'data' list"),
        ({"data": [{"index": 0, "embedding": [1.0, 2.0]}]}, "1 embeddings for 2 inputs"),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]}, "duplicate"),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [2.0, 3.0]}]}, "lengths"),
        ({"data": [{"index": 0, "embedding": ["x"]}, {"index": 1, "embedding": [2.0]}]}, "not a vector"),
        (
            {"data": [{"index": 0, "embedding": [[1.0]]}, {"index": 1, "embedding": [[2.0]]}]},
            "not a flat list",
        ),
        ({"data": [{"index": 0, "embedding": [1.0]}, {"index": 1, "embedding": [float("nan")]}]}, "NaN"),
    ],
)
def test_malformed_responses_are_errors_not_retried(server: EmbeddingServer, body: Any, match: str) -> None:
    server.push(Reply(body=body))
    with pytest.raises(EmbeddingError, match=match):
        openai(server).embed(["a", "b"])
    assert len(server.requests) == 1


# --- retries ----------------------------------------------------------------------------------------


def test_429_then_200_honours_retry_after(server: EmbeddingServer) -> None:
    server.push(Reply(429, {"error": {"message": "rate limited"}}, headers={"Retry-After": "1"}))
    t0 = time.monotonic()
    out = openai(server).embed(TEXTS[:2])
    assert time.monotonic() - t0 >= 1.0 and len(server.requests) == 2
    np.testing.assert_allclose(out, server.vectors(TEXTS[:2]), rtol=1e-6)


def test_retry_after_ms_and_5xx_retried(server: EmbeddingServer) -> None:
    server.push(
        Reply(503, headers={"retry-after-ms": "150"}, body=b"busy"), Reply(500, body=b"oops"), Reply(502)
    )
    t0 = time.monotonic()
    openai(server).embed(["a"])
    assert time.monotonic() - t0 >= 0.15 and len(server.requests) == 4


def test_5xx_gives_up_after_max_retries(server: EmbeddingServer) -> None:
    server.push(*[Reply(500, {"error": {"message": "model crashed"}})] * 3)
    with pytest.raises(EmbeddingError) as err:
        openai(server, max_retries=2).embed(["a"])
    msg = str(err.value)
    assert (
        server.url + "/embeddings" in msg
        and "HTTP 500" in msg
        and "model crashed" in msg
        and "3 attempts" in msg
    )
    assert len(server.requests) == 3


def test_retry_after_beyond_max_retry_wait_gives_up(server: EmbeddingServer) -> None:
    server.push(Reply(429, headers={"Retry-After": "120"}))
    with pytest.raises(EmbeddingError, match=r"HTTP 429 .*retry after 120\.0s, more than max_retry_wait=60s"):
        openai(server).embed(["a"])
    assert len(server.requests) == 1


@pytest.mark.parametrize("status", [400, 404, 422])
def test_client_errors_are_not_retried(server: EmbeddingServer, status: int) -> None:
    server.push(Reply(status, {"error": {"message": "input is too long"}}))
    with pytest.raises(EmbeddingError, match=rf"HTTP {status} .*input is too long"):
        openai(server).embed(["a"])
    assert len(server.requests) == 1


def test_undecodable_body_is_not_retried(server: EmbeddingServer) -> None:
    server.push(Reply(headers={"Content-Encoding": "gzip"}, body=b"this is not gzip"))
    with pytest.raises(EmbeddingError, match="DecodingError"):
        openai(server).embed(["a"])
    assert len(server.requests) == 1


def test_401_without_a_key_says_how_to_give_one(server: EmbeddingServer) -> None:
    server.push(Reply(401, {"error": "unauthorized"}))
    with pytest.raises(EmbeddingError, match="no API key was sent"):
        openai(server).embed(["a"])


def test_timeouts_are_retried(server: EmbeddingServer) -> None:
    server.push(Reply(delay=0.6))
    out = openai(server, timeout=0.2).embed(["a", "b"])
    assert out.shape == (2, 8) and len(server.requests) == 2
    server.push(*[Reply(delay=0.6)] * 2)
    with pytest.raises(EmbeddingError, match=r"ReadTimeout.*2 attempts"):
        openai(server, timeout=0.2, max_retries=1).embed(["a"])


def test_refused_connections_are_retried_then_fail() -> None:
    url = closed_port_url()
    emb = DatabaseFactory().embedder("openai", base_url=url, max_retries=2, **FAST)
    with pytest.raises(EmbeddingError, match=r"ConnectError.*3 attempts") as err:
        emb.embed(["a"])
    assert url + "/embeddings" in str(err.value)


def test_retry_after_parsing() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after-ms": "x", "retry-after": "2"}) == 2.0
    assert retry_after_seconds({}) is None


# --- the key is never shown -----------------------------------------------------------------------


def test_key_never_in_errors_repr_or_logs(server: EmbeddingServer, caplog: pytest.LogCaptureFixture) -> None:
    emb = openai(server, api_key=KEY)
    assert KEY not in repr(emb) and "api_key='***'" in repr(emb)
    assert KEY not in repr(vars(emb))  # only the Secret holds it
    echo = {"error": {"message": f"Incorrect API key provided: {KEY}"}}
    server.push(Reply(500, echo), Reply(401, echo))
    with caplog.at_level(logging.WARNING), pytest.raises(EmbeddingError) as err:
        emb.embed(["a"])
    assert "HTTP 401" in str(err.value) and "Incorrect API key provided: ***" in str(err.value)
    assert KEY not in str(err.value) and KEY not in repr(err.value)
    assert caplog.records and all(KEY not in r.getMessage() for r in caplog.records)
    assert "HTTP 500" in caplog.text
    with pytest.raises(ConfigError) as bad:
        openai(server, api_key=KEY, bogus_option=1)
    assert "bogus_option" in str(bad.value) and KEY not in str(bad.value)


def test_secret_in_store_config_is_hidden(server: EmbeddingServer) -> None:
    db = DatabaseFactory().create(
        backend="memory",
        vector_enabled=True,
        embedder_options={"base_url": server.url, "model": "all-minilm", "api_key": Secret(KEY)},
    )
    assert KEY not in repr(db) and KEY not in str(db.config)
    db.bulk_embed_and_store([Record({"text": "hi"}, id="a")], text_field="text", embedding_fn="openai")
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert repr(Secret(KEY)) == str(Secret(KEY)) == "Secret('***')"
    assert pickle.loads(pickle.dumps(Secret(KEY))) == Secret(KEY) and Secret(Secret(KEY)).get() == KEY
    assert len({Secret(KEY), Secret(KEY)}) == 1 and not Secret("")
    with pytest.raises(ConfigError, match="must be a string"):
        Secret(123)  # type: ignore[arg-type]


# --- concurrency, the async path, pickling ------------------------------------------------------------


def test_sync_concurrency_limit(server: EmbeddingServer) -> None:
    server.delay = 0.15
    out = openai(server, batch_size=2, max_concurrency=3).embed(TEXTS + TEXTS[:6])
    assert len(server.requests) == 8 and server.max_in_flight == 3
    np.testing.assert_allclose(out, server.vectors(TEXTS + TEXTS[:6]), rtol=1e-6)


def test_sync_concurrency_a_failed_batch_fails_the_call(server: EmbeddingServer) -> None:
    server.delay = 0.05
    server.push(Reply(), Reply(400, {"error": {"message": "batch two is bad"}}))
    with pytest.raises(EmbeddingError, match="batch two is bad"):
        openai(server, batch_size=1, max_concurrency=2).embed(TEXTS[:6])


async def test_async_concurrency_limit_and_order(server: EmbeddingServer) -> None:
    server.delay = 0.15
    server.reverse = True
    emb = openai(server, batch_size=2, max_concurrency=3, use_async=True)
    assert isinstance(emb, AsyncOpenAIEmbedder) and emb.is_async
    out = await emb.embed(TEXTS + TEXTS[:6])
    assert len(server.requests) == 8 and server.max_in_flight == 3
    np.testing.assert_allclose(out, server.vectors(TEXTS + TEXTS[:6]), rtol=1e-6)


async def test_async_retries_and_errors(server: EmbeddingServer) -> None:
    server.push(Reply(429, headers={"retry-after-ms": "50"}), Reply(503))
    emb = openai(server, batch_size=4, use_async=True)
    np.testing.assert_allclose(await emb.embed(TEXTS), server.vectors(TEXTS), rtol=1e-6)
    assert len(server.requests) == 5
    server.push(Reply(400, {"error": {"message": "bad input"}}))
    with pytest.raises(EmbeddingError, match="bad input"):
        await emb.aembed(TEXTS)
    with pytest.raises(EmbeddingError, match="ConnectError"):
        await openai(server, base_url=closed_port_url(), max_retries=0).aembed(["a"])


def test_twins_and_pickling(server: EmbeddingServer) -> None:
    emb = openai(server, api_key=KEY, batch_size=4)
    assert isinstance(emb, OpenAIEmbedder) and not emb.is_async
    twin = emb.as_async()
    assert isinstance(twin, AsyncOpenAIEmbedder) and twin.batch_size == 4
    assert isinstance(twin.as_sync(), OpenAIEmbedder)
    emb.embed(["warm the client"])
    copy = pickle.loads(pickle.dumps(emb))
    np.testing.assert_array_equal(copy.embed(["a"]), emb.embed(["a"]))
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    with emb:
        emb.embed([])
    assert emb.embed([]).shape == (0, 8)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"max_concurrency": -1}, "max_concurrency"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"base_url": "ftp://example"}, "http"),
        ({"base_url": "http:///v1"}, "with a host"),
        ({"base_url": "http://127.0.0.1:99999/v1"}, "with a host"),
        ({"model_version": 3}, "model_version"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"use_async": "yes"}, "use_async"),
        ({"model": ""}, "model"),
        ({"dimensions": 0}, "dimensions"),
        ({"nonsense": 1}, r"nonsense.*accepted: .*api_key.*use_async"),
    ],
)
def test_bad_options_are_config_errors(server: EmbeddingServer, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        openai(server, **options)


def test_non_string_texts_rejected(server: EmbeddingServer) -> None:
    with pytest.raises(InvalidRequestError, match=r"texts\[1\]"):
        openai(server).embed(["a", 3])
    with pytest.raises(InvalidRequestError, match="not one string"):
        openai(server).embed("abc")


# --- bulk embed end to end: openai ------------------------------------------------------------------


def records(n: int = 10) -> list[Record]:
    return [Record({"text": t, "n": i}, id=f"r{i}") for i, t in enumerate(TEXTS[:n])]


def test_openai_bulk_embed_sync_store(server: EmbeddingServer) -> None:
    options = {"base_url": server.url, "model": "nomic-embed-text", "batch_size": 4}
    db = DatabaseFactory().create(backend="memory", vector_enabled=True, embedder_options=options)
    ids = db.bulk_embed_and_store(records(), text_field="text", embedding_fn="openai")
    assert ids == [f"r{i}" for i in range(10)] and len(server.requests) == 3
    hit = db.vector_search(server.vectors([TEXTS[7]])[0], k=1)[0]
    assert hit.id == "r7" and hit.score == pytest.approx(1.0, abs=1e-5)
    assert db.read("r7").fields["embedding"].model_name == "nomic-embed-text"
    db.bulk_embed_and_store(records(), text_field="text", embedding_fn="openai")
    assert len(server.requests) == 3  # unchanged texts are skipped
    with pytest.raises(InvalidRequestError, match="async store"):
        db.bulk_embed_and_store(
            [Record({"text": "new"})], text_field="text", embedding_fn=openai(server, use_async=True)
        )


@pytest.mark.parametrize("use_async", [True, False])
async def test_openai_bulk_embed_async_store(server: EmbeddingServer, use_async: bool) -> None:
    server.delay = 0.05
    options = {
        "base_url": server.url,
        "model": "bge-m3",
        "batch_size": 2,
        "max_concurrency": 2,
        "use_async": use_async,
    }
    db = AsyncDatabaseFactory().create(backend="memory", vector_enabled=True, embedder_options=options)
    try:
        ids = await db.bulk_embed_and_store(
            records(), text_field="text", embedding_fn="openai", batch_size=10
        )
        assert len(ids) == 10 and len(server.requests) == 5 and server.max_in_flight == 2
        hits = await db.vector_search(server.vectors([TEXTS[3]])[0], k=2)
        assert hits[0].id == "r3"
    finally:
        await db.close()


# --- model2vec -------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every connection and name lookup that leaves this machine."""
    local = ("127.", "::1", "localhost")
    real_connect, real_lookup = socket.socket.connect, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not str(address[0]).startswith(local):
            raise OSError(f"test: no network ({address!r})")
        return real_connect(self, address)

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not str(host).startswith(local):
            raise OSError(f"test: no network ({host!r})")
        return real_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def m2v_model(tmp_path: Path, no_network: None) -> tuple[str, Any, np.ndarray]:
    tok, table = build_model2vec(tmp_path / "m2v", dim=16)
    return str(tmp_path / "m2v"), tok, table


def test_model2vec_loads_a_local_model(m2v_model: tuple[str, Any, np.ndarray]) -> None:
    path, tok, table = m2v_model
    emb = DatabaseFactory().embedder("model2vec", model=path)
    assert emb.dimensions == 16 and emb.model_name == path and "16" in repr(emb)
    out = emb.embed(SENTENCES)
    assert out.dtype == np.float32 and out.shape == (len(SENTENCES), 16)
    np.testing.assert_allclose(out, expected_vectors(tok, table, SENTENCES), atol=1e-6)
    assert emb.embed([]).shape == (0, 16)
    again = DatabaseFactory().embedder("model2vec", 16, model=path)
    assert again.model is emb.model  # loaded once per process
    shipped = pickle.loads(pickle.dumps(emb))  # e.g. to a Dask worker: the model is loaded there
    assert "_model" not in pickle.loads(pickle.dumps(emb)).__dict__
    np.testing.assert_array_equal(shipped.embed(SENTENCES[:2]), out[:2])
    assert DatabaseFactory().embedder("model2vec", model=path, dimensionality=8).embed(["cats"]).shape == (
        1,
        8,
    )


def test_model2vec_dimension_and_load_errors(m2v_model: tuple[str, Any, np.ndarray], tmp_path: Path) -> None:
    path = m2v_model[0]
    with pytest.raises(ConfigError, match=r"16 dimensions, but 32"):
        DatabaseFactory().embedder("model2vec", 32, model=path)
    with pytest.raises(ConfigError, match="could not load the model"):
        DatabaseFactory().embedder("model2vec", model=str(tmp_path / "missing" / "model"))
    with pytest.raises(ConfigError, match="max_length"):
        DatabaseFactory().embedder("model2vec", model=path, max_length=0)
    with pytest.raises(ConfigError, match="normalize"):
        DatabaseFactory().embedder("model2vec", model=path, normalize="yes")


def test_model2vec_bulk_embed_sync_store(m2v_model: tuple[str, Any, np.ndarray]) -> None:
    path, tok, table = m2v_model
    db = DatabaseFactory().create(backend="memory", vector_enabled=True, embedder_options={"model": path})
    recs = [Record({"text": s}, id=f"s{i}") for i, s in enumerate(SENTENCES)]
    assert db.bulk_embed_and_store(recs, text_field="text", embedding_fn="model2vec", batch_size=4) == [
        f"s{i}" for i in range(len(SENTENCES))
    ]
    query = expected_vectors(tok, table, ["quick brown fox"])[0]
    assert db.vector_search(query, k=1)[0].id == "s0"


async def test_model2vec_bulk_embed_async_store(m2v_model: tuple[str, Any, np.ndarray]) -> None:
    path, tok, table = m2v_model
    db = AsyncDatabaseFactory().create(
        backend="memory",
        vector_enabled=True,
        vector_dimensions=16,
        embedder="model2vec",
        embedder_options={"model": path},
    )
    try:
        recs = [Record({"text": s}, id=f"s{i}") for i, s in enumerate(SENTENCES)]
        await db.bulk_embed_and_store(recs, text_field="text")
        hits = await db.vector_search(expected_vectors(tok, table, ["graph on the cpu"])[0], k=1)
        assert hits[0].id == "s4"
    finally:
        await db.close()


# --- fastembed -------------------------------------------------------------------------------------
#
# The ``case_fastembed_*`` functions below run in a pytest process of their own (the test right
# after this comment starts it): onnxruntime's import crashes the interpreter (SIGSEGV inside
# ``onnxruntime.capi._pybind_state``) when it loads after some of the extension modules the rest
# of this suite imports, so it must never load in the main test process.


def test_fastembed_cases_pass_in_a_fresh_interpreter() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "python_functions=case_fastembed_*",
            __file__,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "10 passed" in proc.stdout, proc.stdout[-2000:]  # 4 cases, one of them on 6 backends
    assert "onnxruntime" not in sys.modules  # this process never loaded it


@pytest.fixture
def fe_model(tmp_path: Path, no_network: None) -> tuple[str, str, Any, np.ndarray]:
    tok, table = build_fastembed(tmp_path / "fe", dim=12)
    return f"dkv-tests/tiny-{uuid.uuid4().hex[:8]}", str(tmp_path / "fe"), tok, table


def fe_options(fe_model: tuple[str, str, Any, np.ndarray], **more: Any) -> dict[str, Any]:
    name, path = fe_model[:2]
    return {"model": name, "model_path": path, "pooling": "mean", "dim": 12, **more}


def case_fastembed_loads_a_local_onnx_model(fe_model: tuple[str, str, Any, np.ndarray]) -> None:
    _, _, tok, table = fe_model
    emb = DatabaseFactory().embedder("fastembed", **fe_options(fe_model))
    assert emb.dimensions == 12 and "12" in repr(emb)
    out = emb.embed(SENTENCES)
    assert out.dtype == np.float32 and out.shape == (len(SENTENCES), 12)
    np.testing.assert_allclose(out, expected_vectors(tok, table, SENTENCES), atol=1e-6)
    assert emb.embed([]).shape == (0, 12)
    again = DatabaseFactory().embedder(
        "fastembed", 12, **fe_options(fe_model, dim=None)
    )  # dim from the store
    assert again.model is emb.model
    # pickled to a fresh process (a Dask worker, say): the custom model is registered there again
    code = (
        "import pickle, sys; e = pickle.loads(sys.stdin.buffer.read()); print(e.embed(sys.argv[1:]).tolist())"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, *SENTENCES[:2]],
        input=pickle.dumps(emb),
        capture_output=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr.decode()
    np.testing.assert_allclose(np.array(json.loads(run.stdout)), out[:2], atol=1e-6)


def case_fastembed_errors(fe_model: tuple[str, str, Any, np.ndarray], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"12 dimensions, but 20"):
        DatabaseFactory().embedder("fastembed", 20, **fe_options(fe_model))
    with pytest.raises(ConfigError, match=r"already registered .* dim=12"):
        DatabaseFactory().embedder("fastembed", **fe_options(fe_model, dim=24))
    with pytest.raises(ConfigError, match="pooling must be one of"):
        DatabaseFactory().embedder("fastembed", **fe_options(fe_model, pooling="max"))
    with pytest.raises(ConfigError, match="needs dim"):
        DatabaseFactory().embedder("fastembed", **fe_options(fe_model, model="dkv-tests/other", dim=None))
    with pytest.raises(
        ConfigError, match=r"'BAAI/bge-small-en-v1\.5' makes vectors of 384 dimensions, but 12"
    ):
        DatabaseFactory().embedder("fastembed", 12, model="BAAI/bge-small-en-v1.5")  # checked before any load
    with pytest.raises(ConfigError, match="does not know the model"):
        DatabaseFactory().embedder("fastembed", model="nobody/unknown-model")
    with pytest.raises(ConfigError, match="could not load the model"):
        DatabaseFactory().embedder(
            "fastembed",
            **fe_options(fe_model, model=f"dkv-tests/empty-{uuid.uuid4().hex[:6]}", model_path=str(tmp_path)),
        )


def case_fastembed_text_store_on_every_backend(open_at: Any, fe_model: tuple[str, str, Any, np.ndarray]) -> None:
    _, _, tok, table = fe_model
    db = open_at(text_field="text", embedder="fastembed", embedder_options=fe_options(fe_model))
    db.create_batch([Record({"text": s}, id=f"s{i}") for i, s in enumerate(SENTENCES)])
    np.testing.assert_allclose(
        db.get("s3").fields["embedding"].value, expected_vectors(tok, table, [SENTENCES[3]])[0], atol=1e-6
    )
    assert [h.id for h in db.vector_search("cats and dogs", k=1)] == ["s5"]
    if open_at.backend != "memory":  # reopened with its location only
        db.close()
        again = open_at()
        assert [h.id for h in again.vector_search(SENTENCES[0], k=1)] == ["s0"]


def case_fastembed_bulk_embed_sync_store(fe_model: tuple[str, str, Any, np.ndarray]) -> None:
    _, _, tok, table = fe_model
    db = DatabaseFactory().create(
        backend="memory", vector_enabled=True, embedder_options=fe_options(fe_model)
    )
    recs = [Record({"text": s}, id=f"s{i}") for i, s in enumerate(SENTENCES)]
    db.bulk_embed_and_store(recs, text_field="text", embedding_fn="fastembed", batch_size=4)
    assert db.vector_search(expected_vectors(tok, table, ["cats and dogs"])[0], k=1)[0].id == "s5"


async def case_fastembed_bulk_embed_async_store(fe_model: tuple[str, str, Any, np.ndarray]) -> None:
    _, _, tok, table = fe_model
    db = AsyncDatabaseFactory().create(
        backend="memory", vector_enabled=True, embedder_options=fe_options(fe_model)
    )
    try:
        recs = [Record({"text": s}, id=f"s{i}") for i, s in enumerate(SENTENCES)]
        await db.bulk_embed_and_store(recs, text_field="text", embedding_fn="fastembed")
        hits = await db.vector_search(expected_vectors(tok, table, ["static token vectors"])[0], k=1)
        assert hits[0].id == "s3"
    finally:
        await db.close()


# --- without the extras -------------------------------------------------------------------------------

WITHOUT_EXTRAS = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("httpx", "model2vec", "fastembed"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")

sys.meta_path.insert(0, Block())
from dk_vector_plugins import ConfigError, DatabaseFactory, list_plugins

factory = DatabaseFactory(strict=True, load_entrypoints=False)  # the built-ins: these three among them
names = {p.name: p for p in list_plugins(factory.pm, all=True)}
assert all(names[n].error is None for n in ("openai", "model2vec", "fastembed")), names
assert {"openai", "model2vec", "fastembed", "hashing"} <= set(factory.embedders())
for name, extra in (("openai", "openai"), ("model2vec", "model2vec"), ("fastembed", "fastembed")):
    try:
        factory.embedder(name)
    except ConfigError as e:
        assert f"pip install 'dk_vector_plugins[{extra}]'" in str(e), e
    else:
        raise AssertionError(name)
print("ok")
"""


def test_plugins_load_without_their_extras() -> None:
    out = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# --- text in, text out with real embedders, on every backend ---------------------------------------


def test_openai_text_store_on_every_backend(open_at: Any, server: EmbeddingServer) -> None:
    options = {"base_url": server.url, "model": "nomic-embed-text", "batch_size": 4, **FAST}
    db = open_at(text_field="text", embedder="openai", embedder_options=options)
    db.create_batch([Record({"text": t}, id=f"r{i}") for i, t in enumerate(TEXTS)])
    hit = db.vector_search(TEXTS[7], k=1)[0]  # the query is embedded by the server too
    assert hit.id == "r7" and hit.score == pytest.approx(1.0, abs=1e-5)
    sent = len(server.requests)
    db.upsert(Record({"text": TEXTS[7], "seen": True}, id="r7"))  # unchanged text: no request
    assert len(server.requests) == sent
    db.upsert(Record({"text": "a new text about clouds"}, id="r3"))
    assert len(server.requests) == sent + 1
    np.testing.assert_allclose(
        db.get("r3").fields["embedding"].value, server.vectors(["a new text about clouds"])[0], rtol=1e-6
    )
    if open_at.backend != "memory":  # reopened with its location only: the stored embedder answers
        db.close()
        again = open_at()
        assert [h.id for h in again.vector_search(TEXTS[2], k=1)] == ["r2"]


def test_model2vec_text_store_on_every_backend(open_at: Any, m2v_model: tuple[str, Any, np.ndarray]) -> None:
    path, tok, table = m2v_model
    db = open_at(text_field="text", embedder="model2vec", embedder_options={"model": path})
    db.create_batch([Record({"text": s}, id=f"s{i}") for i, s in enumerate(SENTENCES)])
    assert db.vector_dimension() == 16
    np.testing.assert_allclose(
        db.get("s2").fields["embedding"].value, expected_vectors(tok, table, [SENTENCES[2]])[0], atol=1e-6
    )
    assert [h.id for h in db.vector_search(SENTENCES[4], k=1)] == ["s4"]
    if open_at.backend != "memory":
        db.close()
        again = open_at()
        again.connect()  # an async store loads its table (and schema) here
        assert again.config["embedder_options"] == {"model": path}
        assert [h.id for h in again.vector_search(SENTENCES[1], k=1)] == ["s1"]
