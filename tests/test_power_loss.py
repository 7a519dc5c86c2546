"""A power failure loses what was not fsynced; no write a file store acknowledged may be lost.

:class:`PowerLoss` watches the file operations of the local object store (its module's ``os``)
and, on :meth:`PowerLoss.fail`, rewinds the store directory to what a disk that honours only
fsync would hold: a directory keeps the names its last fsync saw (names created or replaced
since are gone, replaced ones point at their older file again), and a file keeps the bytes of
its last fsync (a file never fsynced is empty). This is the worst case POSIX allows, harsher than
ext4's usual behaviour. The store is then reopened in a fresh process state and must hold every
record whose ``create`` returned, pass ``verify()``, and take new writes.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import DatabaseFactory, Record, VectorField
from dk_vector_plugins.storage import local

# the model reads which file a descriptor names from /proc (Linux)
pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")


class PowerLoss:
    """Tracks what is durable under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        #: directory -> {name: inode} as of its last fsync
        self.entries: dict[str, dict[str, int]] = {}
        #: inode -> bytes as of its last fsync
        self.content: dict[int, bytes] = {}
        self._snapshot()
        real = os

        def fsync(fd: int) -> None:
            real.fsync(fd)
            path = real.readlink(f"/proc/self/fd/{fd}")
            st = real.fstat(fd)
            if os.path.isdir(path):
                self.entries[path] = {e.name: e.inode() for e in real.scandir(path)}
            else:
                with open(path, "rb") as f:
                    self.content[st.st_ino] = f.read()

        proxy = types.SimpleNamespace(**{name: getattr(real, name) for name in dir(real) if not name.startswith("__")})
        proxy.fsync = fsync
        monkeypatch.setattr(local, "os", proxy)

    def _snapshot(self) -> None:
        """What is on disk now counts as durable (the test's starting point)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for d, _, files in os.walk(self.root):
            self.entries[d] = {e.name: e.inode() for e in os.scandir(d)}
            for name in files:
                p = os.path.join(d, name)
                with open(p, "rb") as f:
                    self.content[os.stat(p).st_ino] = f.read()

    def fail(self) -> dict[str, int]:
        """Rewind the directory to its durable state; returns what was lost (for the test's log)."""
        lost = {"names": 0, "files emptied or rewound": 0}
        for d, _, _ in sorted(os.walk(self.root), key=lambda x: -len(x[0])):
            durable = self.entries.get(d)
            if durable is None:  # a directory whose creation was never made durable: empty it
                durable = {}
            for e in list(os.scandir(d)):
                if e.is_dir():
                    continue
                ino = durable.get(e.name)
                if ino is None:
                    os.unlink(e.path)
                    lost["names"] += 1
                    continue
                want = self.content.get(ino, b"")
                with open(e.path, "rb") as f:
                    have = f.read()
                if have != want or e.inode() != ino:
                    with open(e.path, "wb") as f:
                        f.write(want)
                    lost["files emptied or rewound"] += 1
            for name in set(durable) - {e.name for e in os.scandir(d)}:  # replaced, then lost
                with open(os.path.join(d, name), "wb") as f:
                    f.write(self.content.get(durable[name], b""))
        return lost


def vec(i: int, dim: int = 16) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(dim).astype(np.float32)


@pytest.mark.parametrize(
    "config",
    [
        {},  # small commits inside their manifests
        {"inline_bytes": 0},  # every segment on its own objects
        {"max_segments": 4},  # automatic compaction among the writes
    ],
    ids=["inline", "objects", "compacting"],
)
@pytest.mark.parametrize("fail_after", [1, 7, 23])
def test_no_acknowledged_write_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], fail_after: int
) -> None:
    root = tmp_path / "store"
    disk = PowerLoss(root, monkeypatch)
    db = DatabaseFactory().create(backend="file", path=str(root), **config)
    acknowledged = []
    for i in range(fail_after):
        db.create(Record({"n": i, "embedding": VectorField(vec(i))}, id=f"r{i}"))
        acknowledged.append(f"r{i}")
    db.upsert(Record({"n": -1, "embedding": VectorField(vec(999))}, id="r0"))
    expected = {rid: (-1 if rid == "r0" else int(rid[1:])) for rid in acknowledged}
    if fail_after > 1:
        db.delete(acknowledged[-1])
        expected.pop(acknowledged[-1])
    # the power fails: what the OS had not written back is gone (the process dies with it)
    disk.fail()
    monkeypatch.undo()
    again = DatabaseFactory().create(backend="file", path=str(root))
    assert {r.id: r["n"] for r in again.all()} == expected
    assert again.verify()["live"] == len(expected)
    hit = again.vector_search(vec(999), k=1)[0]
    assert hit.id == "r0" and hit.record["n"] == -1
    again.create(Record({"n": 100, "embedding": VectorField(vec(100))}, id="after"))
    assert DatabaseFactory().create(backend="file", path=str(root)).count() == len(expected) + 1


def test_the_model_loses_what_was_not_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the simulation itself: a file written without fsync is lost, one fsynced with its
    # directory survives, a replaced name points at its older bytes
    root = tmp_path / "d"
    disk = PowerLoss(root, monkeypatch)
    (root / "old").write_bytes(b"old")
    disk._snapshot()
    fd = os.open(root / "kept", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"kept")
    local.os.fsync(fd)
    os.close(fd)
    dfd = os.open(root, os.O_RDONLY)
    local.os.fsync(dfd)
    os.close(dfd)
    (root / "lost").write_bytes(b"x")
    (root / "tmp").write_bytes(b"new")
    os.replace(root / "tmp", root / "old")
    disk.fail()
    assert sorted(p.name for p in root.iterdir()) == ["kept", "old"]
    assert (root / "kept").read_bytes() == b"kept" and (root / "old").read_bytes() == b"old"
