"""The ``file`` backend under real OS processes: racing writers, and writers killed with SIGKILL.

The child processes are ``helpers_file_writer.py`` (run as a script with this interpreter).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dk_vector_plugins import DatabaseFactory

HELPER = str(Path(__file__).with_name("helpers_file_writer.py"))
sys.path.insert(0, str(Path(__file__).parent))
from helpers_file_writer import BATCH  # noqa: E402

pytestmark = pytest.mark.slow


def popen_helper(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, HELPER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        _, err = proc.communicate(timeout=30)
        raise AssertionError(f"child said {line!r} instead of 'ready'; stderr:\n{err}")


def open_file(path: Path, **config: Any) -> Any:
    return DatabaseFactory().create(backend="file", path=str(path), vector_enabled=True, **config)


def race_creators(path: Path, prefixes: list[str], n: int, *extra: str, timeout: float) -> None:
    """Start one ``creates`` child per prefix (fsync off: atomicity does not depend on it), let
    them go at once, and check that each created its ``n`` records and exited cleanly."""
    procs = [popen_helper("creates", str(path), prefix, str(n), "0", *extra) for prefix in prefixes]
    try:
        for p in procs:
            wait_ready(p)
        for p in procs:  # all start together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip().splitlines()[-1].startswith("done")


def test_four_writers_that_only_append_never_give_up(tmp_path: Path) -> None:
    """Creates cannot conflict: a writer that lost a commit race plans again on the winner's
    version (a rebase) as often as it takes. With ``commit_retries=0`` every lost race used to be
    a ConflictError; 4 processes on this machine lose many."""
    path = tmp_path / "s"
    n = 120
    prefixes = [f"w{k}" for k in range(4)]
    race_creators(path, prefixes, n, "0", timeout=240)  # commit_retries=0: no ConflictError
    db = open_file(path)
    try:
        assert {r.id for r in db.all()} == {f"{p}-{i}" for p in prefixes for i in range(n)}
    finally:
        db.close()


def test_two_processes_racing_single_creates_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s"
    n = 500
    race_creators(path, ["p0", "p1"], n, timeout=120)
    db = open_file(path)
    try:
        assert db.count() == 2 * n
        assert {r.id for r in db.all()} == {f"p{k}-{i}" for k in (0, 1) for i in range(n)}
        assert db.verify()["live"] == 2 * n
        # both raced for the same manifest versions: one commit each (plus compactions)
        assert db.version >= 2 * n
    finally:
        db.close()


class Ledger:
    """What the killed children said they did, batch by batch."""

    def __init__(self) -> None:
        self.committed: set[int] = set()
        self.deleting: set[int] = set()  # a delete started (it may or may not have landed)
        self.deleted: set[int] = set()  # a delete returned
        self.gen: dict[int, int] = {}  # the last update that returned: all rows carry this gen
        self.updating: set[int] = set()  # an update was in flight when the child died
        self.events: dict[str, int] = {}
        self.highest = -1

    def read(self, out: str) -> None:
        for line in out.splitlines():  # whole lines: each is one write() of < PIPE_BUF bytes
            parts = line.split()
            if not parts:
                continue
            what = parts[0]
            self.events[what] = self.events.get(what, 0) + 1
            if what == "committed":
                b = int(parts[1])
                self.committed.add(b)
                self.highest = max(self.highest, b)
            elif what == "deleting":
                self.deleting.add(int(parts[1]))
            elif what == "deleted":
                self.deleted.add(int(parts[1]))
            elif what == "updating":
                self.updating.add(int(parts[1]))
            elif what == "updated":
                b, g = int(parts[1]), int(parts[2])
                self.updating.discard(b)
                self.gen[b] = g


def check_store(path: Path, ledger: Ledger, round_no: int) -> int:
    """verify() passes; whole batches only; everything reported is there. Returns the live count."""
    db = open_file(path)
    try:
        report = db.verify()
        records = db.all()
        by_batch: dict[int, list[Any]] = {}
        for r in records:
            by_batch.setdefault(int(r["batch"]), []).append(r)
        for b, recs in by_batch.items():
            assert len(recs) == BATCH, f"round {round_no}: batch {b} is partly visible ({len(recs)} rows)"
            assert sorted(r.id for r in recs) == sorted(f"b{b}-{j}" for j in range(BATCH))
            gens = {r["gen"] for r in recs}
            assert len(gens) == 1, f"round {round_no}: batch {b} half updated: {gens}"
            if b in ledger.gen and b not in ledger.updating:
                assert gens == {ledger.gen[b]}, f"round {round_no}: update of batch {b} lost"
        for b in ledger.committed - ledger.deleting:
            assert b in by_batch, f"round {round_no}: committed batch {b} is missing"
        for b in ledger.deleted:
            assert b not in by_batch, f"round {round_no}: deleted batch {b} came back"
        assert report["live"] == len(records) == db.count()
        # searching works and returns only whole records
        hits = db.vector_search([1.0] * 8, k=50)
        assert len(hits) == min(50, len(records))
        return len(records)
    finally:
        db.close()


def test_sigkilled_writer_never_corrupts_the_store(tmp_path: Path) -> None:
    path = tmp_path / "s"
    rng = random.Random(int(os.environ.get("DKV_CRASH_SEED", "20240607")))
    ledger = Ledger()
    rounds = 8
    first = 0
    lives = []
    for round_no in range(rounds):
        proc = popen_helper("crashloop", str(path), str(first), str(rng.randrange(2**31)))
        try:
            wait_ready(proc)
            time.sleep(rng.uniform(0.05, 0.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, f"child exited early:\n{err}"
        ledger.read(out)
        lives.append(check_store(path, ledger, round_no))
        # the batch in flight (highest + 1) may have landed: start past it, never reuse its ids
        first = max(first, ledger.highest + 2)
    # the rounds really exercised the store
    assert len(ledger.committed) >= rounds, ledger.events
    assert ledger.events.get("deleted", 0) + ledger.events.get("updated", 0) >= 1, ledger.events
    assert ledger.events.get("compacting", 0) >= 1, ledger.events
    assert max(lives) > 0
    # a final writer picks up after all the crashes and the store stays clean
    db = open_file(path, keep_versions=1)
    try:
        db.compact()
        db.vacuum(grace_s=0)
        assert db.verify()["live"] == lives[-1]
    finally:
        db.close()
    assert check_store(path, ledger, rounds) == lives[-1]
