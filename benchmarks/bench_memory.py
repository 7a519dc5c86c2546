#!/usr/bin/env python
"""Performance report for the built-in ``memory`` backend of dk_vector_plugins.

Every check is measured side by side in one run: the variants being compared are interleaved
(in a shuffled order on each repetition), warmed up first, and compared by their medians, so a
noisy shared machine slows both sides alike.

Checks (defaults: N=100k vectors, d=384, cosine, k=10):

1. single-query ``vector_search`` latency vs a bare numpy reference on the same data
   (pre-normalized float32 matrix @ q, argpartition, sort of the k winners): target <= 1.5x;
2. throughput of one ``vector_search_batch`` of 100 queries vs 100 single ``vector_search``
   calls: target >= 5x;
3. latency with a filter matching ~10% of the rows (``{"category": 3}``, 10 categories) vs
   unfiltered: target <= 1.5x, and exactly k results;
4. vs dataknobs-data 0.11's memory backend at N=10k (run in a Python >= 3.12 subprocess on the
   same vectors and queries): target >= 300x faster per query, same top-10 ids;
5. bytes held for vectors (``vector_nbytes()``) vs the raw float32 matrix: target <= 1.3x
   (plus the RSS growth of building the whole store, for information).

Usage::

    python benchmarks/bench_memory.py [--n 100000] [--dim 384] [--repeat 50] [--quick]

The interpreter for check 4 is ``$DKV_DATAKNOBS_PYTHON`` (a Python >= 3.12 with dataknobs-data
installed, e.g. a venv's ``bin/python``), else the first ``python3.14`` / ``python3.13`` /
``python3.12`` / ``python3`` on ``PATH`` that can import ``dataknobs_data``; without one, check 4
is reported as skipped (see ``_common.find_dataknobs_python``).
The script always exits 0: it is a report; failed targets are marked FAIL.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import time
from typing import Any

import numpy as np
from _common import (
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
    numpy_topk,
    run_child,
    run_report,
    set_blas_threads,
    spread,
)

from dk_vector_plugins import DatabaseFactory

FILTER = {"category": 3}

# ----------------------------------------------------------------------------------------------
# small helpers


def rss_bytes() -> int | None:
    """Current resident set size (Linux /proc, else psutil, else None)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-untyped]

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return None


def root_buffer_bytes(obj: Any) -> int:
    """Bytes of the distinct base buffers behind the ndarray attributes of ``obj``.

    A cross-check of ``nbytes``: a view's ``nbytes`` understates the buffer it keeps alive.
    """
    roots: dict[int, int] = {}
    for value in vars(obj).values():
        if isinstance(value, np.ndarray):
            b = value
            while isinstance(b.base, np.ndarray):
                b = b.base
            roots[id(b)] = b.nbytes
    return sum(roots.values())


# ----------------------------------------------------------------------------------------------
# the store and the references


def build_store(x: np.ndarray, ids: list[str]) -> Any:
    db = DatabaseFactory().create(backend="memory", vector_enabled=True, vector_metric="cosine")
    db.add_vectors(x, ids=ids, metadata=[{"category": i % CATEGORIES} for i in range(len(ids))])
    return db


# ----------------------------------------------------------------------------------------------
# dataknobs-data subprocess

DK_CHILD = DK_CHILD_PREAMBLE + r"""
ids, k, warmup, ncat = spec["ids"], spec["k"], spec["warmup"], spec["categories"]
db = database_factory.create(backend="memory", vector_enabled=True, vector_metric="cosine")
db.connect()
t0 = time.perf_counter()
db.create_batch([
    Record({"embedding": VectorField(x[i]), "category": i % ncat}, storage_id=ids[i])
    for i in range(len(ids))
])
build = time.perf_counter() - t0
for w in range(warmup):
    db.vector_search(qs[w % len(qs)], vector_field="embedding", k=k, metric="cosine")
times, out_ids, out_scores = [], [], []
for q in qs:
    t0 = time.perf_counter()
    res = db.vector_search(q, vector_field="embedding", k=k, metric="cosine")
    times.append(time.perf_counter() - t0)
    out_ids.append([r.record.id for r in res])
    out_scores.append([float(r.score) for r in res])
print(json.dumps({
    "version": getattr(dataknobs_data, "__version__", "?"),
    "python": sys.version.split()[0],
    "numpy": np.__version__,
    "count": db.count(),
    "build_s": build,
    "times_s": times,
    "median_s": float(np.median(times)),
    "ids": out_ids,
    "scores": out_scores,
}))
"""


