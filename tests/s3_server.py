"""A real S3 server over HTTP on 127.0.0.1 for the tests: moto's standalone server in a subprocess.

``TEST_S3=true`` (as in the original plan) points the same tests at an external S3-compatible
server instead: the one at ``S3_ENDPOINT_URL``, by default LocalStack's ``http://localhost:4566``.
Its credentials come from the usual boto3 chain when ``AWS_ACCESS_KEY_ID`` is set, else the test
ones. Without ``TEST_S3`` the tests start their own server, whatever ``S3_ENDPOINT_URL`` says.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    import boto3

HERE = Path(__file__).parent
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


@attrs.define
class S3Server:
    """An S3 endpoint for tests, and how to reach it."""

    endpoint_url: str
    credentials: dict[str, str]
    process: subprocess.Popen[str] | None = None

    def config(self, prefix: str | None = None, bucket: str | None = None) -> dict[str, Any]:
        """Store config keys for a fresh table (a unique prefix in a shared test bucket)."""
        return {
            "bucket": bucket or "dkv-tests",
            "prefix": prefix or f"t-{uuid.uuid4().hex[:12]}",
            "endpoint_url": self.endpoint_url,
            "create_bucket": True,
            **self.credentials,
        }

    def client(self) -> Any:
        """A boto3 client on the server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, **self.credentials)

    def stop(self) -> None:
        """Stop a server this module started."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.process.kill()
            self.process = None


#: Where ``TEST_S3=true`` looks for a server when ``S3_ENDPOINT_URL`` is not set (LocalStack's port).
DEFAULT_EXTERNAL_URL = "http://localhost:4566"


def external(env: Mapping[str, str] | None = None) -> S3Server | None:
    """The external server ``TEST_S3=true`` selects (at ``S3_ENDPOINT_URL``, default
    :data:`DEFAULT_EXTERNAL_URL`), or ``None`` when the tests are to start their own."""
    env = os.environ if env is None else env
    if env.get("TEST_S3", "").strip().lower() not in ("1", "true", "yes", "on"):
        return None
    url = env.get("S3_ENDPOINT_URL") or DEFAULT_EXTERNAL_URL
    creds = {} if env.get("AWS_ACCESS_KEY_ID") else dict(CREDENTIALS)
    return S3Server(url, creds)


def check_reachable(server: S3Server, timeout: float = 5.0) -> None:
    """Raise a ``RuntimeError`` that says what to do when nothing answers at the server's URL."""
    try:
        with urllib.request.urlopen(server.endpoint_url, timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # an S3 server answers an anonymous GET / with an error status: it is there
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        raise RuntimeError(
            f"TEST_S3=true: no S3 server answers at {server.endpoint_url} ({e}); start one (e.g. "
            "LocalStack) or set S3_ENDPOINT_URL, or unset TEST_S3 to let the tests start their own"
        ) from None


def start(timeout: float = 60.0) -> S3Server:
    """Start moto's server on a free port of 127.0.0.1 and wait until it answers."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "moto_locked_server.py"), "127.0.0.1", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT"):
        proc.kill()
        raise RuntimeError(f"moto server did not start (said {line!r}); is moto[server] installed?")
    url = f"http://127.0.0.1:{int(line.split()[1])}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=2):
                break
        except (urllib.error.URLError, ConnectionError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"moto server at {url} did not become ready") from None
            time.sleep(0.1)
    return S3Server(url, dict(CREDENTIALS), proc)


@contextlib.contextmanager
def clients_from(session: boto3.session.Session) -> Iterator[None]:
    """Within it, ``boto3.client`` makes its clients from ``session``: a store created there sends
    every request, its cold load included, through ``session``'s event handlers (to count them)."""
    import boto3

    original = boto3.client
    boto3.client = session.client  # type: ignore[assignment]
    try:
        yield
    finally:
        boto3.client = original  # type: ignore[assignment]
