#!/usr/bin/env python
"""Full-text (BM25) and hybrid search of dk_vector_plugins: latency, ingest cost, index size.

Every check is measured side by side in one run: the variants being compared are interleaved
(in a shuffled order on each repetition), warmed up first, and compared by their medians, so a
noisy shared machine slows both sides alike.

The corpus (defaults): N=100k short documents (5 to 30 words) drawn from a Zipf vocabulary of 30k
synthetic words (exponent 1.1, seeded numpy RNG), each with a random 384-d unit float32 vector;
200 queries of 2 to 4 distinct words, each word drawn by corpus frequency or uniformly over the
words in the corpus (a mix of frequent and rare words). Text is searched in the ``body`` field,
indexed at commit time (``text_search_fields=["body"]``).

Checks:

1. (setup) the corpus and queries above;
2. single-query ``text_search`` latency (k=10) on the ``memory`` store vs ``bm25s`` (Lucene BM25,
   k1=1.5, b=0.75, the same tokens: the store's ``StandardAnalyzer``) on its fastest
   single-query path: ``get_scores_from_ids`` and a numpy top-k (``argpartition`` of the negated
   scores; bm25s's own ``selection.topk``, which ``retrieve`` runs, is slower when most scores
   are 0, and is reported for information, as are ``retrieve`` itself and the split into queries
   with and without a frequent word): target <= 1.5x, timed with the two paths alone
   interleaved; the top-10 must equal bm25s's (ids, or scores within rel 1e-5 where tied). For
   information, from a second interleave of five variants (ours, our BM25 ranking alone, and
   bm25s's three paths): the same ratio there (three of the five run bm25s's scoring, so its
   timed call often runs warm after its own code, ours seldom), and the store's BM25 ranking
   alone (the table's ``text_tops``: rows and scores, no records built, as bm25s's path returns
   indices only). ``text_search_batch`` of 100 queries, per query: info;
3. vs dataknobs-data 0.11's ``hybrid_search`` text side at N=10k (its memory backend scans
   every record with ``LIKE '%query%'``; its text arm ``_text_search_for_hybrid`` is timed
   directly, in a Python >= 3.12 subprocess on the same documents): target >= 20x faster than
   our ``text_search`` (plus both whole ``hybrid_search`` calls, for information);
4. ``hybrid_search`` (text + vector, RRF) vs ``text_search`` alone + ``vector_search`` alone on
   the same 100k store: target <= 1.3x;
5. ingest: ``create_batch`` of the N documents in batches of 10k into a ``file`` store
   (``fsync=False``) with ``text_search_fields=["body"]`` vs without: target <= 1.5x (the
   ``memory`` backend, which indexes on the first search, for information: its ingest plus one
   ``text_search``), and the text index's bytes on disk (the files named
   ``*.t0.*``: ``segments/*.t0.terms.json``, ``segments/*.t0.post.npy``) vs the corpus's raw
   UTF-8 text.

When a target fails (or with ``--profile``), the report ends with a cProfile of the failing
operation (top functions by own time, and dk_vector_plugins' functions by cumulative time).

Usage::

    python benchmarks/bench_text.py [--n 100000] [--queries 200] [--quick] [--profile]

The interpreter for check 3 is ``$DKV_DATAKNOBS_PYTHON`` (a Python >= 3.12 with dataknobs-data
installed, e.g. a venv's ``bin/python``), else the first ``python3.14`` / ``python3.13`` /
``python3.12`` / ``python3`` on ``PATH`` that can import ``dataknobs_data``; without one, check 3
is reported as skipped (see ``_common.find_dataknobs_python``). Check 2 needs ``bm25s``
(``pip install bm25s``); without it, its reference is reported as skipped.
The script always exits 0: it is a report; failed targets are marked FAIL.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import pstats
import shutil
import string
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    DK_CHILD_PREAMBLE,
    Report,
    dataknobs_skip_message,
    env_summary,
    find_dataknobs_python,
    fmt_mb,
    fmt_ms,
    hit_ids,
    interleaved,
    interleaved_selftimed,
    log,
    make_ids,
    median,
    run_child,
    run_report,
    set_log_tag,
    spread,
)

from dk_vector_plugins import DatabaseFactory, Record, VectorField
from dk_vector_plugins.analysis import StandardAnalyzer

FIELD = "body"
REL_TOL = 1e-5

# ----------------------------------------------------------------------------------------------
# the corpus


class Corpus:
    """Documents, their vectors and ids, the queries (texts, analyzed terms, vectors)."""

    def __init__(self, n: int, vocab: int, zipf: float, nq: int, dim: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.words = _synthetic_words(rng, vocab)
        p = 1.0 / np.arange(1, vocab + 1, dtype=np.float64) ** zipf
        p /= p.sum()
        lengths = rng.integers(5, 31, size=n)
        ranks = rng.choice(vocab, size=int(lengths.sum()), p=p)
        words = np.asarray(self.words, dtype=object)[ranks]
        self.texts: list[str] = [" ".join(w) for w in np.split(words, np.cumsum(lengths)[:-1])]
        self.ids = make_ids(n)
        x = rng.standard_normal((n, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        self.x = x
        # queries: 2-4 distinct words of the corpus, each by frequency or uniformly (rare ones)
        present = np.unique(ranks)
        p_present = p[present] / p[present].sum()
        self.frequent_rank = 100  # "holds a frequent word": a word of rank < 100
        self.query_texts: list[str] = []
        self.query_frequent: list[bool] = []
        for _ in range(nq):
            size = int(rng.integers(2, 5))
            picked: list[int] = []
            while len(picked) < size:
                r = int(rng.choice(present, p=p_present) if rng.random() < 0.5 else rng.choice(present))
                if r not in picked:
                    picked.append(r)
            self.query_texts.append(" ".join(self.words[r] for r in picked))
            self.query_frequent.append(min(picked) < self.frequent_rank)
        qv = rng.standard_normal((nq, dim), dtype=np.float32)
        self.query_vectors = qv / np.linalg.norm(qv, axis=1, keepdims=True)
        self.text_bytes = sum(len(t.encode("utf-8")) for t in self.texts)

    def records(self, n: int | None = None) -> list[Record]:
        n = len(self.texts) if n is None else n
        return [
            Record({FIELD: self.texts[i], "embedding": VectorField(self.x[i])}, id=self.ids[i]) for i in range(n)
        ]


def _synthetic_words(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct lowercase words of 3 to 10 letters."""
    letters = np.asarray(list(string.ascii_lowercase))
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        w = "".join(rng.choice(letters, int(rng.integers(3, 11))))
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def memory_store(records: Sequence[Record], batch: int) -> Any:
    db = DatabaseFactory().create(backend="memory", text_search_fields=[FIELD])
    for j in range(0, len(records), batch):
        db.create_batch(list(records[j : j + batch]))
    return db


