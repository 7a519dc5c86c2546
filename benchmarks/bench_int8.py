#!/usr/bin/env python
"""Performance report for the int8 scan of the search kernel, measured side by side.

The same :class:`~dk_vector_plugins.index.VectorIndex` is searched with ``exact="int8"`` (int8
codes, certified bounds, exact re-rank of the rows the bounds keep) and ``exact="float32"``
(today's float32 scan), next to a bare numpy reference (float32 matrix @ q, argpartition, sort
of the k winners; for a batch one matrix product and one argpartition per query). The variants
are interleaved in a shuffled order on each repetition, warmed up first (the int8 codes are
built then), and compared by their medians, so a noisy shared machine slows all of them alike.
Results of int8 and float32 are checked identical (rows, order, scores bit for bit) on every
timed call.

Reported:

1. latency ratios for N = 1M and 100k unit vectors, d = 384, k = 10: single query, batches of
   32 and 256, and a filter keeping 10% of the rows;
2. rows re-ranked per query (median, p99) for random unit vectors and for a Gaussian mixture;
3. what ``exact="auto"`` picks for each case;
4. the int8 scan alone with numkong and with simsimd (when installed) against numpy float32;
5. per-row against per-dimension scales: the average bound radius ``‖q̂‖·r + ‖q - q̂‖·‖x‖``
   (smaller is tighter) on random, anisotropic and clustered data;
6. bytes held: float32 matrix against codes (+ per-row scale, residual, norms);
6b. for information, the single query again with every call made after 150 ms idle: OpenBLAS's
   threads keep spinning for about 50-100 ms after a threaded BLAS call (the numpy reference's,
   the float32 kernel's) and take a core from whatever runs next, which slows the int8 scan's
   two threads in the interleaved runs (about 1.5x at 1M) but not a BLAS call (its threads are
   the spinning ones). Idle starts also wake the reference's threads cold, so neither figure is
   "the" ratio: both are reported;
7. S3 (moto's server on 127.0.0.1, as the tests start it; ``S3_ENDPOINT_URL`` with
   ``TEST_S3=true`` for another): a cold open and first search of a table of ``--s3-rows`` unit
   vectors (one compacted segment, its int8 codes stored) with ``load_vectors="codes"`` (the
   codes on open, the re-ranked rows by ranged GETs) against ``load_vectors=True`` (the vectors
   on open): bytes downloaded, requests, latency of the open, of the first search and of a next
   one, as ratios; results checked identical. Interleaved, ``--s3-repeat`` cold opens each.

Usage::

    python benchmarks/bench_int8.py [--sizes 1000000,100000] [--dim 384] [--repeat 15] [--quick]
        [--s3-rows 100000] [--s3-repeat 3]      (--s3-rows 0: no S3 check)

The script always exits 0: it is a report; failed targets are marked FAIL.
"""

from __future__ import annotations

import argparse
import gc
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from _common import Report, env_summary, fmt_mb, fmt_ms, interleaved, log, median, set_log_tag

from dk_vector_plugins import DatabaseFactory, SyncDatabase, quant
from dk_vector_plugins.index import VectorIndex
from dk_vector_plugins.kernel import TopK, rank_ids

if TYPE_CHECKING:
    from s3_server import S3Server

K = 10
#: The cold-open variants of the S3 check: ``load_vectors`` values.
S3_VARIANTS: dict[str, bool | str] = {"codes": "codes", "vectors": True}


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 1 << 16):  # chunks: no float64 temporaries of the whole matrix
        x = rng.standard_normal((min(1 << 16, n - s), d), dtype=np.float32)
        out[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def mixture_rows(
    rng: np.random.Generator, n: int, d: int, clusters: int = 64, spread: float = 0.35
) -> np.ndarray:
    """A Gaussian mixture (clustered data: the bound is looser relative to the score gaps)."""
    centers = unit_rows(rng, clusters, d)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 1 << 16):
        m = min(1 << 16, n - s)
        x = centers[rng.integers(0, clusters, m)] + spread * rng.standard_normal(
            (m, d), dtype=np.float32
        ) / np.sqrt(d)
        out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def numpy_batch(m: np.ndarray, qs: np.ndarray, k: int) -> list[np.ndarray]:
    """Bare numpy: one product for the batch, one argpartition and one sort of k per query."""
    qn = qs / np.linalg.norm(qs, axis=1, keepdims=True)
    scores = m @ qn[0] if len(qs) == 1 else qn @ m.T
    scores = scores.reshape(len(qs), -1)
    out = []
    for row in scores:
        top = np.argpartition(-row, k - 1)[:k]
        out.append(top[np.argsort(-row[top], kind="stable")])
    return out


