"""A real S3 server over HTTP on 127.0.0.1 for the tests: moto's standalone server in a subprocess.

``S3_ENDPOINT_URL`` (with ``TEST_S3=true``, as in the original plan) points the same tests at
another S3-compatible server instead; credentials then come from the usual boto3 chain.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import attrs

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


def external() -> S3Server | None:
    """The server named by ``S3_ENDPOINT_URL``, if any."""
    url = os.environ.get("S3_ENDPOINT_URL")
    if not url and os.environ.get("TEST_S3", "").lower() == "true":
        raise RuntimeError("TEST_S3=true needs S3_ENDPOINT_URL")
    if not url:
        return None
    creds = {} if os.environ.get("AWS_ACCESS_KEY_ID") else dict(CREDENTIALS)
    return S3Server(url, creds)


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