# ----------------------------------------------------------------------------------------------
# bm25s, the reference of check 2


class Bm25sRef:
    """bm25s (Lucene variant) over the corpus tokenized by the store's analyzer."""

    def __init__(self, texts: Sequence[str], k1: float, b: float) -> None:
        import bm25s
        import bm25s.selection
        from bm25s.tokenization import Tokenized

        self.version = str(getattr(bm25s, "__version__", "?"))
        self.numba = bool(getattr(bm25s, "NUMBA_AVAILABLE", False))
        self._topk = bm25s.selection.topk
        analyze = StandardAnalyzer().analyze
        vocab: dict[str, int] = {}
        setdefault = vocab.setdefault
        ids = [[setdefault(t, len(vocab)) for t in analyze(s)] for s in texts]
        vocab.setdefault("", len(vocab))  # bm25s wants an empty token in the vocabulary
        self.vocab = vocab
        self.analyze = analyze
        self.retriever = bm25s.BM25(method="lucene", k1=k1, b=b)
        self.retriever.index(Tokenized(ids=ids, vocab=vocab), show_progress=False)

    def query_ids(self, text: str) -> list[int]:
        return [self.vocab[t] for t in self.analyze(text) if t in self.vocab]

    def scores(self, qids: list[int]) -> np.ndarray:
        return np.asarray(self.retriever.get_scores_from_ids(qids))

    def top(self, qids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """The fastest single query: bm25s's scores, then a top-k of the negated scores.

        (``np.argpartition(-s, k - 1)``: bm25s's own ``selection.topk``, which ``retrieve`` uses,
        partitions at ``-k`` and is several times slower when most scores are 0.)
        """
        scores = self.retriever.get_scores_from_ids(qids)
        neg = -scores
        top = np.argpartition(neg, k - 1)[:k]
        top = top[np.argsort(neg[top], kind="stable")]
        return top, scores[top]

    def top_bm25s(self, qids: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
        """bm25s's own single-query work in ``retrieve``: scores, then ``selection.topk`` (sorted)."""
        scores = self.retriever.get_scores_from_ids(qids)
        top_scores, top_ix = self._topk(scores, k, backend="numpy", sorted=True)
        return top_ix, top_scores

    def retrieve(self, qids: list[int], k: int) -> Any:
        return self.retriever.retrieve([qids], k=k, show_progress=False, n_threads=0)


def same_top(hits: list[Any], scores: np.ndarray, index_of: dict[str, int], k: int) -> bool:
    """Whether ``hits`` is a top-k by bm25s's scores (ties may be ordered differently).

    As many hits as documents with a positive score (up to k), each hit's score equal to bm25s's
    score of that document, and the hits' scores equal to bm25s's k best (rel 1e-5).
    """
    m = min(k, int(np.count_nonzero(scores > 0)))
    if len(hits) != m:
        return False
    if m == 0:
        return True
    rows = np.asarray([index_of[h.id] for h in hits], dtype=np.int64)
    ours = np.asarray([h.score for h in hits], dtype=np.float64)
    best = np.sort(scores.astype(np.float64))[::-1][:m]
    return bool(
        np.allclose(ours, scores[rows].astype(np.float64), rtol=REL_TOL, atol=0)
        and np.allclose(ours, best, rtol=REL_TOL, atol=0)
    )


# ----------------------------------------------------------------------------------------------
# dataknobs-data subprocess (check 3)

DK_CHILD = DK_CHILD_PREAMBLE + r"""
from dataknobs_data.vector.hybrid import HybridSearchConfig
ids, texts, queries = spec["ids"], spec["texts"], spec["queries"]
k, field, warmup, n_hybrid = spec["k"], spec["field"], spec["warmup"], spec["hybrid_queries"]
db = database_factory.create(backend="memory", vector_enabled=True, vector_metric="cosine")
db.connect()
t0 = time.perf_counter()
db.create_batch([
    Record({field: texts[i], "embedding": VectorField(x[i])}, storage_id=ids[i]) for i in range(len(ids))
])
build = time.perf_counter() - t0
for w in range(warmup):
    db._text_search_for_hybrid(queries[w % len(queries)], [field], k)
arm_times, arm_hits = [], []
for q in queries:
    t0 = time.perf_counter()
    res = db._text_search_for_hybrid(q, [field], k)
    arm_times.append(time.perf_counter() - t0)
    arm_hits.append(len(res))
config = HybridSearchConfig(text_weight=1.0, vector_weight=0.0)
hybrid_times = []
for i in range(min(n_hybrid, len(queries))):
    t0 = time.perf_counter()
    db.hybrid_search(queries[i], qs[i], text_fields=[field], k=k, config=config)
    hybrid_times.append(time.perf_counter() - t0)
print(json.dumps({
    "version": getattr(dataknobs_data, "__version__", "?"),
    "python": sys.version.split()[0],
    "class": type(db).__name__,
    "count": db.count(),
    "build_s": build,
    "arm_times_s": arm_times,
    "arm_hits": arm_hits,
    "hybrid_times_s": hybrid_times,
}))
"""


# ----------------------------------------------------------------------------------------------
# ingest (check 5) and profiles


def ingest(
    backend: str, root: Path | None, records: Sequence[Record], batch: int, text: bool
) -> tuple[float, Any]:
    """Seconds to ``create_batch`` all records (in batches) into a fresh store, and the store
    (closed for ``file``: the close, which completes the writes, is timed)."""
    opts: dict[str, Any] = {"text_search_fields": [FIELD]} if text else {}
    if backend == "file":
        opts.update(path=str(root), fsync=False)
    t0 = time.perf_counter()
    db = DatabaseFactory().create(backend=backend, **opts)
    for j in range(0, len(records), batch):
        db.create_batch(list(records[j : j + batch]))
    if backend == "file":
        db.close()
    return time.perf_counter() - t0, db


def disk_bytes(root: Path) -> tuple[int, int]:
    """(all bytes, bytes of the text index: files whose names contain ``.t0.``) under ``root``."""
    total = text = 0
    for p in root.rglob("*"):
        if p.is_file():
            size = p.stat().st_size
            total += size
            if ".t0." in p.name:
                text += size
    return total, text


ProfileRow = tuple[int, float, float]  # calls, own seconds, cumulative seconds


def _profile(fn: Callable[[], Any]) -> tuple[dict[str, ProfileRow], float]:
    """cProfile of ``fn()``: per function (named ``file:line(func)``) its calls, own and cumulative
    time; and the total time."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, ProfileRow] = {}
    for (path, line, func), (_cc, nc, tt, ct, _callers) in raw.items():
        if "dk_vector_plugins" in path:
            label = f"dk_vector_plugins/{path.split('dk_vector_plugins/', 1)[-1]}:{line}({func})"
        elif path.startswith("~") or not path:
            label = func
        else:
            label = f"{os.path.basename(path)}:{line}({func})"
        calls, own, cum = out.get(label, (0, 0.0, 0.0))
        out[label] = (calls + nc, own + tt, cum + ct)
    return out, max(float(getattr(stats, "total_tt", 0.0)), 1e-12)


def _report(rows: dict[str, ProfileRow], total: float, header: str, top: int, sign: str) -> str:
    """The top functions by own time, then dk_vector_plugins' by cumulative time (leaving out
    the call chain that wraps nearly everything, above 85% of ``total``); ``sign="+"`` prints
    differences."""
    lines = [header]
    for label, (nc, tt, ct) in sorted(rows.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"    {tt:{sign}7.3f} s {100 * tt / total:5.1f}%  {ct:{sign}7.3f} s  {nc:>{sign}8}  {label}")
    lines.append(
        f"  dk_vector_plugins functions by cumulative {'difference' if sign else 'time'} "
        f"(cumulative{' +' if sign else ''}, own{' +' if sign else ''}, calls{' +' if sign else ''}):"
    )
    ours = [(k, v) for k, v in rows.items() if k.startswith("dk_vector_plugins/") and v[2] < 0.85 * total]
    for label, (nc, tt, ct) in sorted(ours, key=lambda kv: -kv[1][2])[:top]:
        lines.append(f"    {ct:{sign}7.3f} s {100 * ct / total:5.1f}%  own {tt:{sign}7.3f} s  {nc:>{sign}8}  {label}")
    return "\n".join(lines)


def profile_text(fn: Callable[[], Any], top: int = 12) -> str:
    """The top functions of ``fn()`` by own time, then dk_vector_plugins' by cumulative time."""
    rows, total = _profile(fn)
    return _report(rows, total, f"total {total:.3f} s; by own time (own, cumulative, calls):", top, "")


def profile_delta(fn: Callable[[], Any], base: Callable[[], Any], top: int = 12) -> str:
    """Where ``fn()`` spends more than ``base()``: functions by own-time difference, then
    dk_vector_plugins' by cumulative difference."""
    a, total_a = _profile(fn)
    b, total_b = _profile(base)
    extra = max(total_a - total_b, 1e-12)
    zero: ProfileRow = (0, 0.0, 0.0)
    diff = {k: (v[0] - b.get(k, zero)[0], v[1] - b.get(k, zero)[1], v[2] - b.get(k, zero)[2]) for k, v in a.items()}
    header = (
        f"total {total_a:.3f} s vs {total_b:.3f} s without the text index: {extra:+.3f} s; "
        "by own-time difference (own +, cumulative +, calls +):"
    )
    return _report(diff, extra, header, top, "+")


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=None, help="documents (default 100000)")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default 30000)")
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of word frequencies")
    ap.add_argument("--queries", type=int, default=None, help="queries (default 200)")
    ap.add_argument("--dim", type=int, default=None, help="vector dimension (default 384)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--passes", type=int, default=None, help="passes over the queries in check 2 (default 3)")
    ap.add_argument("--batch", type=int, default=100, help="queries in the text_search_batch of check 2")
    ap.add_argument("--hybrid-reps", type=int, default=None, help="repetitions in check 4 (default 100)")
    ap.add_argument("--dk-n", type=int, default=None, help="documents in check 3 (default 10000)")
    ap.add_argument("--dk-queries", type=int, default=None, help="timed dataknobs text-arm queries (default 20)")
    ap.add_argument("--dk-hybrid", type=int, default=None, help="timed dataknobs hybrid_search calls (default 5)")
    ap.add_argument("--ingest-batch", type=int, default=None, help="records per create_batch (default 10000)")
    ap.add_argument("--ingest-reps", type=int, default=None, help="timed ingests per variant (default 5)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a few seconds")
    ap.add_argument("--profile", action="store_true", help="print the profiles even when targets pass")
    args = ap.parse_args(argv)

    q = args.quick
    n = args.n or (5_000 if q else 100_000)
    vocab = args.vocab or (5_000 if q else 30_000)
    nq = args.queries or (30 if q else 200)
    dim = args.dim or (64 if q else 384)
    k = args.k
    passes = args.passes or (2 if q else 3)
    hybrid_reps = args.hybrid_reps or (10 if q else 100)
    dk_n = min(args.dk_n or (1_000 if q else 10_000), n)
    dk_queries = min(args.dk_queries or (3 if q else 20), nq)
    dk_hybrid = args.dk_hybrid or (2 if q else 5)
    ingest_batch = args.ingest_batch or (max(1, n // 10) if q else 10_000)
    ingest_reps = args.ingest_reps or (1 if q else 5)
    b = min(args.batch, nq)
    warmup = 3 if q else 10

    set_log_tag("bench_text")
    t_start = time.perf_counter()
    rep = Report()
    profiles: list[tuple[str, Callable[[], Any]]] = []
    try:
        load0 = os.getloadavg()[0]
        if load0 >= 0.5 * (os.cpu_count() or 1):
            rep.note(f"machine busy before the run: 1-min loadavg {load0:.2f} on {os.cpu_count()} cpus")
    except OSError:
        pass
    if q:
        rep.note("quick mode: tiny sizes, per-call overheads dominate; the targets are meant for the full size")

    # ---- 1. the corpus ---------------------------------------------------------------------------
    log(f"generating N={n} documents (vocabulary {vocab}, Zipf {args.zipf}), {nq} queries, d={dim}")
    corpus = Corpus(n, vocab, args.zipf, nq, dim, args.seed)
    records = corpus.records()
    index_of = {doc_id: i for i, doc_id in enumerate(corpus.ids)}
    n_frequent = sum(corpus.query_frequent)
    rep.note(
        f"1: {n} documents, {corpus.text_bytes / 2**20:.1f} MiB of UTF-8 text, "
        f"{sum(len(t.split()) for t in corpus.texts) / n:.1f} words per document; {nq} queries of 2-4 words, "
        f"{n_frequent} holding a word of frequency rank < {corpus.frequent_rank}"
    )
    log("building the memory store (text_search_fields=['body'])")
    t0 = time.perf_counter()
    db = memory_store(records, ingest_batch)
    rep.note(f"memory store build (create_batch of {n}, batches of {ingest_batch}): {time.perf_counter() - t0:.2f} s")

    # ---- 2. text_search vs bm25s -----------------------------------------------------------------
    texts = corpus.query_texts
    check2 = f"2. text_search latency, N={n}, k={k}, {nq} queries"
    bm: Bm25sRef | None
    try:
        log("indexing the corpus with bm25s")
        t0 = time.perf_counter()
        bm = Bm25sRef(corpus.texts, k1=1.5, b=0.75)
        rep.note(f"bm25s {bm.version} indexed the same tokens in {time.perf_counter() - t0:.2f} s "
                 f"(numba {'available' if bm.numba else 'not installed: its numpy backend'})")
    except ImportError as e:
        bm = None
        rep.note(f"2: bm25s is not installed ({e}; pip install bm25s): its reference is skipped")
    reps2 = passes * nq
    if bm is not None:
        qids = [bm.query_ids(t) for t in texts]
        bm_ref = bm
        log(f"check 2: {reps2} interleaved reps of text_search / bm25s (warmup {warmup})")
        table = db.core.table
        our_terms = [[table.text_settings.analyzer.analyze(t)] for t in texts]
        ours2 = lambda r: db.text_search(texts[r % nq], k=k, text_fields=FIELD)  # noqa: E731
        bm2 = lambda r: bm_ref.top(qids[r % nq], k)  # noqa: E731
        # the target: the two paths alone, interleaved (each call follows either one with the
        # same odds, so neither runs warm after its own code more often than the other)
        times2, results2 = interleaved({"ours": ours2, "bm25s": bm2}, reps=reps2, warmup=warmup, seed=args.seed)
        # for information, a mix of every variant: three of its five run bm25s's scoring, so
        # bm25s's timed call often follows its own code and data (warm), ours seldom
        times2m, _ = interleaved(
            {
                "ours": ours2,
                "ours ranking": lambda r: table.text_tops(our_terms[r % nq], [FIELD], k),
                "bm25s": bm2,
                "bm25s topk": lambda r: bm_ref.top_bm25s(qids[r % nq], k),
                "bm25s retrieve": lambda r: bm_ref.retrieve(qids[r % nq], k),
            },
            reps=reps2,
            warmup=warmup,
            seed=args.seed + 5,
        )
        t_ours, t_bm = median(times2["ours"]), median(times2["bm25s"])
        ratio2 = t_ours / t_bm
        rep.add(check2, fmt_ms(t_ours), f"{fmt_ms(t_bm)} (bm25s {bm.version} scores + argpartition)",
                f"{ratio2:.2f}x", "<= 1.5x", ratio2 <= 1.5)
        t_mix, t_mix_bm = median(times2m["ours"]), median(times2m["bm25s"])
        rep.add("2f. the same in a mix of five variants (3 of them bm25s's scoring)", fmt_ms(t_mix),
                f"{fmt_ms(t_mix_bm)} (bm25s scores + argpartition)", f"{t_mix / t_mix_bm:.2f}x", "info", None)
        t_topk, t_retr = median(times2m["bm25s topk"]), median(times2m["bm25s retrieve"])
        rep.add("2a. the same vs bm25s's own top-k (selection.topk, as retrieve), in the mix", fmt_ms(t_mix),
                f"{fmt_ms(t_topk)} (retrieve(): {fmt_ms(t_retr)})", f"{t_mix / t_topk:.2f}x", "info", None)
        valid = identical = 0
        for i in range(nq):
            hits = results2["ours"][i]
            valid += same_top(hits, bm.scores(qids[i]), index_of, k)
            identical += hit_ids(hits) == [corpus.ids[j] for j in results2["bm25s"][i][0][: len(hits)]]
        rep.add("2b. top-10 == bm25s (scores rel 1e-5 where tied)", f"{valid}/{nq} queries",
                f"ids identical: {identical}/{nq}", "-", "all", valid == nq)
        per_q = np.asarray(times2["ours"]) / np.asarray(times2["bm25s"])
        freq = np.asarray([corpus.query_frequent[r % nq] for r in range(reps2)])
        t_o, t_b = np.asarray(times2["ours"]), np.asarray(times2["bm25s"])
        rep.note(
            f"2: ours {spread(times2['ours'])}; bm25s {spread(times2['bm25s'])}; median per-query ratio "
            f"ours / bm25s {float(np.median(per_q)):.2f}x; in the mix: ours {spread(times2m['ours'])}, bm25s "
            f"{spread(times2m['bm25s'])}, bm25s selection.topk {spread(times2m['bm25s topk'])}, bm25s retrieve() "
            f"{spread(times2m['bm25s retrieve'])}"
        )
        t_rank = median(times2m["ours ranking"])
        rep.add("2e. the BM25 ranking alone (rows and scores, no records built) vs bm25s, in the mix",
                fmt_ms(t_rank), f"{fmt_ms(t_mix_bm)} (bm25s scores + argpartition)", f"{t_rank / t_mix_bm:.2f}x",
                "info", None)
        rank = corpus.frequent_rank
        for label, sel in ((f"2d. queries with a word of rank < {rank}", freq), ("2d'. the other queries", ~freq)):
            if sel.any():
                to, tb = median(list(t_o[sel])), median(list(t_b[sel]))
                rep.add(f"{label} ({int(sel.sum()) // passes} of {nq})",
                        fmt_ms(to), f"{fmt_ms(tb)} (bm25s)", f"{to / tb:.2f}x", "info", None)
        if ratio2 > 1.5 or args.profile:
            profiles.append((
                f"text_search, {nq} queries x {passes}",
                lambda: [db.text_search(texts[r % nq], k=k, text_fields=FIELD) for r in range(reps2)],
            ))
    else:
        alone, _ = interleaved(
            {"ours": lambda r: db.text_search(texts[r % nq], k=k, text_fields=FIELD)},
            reps=reps2, warmup=warmup, seed=args.seed,
        )
        rep.add(check2, fmt_ms(median(alone["ours"])), "bm25s not installed", "-", "<= 1.5x", None)
        rep.rows[-1] = (*rep.rows[-1][:5], "skipped")

    log(f"check 2, batch: text_search_batch of {b} queries vs {b} single calls")
    qb = texts[:b]
    times2b, results2b = interleaved(
        {
            "batch": lambda r: db.text_search_batch(qb, k=k, text_fields=FIELD),
            "singles": lambda r: [db.text_search(t, k=k, text_fields=FIELD) for t in qb],
        },
        reps=3 if q else 5,
        warmup=1,
        seed=args.seed + 1,
    )
    t_batch, t_singles = median(times2b["batch"]) / b, median(times2b["singles"]) / b
    same2b = [hit_ids(h) for h in results2b["batch"][0]] == [hit_ids(h) for h in results2b["singles"][0]]
    rep.add(f"2c. text_search_batch of {b}, per query", fmt_ms(t_batch), f"{fmt_ms(t_singles)} (single calls)",
            f"{t_singles / t_batch:.2f}x faster", "info", None)
    if not same2b:
        rep.note("2c: WARNING: text_search_batch results differ from single text_search calls")

    # ---- 4. hybrid vs text + vector ---------------------------------------------------------------
    qv = corpus.query_vectors
    log(f"check 4: {hybrid_reps} interleaved reps of hybrid / text / vector (warmup {warmup // 2})")
    fetch = max(k, min(3 * k, 100))  # what hybrid_search ranks on each side
    times4, _ = interleaved(
        {
            "hybrid": lambda r: db.hybrid_search(texts[r % nq], qv[r % nq], text_fields=FIELD, k=k),
            "text": lambda r: db.text_search(texts[r % nq], k=k, text_fields=FIELD),
            "vector": lambda r: db.vector_search(qv[r % nq], k=k),
            "text fetch": lambda r: db.text_search(texts[r % nq], k=fetch, text_fields=FIELD),
            "vector fetch": lambda r: db.vector_search(qv[r % nq], k=fetch),
        },
        reps=hybrid_reps,
        warmup=max(2, warmup // 2),
        seed=args.seed + 2,
    )
    t_h, t_t, t_v = median(times4["hybrid"]), median(times4["text"]), median(times4["vector"])
    ratio4 = t_h / (t_t + t_v)
    rep.add(f"4. hybrid_search (RRF) vs text + vector, N={n}, d={dim}", fmt_ms(t_h),
            f"{fmt_ms(t_t)} + {fmt_ms(t_v)}", f"{ratio4:.2f}x", "<= 1.3x", ratio4 <= 1.3)
    t_tf, t_vf = median(times4["text fetch"]), median(times4["vector fetch"])
    rep.add(f"4b. hybrid vs text + vector at its fetch k={fetch}", fmt_ms(t_h), f"{fmt_ms(t_tf)} + {fmt_ms(t_vf)}",
            f"{t_h / (t_tf + t_vf):.2f}x", "info", None)
    rep.note(f"4: hybrid {spread(times4['hybrid'])}; text {spread(times4['text'])}; vector {spread(times4['vector'])}")
    if ratio4 > 1.3 or args.profile:
        profiles.append((
            f"hybrid_search, {hybrid_reps} queries",
            lambda: [db.hybrid_search(texts[r % nq], qv[r % nq], text_fields=FIELD, k=k) for r in range(hybrid_reps)],
        ))

    # profiles of the big store, before it is dropped
    for label, fn in profiles:
        log(f"profiling {label}")
        rep.notes.append(f"cProfile of {label}: " + profile_text(fn))
    profiles.clear()
    db = None  # free the big store (the closures above hold its name, not a copy)
    gc.collect()

    # ---- 3. vs dataknobs-data --------------------------------------------------------------------
    check3 = f"3. vs dataknobs-data text side, N={dk_n}, per query"
    py, tried = find_dataknobs_python()
    if py is None:
        msg = dataknobs_skip_message(tried)
        rep.add(check3, "-", "skipped", "-", ">= 20x", None)
        rep.rows[-1] = (*rep.rows[-1][:5], "skipped")
        rep.note("3: " + msg)
    else:
        db10 = memory_store(records[:dk_n], ingest_batch)
        qtexts = texts[:dk_queries]
        qvecs = np.ascontiguousarray(qv[:dk_queries])
        ours3 = {
            "text": lambda r: db10.text_search(qtexts[r % dk_queries], k=k, text_fields=FIELD),
            "hybrid": lambda r: db10.hybrid_search(qtexts[r % dk_queries], qvecs[r % dk_queries],
                                                   text_fields=FIELD, k=k),
        }
        reps3 = max(dk_queries, 50)
        # ours before and after the subprocess (it cannot be interleaved call by call): pooled median
        t_a, _ = interleaved(ours3, reps=reps3, warmup=warmup, seed=args.seed + 3)
        log(f"check 3: dataknobs-data via {py} ({dk_queries} text-arm queries, N={dk_n})")
        spec = {
            "ids": corpus.ids[:dk_n], "texts": corpus.texts[:dk_n], "queries": qtexts, "k": k,
            "field": FIELD, "warmup": 1, "hybrid_queries": dk_hybrid,
        }
        dk: dict[str, Any] | None
        try:
            dk = run_child(py, DK_CHILD, corpus.x[:dk_n], qvecs, spec, prefix="dkv_bench_text_")
        except Exception as e:
            dk = None
            rep.add(check3, "-", f"error: {type(e).__name__}", "-", ">= 20x", False)
            rep.note(f"3: {e}")
        t_b2, _ = interleaved(ours3, reps=reps3, warmup=1, seed=args.seed + 4)
        if dk is not None:
            ours_t = median(t_a["text"] + t_b2["text"])
            ours_h = median(t_a["hybrid"] + t_b2["hybrid"])
            dk_t = median(dk["arm_times_s"])
            speed = dk_t / ours_t
            rep.add(check3, fmt_ms(ours_t), f"{fmt_ms(dk_t)} (dataknobs {dk['version']} LIKE scan)",
                    f"{speed:,.0f}x faster", ">= 20x", speed >= 20 and dk["count"] == dk_n)
            if dk["hybrid_times_s"]:
                dk_h = median(dk["hybrid_times_s"])
                rep.add(f"3b. hybrid_search, N={dk_n}, per query", fmt_ms(ours_h),
                        f"{fmt_ms(dk_h)} (dataknobs, text_weight=1, vector_weight=0)",
                        f"{dk_h / ours_h:,.0f}x faster", "info", None)
            with_hits = sum(h > 0 for h in dk["arm_hits"])
            ours_hits = sum(len(db10.text_search(t, k=k, text_fields=FIELD)) > 0 for t in qtexts)
            rep.note(
                f"3: dataknobs ({dk['class']}, python {dk['python']}) text arm {spread(dk['arm_times_s'])}, "
                f"build {dk['build_s']:.2f} s, {with_hits}/{dk_queries} queries matched its LIKE '%query%'; "
                f"ours text_search {spread(t_a['text'] + t_b2['text'])}, {ours_hits}/{dk_queries} with BM25 hits"
            )
        db10 = None
        gc.collect()

    # ---- 5. ingest -------------------------------------------------------------------------------
    work = Path(tempfile.mkdtemp(prefix="bench-text-"))
    sizes: dict[str, tuple[int, int]] = {}

    def file_variant(text: bool) -> Callable[[int], tuple[float, Any]]:
        def run(r: int) -> tuple[float, Any]:
            root = work / f"{'text' if text else 'plain'}-{r + 1}"
            seconds, _db = ingest("file", root, records, ingest_batch, text)
            sizes["text" if text else "plain"] = disk_bytes(root)
            shutil.rmtree(root, ignore_errors=True)
            return seconds, None

        return run

    def memory_variant(text: bool) -> Callable[[int], tuple[float, Any]]:
        # the memory backend indexes text_search_fields on their first search, not at commit:
        # the text variant's time includes that first search
        def run(r: int) -> tuple[float, Any]:
            t0 = time.perf_counter()
            _seconds, mem = ingest("memory", None, records, ingest_batch, text)
            if text:
                mem.text_search(texts[0], k=k, text_fields=FIELD)
            return time.perf_counter() - t0, None

        return run

    try:
        log(f"check 5: {ingest_reps} interleaved ingests of {n} records per variant (+1 warm-up)")
        times5, _ = interleaved_selftimed(
            {
                "file text": file_variant(True),
                "file": file_variant(False),
                "memory text": memory_variant(True),
                "memory": memory_variant(False),
            },
            reps=ingest_reps,
            seed=args.seed + 5,
            on_call=lambda r, name, t: log(f"  ingest rep {r + 1}: {name} {t:.2f} s"),
        )
        f_t, f_p = median(times5["file text"]), median(times5["file"])
        m_t, m_p = median(times5["memory text"]), median(times5["memory"])
        ratio5 = f_t / f_p
        rep.add(f"5. file ingest of {n} (batches of {ingest_batch}) with text index vs without",
                f"{f_t:.2f} s", f"{f_p:.2f} s", f"{ratio5:.2f}x", "<= 1.5x", ratio5 <= 1.5)
        rep.add("5b. memory ingest + first text_search (builds the index) vs ingest", f"{m_t:.2f} s", f"{m_p:.2f} s",
                f"{m_t / m_p:.2f}x", "info", None)
        total_t, text_b = sizes["text"]
        total_p, _ = sizes["plain"]
        rep.add("5c. text index on disk (*.t0.* files) vs raw UTF-8 text", fmt_mb(text_b),
                fmt_mb(corpus.text_bytes), f"{text_b / corpus.text_bytes:.2f}x", "info", None)
        paired = [a / b for a, b in zip(times5["file text"], times5["file"])]
        rep.note(f"5: file with text index {spread(times5['file text'])}; without {spread(times5['file'])}; "
                 f"ratio per repetition {', '.join(f'{x:.2f}x' for x in paired)}; store on disk with text index "
                 f"{fmt_mb(total_t)}, without {fmt_mb(total_p)}")
        if ratio5 > 1.5 or args.profile:
            log("profiling a file ingest with and without the text index")
            roots = [work / "profile-text", work / "profile-plain"]
            rep.notes.append(
                f"cProfile of a file ingest of {n} with the text index vs without: " + profile_delta(
                    lambda: ingest("file", roots[0], records, ingest_batch, True),
                    lambda: ingest("file", roots[1], records, ingest_batch, False),
                )
            )
            for root in roots:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rep.rows.sort(key=lambda row: row[0].split(".")[0])  # in check order (2b after 2, ...)
    runtime = time.perf_counter() - t_start
    header = (
        f"## dk_vector_plugins full-text search: N={n} documents, vocabulary {vocab} (Zipf {args.zipf}), "
        f"{nq} queries, k={k}, d={dim} (medians of interleaved runs)"
    )
    extra = f"bm25s {bm.version} (numba {'yes' if bm.numba else 'no'})" if bm is not None else "bm25s: not installed"
    rep.print(header, env_summary(extra), runtime)
    return 0


if __name__ == "__main__":
    run_report(main)
