#!/usr/bin/env python
"""Performance report for the built-in ``file`` backend of dk_vector_plugins.

Every check is measured side by side in one run: the variants being compared are interleaved
(in a shuffled order on each repetition), each variant runs once untimed first (warm page cache,
warm imports), and they are compared by their medians.

Checks (defaults: N=200k vectors, d=384, cosine on unit vectors, k=10):

a. reopen + first query: ``DatabaseFactory().create(backend="file", path=...)`` plus one
   ``vector_search`` (nothing left out of the timing) vs ``np.load(mmap_mode="r")`` of the same
   vectors plus one bare-numpy search (``scores = M @ q``, ``argpartition``, sort of k):
   target <= 2x. Measured on the store as ingested (one segment per 10k batch) and compacted.
b. warm single-query latency: the file store vs the memory backend holding the same data:
   target <= 1.2x.
c. ingest of N vectors with ``add_vectors`` in batches of 10k (fresh store, ids given) vs writing
   the same batches to separate files with ``np.save``, without and with ``fsync`` (the store
   fsyncs every commit): target >= 50% of the np.save + fsync throughput.
d. vs dataknobs-data 0.11's file backend at N=5k (a Python >= 3.12 subprocess on the same
   vectors and queries): target >= 100x faster per query, same top-10 ids.

Usage::

    python benchmarks/bench_file.py [--n 200000] [--dim 384] [--quick] [--dir DIR]

The interpreter for check d is ``$DKV_DATAKNOBS_PYTHON`` (a Python >= 3.12 with dataknobs-data
installed, e.g. a venv's ``bin/python``), else the first ``python3.14`` / ``python3.13`` /
``python3.12`` / ``python3`` on ``PATH`` that can import ``dataknobs_data``; without one, check d
is reported as skipped (see ``_common.find_dataknobs_python``).
The script always exits 0: it is a report; failed targets are marked FAIL.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _common import (
    DK_CHILD_PREAMBLE,
    Report,
    dataknobs_skip_message,
    env_summary,
    find_dataknobs_python,
    fmt_ms,
    hit_ids,
    interleaved_selftimed,
    log,
    make_ids,
    median,
    numpy_topk,
    run_child,
    set_log_tag,
    timed,
)

from dk_vector_plugins import DatabaseFactory

set_log_tag("bench_file")

# ----------------------------------------------------------------------------------------------
# helpers


def spread(xs: list[float]) -> str:
    return f"min {fmt_ms(min(xs))} / med {fmt_ms(median(xs))} / max {fmt_ms(max(xs))} (n={len(xs)})"


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# dataknobs-data subprocess (check d)

DK_CHILD = DK_CHILD_PREAMBLE + r"""
ids, k = spec["ids"], spec["k"]
with tempfile.TemporaryDirectory(prefix="dk_file_") as d:
    path = os.path.join(d, "vectors.json")
    db = database_factory.create(backend="file", path=path, vector_enabled=True, vector_metric="cosine")
    db.connect()
    t0 = time.perf_counter()
    db.create_batch([Record({"embedding": VectorField(x[i])}, storage_id=ids[i]) for i in range(len(ids))])
    build = time.perf_counter() - t0
    size = os.path.getsize(path)
    db.vector_search(qs[0], vector_field="embedding", k=k, metric="cosine")  # untimed warm-up
    times, out_ids = [], []
    for q in qs:
        t0 = time.perf_counter()
        res = db.vector_search(q, vector_field="embedding", k=k, metric="cosine")
        times.append(time.perf_counter() - t0)
        out_ids.append([r.record.id for r in res])
    count = db.count()
    db.close()
