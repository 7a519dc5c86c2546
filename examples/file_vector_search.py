"""Vector search on local files: a durable store that survives restarts and is shared by processes.

    python examples/file_vector_search.py            # in a temporary directory, removed afterwards
    python examples/file_vector_search.py ./my-store # in a directory you keep (re-runs resume)

The file backend keeps a log-structured table: every commit writes immutable segment files
(vectors as ``.npy``, rows as JSON lines) and then a new numbered manifest, created atomically.
Reopening memory-maps the vectors; another handle (or process) sees new commits on its next call.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

from dk_vector_plugins import DatabaseFactory, Record

DIM = 128


def load_sample() -> list[dict[str, Any]]:
    text = files("dk_vector_plugins").joinpath("data/sample.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def layout(path: Path) -> str:
    """What the table directory holds: manifests, segment files, total size."""
    manifests = sorted(p.name for p in (path / "manifests").glob("*.json"))
    segment_files = list((path / "segments").glob("*"))
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    newest = manifests[-1] if manifests else "-"
    return f"{len(manifests)} manifests (newest {newest}), {len(segment_files)} segment files, {size / 1024:.0f} KiB"


def run(path: Path) -> None:
    factory = DatabaseFactory()
    # keep_versions=1: clean-up (vacuum) may delete what only older manifests name (default: 10)
    config = {
        "backend": "file",
        "path": str(path),
        "vector_enabled": True,
        "vector_dimensions": DIM,
        "keep_versions": 1,
    }
    embedder = factory.embedder("hashing", dimensions=DIM)

    def query(db: Any, text: str, **kwargs: Any) -> list[str]:
        return [f"{h.id} ({h.score:.2f})" for h in db.vector_search(embedder.embed([text])[0], **kwargs)]

    # 1. Create (or reopen) the store and embed the sample into it: one commit per batch.
    with factory.create(config) as db:
        before = db.count()
        report = db.bulk_embed(
            [Record(d, id=d["id"]) for d in load_sample()], text_field="text", batch_size=20, progress=False
        )
        print(f"store at {path}: had {before} records, embedded {report.embedded}, skipped {report.skipped}")
        print(f"  on disk: {layout(path)}; table version {db.version}")
        print(f"  search 'telescopes and galaxies': {query(db, 'telescopes and galaxies', k=2)}")

    # 2. Reopen: nothing is re-embedded or re-parsed up front; vectors are memory-mapped.
    t0 = time.perf_counter()
    db = factory.create(config)
    print(
        f"\nreopened in {(time.perf_counter() - t0) * 1000:.1f} ms: {db.count()} records, version {db.version}"
    )
    print(
        f"  search 'sweet onions' in cooking: {query(db, 'sweet onions', k=2, filter={'category': 'cooking'})}"
    )

    # 3. A second handle on the same directory (as another process would be) writes; the first sees it.
    other = factory.create(config)
    comet = {
        "text": "Comets grow bright tails of gas and dust near the Sun.",
        "category": "astronomy",
        "year": 2024,
    }
    other.bulk_embed([Record(comet, id="comet-1")], text_field="text", progress=False)
    print(
        f"\nanother handle added 'comet-1': the first handle now counts {db.count()} (version {db.version})"
    )
    print(f"  search 'comet tail': {query(db, 'comet tail', k=1)}")

    # 4. Updates and deletes are tombstones; compaction rewrites the live rows as one segment.
    db.delete_batch([f"sports-{i}" for i in range(1, 9)])
    print(f"\ndeleted the 8 sports records: {db.count()} left; on disk: {layout(path)}")
    db.compact()
    removed = db.vacuum(grace_s=0)  # delete files no recent manifest names (normally after a grace period)
    print(f"compacted and vacuumed ({removed} unreferenced files removed): {layout(path)}")
    print(f"verify() checks every file the newest manifest names: {db.verify()}")
    other.close()
    db.close()


def main() -> None:
    if len(sys.argv) > 1:
        run(Path(sys.argv[1]).resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="dkv-file-example-") as tmp:
            run(Path(tmp) / "store")
            print(f"\n(temporary directory {tmp} removed; pass a path to keep the store)")


if __name__ == "__main__":
    main()
