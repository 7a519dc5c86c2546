#!/usr/bin/env python
"""Small writes: single-record commits of the ``file`` and ``s3`` backends, side by side.

Every variant runs in the same process and run, on the same vectors, interleaved per repetition
(shuffled order), and is compared by its median. Checks (defaults: d=384, 300 single inserts):

a. durable single-record creates (``fsync=True``: on disk when ``create`` returns) vs SQLite's
   durable one-row transactions (WAL, ``synchronous=FULL``, one ``BEGIN``/``INSERT``/``COMMIT``
   per row, the vector as a blob): target >= 0.5x.
b. the same without fsync (``fsync=False``: the OS writes it back) vs SQLite with
   ``synchronous=OFF``: information (LanceDB's ``add``, which makes no fsync, when installed).
c. files and bytes on disk after the inserts, before and after ``compact()`` + ``vacuum(0)``.
d. the longest single commit among the inserts (automatic maintenance included) vs the median one;
   the same with ``maintenance="inline"`` (merges and clean-ups in the commit that makes them
   due) for comparison. Every rate includes the maintenance still under way in the background
   when the last insert returns.
e. S3 (a local moto server over HTTP): requests per single-record commit (target <= 3) and
   requests a reader makes to catch up after n of them (target <= n + 2).
f. S3: a writer process's cold open plus its first single-record append on a table of
   ``--s3-rows`` rows (default 100k x d), with the default options (the table loaded) and as a
   writer opens (``load_vectors=False, lazy_rows=True``: the manifest and each segment's ids
   only): time, requests, bytes downloaded; LanceDB's ``connect`` + ``open_table`` + ``add`` of
   one row on the same server and data when it is installed (target: the writer >= 1x LanceDB).

LanceDB (``pip install lancedb``) is measured when importable, and reported as skipped otherwise.

Usage::

    python benchmarks/bench_writes.py [--n 300] [--dim 384] [--reps 3] [--quick]

The script always exits 0: it is a report; failed targets are marked FAIL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from _common import Report, env_summary, log, median

from dk_vector_plugins import DatabaseFactory, Record, VectorField

if TYPE_CHECKING:
    import boto3
    from s3_server import S3Server


def dkv_inserts(root: Path, vecs: np.ndarray, fsync: bool, **config: Any) -> tuple[float, list[float], Any]:
    """Single-record creates into a fresh file store; (inserts/s, per-commit seconds, store)."""
    db = DatabaseFactory().create(backend="file", path=str(root), fsync=fsync, **config)
    times = []
    t0 = time.perf_counter()
    for i, v in enumerate(vecs):
        t = time.perf_counter()
        db.create(Record({"title": f"doc {i}", "n": i, "embedding": VectorField(v)}, id=f"id{i}"))
        times.append(time.perf_counter() - t)
    db.storage.settle()  # the rate includes the merges and clean-ups still under way in the background
    return len(vecs) / (time.perf_counter() - t0), times, db


def sqlite_inserts(root: Path, vecs: np.ndarray, synchronous: str) -> float:
    """One transaction per row in SQLite (WAL journal)."""
    root.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(root / "t.db"), isolation_level=None)
    con.execute("pragma journal_mode=wal")
    con.execute(f"pragma synchronous={synchronous}")
    con.execute("create table t(id text primary key, data text, vec blob)")
    t0 = time.perf_counter()
    for i, v in enumerate(vecs):
        con.execute("begin")
        con.execute("insert into t values (?, ?, ?)", (f"id{i}", f'{{"title": "doc {i}", "n": {i}}}', v.tobytes()))
        con.execute("commit")
    rate = len(vecs) / (time.perf_counter() - t0)
    con.close()
    return rate


def lancedb_inserts(root: Path, vecs: np.ndarray) -> float | None:
    """Single-row ``add`` into a LanceDB table (no fsync), or ``None`` when not installed."""
    try:
        import lancedb  # type: ignore[import-not-found]
    except ImportError:
        return None
    db = lancedb.connect(str(root))
    table = db.create_table("t", data=[{"id": "id0", "title": "doc 0", "n": 0, "vector": vecs[0].tolist()}])
    t0 = time.perf_counter()
    for i, v in enumerate(vecs[1:], 1):
        table.add([{"id": f"id{i}", "title": f"doc {i}", "n": i, "vector": v.tolist()}])
    return (len(vecs) - 1) / (time.perf_counter() - t0)


def threaded_inserts(root: Path, vecs: np.ndarray, threads: int) -> tuple[float, int]:
    """Durable single creates from ``threads`` threads at once (group commit); (inserts/s, commits)."""
    import threading

    db = DatabaseFactory().create(backend="file", path=str(root))
    per = len(vecs) // threads

    def work(k: int) -> None:
        for j in range(per):
            i = k * per + j
            db.create(Record({"n": i, "embedding": VectorField(vecs[i])}, id=f"id{i}"))

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    db.storage.settle()  # as for one thread: the maintenance still under way is counted
    rate = per * threads / (time.perf_counter() - t0)
    commits = db.version
    db.close()
    return rate, commits


def disk(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


@contextlib.contextmanager
def _moto() -> Iterator[S3Server | None]:
    """tests/s3_server.py's moto server over HTTP (stopped on exit), or ``None`` without moto."""
    try:
        from s3_server import start
    except ImportError:
        yield None
        return
    server = start()
    try:
        yield server
    finally:
        server.stop()