print(json.dumps({
    "version": getattr(dataknobs_data, "__version__", "?"),
    "python": sys.version.split()[0],
    "count": count,
    "build_s": build,
    "file_bytes": size,
    "times_s": times,
    "ids": out_ids,
}))
"""


def run_dataknobs(
    py: str, x: np.ndarray, qs: np.ndarray, ids: list[str], k: int, workdir: str
) -> dict[str, Any]:
    return run_child(py, DK_CHILD, x, qs, {"ids": ids, "k": k}, prefix="dk_in_", workdir=workdir)


# ----------------------------------------------------------------------------------------------
# checks


def open_file_store(path: str) -> Any:
    return DatabaseFactory().create(backend="file", path=path, vector_enabled=True, vector_metric="cosine")


def ingest(path: str, x: np.ndarray, ids: list[str], batch: int) -> Any:
    db = open_file_store(path)
    for s in range(0, len(x), batch):
        db.add_vectors(x[s : s + batch], ids=ids[s : s + batch])
    return db


def np_save_batches(path: str, x: np.ndarray, batch: int, fsync: bool) -> None:
    os.makedirs(path, exist_ok=True)
    for i, s in enumerate(range(0, len(x), batch)):
        with open(os.path.join(path, f"batch-{i:05d}.npy"), "wb") as f:
            np.save(f, x[s : s + batch], allow_pickle=False)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    if fsync:
        fsync_dir(path)


def check_ingest(
    rep: Report, x: np.ndarray, ids: list[str], batch: int, reps: int, work: str, seed: int
) -> str:
    """(c); returns the path of one ingested store (kept for a and b)."""
    n, dim = x.shape
    counter = iter(range(10**6))
    keep: dict[str, str] = {}

    def fresh(tag: str) -> str:
        return os.path.join(work, f"{tag}-{next(counter)}")

    def ours(r: int) -> tuple[float, Any]:
        path = fresh("store")
        t, db = timed(lambda: ingest(path, x, ids, batch))
        count = db.count()
        db.close()
        if "store" in keep:
            shutil.rmtree(keep["store"], ignore_errors=True)
        keep["store"] = path
        return t, count

    def saver(fsync: bool) -> Callable[[int], tuple[float, Any]]:
        def run(r: int) -> tuple[float, Any]:
            path = fresh("npsave")
            t, _ = timed(lambda: np_save_batches(path, x, batch, fsync))
            size = dir_bytes(path)
            shutil.rmtree(path, ignore_errors=True)
            return t, size

        return run

    log(f"c: ingest {n} x {dim} in batches of {batch}: {reps} interleaved reps (+1 untimed)")
    times, results = interleaved_selftimed(
        {"ours": ours, "np.save": saver(False), "np.save+fsync": saver(True)}, reps=reps, seed=seed
    )
    assert all(c == n for c in results["ours"]), results["ours"]
    t_ours, t_ns, t_nsf = median(times["ours"]), median(times["np.save"]), median(times["np.save+fsync"])
    mb = x.nbytes / 2**20

    def thr(t: float) -> str:
        return f"{mb / t:.0f} MiB/s ({fmt_ms(t)})"

    share_f = t_nsf / t_ours
    share = t_ns / t_ours
    rep.add(
        f"c. ingest {n}x{dim}, add_vectors batches of {batch // 1000}k",
        thr(t_ours),
        f"{thr(t_nsf)} np.save+fsync",
        f"{share_f:.0%}",
        ">= 50% of np.save+fsync",
        share_f >= 0.5,
    )
    rep.add(
        "c2. same, vs np.save without fsync",
        thr(t_ours),
        f"{thr(t_ns)} np.save",
        f"{share:.0%}",
        "(info)",
        None,
    )
    store_bytes = dir_bytes(keep["store"])
    rep.note(
        f"c: ours {spread(times['ours'])}; np.save {spread(times['np.save'])}; np.save+fsync "
        f"{spread(times['np.save+fsync'])}; store on disk {store_bytes / 2**20:.0f} MiB for "
        f"{mb:.0f} MiB of vectors"
    )
    return keep["store"]


def check_reopen(
    rep: Report,
    label: str,
    store: str,
    npy: str,
    qs: np.ndarray,
    id_arr: np.ndarray,
    k: int,
    reps: int,
    seed: int,
) -> None:
    """(a) for one store directory."""

    def ours(r: int) -> tuple[float, Any]:
        q = qs[r % len(qs)]

        def go() -> Any:
            db = open_file_store(store)
            return db, db.vector_search(q, k=k)

        t, (db, hits) = timed(go)
        nseg = len(db.storage.state.segments)
        db.close()
        return t, (hit_ids(hits), nseg)

    def bare(r: int) -> tuple[float, Any]:
        q = qs[r % len(qs)]
        t, top = timed(lambda: numpy_topk(np.load(npy, mmap_mode="r"), q, k))
        return t, list(id_arr[top])

    log(f"a: reopen + first query ({label}): {reps} interleaved reps (+1 untimed)")
    times, results = interleaved_selftimed({"ours": ours, "numpy": bare}, reps=reps, seed=seed)
    t_o, t_n = median(times["ours"]), median(times["numpy"])
    ratio = t_o / t_n
    nseg = results["ours"][0][1]
    same = sum(o[0] == b for o, b in zip(results["ours"], results["numpy"]))
    rep.add(
        f"a. reopen + first query, {label} ({nseg} segment{'s' if nseg != 1 else ''})",
        fmt_ms(t_o),
        f"{fmt_ms(t_n)} np.load(mmap)+numpy",
        f"{ratio:.1f}x",
        "<= 2x",
        ratio <= 2.0,
    )
    rep.add(
        f"a. top-{k} ids == numpy ({label})",
        f"{same}/{reps}",
        "numpy ids",
        "",
        "all equal",
        same == reps,
    )
    rep.note(f"a ({label}): ours {spread(times['ours'])}; numpy {spread(times['numpy'])}")


def check_warm(
    rep: Report, store: str, x: np.ndarray, ids: list[str], qs: np.ndarray, k: int, reps: int, seed: int
) -> None:
    """(b): warm search, file vs memory with the same data."""
    log("b: building the memory store with the same vectors")
    mem = DatabaseFactory().create(backend="memory", vector_enabled=True, vector_metric="cosine")
    t_build, _ = timed(lambda: mem.add_vectors(x, ids=ids))
    fdb = open_file_store(store)
    for i in range(3):
        fdb.vector_search(qs[i], k=k)
        mem.vector_search(qs[i], k=k)

    def ours(r: int) -> tuple[float, Any]:
        q = qs[r % len(qs)]
        return timed(lambda: hit_ids(fdb.vector_search(q, k=k)))

    def memory(r: int) -> tuple[float, Any]:
        q = qs[r % len(qs)]
        return timed(lambda: hit_ids(mem.vector_search(q, k=k)))

    log(f"b: warm single-query latency: {reps} interleaved reps")
    times, results = interleaved_selftimed({"file": ours, "memory": memory}, reps=reps, seed=seed)
    t_f, t_m = median(times["file"]), median(times["memory"])
    ratio = t_f / t_m
    same = sum(a == b for a, b in zip(results["file"], results["memory"]))
    rep.add(
        f"b. warm search latency, N={len(x)}, k={k}",
        fmt_ms(t_f),
        f"{fmt_ms(t_m)} memory backend",
        f"{ratio:.2f}x",
        "<= 1.2x",
        ratio <= 1.2,
    )
    rep.add("b. top-k ids file == memory", f"{same}/{reps}", "memory ids", "", "all equal", same == reps)
    rep.note(
        f"b: file {spread(times['file'])}; memory {spread(times['memory'])}; memory add_vectors of all "
        f"rows took {t_build:.1f} s"
    )
    fdb.close()
    mem.close()


def check_dataknobs(rep: Report, dk_n: int, dim: int, nq: int, k: int, work: str, seed: int) -> None:
    """(d): per-query latency vs dataknobs-data's file backend at N=dk_n."""
    label = f"d. vs dataknobs-data file backend, N={dk_n}, per query"
    py, tried = find_dataknobs_python()
    if py is None:
        msg = dataknobs_skip_message(tried)
        print(f"[bench_file] check d {msg}", file=sys.stderr)
        rep.add(label, "-", "-", "-", ">= 100x", None)
        rep.note(f"d {msg}")
        return
    rng = np.random.default_rng(seed + 7)
    x = rng.standard_normal((dk_n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    qs = rng.standard_normal((nq, dim), dtype=np.float32)
    ids = [f"dk-{i:06d}" for i in range(dk_n)]
    path = os.path.join(work, "dk-ours")
    db = open_file_store(path)
    db.add_vectors(x, ids=ids)
    db.close()
    db = open_file_store(path)

    def ours_run() -> tuple[list[float], list[list[str]]]:
        ts, out = [], []
        for q in qs:
            t, h = timed(lambda q=q: db.vector_search(q, k=k))
            ts.append(t)
            out.append(hit_ids(h))
        return ts, out

    ours_run()  # untimed warm-up
    t1, ours_ids = ours_run()
    log(f"d: dataknobs-data file backend via {py}: N={dk_n}, {nq} queries")
    dk = run_dataknobs(py, x, qs, ids, k, work)
    t2, _ = ours_run()  # ours before and after the subprocess (it cannot be interleaved call by call)
    db.close()
    t_o, t_d = median(t1 + t2), median(dk["times_s"])
    ratio = t_d / t_o
    rep.add(
        label,
        fmt_ms(t_o),
        f"{fmt_ms(t_d)} (dataknobs {dk['version']})",
        f"{ratio:,.0f}x faster",
        ">= 100x",
        ratio >= 100,
    )
    same = sum(a == b for a, b in zip(ours_ids, dk["ids"]))
    rep.add("d. top-10 ids == dataknobs", f"{same}/{nq}", "dataknobs ids", "", "all equal", same == nq)
    rep.note(
        f"d: dataknobs {spread(dk['times_s'])}, its create_batch of {dk_n} took {dk['build_s']:.1f} s "
        f"({dk['file_bytes'] / 2**20:.0f} MiB JSON file), Python {dk['python']}; ours {spread(t1 + t2)}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="vectors in the store (default 200000)")
    ap.add_argument("--dim", type=int, default=None, help="dimension (default 384)")
    ap.add_argument("--batch", type=int, default=10_000, help="add_vectors batch size for check c")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--reopen-reps", type=int, default=None, help="timed reps of check a (default 7)")
    ap.add_argument("--search-reps", type=int, default=None, help="timed reps of check b (default 50)")
    ap.add_argument("--ingest-reps", type=int, default=None, help="timed reps of check c (default 3)")
    ap.add_argument("--dk-n", type=int, default=None, help="store size of check d (default 5000)")
    ap.add_argument("--dk-queries", type=int, default=None, help="timed queries of check d (default 5)")
    ap.add_argument("--dir", default=None, help="where to put the stores (default: the system temp dir)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    args = ap.parse_args(argv)

    q = args.quick
    n = args.n or (20_000 if q else 200_000)
    dim = args.dim or (64 if q else 384)
    batch = min(args.batch, n)
    reopen_reps = args.reopen_reps or (3 if q else 7)
    search_reps = args.search_reps or (10 if q else 50)
    ingest_reps = args.ingest_reps or (2 if q else 3)
    dk_n = args.dk_n or (500 if q else 5_000)
    dk_queries = args.dk_queries or (2 if q else 5)
    k = args.k

    t_start = time.perf_counter()
    rep = Report()
    if q:
        rep.note(
            "quick mode: tiny sizes, per-call overheads dominate; the targets are meant for the full size"
        )
    try:
        load0 = os.getloadavg()[0]
        if load0 >= 0.5 * (os.cpu_count() or 1):
            rep.note(f"machine busy before the run: 1-min loadavg {load0:.2f} on {os.cpu_count()} cpus")
    except OSError:
        pass

    rng = np.random.default_rng(args.seed)
    log(f"generating N={n} d={dim} unit float32 vectors")
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    qs = rng.standard_normal((max(reopen_reps, search_reps) + 1, dim), dtype=np.float32)
    ids = make_ids(n)
    id_arr = np.asarray(ids, dtype=object)

    work = tempfile.mkdtemp(prefix="dkv_bench_file_", dir=args.dir)
    try:
        store = check_ingest(rep, x, ids, batch, ingest_reps, work, args.seed)
        npy = os.path.join(work, "vectors.npy")
        np.save(npy, x)
        check_reopen(rep, "as ingested", store, npy, qs, id_arr, k, reopen_reps, args.seed)
        log("a: compacting the store")
        db = open_file_store(store)
        t_compact, _ = timed(db.compact)
        db.close()
        rep.note(f"compact() of the ingested store took {t_compact:.1f} s")
        check_reopen(rep, "compacted", store, npy, qs, id_arr, k, reopen_reps, args.seed)
        check_warm(rep, store, x, ids, qs, k, search_reps, args.seed)
        check_dataknobs(rep, dk_n, dim, dk_queries, k, work, args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header = (
        f"### dk_vector_plugins `file` backend: N={n}, d={dim}, k={k}, cosine, "
        f"medians of interleaved runs{' (QUICK)' if q else ''}"
    )
    rep.print(header, env_summary(), time.perf_counter() - t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
