"""Vector search on S3, and what each operation costs in S3 requests.

    S3_ENDPOINT_URL=http://localhost:9000 python examples/s3_vector_search.py   # your S3-compatible server
    python examples/s3_vector_search.py                                          # starts a local moto server

Without ``S3_ENDPOINT_URL`` the example starts moto's S3 server (``python -m moto.server``, from
``pip install 'moto[server]'``) on a free port of 127.0.0.1 for the run and stops it afterwards.
Credentials come from boto3's usual chain (dummy ones for the local server); ``S3_BUCKET``
names the bucket (default ``dkv-examples``, created if missing). Every run writes under a fresh
prefix. Needs the ``s3`` extra: ``pip install 'dk_vector_plugins[s3]'``.

Every request the stores send is counted (a boto3 event hook), so you can see the cost model of
``backends/s3.py`` at work: a warm search is one conditional GET (answered 304), or none with
``consistency="eventual"``; only new segments travel after another writer's commit.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from typing import Any

import boto3

from dk_vector_plugins import AsyncDatabaseFactory, DatabaseFactory, Record

DIM = 128


# --- a local S3 server when none is given ------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def s3_endpoint() -> Iterator[str]:
    """``S3_ENDPOINT_URL``, or a moto server started for the duration of the block."""
    url = os.environ.get("S3_ENDPOINT_URL")
    if url:
        print(f"using the S3 endpoint from S3_ENDPOINT_URL: {url}")
        yield url
        return
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    print(f"S3_ENDPOINT_URL is not set: starting a local moto S3 server ({' '.join(cmd[1:])})")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the moto server did not start: pip install 'moto[server]'") from None
                time.sleep(0.1)
        print(f"moto S3 server ready at {url}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        print("stopped the local moto S3 server")


# --- counting requests ------------------------------------------------------------------------------


class RequestCounter:
    """Counts every S3 request sent by clients made from boto3's default session."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        boto3.setup_default_session()
        assert boto3.DEFAULT_SESSION is not None
        boto3.DEFAULT_SESSION.events.register("before-send.s3", self._count)

    def _count(self, event_name: str, **kwargs: Any) -> None:
        self.counts[event_name.rsplit(".", 1)[-1]] += 1

    @contextmanager
    def measure(self, label: str) -> Iterator[None]:
        before = self.counts.copy()
        yield
        diff = self.counts - before
        total = sum(diff.values())
        detail = ", ".join(f"{n} {op}" for op, n in sorted(diff.items())) or "no request"
        noun = "request " if total == 1 else "requests"
        print(f"  {label:<52} {total:>3} {noun}  ({detail})")


def load_sample() -> list[dict[str, Any]]:
    text = files("dk_vector_plugins").joinpath("data/sample.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def store_config(endpoint: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "backend": "s3",
        "bucket": os.environ.get("S3_BUCKET", "dkv-examples"),
        "prefix": f"examples/{uuid.uuid4().hex[:12]}",
        "endpoint_url": endpoint,
        "create_bucket": True,
        "vector_enabled": True,
        "vector_dimensions": DIM,
    }
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        config.update(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    return config


def run(endpoint: str) -> None:
    counter = RequestCounter()
    factory = DatabaseFactory()
    config = store_config(endpoint)
    embedder = factory.embedder("hashing", dimensions=DIM)
    q = embedder.embed(["the planets of the solar system"])[0]
    print(f"\nstore: s3://{config['bucket']}/{config['prefix']}/  ({DIM}-dim hashing embeddings)")
    print("\nrequests per operation:")

    with counter.measure("writer: open a new store (bucket check, no table)"):
        writer = factory.create(config)
    records = [Record(d, id=d["id"]) for d in load_sample()]
    with counter.measure("writer: bulk_embed 40 records, batch_size=20"):
        report = writer.bulk_embed(records, text_field="text", batch_size=20, progress=False)
    with counter.measure("reader: cold open (small segments: inside their manifests)"):
        reader = factory.create(config)
    with counter.measure("reader: warm search"):
        hits = reader.vector_search(q, k=3)
    with counter.measure("reader: 5 more warm searches"):
        for _ in range(5):
            reader.vector_search(q, k=3)
    with counter.measure("writer: upsert one record (one commit)"):
        writer.bulk_embed(
            [
                Record(
                    {"text": "Comets grow tails near the Sun.", "category": "astronomy", "year": 2024},
                    id="comet-1",
                )
            ],
            text_field="text",
            progress=False,
        )
    with counter.measure("reader: search after that commit (its manifest holds it)"):
        after = reader.vector_search(embedder.embed(["comet tails"])[0], k=1)
    eventual = factory.create({**config, "consistency": "eventual", "max_staleness_s": 60})
    with counter.measure("eventual reader: 5 searches within max_staleness_s"):
        for _ in range(5):
            eventual.vector_search(q, k=3)

    print(f"\nembedded {report.embedded} records in {report.batches} commits; table version {writer.version}")
    print("top 3 for 'the planets of the solar system':", [f"{h.id} ({h.score:.2f})" for h in hits])
    print("after the writer's commit, the reader finds:", [h.id for h in after])
    for db in (writer, reader, eventual):
        db.close()

    async def async_part() -> None:
        async with AsyncDatabaseFactory().create(config) as adb:  # aioboto3; opens on the first call
            hits = await adb.vector_search(q, k=2, filter={"category": "astronomy"})
            print(
                f"async store (aioboto3): {await adb.count()} records; astronomy top 2: {[h.id for h in hits]}"
            )

    asyncio.run(async_part())


def main() -> None:
    with s3_endpoint() as endpoint:
        run(endpoint)


if __name__ == "__main__":
    main()