def s3_requests(n: int, dim: int) -> tuple[float, list[int]] | None:
    """(requests per single-record commit, reader requests after each of 1..n commits)."""
    with _moto() as server:
        if server is None:
            return None
        config = server.config()
        writer = DatabaseFactory().create(backend="s3", **config)
        reader = DatabaseFactory().create(backend="s3", **config)
        sent: dict[str, int] = {"w": 0, "r": 0}
        writer.s3_client.meta.events.register("before-send.s3.*", lambda **_: sent.__setitem__("w", sent["w"] + 1))
        reader.s3_client.meta.events.register("before-send.s3.*", lambda **_: sent.__setitem__("r", sent["r"] + 1))
        rng = np.random.default_rng(1)
        writer.create(Record({"embedding": VectorField(rng.standard_normal(dim))}, id="first"))
        reader.count()
        sent["w"] = 0
        for i in range(n):
            writer.create(Record({"n": i, "embedding": VectorField(rng.standard_normal(dim))}, id=f"s{i}"))
        writer.storage.settle()  # a merge still under way in the background is counted too
        per_commit = sent["w"] / n
        reader.count()  # caught up
        catch_up = []
        for behind in (1, 5, 10):
            for i in range(behind):
                writer.create(Record({"embedding": VectorField(rng.standard_normal(dim))}, id=f"c{behind}-{i}"))
            sent["r"] = 0
            reader.count()
            catch_up.append(sent["r"])
        writer.close()
        reader.close()
        return per_commit, catch_up


def s3_writer_open(rows: int, dim: int, reps: int) -> dict[str, tuple[float, int, int]] | None:
    """Cold open + first single-record append by a writer on a table of ``rows`` rows, per
    variant: (median seconds, requests, bytes downloaded); LanceDB's when importable."""
    with _moto() as server:
        if server is None:
            return None
        config = server.config()
        rng = np.random.default_rng(2)
        base = DatabaseFactory().create(backend="s3", **config)
        x = rng.standard_normal((rows, dim)).astype(np.float32)
        step = 10_000
        for j in range(0, rows, step):
            ids = [f"r{i}" for i in range(j, min(rows, j + step))]
            base.add_vectors(x[j : j + step], ids=ids, metadata=[{"title": f"doc {i}"} for i in range(len(ids))])
        base.close()
        lance_uri = lance_table(server, x) if _lancedb() is not None else None
        variants: dict[str, dict[str, Any]] = {"default": {}, "writer": {"load_vectors": False, "lazy_rows": True}}
        out: dict[str, tuple[float, int, int]] = {}
        times: dict[str, list[float]] = {name: [] for name in variants}
        if lance_uri is not None:
            times["lancedb"] = []
        counts: dict[str, tuple[int, int]] = {}
        for r in range(reps):
            for name in random.Random(r).sample(sorted(times), len(times)):
                if name == "lancedb":
                    times[name].append(lance_append(server, lance_uri, x[0], r))
                    continue
                opened = {k: v for k, v in config.items() if k != "create_bucket"}  # it exists
                seconds, requests, nbytes = dkv_append(opened, variants[name], dim, f"{name}-{r}")
                times[name].append(seconds)
                counts[name] = (requests, nbytes)
        for name, ts in times.items():
            req, nbytes = counts.get(name, (-1, -1))
            out[name] = (median(ts), req, nbytes)
        return out


