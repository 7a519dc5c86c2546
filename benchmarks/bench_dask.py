#!/usr/bin/env python
"""Performance report for the ``dask`` plugin (``executor="dask"``), in one run.

1. Throughput: a file store of N=1M x d=384 (ingested with ``add_vectors`` in batches of 100k,
   then compacted into one segment, which the plugin searches as parts of ``shard_rows`` rows),
   a batch of 1000 queries, k=10, cosine: the single-process search (``executor="local"``) vs
   the same store searched by a ``distributed.LocalCluster`` of W worker processes with 1 thread
   each (default W=2). Timed ``--reps`` times each, interleaved, after one untimed warm-up (for
   Dask: the cold load of the parts onto the workers, reported on its own). Ratio = local time /
   Dask time (> 1: the cluster is faster).
2. Per-query overhead of the cluster round trip at small N (10k x 384, one query, k=10): median
   latency of each executor, their difference, and a bare Dask round trip (``submit`` of a no-op
   + ``result``) for reference.
3. Agreement: top-10 ids of the 1000 queries, local vs Dask, and the largest score difference.

Usage::

    python benchmarks/bench_dask.py [--n 1000000] [--dim 384] [--batch 1000] [--workers 2]
                                    [--reps 3] [--dir DIR] [--quick]

Needs the ``dask`` extra. Memory: about 1.5 GB for the vectors (memory-mapped, shared by the
page cache between the processes) plus the kernel's score buffer of at most 128 MiB per search
(queries are scored in blocks), in each process. The script always exits 0: it is a report.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import env_summary, fmt_ms, interleaved_selftimed, log, median, set_log_tag, timed

import dk_vector_plugins.plugins.dask as de
from dk_vector_plugins import DatabaseFactory

# Read before anything imports distributed (which sets it for the worker processes it spawns).
BLAS_THREADS_ENV = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
set_log_tag("bench_dask")


def fmt_s(seconds: float) -> str:
    return fmt_ms(seconds, micro=False)


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def build_store(path: str, n: int, dim: int, batch: int, seed: int) -> float:
    """Ingest ``n`` unit vectors in batches (one commit each), then compact; returns seconds."""
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    db = DatabaseFactory().create(
        backend="file", path=path, vector_enabled=True, vector_dimensions=dim, max_segments=1000
    )
    for s in range(0, n, batch):
        m = min(batch, n - s)
        db.add_vectors(unit_rows(rng, m, dim), ids=[f"v{i:07d}" for i in range(s, s + m)])
        log(f"  ingested {s + m:,}/{n:,}")
    db.compact()
    db.close()
    return time.perf_counter() - t0


def interleaved(
    variants: dict[str, Callable[[], Any]], reps: int, seed: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Each variant ``reps`` times in a shuffled order; returns times and the last result."""

    def progress(r: int, name: str, t: float) -> None:
        log(f"  rep {r + 1}/{reps} {name}: {fmt_s(t)}")

    times, results = interleaved_selftimed(
        {name: (lambda r, fn=fn: timed(fn)) for name, fn in variants.items()},
        reps,
        seed,
        warm=False,
        on_call=progress,
    )
    return times, {name: res[-1] for name, res in results.items()}


