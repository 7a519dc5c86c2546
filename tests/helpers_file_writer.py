"""Child-process writers for the file-backend tests (run as a script, never collected by pytest).

Usage::

    python tests/helpers_file_writer.py creates <path> <prefix> <n> [fsync] [commit_retries]
    python tests/helpers_file_writer.py crashloop <path> <first-batch> <seed>
    python tests/helpers_file_writer.py batches <path> <first-batch> <count> <batch-size>

Each mode opens the store, prints ``ready`` and (``creates`` only) waits for a line on stdin
before it starts, so the parent can line several children up. Every line is flushed at once.

``crashloop`` writes batches of :data:`BATCH` records with ids ``b<batch>-<j>`` until it is
killed, and prints ``committed <batch>`` only after ``create_batch`` returned. Along the way it
updates the previous batch (all its records get the same new ``gen`` in one write: ``updating`` /
``updated``), deletes an older batch of its own (``deleting`` / ``deleted``), compacts
(``compacting`` / ``compacted``) and vacuums, so those paths are killed mid-way too.
"""

from __future__ import annotations

import random
import sys

import numpy as np

from dk_vector_plugins import DatabaseFactory, Record, VectorField

BATCH = 20
DIM = 8


def say(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def batch_records(b: int, gen: int, rng: np.random.Generator) -> list[Record]:
    vecs = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    return [
        Record(
            {"batch": b, "j": j, "gen": gen, "embedding": VectorField(vecs[j])},
            id=f"b{b}-{j}",
        )
        for j in range(BATCH)
    ]


def creates(path: str, prefix: str, n: int, fsync: bool, retries: int = 20) -> None:
    db = DatabaseFactory().create(
        backend="file", path=path, vector_enabled=True, fsync=fsync, commit_retries=retries
    )
    say("ready")
    sys.stdin.readline()  # the parent's "go"
    rng = np.random.default_rng(abs(hash(prefix)) % 2**32)
    for i in range(n):
        db.create(
            Record({"i": i, "embedding": VectorField(rng.random(DIM, dtype=np.float32))}, id=f"{prefix}-{i}")
        )
    say(f"done {db.count()}")
    db.close()


def crashloop(path: str, first: int, seed: int) -> None:
    db = DatabaseFactory().create(
        backend="file", path=path, vector_enabled=True, max_segments=6, keep_versions=2
    )
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    mine: list[int] = []  # batches this process committed and has not deleted
    say("ready")
    b = first
    while True:
        db.create_batch(batch_records(b, 0, rng))
        say(f"committed {b}")
        mine.append(b)
        roll = pick.random()
        if roll < 0.3 and len(mine) >= 2:
            target = mine[-2]
            say(f"updating {target}")
            gen = pick.randint(1, 10**6)
            ok = db.update_batch(batch_records(target, gen, rng))
            assert all(ok), ok
            say(f"updated {target} {gen}")
        elif roll < 0.5 and len(mine) >= 3:
            target = mine.pop(pick.randrange(len(mine) - 1))
            say(f"deleting {target}")
            gone = db.delete_batch([f"b{target}-{j}" for j in range(BATCH)])
            assert all(gone), gone
            say(f"deleted {target}")
        elif roll < 0.6:
            say("compacting")
            db.compact()
            say("compacted")
        elif roll < 0.65:
            say("vacuuming")
            db.vacuum(grace_s=0)
            say("vacuumed")
        b += 1


def batches(path: str, first: int, count: int, size: int) -> None:
    db = DatabaseFactory().create(backend="file", path=path, vector_enabled=True, fsync=False)
    say("ready")
    rng = np.random.default_rng(first)
    for b in range(first, first + count):
        vecs = rng.standard_normal((size, DIM)).astype(np.float32)
        db.create_batch(
            [Record({"batch": b, "embedding": VectorField(vecs[j])}, id=f"b{b}-{j}") for j in range(size)]
        )
        say(f"committed {b}")
    db.close()


def main(argv: list[str]) -> None:
    mode, path = argv[0], argv[1]
    if mode == "creates":
        creates(path, argv[2], int(argv[3]), len(argv) < 5 or argv[4] == "1", int(argv[5]) if len(argv) > 5 else 20)
    elif mode == "crashloop":
        crashloop(path, int(argv[2]), int(argv[3]))
    elif mode == "batches":
        batches(path, int(argv[2]), int(argv[3]), int(argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