def same(a: list[TopK], b: list[TopK]) -> bool:
    return all(
        np.array_equal(x.rows, y.rows) and np.array_equal(x.scores, y.scores)
        for x, y in zip(a, b, strict=True)
    )


def latency_checks(
    report: Report,
    n: int,
    d: int,
    reps: int,
    batches: list[int],
    rng: np.random.Generator,
    stats: dict[str, Any],
) -> None:
    log(f"building {n} x {d} unit vectors")
    mat = unit_rows(rng, n, d)
    index = VectorIndex.from_matrix(mat)
    ids = rank_ids([f"r{i:08d}" for i in range(n)])
    t0 = time.perf_counter()
    index._parts[0].int8_codes()  # what the first int8 search does
    build = time.perf_counter() - t0
    codes = index._parts[0].codes
    assert codes is not None
    report.add(f"N={n}: building the int8 codes (once)", fmt_ms(build), "", "", "info", None)
    report.add(
        f"N={n}: bytes held, codes vs float32 matrix",
        fmt_mb(codes.nbytes),
        fmt_mb(mat.nbytes),
        f"{codes.nbytes / mat.nbytes:.2f}x",
        "info",
        None,
    )
    cases: list[tuple[str, int, np.ndarray | None]] = [
        (f"batch {b}" if b > 1 else "single query", b, None) for b in batches
    ]
    flt = rng.random(n) < 0.10
    cases.append(("filter 10%", 1, flt))
    for label, b, mask in cases:
        creps = max(3, reps // max(1, b // 8)) if b > 1 else reps
        queries = [unit_rows(rng, b, d) for _ in range(creps + 2)]
        sub = mat[flt] if mask is not None else mat
        reranked: list[int] = []
        mismatches = 0

        def v_int8(r: int, qs: list[np.ndarray] = queries, m: Any = mask) -> list[TopK]:
            return index.search(qs[r], K, "cosine", ids, m, exact="int8")

        def v_f32(r: int, qs: list[np.ndarray] = queries, m: Any = mask) -> list[TopK]:
            return index.search(qs[r], K, "cosine", ids, m, exact="float32")

        def v_np(r: int, qs: list[np.ndarray] = queries, m: np.ndarray = sub) -> Any:
            return numpy_batch(m, qs[r], K)

        log(f"N={n} {label}: {creps} repetitions")
        times, results = interleaved({"int8": v_int8, "float32": v_f32, "numpy": v_np}, creps, 1, seed=n + b)
        for a, c in zip(results["int8"], results["float32"], strict=True):
            if not same(a, c):
                mismatches += 1
            reranked.extend(t.reranked or 0 for t in a)
        t8, t32, tnp = median(times["int8"]), median(times["float32"]), median(times["numpy"])
        auto = index.search(queries[0], K, "cosine", ids, mask, exact="auto")[0].exact  # what auto ran
        report.add(
            f"N={n} {label}: int8 vs numpy float32",
            fmt_ms(t8),
            fmt_ms(tnp),
            f"{t8 / tnp:.2f}x",
            "info",
            None,
        )
        report.add(
            f"N={n} {label}: int8 vs float32 kernel",
            fmt_ms(t8),
            fmt_ms(t32),
            f"{t8 / t32:.2f}x",
            f"auto picks {auto}",
            None,
        )
        report.add(
            f"N={n} {label}: results int8 == float32 (bit for bit)",
            f"{len(results['int8']) - mismatches}/{len(results['int8'])}",
            "",
            "",
            "all",
            mismatches == 0,
        )
        rr = np.asarray(reranked)
        report.add(
            f"N={n} {label}: rows re-ranked per query (median, p99)",
            f"{np.median(rr):.0f}, {np.percentile(rr, 99):.0f}",
            f"of {int(np.count_nonzero(mask)) if mask is not None else n}",
            "",
            "info",
            None,
        )
        stats[f"{n}/{label}"] = (t8, t32, tnp)
        if label == "single query":
            idle = idle_starts({"int8": v_int8, "numpy": v_np}, creps, seed=n)
            report.add(
                f"N={n} single query, each call after {IDLE_S * 1000:.0f} ms idle: int8 vs numpy float32",
                fmt_ms(idle["int8"]),
                fmt_ms(idle["numpy"]),
                f"{idle['int8'] / idle['numpy']:.2f}x",
                "info",
                None,
            )


#: The pause before each call of :func:`idle_starts`: longer than OpenBLAS's threads spin.
IDLE_S = 0.15


def idle_starts(variants: dict[str, Callable[[int], object]], reps: int, seed: int) -> dict[str, float]:
    """Median seconds of each variant when every call follows :data:`IDLE_S` of idle time (in a
    shuffled order per repetition): no thread of an earlier call is still spinning."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    rng = np.random.default_rng(seed)
    for r in range(reps):
        for j in rng.permutation(len(variants)):
            name = list(variants)[j]
            time.sleep(IDLE_S)
            t0 = time.perf_counter()
            variants[name](r)
            times[name].append(time.perf_counter() - t0)
    return {name: median(ts) for name, ts in times.items()}


def reranked_on_mixture(report: Report, n: int, d: int, rng: np.random.Generator) -> None:
    log(f"N={n}: Gaussian mixture, rows re-ranked")
    mat = mixture_rows(rng, n, d)
    index = VectorIndex.from_matrix(mat)
    ids = rank_ids([f"r{i:08d}" for i in range(n)])
    qs = mixture_rows(rng, 64, d)
    got = [index.search(q[None, :], K, "cosine", ids, exact="int8")[0].reranked or 0 for q in qs]
    ref = index.search(qs[:8], K, "cosine", ids, exact="float32")
    same_ = same(index.search(qs[:8], K, "cosine", ids, exact="int8"), ref)
    rr = np.asarray(got)
    report.add(
        f"N={n} mixture (64 clusters): rows re-ranked per query (median, p99)",
        f"{np.median(rr):.0f}, {np.percentile(rr, 99):.0f}",
        f"of {n}",
        "",
        "identical" if same_ else "DIFFERENT",
        same_,
    )


def library_scan(report: Report, n: int, d: int, reps: int, rng: np.random.Generator) -> None:
    """The int8 scan alone (one query): numkong split over the cores, simsimd's own threads."""
    codes = rng.integers(-127, 128, size=(n, d), dtype=np.int8)
    mat = rng.standard_normal((n, d), dtype=np.float32)
    qc = rng.integers(-127, 128, size=(1, d), dtype=np.int8)
    qf = rng.standard_normal(d, dtype=np.float32)
    out = np.empty((1, n), dtype=np.float32)
    variants: dict[str, Any] = {
        "numkong": lambda r: quant.int8_dots(qc, codes, out),
        "numpy float32": lambda r: mat @ qf,
    }
    try:
        import simsimd

        variants["simsimd"] = lambda r: simsimd.cdist(
            codes, qc, metric="dot", threads=quant._threads(), out_dtype="float32"
        )
    except ImportError:
        report.note("simsimd is not installed: its scan is not measured (pip install simsimd)")
    times, _ = interleaved(variants, reps, 2, seed=7)
    base = median(times["numpy float32"])
    for name in variants:
        if name == "numpy float32":
            continue
        t = median(times[name])
        report.add(
            f"int8 scan {n} x {d}, one query: {name}",
            fmt_ms(t),
            fmt_ms(base),
            f"{t / base:.2f}x",
            "info",
            None,
        )


def scale_choice(report: Report, d: int, rng: np.random.Generator) -> None:
    """Average bound radius of per-row against per-dimension scales (same queries)."""
    n = 50_000
    datasets = {
        "random unit": unit_rows(rng, n, d),
        "anisotropic": unit_rows(rng, n, d) * np.exp(rng.standard_normal(d)).astype(np.float32),
        "mixture": mixture_rows(rng, n, d),
    }
    for name, x in datasets.items():
        q = x[rng.integers(0, n, 32)] + 0.1 * rng.standard_normal((32, d), dtype=np.float32) / np.sqrt(d)
        # per row: the codes of quant
        rows = quant.quantize_rows(x)
        qc = quant.quantize_queries(q.astype(np.float32))
        nx = np.sqrt(rows.sqnorms)
        r_row = np.mean(qc.qhat_norm[:, None] * rows.residuals[None, :] + qc.err_norm[:, None] * nx[None, :])
        # per dimension: s_j = max_i |x_ij| / 127; x·q = c·(s ⊙ q), the query side quantized per row
        s = np.abs(x).max(axis=0).astype(np.float64) / 127.0
        c = np.clip(np.rint(x / s), -127, 127)
        rx = np.linalg.norm(x - c * s, axis=1)
        p = q.astype(np.float64) * s
        sp = np.abs(p).max(axis=1) / 127.0
        pq = np.clip(np.rint(p / sp[:, None]), -127, 127) * sp[:, None]
        ep = np.linalg.norm(p - pq, axis=1)
        # |x·q - c·p̂| ≤ r_x·‖q‖ + ‖c‖·‖p - p̂‖
        r_dim = np.mean(
            np.linalg.norm(q, axis=1)[:, None] * rx[None, :]
            + ep[:, None] * np.linalg.norm(c, axis=1)[None, :]
        )
        report.add(
            f"bound radius, {name}: per-row vs per-dimension scales",
            f"{r_row:.4f}",
            f"{r_dim:.4f}",
            f"{r_row / r_dim:.2f}x",
            "per-row <= 1x",
            bool(r_row <= r_dim),
        )


class Downloads:
    """What one botocore client downloads: ``GetObject`` responses (``after-call``) and their bytes."""

    def __init__(self, events: Any) -> None:
        self.requests = 0
        self.bytes = 0
        self._lock = threading.Lock()
        events.register("after-call.s3.GetObject", self._on_get)

    def _on_get(self, parsed: Any = None, **_: Any) -> None:
        with self._lock:
            self.requests += 1
            self.bytes += int((parsed or {}).get("ContentLength") or 0)

    def snapshot(self) -> tuple[int, int]:
        """(requests, bytes) so far."""
        with self._lock:
            return self.requests, self.bytes


def counted_store(config: dict[str, Any]) -> tuple[SyncDatabase, Downloads]:
    """A sync S3 store whose downloads are counted from its construction (its cold open) on."""
    import boto3
    from s3_server import clients_from  # tests/ is on the path (s3_cold_open puts it there)

    session = boto3.Session()
    downloads = Downloads(session.events)
    with clients_from(session):
        db = DatabaseFactory().create(**config)
    return db, downloads


def s3_cold_open(report: Report, n: int, d: int, reps: int, rng: np.random.Generator) -> None:
    """Cold open + first search on S3: ``load_vectors="codes"`` against ``load_vectors=True``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import s3_server  # tests/s3_server.py: moto's server on 127.0.0.1

    server = s3_server.external()
    started = server is None
    if server is None:
        log("starting moto's S3 server on 127.0.0.1 (tests/s3_server.py)")
        server = s3_server.start()
    try:
        cfg: dict[str, Any] = {"backend": "s3", **server.config(bucket="dkv-bench-int8")}
        log(f"S3: writing {n} x {d} unit vectors (one compacted segment, its codes stored)")
        writer = DatabaseFactory().create(**cfg)
        step = 50_000
        for s0 in range(0, n, step):
            m = min(step, n - s0)
            writer.add_vectors(unit_rows(rng, m, d), ids=[f"r{i:08d}" for i in range(s0, s0 + m)])
        writer.compact()
        writer.close()
        del writer
        gc.collect()
        queries = unit_rows(rng, 2 * reps, d)

        def cold(variant: str, r: int) -> dict[str, Any]:
            gc.collect()
            t0 = time.perf_counter()
            db, downloads = counted_store({**cfg, "load_vectors": S3_VARIANTS[variant]})
            t1 = time.perf_counter()
            opened = downloads.snapshot()
            first = db.vector_search(queries[2 * r], k=K)
            t2 = time.perf_counter()
            searched = downloads.snapshot()
            t3 = time.perf_counter()
            nxt = db.vector_search(queries[2 * r + 1], k=K)
            t4 = time.perf_counter()
            db.close()
            return {
                "open": t1 - t0,
                "first": t2 - t1,
                "next": t4 - t3,
                "open_bytes": opened[1],
                "bytes": searched[1],
                "requests": searched[0],
                "hits": [[(h.id, h.score) for h in hits] for hits in (first, nxt)],
                "exact": first[0].metadata.get("exact"),
            }

        log("S3: warm-up (one cold open of each variant, untimed)")
        warm = {v: cold(v, 0) for v in S3_VARIANTS}
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in S3_VARIANTS}
        order = list(S3_VARIANTS)
        shuffle = np.random.default_rng(n)
        for r in range(reps):
            for j in shuffle.permutation(len(order)):
                v = order[j]
                runs[v].append(cold(v, r))
                log(f"S3 cold open {r + 1}/{reps} {v}: {runs[v][-1]['open'] + runs[v][-1]['first']:.2f} s")
        reference = ranged_get_reference(server, cfg["bucket"], cfg["prefix"])
    finally:
        if started:
            server.stop()
    same = all(
        a["hits"] == b["hits"] for a, b in zip(runs["codes"], runs["vectors"], strict=True)
    ) and warm["codes"]["hits"] == warm["vectors"]["hits"]
    c, v = runs["codes"], runs["vectors"]

    def med(rs: list[dict[str, Any]], key: str) -> float:
        return median([float(x[key]) for x in rs])

    label = f"S3 N={n} d={d}, cold open"
    matrix = n * d * 4
    ratio = med(c, "bytes") / med(v, "bytes")
    report.add(
        f"{label} + first search: bytes, codes vs load_vectors=True",
        fmt_mb(med(c, "bytes")),
        fmt_mb(med(v, "bytes")),
        f"{ratio:.2f}x",
        "<= 0.35x" if n >= 100_000 else "info",
        ratio <= 0.35 if n >= 100_000 else None,
    )
    report.add(
        f"{label} + first search: bytes, codes vs the float32 matrix",
        fmt_mb(med(c, "bytes")),
        fmt_mb(matrix),
        f"{med(c, 'bytes') / matrix:.2f}x",
        "info",
        None,
    )
    report.add(
        f"{label} alone: bytes (ids + codes vs ids + vectors + norms)",
        fmt_mb(med(c, "open_bytes")),
        fmt_mb(med(v, "open_bytes")),
        f"{med(c, 'open_bytes') / med(v, 'open_bytes'):.2f}x",
        "info",
        None,
    )
    report.add(
        f"{label} + first search: GET requests",
        f"{med(c, 'requests'):.0f}",
        f"{med(v, 'requests'):.0f}",
        f"{med(c, 'requests') / med(v, 'requests'):.1f}x",
        "info",
        None,
    )
    for key, what in (("open", "open alone"), ("first", "first search"), ("next", "next search (new query)")):
        report.add(
            f"S3 N={n} d={d}: latency of the {what}, codes vs load_vectors=True",
            fmt_ms(med(c, key)),
            fmt_ms(med(v, key)),
            f"{med(c, key) / med(v, key):.2f}x",
            "info",
            None,
        )
    total_c = median([x["open"] + x["first"] for x in c])
    total_v = median([x["open"] + x["first"] for x in v])
    report.add(
        f"{label} + first search: latency, codes vs load_vectors=True",
        fmt_ms(total_c),
        fmt_ms(total_v),
        f"{total_c / total_v:.2f}x",
        f"auto picks {c[0]['exact']} / {v[0]['exact']}",
        None,
    )
    report.add(
        f"S3 N={n} d={d}: one 256 KiB ranged GET of the vectors object vs a small GET",
        fmt_ms(reference[0]),
        fmt_ms(reference[1]),
        f"{reference[0] / reference[1]:.1f}x",
        "info (the server's)",
        None,
    )
    report.add(
        f"S3 N={n} d={d}: results codes == load_vectors=True (ids, order, scores)",
        f"{len(c) + 1}/{len(c) + 1}" if same else "DIFFERENT",
        "",
        "",
        "all",
        same,
    )
    if started:
        report.note(
            "S3 latencies are moto's (tests/moto_locked_server.py): it serves one request at a time "
            "and reads the whole object for a ranged GET (see the reference row), so each of the "
            "codes store's ranged reads costs what reading the vectors object costs there; S3 "
            "answers a ranged GET in about the time of a small GET, 16 at a time (the store's "
            "concurrency). The bytes and requests are the server-independent figures."
        )


def ranged_get_reference(server: S3Server, bucket: str, prefix: str) -> tuple[float, float]:
    """Median seconds of a 256 KiB ranged GET of the table's vectors object and of a GET of
    ``LATEST.json``, with a bare boto3 client on the same server."""
    client = server.client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/segments/")
    keys = [o["Key"] for o in listed.get("Contents", []) if o["Key"].endswith(".f0.npy")]
    ranged: list[float] = []
    small: list[float] = []
    for i in range(5):
        t0 = time.perf_counter()
        client.get_object(Bucket=bucket, Key=keys[-1], Range=f"bytes={i << 18}-{((i + 1) << 18) - 1}")["Body"].read()
        t1 = time.perf_counter()
        client.get_object(Bucket=bucket, Key=f"{prefix}/LATEST.json")["Body"].read()
        t2 = time.perf_counter()
        ranged.append(t1 - t0)
        small.append(t2 - t1)
    return median(ranged), median(small)


def main() -> None:
    set_log_tag("bench_int8")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,100000")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--quick", action="store_true", help="100k rows, few repetitions")
    ap.add_argument(
        "--s3-rows", type=int, default=None, help="rows of the S3 cold-open check (default 100000; 0: none)"
    )
    ap.add_argument("--s3-repeat", type=int, default=3, help="cold opens of each S3 variant")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    reps = args.repeat
    s3_rows = 100_000 if args.s3_rows is None else args.s3_rows
    if args.quick:
        sizes, reps = [100_000], 5
        s3_rows = 20_000 if args.s3_rows is None else args.s3_rows
    batches = [int(b) for b in args.batches.split(",")]
    start = time.perf_counter()
    rng = np.random.default_rng(18)
    report = Report()
    if not quant.available():
        report.note("numkong is not installed: exact='int8' runs the float32 scan (nothing to compare)")
    stats: dict[str, Any] = {}
    for n in sizes:
        latency_checks(report, n, args.dim, reps, batches, rng, stats)
    reranked_on_mixture(report, min(sizes), args.dim, rng)
    library_scan(report, max(sizes), args.dim, reps, rng)
    scale_choice(report, args.dim, rng)
    if s3_rows > 0:
        s3_cold_open(report, s3_rows, args.dim, max(1, args.s3_repeat), rng)
    # the targets: (case, which reference, limit)
    targets = [
        ("1000000/single query", "numpy float32", 2, 0.4),
        ("100000/single query", "numpy float32", 2, 0.6),
        ("1000000/filter 10%", "float32 kernel", 1, 0.5),
        ("100000/filter 10%", "float32 kernel", 1, 0.5),
    ]
    for case, ref, which, limit in targets:
        if case in stats:
            t8 = stats[case][0]
            ratio = t8 / stats[case][which]
            n, label = case.split("/")
            report.add(
                f"N={n} {label}: int8 / {ref}", f"{ratio:.2f}x", "", "", f"<= {limit}x", ratio <= limit
            )
    report.print(
        f"## int8 scan + exact re-rank vs float32 kernel vs numpy (d={args.dim}, k={K}, cosine)",
        env_summary(),
        time.perf_counter() - start,
    )


if __name__ == "__main__":
    main()