def run_dataknobs(
    py: str, x: np.ndarray, qs: np.ndarray, ids: list[str], k: int, warmup: int
) -> dict[str, Any]:
    spec = {"ids": ids, "k": k, "warmup": warmup, "categories": CATEGORIES}
    return run_child(py, DK_CHILD, x, qs, spec, prefix="dkv_bench_")


def profile_search(db: Any, qs: np.ndarray, k: int, n: int, filt: Any) -> str:
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        db.vector_search(qs[i % len(qs)], k=k, filter=filt)
    prof.disable()
    import io

    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="vectors in the store (default 100000)")
    ap.add_argument("--dim", type=int, default=None, help="dimension (default 384)")
    ap.add_argument("--repeat", type=int, default=None, help="timed repetitions per variant (default 50)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100, help="queries in the batch of check 2")
    ap.add_argument(
        "--dk-n", type=int, default=None, help="store size for the dataknobs check (default 10000)"
    )
    ap.add_argument("--dk-queries", type=int, default=None, help="timed dataknobs queries (default 10)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="limit BLAS threads (here and in the dataknobs subprocess); default: leave as is",
    )
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of vector_search")
    args = ap.parse_args(argv)

    q = args.quick
    n = args.n or (5_000 if q else 100_000)
    dim = args.dim or (64 if q else 384)
    repeat = args.repeat or (10 if q else 50)
    dk_n = min(args.dk_n or (1_000 if q else 10_000), n)
    dk_queries = args.dk_queries or (3 if q else 10)
    k = args.k
    warmup = 3 if q else 5
    batch_reps = max(3, repeat // 5)

    t_start = time.perf_counter()
    rep = Report()
    if args.blas_threads:
        how = set_blas_threads(args.blas_threads)
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)  # for the dataknobs subprocess
        rep.note(f"BLAS threads limited to {args.blas_threads} ({how})")
    try:
        load0 = os.getloadavg()[0]
        if load0 >= 0.5 * (os.cpu_count() or 1):
            rep.note(
                f"machine busy before the run: 1-min loadavg {load0:.2f} on {os.cpu_count()} cpus; "
                "multi-threaded BLAS calls may stall while a thread waits for a cpu"
            )
    except OSError:
        pass
    if q:
        rep.note(
            "quick mode: tiny sizes, per-call overheads dominate; the targets are meant for the full size"
        )

    rng = np.random.default_rng(args.seed)
    log(f"generating N={n} d={dim} float32 vectors")
    x = rng.standard_normal((n, dim), dtype=np.float32)
    nq = max(repeat, args.batch, dk_queries) + warmup
    queries = rng.standard_normal((nq, dim), dtype=np.float32)
    ids = make_ids(n)
    id_arr = np.asarray(ids, dtype=object)
    cat = np.arange(n) % CATEGORIES

    # ---- build (+ check 5 memory) -------------------------------------------------------------
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    db = build_store(x, ids)
    build_s = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    rep.note(f"add_vectors of {n} x {dim} with metadata took {build_s:.2f} s")
    raw = n * dim * 4

    # ---- checks 1 and 3: ours unfiltered vs numpy vs ours filtered, interleaved -----------------
    log(f"checks 1+3: {repeat} interleaved reps of unfiltered / numpy / filtered (warmup {warmup})")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    xn = np.ascontiguousarray(xn, dtype=np.float32)
    qpool = queries[warmup:]

    def qi(r: int) -> np.ndarray:
        return qpool[r % len(qpool)]

    times, results = interleaved(
        {
            "ours": lambda r: db.vector_search(qi(r), k=k),
            "numpy": lambda r: numpy_topk(xn, qi(r), k),
            "filtered": lambda r: db.vector_search(qi(r), k=k, filter=FILTER),
        },
        reps=repeat,
        warmup=warmup,
        seed=args.seed,
    )
    t_ours, t_np, t_filt = median(times["ours"]), median(times["numpy"]), median(times["filtered"])
    ratio1 = t_ours / t_np
    rep.add(
        f"1. single-query latency, N={n}, d={dim}, k={k}",
        fmt_ms(t_ours),
        f"{fmt_ms(t_np)} (numpy)",
        f"{ratio1:.2f}x",
        "<= 1.5x",
        ratio1 <= 1.5,
    )
    match1 = sum(hit_ids(h) == list(id_arr[ix]) for h, ix in zip(results["ours"], results["numpy"]))
    rep.add(
        "1b. top-k ids == numpy reference",
        f"{match1}/{repeat} queries",
        "numpy top-k",
        "-",
        "all",
        match1 == repeat,
    )
    rep.note(f"1: ours {spread(times['ours'])}; numpy {spread(times['numpy'])}")

    sel = np.flatnonzero(cat == FILTER["category"])
    frac = len(sel) / n
    ratio3 = t_filt / t_ours
    rep.add(
        f"3. filter {FILTER} ({frac:.0%} of rows) vs unfiltered",
        fmt_ms(t_filt),
        f"{fmt_ms(t_ours)} (unfiltered)",
        f"{ratio3:.2f}x",
        "<= 1.5x",
        ratio3 <= 1.5,
    )
    nk = [len(h) for h in results["filtered"]]
    exact_k = all(c == k for c in nk)
    xs = xn[sel]
    match3 = 0
    for r, hits in enumerate(results["filtered"]):
        ref_ids = list(id_arr[sel[numpy_topk(xs, qi(r), k)]])
        good_cat = all(h.record["category"] == FILTER["category"] for h in hits)
        match3 += hit_ids(hits) == ref_ids and good_cat
    rep.add(
        "3b. filtered: exactly k results, ids == numpy",
        f"k={min(nk)}..{max(nk)}; {match3}/{repeat} match",
        "numpy on the 10% subset",
        "-",
        f"all == {k}",
        exact_k and match3 == repeat,
    )
    rep.note(f"3: filtered {spread(times['filtered'])}")

    # ---- check 2: one batch of B queries vs B single calls -------------------------------------
    b = args.batch
    log(f"check 2: {batch_reps} interleaved reps of batch({b}) vs {b} single calls")
    qb = np.ascontiguousarray(qpool[:b])
    times2, results2 = interleaved(
        {
            "batch": lambda r: db.vector_search_batch(qb, k=k),
            "singles": lambda r: [db.vector_search(qv, k=k) for qv in qb],
        },
        reps=batch_reps,
        warmup=1,
        seed=args.seed + 1,
    )
    t_batch, t_singles = median(times2["batch"]), median(times2["singles"])
    ratio2 = t_singles / t_batch
    rep.add(
        f"2. batch of {b} queries vs {b} single calls",
        f"{fmt_ms(t_batch)} / batch",
        f"{fmt_ms(t_singles)} / {b} singles",
        f"{ratio2:.2f}x",
        ">= 5x",
        ratio2 >= 5,
    )
    same2 = [hit_ids(a) for a in results2["batch"][0]] == [hit_ids(s) for s in results2["singles"][0]]
    if not same2:
        rep.note("2: WARNING: batch results differ from single-call results")
    rep.note(
        f"2: batch {spread(times2['batch'])}; singles {spread(times2['singles'])}; "
        f"batch == singles ids: {same2}"
    )

    # ---- check 5: memory ------------------------------------------------------------------------
    held = db._core.table.vector_nbytes()
    ratio5 = held / raw
    roots = sum(root_buffer_bytes(ix) for ix in db._core.table.indexes.values())
    rep.add(
        "5. vector bytes held (vector_nbytes) vs raw N*d*4",
        fmt_mb(held),
        fmt_mb(raw),
        f"{ratio5:.3f}x",
        "<= 1.3x",
        ratio5 <= 1.3,
    )
    if roots != held:
        rep.note(f"5: buffers behind the index arrays: {fmt_mb(roots)} (nbytes reports {fmt_mb(held)})")
    if rss0 is not None and rss1 is not None:
        d_rss = rss1 - rss0
        rep.add(
            "5b. RSS growth of building the store (whole store)",
            fmt_mb(d_rss),
            fmt_mb(raw),
            f"{d_rss / raw:.2f}x",
            "info",
            None,
        )
        rep.note(
            "5b: RSS growth covers everything the store keeps (vectors, records, ids, metadata),"
            " measured around add_vectors after gc.collect()"
        )

    if args.profile:
        for label, filt in (("unfiltered", None), ("filtered", FILTER)):
            rep.note(f"cProfile, 20 {label} vector_search calls:\n" + profile_search(db, qpool, k, 20, filt))

    # ---- check 4: dataknobs-data ----------------------------------------------------------------
    py, tried = find_dataknobs_python()
    check4 = f"4. vs dataknobs-data memory, N={dk_n}, per query"
    if py is None:
        msg = dataknobs_skip_message(tried)
        print(msg)
        rep.add(check4, "-", "skipped", "-", ">= 300x", None)
        rep.rows[-1] = (*rep.rows[-1][:5], "skipped")
        rep.note("4: " + msg)
    else:
        x10, ids10 = x[:dk_n], ids[:dk_n]
        qdk = np.ascontiguousarray(queries[warmup : warmup + dk_queries])
        del db  # free the large store before the small one and the subprocess
        gc.collect()
        db10 = build_store(x10, ids10)
        ours_variants = {"ours": lambda r: db10.vector_search(qdk[r % len(qdk)], k=k)}
        # ours before and after the subprocess (it cannot be interleaved call by call): pooled median
        t_a, _ = interleaved(ours_variants, reps=repeat, warmup=warmup, seed=args.seed + 2)
        log(f"check 4: dataknobs-data via {py} ({dk_queries} queries at N={dk_n})")
        try:
            dk = run_dataknobs(py, x10, qdk, ids10, k, warmup=1)
        except Exception as e:
            dk = None
            rep.add(check4, "-", f"error: {type(e).__name__}", "-", ">= 300x", False)
            rep.note(f"4: {e}")
        t_b, _ = interleaved(ours_variants, reps=repeat, warmup=1, seed=args.seed + 3)
        if dk is not None:
            t_ours10 = median(t_a["ours"] + t_b["ours"])
            speed = dk["median_s"] / t_ours10
            rep.add(
                check4,
                fmt_ms(t_ours10),
                f"{fmt_ms(dk['median_s'])} (dataknobs {dk['version']})",
                f"{speed:,.0f}x",
                ">= 300x",
                speed >= 300,
            )
            ours_ids = [hit_ids(db10.vector_search(qv, k=k)) for qv in qdk]
            same = sum(a == b for a, b in zip(ours_ids, dk["ids"]))
            ours_scores = [[h.score for h in db10.vector_search(qv, k=k)] for qv in qdk]
            dscore = max(abs(a - b) for sa, sb in zip(ours_scores, dk["scores"]) for a, b in zip(sa, sb))
            rep.add(
                "4b. top-10 ids == dataknobs",
                f"{same}/{len(qdk)} queries",
                "dataknobs ids",
                "-",
                "all",
                same == len(qdk) and dk["count"] == dk_n,
            )
            rep.note(
                f"4: dataknobs {spread(dk['times_s'])}, build {dk['build_s']:.2f} s, python "
                f"{dk['python']}, numpy {dk['numpy']}; ours {spread(t_a['ours'] + t_b['ours'])}; "
                f"max |score diff| {dscore:.1e}"
            )
            if same != len(qdk):
                xn10 = xn[:dk_n]
                ref = [list(id_arr[numpy_topk(xn10, qv, k)]) for qv in qdk]
                rep.note(
                    f"4b: vs numpy: ours {sum(a == b for a, b in zip(ours_ids, ref))}/{len(qdk)}, "
                    f"dataknobs {sum(a == b for a, b in zip(dk['ids'], ref))}/{len(qdk)}"
                )

    runtime = time.perf_counter() - t_start
    header = (
        f"## dk_vector_plugins memory backend: N={n}, d={dim}, cosine, k={k}, "
        f"repeat={repeat} (medians of interleaved runs)"
    )
    rep.print(header, env_summary(), runtime)
    return 0


if __name__ == "__main__":
    run_report(main)
