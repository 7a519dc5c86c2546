#!/usr/bin/env python
"""Performance report for the built-in ``s3`` backend of dk_vector_plugins, against a local S3 server.

Everything runs against one S3 server on 127.0.0.1 (moto's standalone server, started through
``tests/s3_server.py``; ``S3_ENDPOINT_URL`` points it at another S3-compatible server instead).
Compared variants are interleaved (shuffled order per repetition), warmed up first, and compared
by their medians, so a noisy shared machine slows both sides alike. Requests are counted with a
botocore ``before-send`` hook (one per HTTP request actually sent).

Checks (defaults: N=100k vectors, d=384, cosine, k=10):

1. warm ``vector_search`` latency on an S3 store vs (the memory backend holding the same data +
   one loopback round trip to the same server, measured as a bare boto3
   ``get_object(IfNoneMatch=etag)`` of a small object answered 304): target <= 1.5x; and requests
   per warm search: target exactly 1;
2. cold open (create the store object on an existing, compacted table + first search) vs plain
   concurrent GETs of every object of the table's segments (boto3, ThreadPoolExecutor of 16, the
   store's concurrency; nothing parsed): target <= 2x. The table is ingested first with
   ``add_vectors`` in batches of 10k and ``compact()``-ed to one segment;
3. vs dataknobs-data 0.11's S3 backend on the same server at N=500 and N=2000 (run in a Python
   >= 3.12 subprocess on the same vectors and queries): target >= 100x faster per query, its
   requests per search beside ours, same top-10 ids;
4. (info) the async store (AsyncDatabaseFactory, aioboto3): warm search latency and requests.

Usage::

    python benchmarks/bench_s3.py [--n 100000] [--dim 384] [--repeat 30] [--quick] [--profile]

The interpreter for check 3 is ``$DKV_DATAKNOBS_PYTHON`` (a Python >= 3.12 with dataknobs-data and
boto3 installed, e.g. a venv's ``bin/python``), else the first ``python3.14`` / ``python3.13`` /
``python3.12`` / ``python3`` on ``PATH`` that can import ``dataknobs_data``; without one, check 3
is reported as skipped (see ``_common.find_dataknobs_python``).
The script always exits 0: it is a report; failed targets are marked FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import gc
import io
import json
import os
import pstats
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import s3_server  # noqa: E402  (tests/s3_server.py: moto's server on 127.0.0.1)
from _common import (  # noqa: E402  (helpers shared by the benchmarks)
    CATEGORIES,
    DK_CHILD_PREAMBLE,
    Report,
    dataknobs_skip_message,
    env_summary,
    find_dataknobs_python,
    fmt_mb,
    fmt_ms,
    hit_ids,
    interleaved,
    log,
    make_ids,
    median,
    run_child,
    run_report,
    spread,
)

from dk_vector_plugins import AsyncDatabaseFactory, DatabaseFactory  # noqa: E402
from dk_vector_plugins.storage.log_format import LATEST, TableLogic  # noqa: E402
from dk_vector_plugins.storage.npy import load_npy  # noqa: E402
from dk_vector_plugins.storage.row_codec import decode_rows  # noqa: E402

BUCKET = "dkv-bench"
CONCURRENCY = 16  # the s3 backend's default ``concurrency``

# ----------------------------------------------------------------------------------------------
# request counting


class RequestCounter:
    """Counts HTTP requests sent by botocore clients (``before-send.s3.*``), by operation."""

    def __init__(self) -> None:
        self.n = 0
        self.by_op: collections.Counter[str] = collections.Counter()
        self.armed = True
        self._lock = threading.Lock()

    def hook(self, event_name: str = "", **kwargs: Any) -> None:
        if self.armed:
            with self._lock:
                self.n += 1
                self.by_op[event_name.rsplit(".", 1)[-1]] += 1

    def attach(self, events: Any) -> RequestCounter:
        events.register("before-send.s3.*", self.hook)
        return self

    def reset(self) -> None:
        with self._lock:
            self.n = 0
            self.by_op.clear()

    def ops(self) -> str:
        return ", ".join(f"{op} {c}" for op, c in sorted(self.by_op.items()))


def top_profile(fn: Callable[[], Any], lines: int = 14, sort: str = "cumulative") -> str:
    """cProfile of one call of ``fn`` (main thread only: time in pool threads shows as waiting)."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats(sort).print_stats(lines)
    text = buf.getvalue()
    start = text.find("   ncalls")
    return (text[start:] if start >= 0 else text).rstrip()