def latency(fn: Callable[[], Any], reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return median(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--batch", type=int, default=1000, help="queries per batch")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--small-n", type=int, default=10_000)
    ap.add_argument("--shard-rows", type=int, default=None, help="the plugin's shard_rows (default: its own)")
    ap.add_argument("--dir", default=None, help="where to build the stores (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="N=50k, a batch of 200, 2 reps: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.n, args.batch, args.reps = 50_000, 200, 2
        args.shard_rows = args.shard_rows or 12_500

    from distributed import LocalCluster

    t_start = time.perf_counter()
    root = tempfile.mkdtemp(prefix="bench_dask_", dir=args.dir)
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    try:
        big, small = os.path.join(root, "big"), os.path.join(root, "small")
        log(f"building {args.n:,} x {args.dim} file store in {big}")
        t_ingest = build_store(big, args.n, args.dim, 100_000, seed=1)
        notes.append(
            f"Ingest: {args.n:,} x {args.dim} with add_vectors in batches of 100k + compact: "
            f"{t_ingest:.1f} s ({args.n / t_ingest:,.0f} vectors/s)."
        )
        build_store(small, args.small_n, args.dim, args.small_n, seed=2)

        log(f"starting a LocalCluster of {args.workers} worker processes x 1 thread")
        cluster = LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        common = {"backend": "file", "vector_enabled": True}
        dask_cfg: dict[str, Any] = {"executor": "dask", "scheduler_address": cluster.scheduler_address}
        if args.shard_rows:
            dask_cfg["shard_rows"] = args.shard_rows
        factory = DatabaseFactory()
        local_big = factory.create(common, path=big)
        dask_big = factory.create(common, path=big, **dask_cfg)
        rng = np.random.default_rng(7)
        queries = unit_rows(rng, args.batch, args.dim)

        # 1. throughput
        log("warm-up (local), then the cold load of the parts onto the workers")
        t0 = time.perf_counter()
        local_big.vector_search_batch(queries[:1], k=args.k)
        t_local_warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        dask_big.vector_search_batch(queries[:1], k=args.k)
        t_cold = time.perf_counter() - t0
        parts = {w: len(r["parts"]) for w, r in de.client_for(dask_big).run(de.cached_parts).items()}
        times, last = interleaved(
            {
                "local": lambda: local_big.vector_search_batch(queries, k=args.k),
                "dask": lambda: dask_big.vector_search_batch(queries, k=args.k),
            },
            args.reps,
            seed=3,
        )
        t_loc, t_dask = median(times["local"]), median(times["dask"])
        qps_loc, qps_dask = args.batch / t_loc, args.batch / t_dask
        rows.append(
            (
                f"batch of {args.batch} queries, N={args.n:,}, k={args.k}",
                f"{fmt_s(t_loc)} ({qps_loc:,.0f} q/s)",
                f"{fmt_s(t_dask)} ({qps_dask:,.0f} q/s)",
                f"{t_loc / t_dask:.2f}x",
            )
        )
        notes.append(
            f"Throughput medians of {args.reps}: local {[fmt_s(t) for t in times['local']]}, "
            f"dask {[fmt_s(t) for t in times['dask']]}. First local search (mmap, norms): "
            f"{fmt_s(t_local_warm)}; first Dask search (cold: each worker maps its parts and "
            f"computes their norms): {fmt_s(t_cold)}; parts per worker: {sorted(parts.values())}."
        )

        # where the single-process time goes: the BLAS product alone (both cores) vs the rest
        seg = local_big.storage.state.segments[0]
        matrix = np.load(os.path.join(big, "segments", f"{seg['name']}.f0.npy"), mmap_mode="r")
        gc.collect()
        t0 = time.perf_counter()
        product = queries @ matrix.T
        t_gemm = time.perf_counter() - t0
        del product, matrix
        gc.collect()
        notes.append(
            f"Single-process breakdown: the BLAS product alone ({args.batch} x {args.dim} x {args.n:,}, "
            f"both cores) takes {fmt_s(t_gemm)} of the {fmt_s(t_loc)}; the rest (score scaling, "
            f"top-k selection per query, results) runs on one thread. Each worker runs the whole "
            f"kernel on its half of the rows with one BLAS thread."
        )

        # 3. agreement
        same_ids = sum([h.id for h in a] == [h.id for h in b] for a, b in zip(last["local"], last["dask"]))
        max_diff = max(
            (abs(x.score - y.score) for a, b in zip(last["local"], last["dask"]) for x, y in zip(a, b)),
            default=0.0,
        )
        bit_equal = sum(a == b for a, b in zip(last["local"], last["dask"]))
        notes.append(
            f"Agreement: {same_ids}/{args.batch} queries with identical top-{args.k} ids in order; "
            f"{bit_equal}/{args.batch} bit-identical result lists; largest score difference {max_diff:.2e}."
        )

        # 2. per-query overhead at small N
        local_small = factory.create(common, path=small)
        dask_small = factory.create(common, path=small, **dask_cfg)
        q1 = queries[0]
        lat_loc = latency(lambda: local_small.vector_search(q1, k=args.k), 50)
        lat_dask = latency(lambda: dask_small.vector_search(q1, k=args.k), 50)
        client = de.client_for(dask_small)
        lat_bare = latency(lambda: client.submit(int, 1, pure=False).result(), 50)
        lat_loc_big = latency(lambda: local_big.vector_search(q1, k=args.k), 5)
        lat_dask_big = latency(lambda: dask_big.vector_search(q1, k=args.k), 5)
        rows.append(
            (
                f"one query, N={args.small_n:,} (median of 50)",
                fmt_s(lat_loc),
                fmt_s(lat_dask),
                f"overhead {fmt_s(lat_dask - lat_loc)}",
            )
        )
        rows.append(("bare Dask round trip (submit no-op + result)", "-", fmt_s(lat_bare), "-"))
        rows.append(
            (
                f"one query, N={args.n:,} (median of 5)",
                fmt_s(lat_loc_big),
                fmt_s(lat_dask_big),
                f"{lat_loc_big / lat_dask_big:.2f}x",
            )
        )
        for db in (dask_big, dask_small):
            de.close_client(db)
        for db in (local_big, dask_big, local_small, dask_small):
            db.close()
        cluster.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"# bench_dask: executor='dask' ({args.workers} local worker processes x 1 thread) vs single process\n"
    )
    import distributed

    extra = (
        f"distributed {distributed.__version__} | "
        f"client OPENBLAS_NUM_THREADS={BLAS_THREADS_ENV} (workers: 1, set by Dask)"
    )
    print(env_summary(extra) + "\n")
    print("| check | single process | dask | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    for n in notes:
        print(f"- {n}")
    print(f"\nTotal run time: {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
