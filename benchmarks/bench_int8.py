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
6. bytes held: float32 matrix against codes (+ per-row scale, residual, norms).

Usage::

    python benchmarks/bench_int8.py [--sizes 1000000,100000] [--dim 384] [--repeat 15] [--quick]

The script always exits 0: it is a report; failed targets are marked FAIL.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import Report, env_summary, fmt_mb, fmt_ms, interleaved, log, median, set_log_tag

from dk_vector_plugins import quant
from dk_vector_plugins.index import VectorIndex
from dk_vector_plugins.kernel import TopK, choose_exact, rank_ids

K = 10


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
        auto = choose_exact("auto", b, int(np.count_nonzero(mask)) if mask is not None else n, K, d)
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


def main() -> None:
    set_log_tag("bench_int8")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000000,100000")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--batches", default="1,32,256")
    ap.add_argument("--quick", action="store_true", help="100k rows, few repetitions")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    reps = args.repeat
    if args.quick:
        sizes, reps = [100_000], 5
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