# ----------------------------------------------------------------------------------------------
# stores and references


def s3_store_config(server: s3_server.S3Server, prefix: str) -> dict[str, Any]:
    return {
        "backend": "s3",
        "bucket": BUCKET,
        "prefix": prefix,
        "endpoint_url": server.endpoint_url,
        "create_bucket": True,
        **server.credentials,
        "vector_enabled": True,
        "vector_metric": "cosine",
    }


def ref_client(server: s3_server.S3Server) -> Any:
    """A bare boto3 client configured like the store's (pool of 16, standard retries)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        config=Config(max_pool_connections=max(10, CONCURRENCY), retries={"mode": "standard"}),
        **server.credentials,
    )


def metadata(lo: int, hi: int) -> list[dict[str, Any]]:
    return [{"category": i % CATEGORIES} for i in range(lo, hi)]


def ingest(cfg: dict[str, Any], x: np.ndarray, ids: list[str], batch: int) -> tuple[Any, float, int]:
    """add_vectors in batches (one commit each); returns the store, seconds, segments before compaction."""
    db = DatabaseFactory().create(**cfg)
    t0 = time.perf_counter()
    for s in range(0, len(ids), batch):
        e = min(len(ids), s + batch)
        db.add_vectors(x[s:e], ids=ids[s:e], metadata=metadata(s, e))
    return db, time.perf_counter() - t0, len(db.storage.state.segments)


# ----------------------------------------------------------------------------------------------
# dataknobs-data subprocess

DK_CHILD = DK_CHILD_PREAMBLE + r"""
ids, k, warmup, ncat = spec["ids"], spec["k"], spec["warmup"], spec["categories"]
db = database_factory.create(
    backend="s3", bucket=spec["bucket"], prefix=spec["prefix"], endpoint_url=spec["endpoint_url"],
    region="us-east-1", access_key_id=spec["key"], secret_access_key=spec["secret"],
    vector_enabled=True, vector_metric="cosine",
)
db.connect()
calls = collections.Counter()
db.s3_client.meta.events.register(
    "before-send.s3.*", lambda event_name, **kw: calls.update([event_name.rsplit(".", 1)[-1]])
)
t0 = time.perf_counter()
db.create_batch([
    Record({"embedding": VectorField(x[i]), "category": i % ncat}, storage_id=ids[i])
    for i in range(len(ids))
])
build = time.perf_counter() - t0
build_requests = sum(calls.values())
for w in range(warmup):
    db.vector_search(qs[w % len(qs)], vector_field="embedding", k=k, metric="cosine")
times, out_ids, out_scores, per_search = [], [], [], []
for q in qs:
    calls.clear()
    t0 = time.perf_counter()
    res = db.vector_search(q, vector_field="embedding", k=k, metric="cosine")
    times.append(time.perf_counter() - t0)
    per_search.append(dict(calls))
    out_ids.append([r.record.id for r in res])
    out_scores.append([float(r.score) for r in res])
