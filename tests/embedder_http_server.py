"""A real OpenAI-compatible embeddings server on 127.0.0.1 for the ``openai`` embedder's tests.

A ``ThreadingHTTPServer`` in a thread answers ``POST .../embeddings``. By default each input gets
``HashingEmbedder(dim)``'s vector (``dim`` is the request's ``dimensions`` when it sends one), so a
test knows what the embedder must return; :meth:`EmbeddingServer.push` scripts the next replies
(a status, headers, a raw body, a delay, a wrong dimension). The server records every request
(path, query, headers, JSON body) and counts how many it is serving at once.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from dk_vector_plugins import HashingEmbedder


@dataclass
class Reply:
    """One scripted answer: ``body=None`` with a 2xx status answers with the inputs' vectors."""

    status: int = 200
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    dim: int | None = None


@dataclass
class Seen:
    """A request as the server received it."""

    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class EmbeddingServer:
    """``with EmbeddingServer() as server:`` serves on ``server.url`` (``http://127.0.0.1:PORT/v1``)."""

    def __init__(self, dim: int = 8, delay: float = 0.0, reverse: bool = False) -> None:
        self.dim, self.delay, self.reverse = dim, delay, reverse
        self.script: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> EmbeddingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def push(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order (then the default answer)."""
        with self.lock:
            self.script.extend(replies)

    def vectors(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        """The vectors the server answers for ``texts``."""
        return HashingEmbedder(dim or self.dim).embed(texts)

    def _answer(self, request: Any, reply: Reply) -> bytes:
        if reply.body is not None:
            return reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        texts = request["input"]
        vecs = self.vectors(texts, reply.dim or request.get("dimensions"))
        b64 = request.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if b64 else v.tolist(),
            }
            for i, v in enumerate(vecs)
        ]
        if self.reverse:
            data.reverse()
        usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        return json.dumps(
            {"object": "list", "data": data, "model": request["model"], "usage": usage}
        ).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = urlsplit(self.path)
                body = json.loads(raw)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with server.lock:
                    server.requests.append(Seen(parts.path, parse_qs(parts.query), headers, body))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    reply = server.script.popleft() if server.script else Reply()
                try:
                    time.sleep(reply.delay or server.delay)
                    payload = server._answer(body, reply)
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