def dkv_append(config: dict[str, Any], extra: dict[str, Any], dim: int, rid: str) -> tuple[float, int, int]:
    """(seconds, requests, bytes downloaded) of a cold open and one single-record create."""
    from s3_server import clients_from

    session = _counting_session()
    sent = _COUNTED
    sent[:] = [0, 0]
    vec = np.random.default_rng(len(rid)).standard_normal(dim).astype(np.float32)
    t0 = time.perf_counter()
    with clients_from(session):
        db = DatabaseFactory().create(backend="s3", **config, **extra)
    db.create(Record({"title": "new", "embedding": VectorField(vec)}, id=rid))
    seconds = time.perf_counter() - t0
    db.close()
    return seconds, sent[0], sent[1]


#: Requests sent and bytes of objects read through :func:`_counting_session`'s clients.
_COUNTED = [0, 0]
_SESSION: list[boto3.session.Session] = []


def _counting_session() -> boto3.session.Session:
    """One boto3 session (made once: a new session loads botocore's data files again, which
    would be timed) whose clients count into :data:`_COUNTED`."""
    if not _SESSION:
        import boto3

        def on_send(**_: object) -> None:
            _COUNTED[0] += 1

        def on_get(parsed: Mapping[str, Any], **_: object) -> None:
            _COUNTED[1] += int(parsed.get("ContentLength") or 0)

        session = boto3.Session()
        session.events.register("before-send.s3.*", on_send)
        session.events.register("after-call.s3.GetObject", on_get)
        _SESSION.append(session)
    return _SESSION[0]


def _lancedb() -> ModuleType | None:
    try:
        import lancedb
    except ImportError:
        return None
    return lancedb


def _lance_options(server: S3Server) -> dict[str, str]:
    cfg = server.config()
    return {
        "endpoint": cfg["endpoint_url"],
        "aws_access_key_id": cfg.get("aws_access_key_id", "testing"),
        "aws_secret_access_key": cfg.get("aws_secret_access_key", "testing"),
        "region": cfg.get("region_name", "us-east-1"),
        "allow_http": "true",
    }


def lance_table(server: S3Server, x: np.ndarray) -> str:
    """The same vectors (and titles) as a LanceDB table on the same S3 server; its URI."""
    import pyarrow as pa

    lancedb = _lancedb()
    uri = f"s3://{server.config()['bucket']}/lance-{random.randrange(1 << 30)}"
    db = lancedb.connect(uri, storage_options=_lance_options(server))
    step = 10_000
    for j in range(0, len(x), step):
        part = x[j : j + step]
        data = pa.table({
            "id": [f"r{i}" for i in range(j, j + len(part))],
            "title": [f"doc {i}" for i in range(j, j + len(part))],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), x.shape[1]),
        })
        if j == 0:
            db.create_table("t", data)
        else:
            db.open_table("t").add(data)
    return uri