count = db.count()
db.clear()
db.close()
print(json.dumps({
    "version": getattr(dataknobs_data, "__version__", "?"),
    "python": sys.version.split()[0],
    "count": count,
    "build_s": build,
    "build_requests": build_requests,
    "max_workers": getattr(db, "max_workers", None),
    "times_s": times,
    "median_s": float(np.median(times)),
    "requests": per_search,
    "ids": out_ids,
    "scores": out_scores,
}))
"""


def run_dataknobs(
    py: str,
    server: s3_server.S3Server,
    x: np.ndarray,
    qs: np.ndarray,
    ids: list[str],
    k: int,
    warmup: int,
) -> dict[str, Any]:
    spec = {
        "ids": ids,
        "k": k,
        "warmup": warmup,
        "categories": CATEGORIES,
        "bucket": BUCKET,
        "prefix": f"dk-records-{len(ids)}-{uuid.uuid4().hex[:8]}/",
        "endpoint_url": server.endpoint_url,
        "key": server.credentials.get("aws_access_key_id", "testing"),
        "secret": server.credentials.get("aws_secret_access_key", "testing"),
    }
    return run_child(py, DK_CHILD, x, qs, spec, prefix="dkv_bench_s3_", timeout=7200)


def cold_breakdown(server: s3_server.S3Server, client: Any, keys: list[str], t_plain: float) -> str:
    """The CPU steps of a cold open, timed one by one on the bytes of the table's segment objects.

    Uses the store's own parsers (``decode_rows`` for ``*.rows.jsonl``, ``load_npy`` for
    ``*.npy``) on bytes fetched beforehand: what a cold open adds on top of the plain GETs.
    """
    parts = [f"plain GETs {fmt_ms(t_plain)}"]
    ts = []
    for _ in range(3):
        t0 = time.perf_counter()
        ref_client(server)
        ts.append(time.perf_counter() - t0)
    parts.append(f"boto3 client creation {fmt_ms(median(ts))}")
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        client.head_bucket(Bucket=BUCKET)
        ts.append(time.perf_counter() - t0)
    parts.append(
        f"4 small sequential requests (bucket check, LATEST.json, manifest probe, 304) ~ 4 x {fmt_ms(median(ts))}"
    )
    for key in keys:
        data = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        kind = key.rsplit("/", 1)[-1].split(".", 1)[-1]
        if kind.endswith("rows.jsonl"):
            fn: Callable[[], Any] = lambda data=data, key=key: decode_rows(data, key)  # noqa: E731
            lines = data.count(b"\n")
            what = f"decode_rows({fmt_mb(len(data))}, {lines:,} JSON lines)"
        elif kind.endswith(".npy"):
            fn = lambda data=data: load_npy(data)  # noqa: E731
            what = f"load_npy({fmt_mb(len(data))})"
        else:
            fn = lambda data=data: json.loads(data)  # noqa: E731
            what = f"json.loads {kind} ({fmt_mb(len(data))})"
        ts = []
        for _ in range(3):
            gc.collect()
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        parts.append(f"{what} {fmt_ms(median(ts))}")
    return "; ".join(parts)


def fmt_requests(per_search: list[dict[str, int]]) -> str:
    totals = [sum(d.values()) for d in per_search]
    ops: collections.Counter[str] = collections.Counter()
    for d in per_search:
        ops.update(d)
    n = max(1, len(per_search))
    detail = ", ".join(f"{op} {c / n:g}" for op, c in sorted(ops.items()))
    return f"{median([float(t) for t in totals]):g} ({detail})"


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="vectors in the store (default 100000)")
    ap.add_argument("--dim", type=int, default=None, help="dimension (default 384)")
    ap.add_argument("--repeat", type=int, default=None, help="timed reps of warm searches (default 30)")
    ap.add_argument("--cold-repeat", type=int, default=None, help="timed cold opens (default 5)")
    ap.add_argument("--batch", type=int, default=10_000, help="add_vectors batch (one commit each)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--dk-n", type=int, nargs="+", default=None, help="store sizes vs dataknobs (default 500 2000)"
    )
    ap.add_argument("--dk-queries", type=int, default=None, help="timed dataknobs queries (default 5)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of some seconds")
    ap.add_argument("--profile", action="store_true", help="always print cProfiles (else only on FAIL)")
    args = ap.parse_args(argv)

    q = args.quick
    n = args.n or (5_000 if q else 100_000)
    dim = args.dim or (64 if q else 384)
    repeat = args.repeat or (10 if q else 30)
    cold_repeat = args.cold_repeat or (3 if q else 5)
    dk_ns = [min(v, n) for v in (args.dk_n or ([100, 300] if q else [500, 2000]))]
    dk_queries = args.dk_queries or (2 if q else 5)
    batch = min(args.batch, 1_000) if q else args.batch
    k = args.k
    warmup = 3 if q else 5

    t_start = time.perf_counter()
    rep = Report()
    try:
        load = os.getloadavg()
        rep.note(f"loadavg at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cpus")
    except OSError:
        pass
    if q:
        rep.note("quick mode: tiny sizes; the targets are meant for the full size")

    import boto3
    from botocore.exceptions import ClientError

    server = s3_server.external()
    started = server is None
    if server is None:
        log("starting moto's S3 server on 127.0.0.1 (tests/s3_server.py)")
        server = s3_server.start()
    rep.note(
        f"S3 server: {server.endpoint_url} "
        + ("(moto, tests/moto_locked_server.py: requests served one at a time)" if started else "(external)")
    )
    # Counts the requests of every boto3 client created from now on (cold opens create theirs).
    session_counter = RequestCounter().attach(boto3._get_default_session().events)
    session_counter.armed = False
    try:
        _run(
            args,
            rep,
            server,
            session_counter,
            ClientError,
            n,
            dim,
            repeat,
            cold_repeat,
            dk_ns,
            dk_queries,
            batch,
            k,
            warmup,
        )
    finally:
        if started:
            server.stop()
    runtime = time.perf_counter() - t_start
    header = (
        f"## dk_vector_plugins s3 backend vs local moto S3: N={n}, d={dim}, cosine, k={k}, "
        f"repeat={repeat}, cold-repeat={cold_repeat} (medians of interleaved runs)"
    )
    rep.print(header, env_summary(), runtime)
    return 0


def _run(
    args: Any,
    rep: Report,
    server: s3_server.S3Server,
    session_counter: RequestCounter,
    ClientError: Any,
    n: int,
    dim: int,
    repeat: int,
    cold_repeat: int,
    dk_ns: list[int],
    dk_queries: int,
    batch: int,
    k: int,
    warmup: int,
) -> None:
    rng = np.random.default_rng(args.seed)
    log(f"generating N={n} d={dim} float32 vectors")
    x = rng.standard_normal((n, dim), dtype=np.float32)
    queries = rng.standard_normal((max(repeat, dk_queries, cold_repeat) + warmup + 4, dim), dtype=np.float32)
    ids = make_ids(n)
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}/main"
    cfg = s3_store_config(server, prefix)
    client = ref_client(server)

    def qv(r: int) -> np.ndarray:
        return queries[r % len(queries)]

    # ---- ingest ---------------------------------------------------------------------------------
    log(f"ingest: add_vectors of {n} x {dim} in batches of {batch}, then compact()")
    writer, ingest_s, segs_before = ingest(cfg, x, ids, batch)
    t0 = time.perf_counter()
    writer.compact()
    compact_s = time.perf_counter() - t0
    segments = list(writer.storage.state.segments)
    writer.close()
    del writer
    gc.collect()
    keys = [f"{prefix}/{key}" for e in segments for key in TableLogic.segment_keys(e)]
    seg_bytes = sum(int(e["bytes"]) for e in segments)
    rep.add(
        "2a. ingest: add_vectors x batches + compact()",
        f"{len(segments)} segment(s), {len(keys)} objects",
        f"{segs_before} segments before compact",
        "-",
        "1 segment",
        len(segments) == 1,
    )
    rep.note(
        f"ingest: {n // batch + (n % batch > 0)} add_vectors calls {ingest_s:.1f} s "
        f"({n / ingest_s:,.0f} vectors/s), compact() {compact_s:.1f} s; segment bytes {fmt_mb(seg_bytes)}"
    )

    # ---- check 2: cold open vs plain GETs -------------------------------------------------------
    log(f"check 2: {cold_repeat} interleaved cold opens vs plain GETs of {len(keys)} objects")
    cold_counts: list[int] = []
    cold_ops: list[str] = []

    def cold(r: int) -> Any:
        session_counter.reset()
        session_counter.armed = True
        db = DatabaseFactory().create(**cfg)
        hits = db.vector_search(qv(r), k=k)
        session_counter.armed = False
        return db, hits

    def plain(r: int) -> int:
        def get(key: str) -> int:
            return len(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())

        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            return sum(pool.map(get, keys))

    def after(name: str, res: Any) -> Any:
        if name != "cold":
            return res
        db, hits = res
        cold_counts.append(session_counter.n)
        cold_ops.append(session_counter.ops())
        db.close()  # untimed; closed at once so no loaded store is alive during the next cold open
        del db, res
        gc.collect()
        return hits

    t2, r2 = interleaved({"cold": cold, "plain": plain}, cold_repeat, 1, args.seed, after)
    t_cold, t_plain = median(t2["cold"]), median(t2["plain"])
    ratio2 = t_cold / t_plain
    got_bytes = r2["plain"][0]
    rep.add(
        f"2. cold open + first search, {len(segments)} segment(s), {fmt_mb(got_bytes)}",
        fmt_ms(t_cold),
        f"{fmt_ms(t_plain)} (plain GETs x{CONCURRENCY} threads)",
        f"{ratio2:.2f}x",
        "<= 2x",
        ratio2 <= 2,
    )
    rep.note(
        f"2: cold {spread(t2['cold'])}; plain {spread(t2['plain'])} "
        f"({got_bytes / t_plain / 2**20:,.0f} MiB/s); cold-open requests {cold_counts[-1]} ({cold_ops[-1]}: bucket check, LATEST.json, probe of the "
        "next manifest, the segment objects, and the first search's 304 check)"
    )
    if args.profile or ratio2 > 2:
        rep.note("2: where a cold open's time goes: " + cold_breakdown(server, client, keys, t_plain))
    if args.profile:

        def one_cold() -> None:
            DatabaseFactory().create(**cfg).vector_search(qv(0), k=k)

        rep.note(
            "2: cProfile of one cold open (main thread; pool threads show as waiting):\n"
            + top_profile(one_cold, sort="tottime")
        )
    gc.collect()
    warm = DatabaseFactory().create(**cfg)  # the warm store of checks 1 and 4 (loaded, untimed)

    # ---- check 1: warm search vs memory + one round trip -------------------------------------------
    log("check 1: memory store with the same data")
    mem = DatabaseFactory().create(backend="memory", vector_enabled=True, vector_metric="cosine")
    mem.add_vectors(x, ids=ids, metadata=metadata(0, n))
    latest_key = f"{prefix}/{LATEST}"
    etag = client.head_object(Bucket=BUCKET, Key=latest_key)["ETag"]
    warm_counter = RequestCounter().attach(warm.s3_client.meta.events)
    per_call: list[int] = []
    statuses: collections.Counter[int] = collections.Counter()

    def s3_search(r: int) -> Any:
        c0 = warm_counter.n
        hits = warm.vector_search(qv(r), k=k)
        per_call.append(warm_counter.n - c0)
        return hits

    def rtt(r: int) -> None:
        try:
            client.get_object(Bucket=BUCKET, Key=latest_key, IfNoneMatch=etag)
            statuses[200] += 1
        except ClientError as e:
            statuses[int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))] += 1

    log(f"check 1: {repeat} interleaved reps of s3 / memory / round trip (warmup {warmup})")
    warm_counter.reset()
    t1, r1 = interleaved(
        {"s3": s3_search, "memory": lambda r: mem.vector_search(qv(r), k=k), "rtt": rtt},
        repeat,
        warmup,
        args.seed + 1,
    )
    t_s3, t_mem, t_rtt = median(t1["s3"]), median(t1["memory"]), median(t1["rtt"])
    ratio1 = t_s3 / (t_mem + t_rtt)
    rep.add(
        f"1. warm search, N={n}, d={dim}, k={k}",
        fmt_ms(t_s3),
        f"{fmt_ms(t_mem + t_rtt)} (memory {fmt_ms(t_mem)} + 304 GET {fmt_ms(t_rtt)})",
        f"{ratio1:.2f}x",
        "<= 1.5x",
        ratio1 <= 1.5,
    )
    rep.add(
        "1b. requests per warm search",
        f"{min(per_call)}..{max(per_call)} ({warm_counter.ops()} over {len(per_call)} searches)",
        "-",
        "-",
        "exactly 1",
        min(per_call) == max(per_call) == 1,
    )
    same1 = sum(hit_ids(a) == hit_ids(b) for a, b in zip(r1["s3"], r1["memory"]))
    rep.add(
        "1c. top-k ids s3 == memory",
        f"{same1}/{repeat} queries",
        "memory backend",
        "-",
        "all",
        same1 == repeat,
    )
    rep.note(
        f"1: s3 {spread(t1['s3'])}; memory {spread(t1['memory'])}; 304 GET {spread(t1['rtt'])}; "
        f"bare GET statuses {dict(statuses)}; s3 - memory = {fmt_ms(t_s3 - t_mem)}"
    )
    if args.profile or ratio1 > 1.5:
        rep.note(
            "1: cProfile of 20 warm s3 searches:\n"
            + top_profile(lambda: [warm.vector_search(qv(i), k=k) for i in range(20)])
        )

    # ---- check 4 (info): async warm search --------------------------------------------------------
    log("async: AsyncDatabaseFactory store on the same table")

    async def async_part() -> tuple[dict[str, list[float]], RequestCounter, list[int], int]:
        adb = AsyncDatabaseFactory().create(**cfg)
        try:
            first = await adb.vector_search(qv(0), k=k)  # opens the client and loads the table
            actr = RequestCounter().attach(adb.s3_client.meta.events)
            acalls: list[int] = []
            times: dict[str, list[float]] = {"async": [], "sync": []}
            order = np.random.default_rng(args.seed + 2)
            for r in range(-warmup, repeat):
                if r == 0:
                    actr.reset()
                for j in order.permutation(2):
                    t0 = time.perf_counter_ns()
                    if j == 0:
                        c0 = actr.n
                        await adb.vector_search(qv(r), k=k)
                        dt = time.perf_counter_ns() - t0
                        if r >= 0:
                            acalls.append(actr.n - c0)
                    else:
                        warm.vector_search(qv(r), k=k)
                        dt = time.perf_counter_ns() - t0
                    if r >= 0:
                        times["async" if j == 0 else "sync"].append(dt * 1e-9)
            return times, actr, acalls, len(first)
        finally:
            await adb.close()

    try:
        ta, actr, acalls, nfirst = asyncio.run(async_part())
        t_as, t_sy = median(ta["async"]), median(ta["sync"])
        rep.add(
            "4. async warm search (aioboto3) vs sync",
            fmt_ms(t_as),
            f"{fmt_ms(t_sy)} (sync s3)",
            f"{t_as / t_sy:.2f}x",
            "info",
            None,
        )
        rep.add(
            "4b. async requests per warm search",
            f"{min(acalls)}..{max(acalls)} ({actr.ops()} over {len(acalls)} searches)",
            "-",
            "-",
            "exactly 1",
            min(acalls) == max(acalls) == 1 and nfirst == k,
        )
        rep.note(f"4: async {spread(ta['async'])}; sync {spread(ta['sync'])}")
    except Exception as e:
        rep.add("4. async warm search", "-", f"error: {type(e).__name__}", "-", "info", False)
        rep.note(f"4: {type(e).__name__}: {e}")

    warm.close()
    mem.clear()
    gc.collect()

    # ---- check 3: dataknobs-data S3 backend ---------------------------------------------------------
    py, tried = find_dataknobs_python()
    if py is None:
        msg = dataknobs_skip_message(tried, needs="dataknobs-data and boto3")
        print(msg)
        for dn in dk_ns:
            rep.add(f"3. vs dataknobs-data s3, N={dn}, per query", "-", "skipped", "-", ">= 100x", None)
            rep.rows[-1] = (*rep.rows[-1][:5], "skipped")
        rep.note("3: " + msg)
        return
    qdk = np.ascontiguousarray(queries[warmup : warmup + dk_queries])
    for dn in dk_ns:
        label = f"3. vs dataknobs-data s3, N={dn}, per query"
        small_cfg = s3_store_config(server, f"bench-{run_id}/dk-cmp-{dn}")
        small = DatabaseFactory().create(**small_cfg)
        small.add_vectors(x[:dn], ids=ids[:dn], metadata=metadata(0, dn))
        sctr = RequestCounter().attach(small.s3_client.meta.events)
        scalls: list[int] = []

        def ours(r: int, small: Any = small, sctr: RequestCounter = sctr, scalls: list[int] = scalls) -> Any:
            c0 = sctr.n
            hits = small.vector_search(qdk[r % len(qdk)], k=k)
            scalls.append(sctr.n - c0)
            return hits

        # ours before and after the subprocess (it cannot be interleaved call by call): pooled median
        t_a, _ = interleaved({"ours": ours}, repeat, warmup, args.seed + 3)
        log(f"check 3: dataknobs-data s3 via {py} ({dk_queries} queries at N={dn})")
        try:
            dk: dict[str, Any] | None = run_dataknobs(py, server, x[:dn], qdk, ids[:dn], k, warmup=1)
        except Exception as e:
            dk = None
            rep.add(label, "-", f"error: {type(e).__name__}", "-", ">= 100x", False)
            rep.note(f"3 (N={dn}): {e}")
        t_b, _ = interleaved({"ours": ours}, repeat, 1, args.seed + 4)
        if dk is not None:
            t_ours = median(t_a["ours"] + t_b["ours"])
            speed = dk["median_s"] / t_ours
            rep.add(
                label,
                fmt_ms(t_ours),
                f"{fmt_ms(dk['median_s'])} (dataknobs {dk['version']})",
                f"{speed:,.0f}x",
                ">= 100x",
                speed >= 100,
            )
            ours_ids = [hit_ids(small.vector_search(v, k=k)) for v in qdk]
            same = sum(a == b for a, b in zip(ours_ids, dk["ids"]))
            rep.add(
                f"3b. N={dn}: requests per search; top-{k} ids == dataknobs",
                f"{median([float(c) for c in scalls]):g}; {same}/{len(qdk)} same ids",
                f"{fmt_requests(dk['requests'])}",
                "-",
                "ours 1; all ids",
                max(scalls) == 1 and same == len(qdk) and dk["count"] == dn,
            )
            rep.note(
                f"3 (N={dn}): dataknobs {spread(dk['times_s'])}, create_batch {dk['build_s']:.1f} s in "
                f"{dk['build_requests']} requests, python {dk['python']}, max_workers {dk['max_workers']}; "
                f"ours {spread(t_a['ours'] + t_b['ours'])}"
            )
        small.close()
        del small
        gc.collect()


if __name__ == "__main__":
    run_report(main)
