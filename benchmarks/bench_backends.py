#!/usr/bin/env python
"""Warm search latency of every built-in backend at two table sizes, side by side in one run.

Prints the markdown table that docs/VECTOR_BACKENDS.md quotes: median ``vector_search`` latency
(k=10, cosine, d=384) of memory, file and S3 (a local S3 server on 127.0.0.1: moto's standalone
server, or ``S3_ENDPOINT_URL``) at N=10k and N=100k, with the requests per search on S3.
Variants are interleaved query by query so that machine noise hits them alike.

    python benchmarks/bench_backends.py [--sizes 10000 100000] [--dim 384] [--repeat 40]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from dk_vector_plugins import DatabaseFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # tests/s3_server.py


class Counter:
    """Counts botocore before-send events (HTTP requests)."""

    def __init__(self) -> None:
        self.n = 0

    def hit(self, **_: Any) -> None:
        self.n += 1


def build(factory: DatabaseFactory, backend: str, extra: dict[str, Any], x: np.ndarray) -> Any:
    db = factory.create(backend=backend, vector_enabled=True, **extra)
    step = 50_000
    for s in range(0, len(x), step):
        db.add_vectors(x[s : s + step], ids=[f"r{i}" for i in range(s, min(s + step, len(x)))])
    if backend != "memory":
        db.compact()
    return db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()

    import s3_server

    server = s3_server.external() or s3_server.start()
    factory = DatabaseFactory()
    rng = np.random.default_rng(0)
    rows = []
    try:
        for n in args.sizes:
            x = rng.standard_normal((n, args.dim)).astype(np.float32)
            with tempfile.TemporaryDirectory() as tmp:
                stores = {
                    "memory": build(factory, "memory", {}, x),
                    "file": build(factory, "file", {"path": os.path.join(tmp, "t")}, x),
                    "s3": build(factory, "s3", server.config(), x),
                }
                sent = Counter()
                stores["s3"].s3_client.meta.events.register("before-send.s3.*", sent.hit)
                times: dict[str, list[float]] = {k: [] for k in stores}
                queries = rng.standard_normal((args.repeat + 5, args.dim)).astype(np.float32)
                for i, q in enumerate(queries):
                    order = list(stores)
                    random.shuffle(order)
                    for name in order:
                        t = time.perf_counter()
                        hits = stores[name].vector_search(q, k=10)
                        if i >= 5:  # warm-up first
                            times[name].append(time.perf_counter() - t)
                        assert len(hits) == 10
                s3_requests = sent.n / len(queries)
                for name, db in stores.items():
                    med = statistics.median(times[name]) * 1000
                    rows.append((name, n, med, s3_requests if name == "s3" else 0.0))
                    db.close()
    finally:
        server.stop()
    print(f"| backend | N | median warm search (ms), d={args.dim}, k=10 | requests per search |")
    print("|---|---|---|---|")
    for name, n, med, req in rows:
        print(f"| {name} | {n:,} | {med:.2f} | {req:g} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nnumpy {np.__version__}, {os.cpu_count()} cpus, load average {load:.2f}")


if __name__ == "__main__":
    main()