def lance_append(server: S3Server, uri: str, vec: np.ndarray, r: int) -> float:
    """Seconds of LanceDB's cold ``connect`` + ``open_table`` + ``add`` of one row."""
    import pyarrow as pa

    lancedb = _lancedb()
    t0 = time.perf_counter()
    table = lancedb.connect(uri, storage_options=_lance_options(server)).open_table("t")
    table.add(pa.table({
        "id": [f"new{r}"],
        "title": ["new"],
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vec.astype(np.float32)), len(vec)),
    }))
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=300, help="single inserts per variant")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--s3-rows", type=int, default=100_000, help="rows of the table check f opens (0: skip f)")
    ap.add_argument("--quick", action="store_true", help="n=100, reps=2, s3-rows=5000")
    args = ap.parse_args()
    if args.quick:
        args.n, args.reps, args.s3_rows = 100, 2, 5_000
    started = time.perf_counter()
    vecs = np.random.default_rng(0).standard_normal((args.n, args.dim)).astype(np.float32)
    work = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    rates: dict[str, list[float]] = {}
    last: dict[str, Any] = {}
    variants: dict[str, Callable[[Path], float | None]] = {
        "dkv durable": lambda p: _keep(last, "durable", dkv_inserts(p, vecs, True)),
        "dkv os": lambda p: _keep(last, "os", dkv_inserts(p, vecs, False)),
        "dkv durable, objects": lambda p: _keep(last, "objects", dkv_inserts(p, vecs, True, inline_bytes=0)),
        "dkv durable, inline maintenance": lambda p: _keep(
            last, "inline", dkv_inserts(p, vecs, True, maintenance="inline")
        ),
        "sqlite full": lambda p: sqlite_inserts(p, vecs, "full"),
        "sqlite off": lambda p: sqlite_inserts(p, vecs, "off"),
        "lancedb add": lambda p: lancedb_inserts(p, vecs),
        "dkv 8 threads": lambda p: _keep_commits(last, threaded_inserts(p, vecs, 8)),
    }
    try:
        for rep in range(args.reps):
            order = list(variants)
            random.Random(rep).shuffle(order)
            for name in order:
                root = work / f"{name.replace(' ', '-')}-{rep}"
                got = variants[name](root)
                if got is not None:
                    rates.setdefault(name, []).append(got)
                if name.startswith("dkv") and "threads" not in name and rep < args.reps - 1:
                    key = (
                        "objects" if "objects" in name else "inline" if "inline" in name
                        else "durable" if "durable" in name else "os"
                    )
                    last.pop(key)[2].close()
                    shutil.rmtree(root, ignore_errors=True)
            log(f"rep {rep + 1}/{args.reps}: " + ", ".join(f"{k} {median(v):.0f}/s" for k, v in rates.items()))
        report = Report()
        dur, os_rate = median(rates["dkv durable"]), median(rates["dkv os"])
        sq_full, sq_off = median(rates["sqlite full"]), median(rates["sqlite off"])
        report.add("a. durable single creates", f"{dur:.0f}/s", f"SQLite FULL {sq_full:.0f}/s",
                   f"{dur / sq_full:.2f}x", ">= 0.5x", dur / sq_full >= 0.5)
        report.add("b. creates without fsync", f"{os_rate:.0f}/s", f"SQLite OFF {sq_off:.0f}/s",
                   f"{os_rate / sq_off:.2f}x", "info", None)
        eight = median(rates["dkv 8 threads"])
        report.add("g. 8 threads (group commit) vs 1 thread", f"{eight:.0f}/s ({last['commits']} commits)",
                   f"{dur:.0f}/s", f"{eight / dur:.1f}x", ">= 4x", eight / dur >= 4)
        objects = median(rates["dkv durable, objects"])
        report.add("a\". durable, inline_bytes=0 (each segment its own files)", f"{objects:.0f}/s",
                   f"SQLite FULL {sq_full:.0f}/s", f"{objects / sq_full:.2f}x", "info", None)
        if "lancedb add" in rates:
            lance = median(rates["lancedb add"])
            report.add("a'. durable vs LanceDB add", f"{dur:.0f}/s", f"LanceDB {lance:.0f}/s",
                       f"{dur / lance:.2f}x", ">= 1x", dur / lance >= 1)
            report.add("b'. fsync=False vs LanceDB add", f"{os_rate:.0f}/s", f"LanceDB {lance:.0f}/s",
                       f"{os_rate / lance:.2f}x", ">= 3x", os_rate / lance >= 3)
        else:
            report.note("LanceDB is not installed (pip install lancedb): its rows are skipped")
        inline_rate = median(rates["dkv durable, inline maintenance"])
        report.add("a*. durable, maintenance='inline' (merges in the commit)", f"{inline_rate:.0f}/s",
                   f"background {dur:.0f}/s", f"{dur / inline_rate:.2f}x", "info", None)
        _, inline_times, _ = last["inline"]
        report.add("d*. longest commit / median, maintenance='inline'", f"{max(inline_times) * 1000:.1f} ms",
                   f"{median(inline_times) * 1000:.2f} ms", f"{max(inline_times) / median(inline_times):.0f}x",
                   "info", None)
        for key in ("os", "objects", "inline"):
            last.pop(key)[2].close()
        _, times, db = last["durable"]
        files, size = disk(Path(db.config["path"]))
        db.compact()
        db.vacuum(grace_s=0)
        files2, size2 = disk(Path(db.config["path"]))
        raw = args.n * args.dim * 4
        report.add(f"c. disk after {args.n} inserts", f"{files} files, {size / 2**20:.1f} MiB",
                   f"vectors {raw / 2**20:.1f} MiB", f"{size / raw:.1f}x", "info", None)
        report.add("c'. after compact + vacuum(0)", f"{files2} files, {size2 / 2**20:.1f} MiB",
                   f"vectors {raw / 2**20:.1f} MiB", f"{size2 / raw:.1f}x", "info", None)
        worst, typical = max(times), median(times)
        report.add("d. longest commit / median", f"{worst * 1000:.1f} ms", f"{typical * 1000:.2f} ms",
                   f"{worst / typical:.0f}x", "<= 5x", worst / typical <= 5)
        db.close()
        s3 = s3_requests(20, args.dim)
        if s3 is None:
            report.note("S3 checks skipped: moto's server is not installed (pip install -e '.[test]')")
        else:
            per_commit, catch_up = s3
            report.add("e. S3 requests per small commit", f"{per_commit:.1f}", "", "", "<= 3", per_commit <= 3)
            ok = all(r <= n + 2 for r, n in zip(catch_up, (1, 5, 10)))
            report.add("e'. S3 reader catch-up after 1/5/10 commits", "/".join(map(str, catch_up)),
                       "n + 2: 3/7/12", "", "<= n + 2", ok)
        opened = s3_writer_open(args.s3_rows, args.dim, args.reps) if args.s3_rows else None
        if opened is not None:
            w_s, w_req, w_bytes = opened["writer"]
            d_s, d_req, d_bytes = opened["default"]
            report.add(f"f. S3 writer cold open + first append, {args.s3_rows} rows",
                       f"{w_s * 1000:.0f} ms, {w_req} requests, {w_bytes / 2**20:.1f} MiB",
                       f"default options: {d_s * 1000:.0f} ms, {d_req} requests, {d_bytes / 2**20:.1f} MiB",
                       f"{w_s / d_s:.2f}x", "info", None)
            if "lancedb" in opened:
                l_s = opened["lancedb"][0]
                report.add("f'. the writer's cold open + first append vs LanceDB's", f"{w_s * 1000:.0f} ms",
                           f"LanceDB {l_s * 1000:.0f} ms", f"{l_s / w_s:.2f}x faster", ">= 1x", w_s <= l_s)
            else:
                report.note("f': LanceDB is not installed (pip install lancedb): its row is skipped")
        report.print(f"## Small writes (file backend; d={args.dim}, {args.n} single inserts, median of {args.reps})",
                     env_summary(), time.perf_counter() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _keep_commits(store: dict[str, Any], got: tuple[float, int]) -> float:
    store["commits"] = got[1]
    return got[0]


def _keep(store: dict[str, Any], key: str, got: tuple[float, list[float], Any]) -> float:
    store[key] = got
    return got[0]


if __name__ == "__main__":
    sys.exit(main())
