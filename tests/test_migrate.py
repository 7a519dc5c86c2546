"""Importing dataknobs-data stores (``dk_vector_plugins.migrate``, ``dkv import``).

The stores are written by dataknobs-data 0.11 itself: freshly, by
``tests/fixtures/dataknobs/make_fixtures.py`` in the compatibility runner's venv
(``.compat-cache/venv``) when it exists, else the copies that script committed next to it. Each
comes with what dataknobs-data reads back from it (``*.expected.json``), which an import must
reproduce: ids, values, vectors (with source field, model and content hash) and record metadata.
The S3 stores live on the session's real S3 server (``s3_server``).
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import DatabaseFactory, DkvError, StorageError, SyncDatabase, VectorField
from dk_vector_plugins.cli import main
from dk_vector_plugins.migrate import ImportReport, import_dataknobs, import_records, read_dataknobs_file

FIXTURES = Path(__file__).parent / "fixtures" / "dataknobs"
SCRIPT = FIXTURES / "make_fixtures.py"
VENV_PYTHON = Path(__file__).parent.parent / ".compat-cache" / "venv" / "bin" / "python"


def _dataknobs_python() -> Path | None:
    """The venv's Python when it has dataknobs-data, else ``None`` (the committed fixtures serve)."""
    if not VENV_PYTHON.exists():
        return None
    probe = subprocess.run([str(VENV_PYTHON), "-c", "import dataknobs_data"], capture_output=True)
    return VENV_PYTHON if probe.returncode == 0 else None


@pytest.fixture(scope="module")
def dk_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of dataknobs-data file stores and their expectations."""
    python = _dataknobs_python()
    if python is None:
        return FIXTURES
    out = tmp_path_factory.mktemp("dataknobs-files")
    subprocess.run([str(python), str(SCRIPT), str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def dk_s3(s3_server: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A bucket holding dataknobs-data's sync (``records/``) and async (``async``) S3 stores, and
    the directory of their expectations."""
    bucket = f"dk-import-{uuid.uuid4().hex[:8]}"
    python = _dataknobs_python()
    if python is not None:
        out = tmp_path_factory.mktemp("dataknobs-s3")
        cmd = [
            str(python),
            str(SCRIPT),
            str(out),
            "--s3-endpoint",
            s3_server.endpoint_url,
            "--bucket",
            bucket,
        ]
        subprocess.run(cmd, check=True, capture_output=True)
        return bucket, out
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    root = FIXTURES / "s3"
    for path in sorted(root.rglob("*.json")):
        client.put_object(Bucket=bucket, Key=path.relative_to(root).as_posix(), Body=path.read_bytes())
    return bucket, FIXTURES


def _s3_options(server: Any) -> dict[str, Any]:
    return {"endpoint_url": server.endpoint_url, **server.credentials}


@pytest.fixture(params=["memory", "file", "s3"])
def make_target(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SyncDatabase]:
    """Opens the one target store of a test (memory: the same store each time)."""
    factory = DatabaseFactory()
    if request.param == "memory":
        db = factory.create(backend="memory")
        return lambda: db
    if request.param == "file":
        config: dict[str, Any] = {"backend": "file", "path": str(tmp_path / "store")}
    else:
        config = {"backend": "s3", **request.getfixturevalue("s3_server").config()}
    return lambda: factory.create(config)


def _expected(directory: Path, name: str) -> dict[str, Any]:
    return json.loads((directory / f"{name}.expected.json").read_text())  # type: ignore[no-any-return]


def assert_imported(db: SyncDatabase, expected: dict[str, Any], csv: bool = False) -> None:
    """``db`` holds what dataknobs-data read from its store (CSV: but for empty cells, which a CSV
    file cannot tell from absent fields and an import leaves out)."""
    stored = {r.id: r for r in db.all()}
    assert set(stored) == set(expected)
    for rid, want in expected.items():
        rec = stored[rid]
        data = {k: v for k, v in want["data"].items() if not (csv and v == "")}
        got = {n: f.value for n, f in rec.fields.items() if not isinstance(f, VectorField)}
        assert got == data, rid
        vectors = {n: f for n, f in rec.fields.items() if isinstance(f, VectorField)}
        assert set(vectors) == set(want["vectors"]), rid
        for name, w in want["vectors"].items():
            f = vectors[name]
            assert f.value.dtype == np.float32
            np.testing.assert_array_equal(f.value, np.asarray(w["value"], dtype=np.float32))
            assert (f.source_field, f.model_name, f.metadata.get("content_hash")) == (
                w["source_field"],
                w["model_name"],
                w["content_hash"],
            )
        assert dict(rec.metadata) == want["metadata"], rid


# --- file stores -----------------------------------------------------------------------------


def test_a_json_file_store_imports_into_every_backend(
    dk_files: Path, make_target: Callable[[], SyncDatabase]
) -> None:
    db = make_target()
    report = import_dataknobs(dk_files / "store.json", db, progress=False)
    assert report == ImportReport(str(dk_files / "store.json"), 4, 4, 0, 1)
    assert_imported(make_target(), _expected(dk_files, "store.json"))


def test_imported_vectors_are_searchable(dk_files: Path) -> None:
    db = DatabaseFactory().create(backend="memory")
    import_dataknobs(dk_files / "store.json", db, progress=False)
    hits = db.vector_search([1.0, 0.0, 0.0, 0.0], k=1)
    assert [h.id for h in hits] == ["doc-2"]


def test_a_csv_file_store_imports_as_dataknobs_reads_it(dk_files: Path) -> None:
    db = DatabaseFactory().create(backend="memory")
    report = import_dataknobs(dk_files / "store.csv", db, progress=False)
    assert (report.read, report.imported) == (4, 4)
    assert_imported(db, _expected(dk_files, "store.csv"), csv=True)


def test_the_compressed_file_store_imports(dk_files: Path) -> None:
    """dataknobs-data's ``compression="gzip"`` store (its file is named ``.gz``)."""
    db = DatabaseFactory().create(backend="memory")
    import_dataknobs(dk_files / "store.json.gz", db, progress=False)
    assert_imported(db, _expected(dk_files, "store.json.gz"))


@pytest.mark.parametrize(
    ("suffix", "compress"), [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)]
)
def test_a_compressed_copy_imports(
    dk_files: Path, tmp_path: Path, suffix: str, compress: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / f"store.csv{suffix}"
    path.write_bytes(compress((dk_files / "store.csv").read_bytes()))
    db = DatabaseFactory().create(backend="memory")
    import_dataknobs(path, db, progress=False)
    assert_imported(db, _expected(dk_files, "store.csv"), csv=True)


def test_a_second_run_writes_nothing_and_a_changed_record_is_written_again(
    dk_files: Path, tmp_path: Path
) -> None:
    source = tmp_path / "store.json"
    shutil.copy(dk_files / "store.json", source)
    factory = DatabaseFactory()
    config = {"backend": "file", "path": str(tmp_path / "target")}
    with factory.create(config) as db:
        assert import_dataknobs(source, db, progress=False).imported == 4
    with factory.create(config) as db:
        again = import_dataknobs(source, db, progress=False)
        assert (again.imported, again.skipped, again.batches) == (0, 4, 0)
    raw = json.loads(source.read_text())
    raw["doc-1"]["fields"]["title"]["value"] = "changed"
    source.write_text(json.dumps(raw))
    with factory.create(config) as db:
        changed = import_dataknobs(source, db, progress=False)
        assert (changed.imported, changed.skipped) == (1, 3)
        assert db.read("doc-1").get_value("title") == "changed"  # type: ignore[union-attr]


def test_an_interrupted_import_resumes_where_it_stopped(
    dk_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = DatabaseFactory()
    config = {"backend": "file", "path": str(tmp_path / "target")}
    db = factory.create(config)
    real = db.upsert_batch
    calls = []

    def failing(records: Any) -> Any:
        calls.append(len(records))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(records)

    monkeypatch.setattr(db, "upsert_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        import_dataknobs(dk_files / "store.json", db, batch_size=1, progress=False)
    db.close()
    with factory.create(config) as db:
        assert db.count() == 2
        report = import_dataknobs(dk_files / "store.json", db, batch_size=1, progress=False)
        assert (report.imported, report.skipped) == (2, 2)
        assert_imported(db, _expected(dk_files, "store.json"))


def test_the_progress_bar_counts_records(dk_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = DatabaseFactory().create(backend="memory")
    import_dataknobs(dk_files / "store.json", db, progress=True)
    assert "importing" in capsys.readouterr().err


def test_unusable_files_are_errors_that_say_why(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(StorageError, match="not a mapping of record ids"):
        read_dataknobs_file(tmp_path / "list.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(StorageError, match="not valid JSON"):
        read_dataknobs_file(tmp_path / "bad.json")
    with pytest.raises(StorageError, match="cannot read"):
        read_dataknobs_file(tmp_path / "missing.json")
    with pytest.raises(DkvError, match="Parquet"):
        read_dataknobs_file(tmp_path / "store.parquet")
    (tmp_path / "empty.json").write_text("")
    assert read_dataknobs_file(tmp_path / "empty.json") == []
    (tmp_path / "noid.csv").write_text("title\nx\n")
    with pytest.raises(StorageError, match="no __id__"):
        read_dataknobs_file(tmp_path / "noid.csv")


def test_records_without_ids_and_bad_batch_sizes_are_refused() -> None:
    from dk_vector_plugins import InvalidRequestError, Record

    db = DatabaseFactory().create(backend="memory")
    with pytest.raises(InvalidRequestError, match="batch_size"):
        import_records(db, [], batch_size=0)
    with pytest.raises(InvalidRequestError, match="has no id"):
        import_records(db, [Record({"a": 1})], progress=False)


# --- S3 stores -------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "name"), [("records/", "s3"), ("async", "s3_async")])
def test_an_s3_store_imports(
    dk_s3: tuple[str, Path], s3_server: Any, tmp_path: Path, prefix: str, name: str
) -> None:
    bucket, expected_dir = dk_s3
    with DatabaseFactory().create(backend="file", path=str(tmp_path / "t")) as db:
        report = import_dataknobs(
            f"s3://{bucket}/{prefix}", db, s3_options=_s3_options(s3_server), progress=False
        )
        assert (report.read, report.imported, report.skipped) == (4, 4, 0)
        assert_imported(db, _expected(expected_dir, name))
        again = import_dataknobs(f"s3://{bucket}/{prefix}", db, s3_client=s3_server.client(), progress=False)
        assert (again.imported, again.skipped) == (0, 4)


def test_an_s3_location_needs_a_bucket() -> None:
    db = DatabaseFactory().create(backend="memory")
    with pytest.raises(ValueError, match="names a bucket"):
        import_dataknobs("s3:///records/", db, progress=False)


# --- dkv import ------------------------------------------------------------------------------


def test_dkv_import_of_a_file_store(
    dk_files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "import",
        str(dk_files / "store.json"),
        "--backend",
        "file",
        "-o",
        f"path={tmp_path / 't'}",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "4 records read, 4 written, 0 already up to date; the store holds 4" in capsys.readouterr().out
    assert main(args) == 0
    assert "4 records read, 0 written, 4 already up to date" in capsys.readouterr().out
    with DatabaseFactory().create(backend="file", path=str(tmp_path / "t")) as db:
        assert_imported(db, _expected(dk_files, "store.json"))


def test_dkv_import_of_an_s3_store(
    dk_s3: tuple[str, Path], s3_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket, _ = dk_s3
    source = [f"-s{k}={v}" for k, v in _s3_options(s3_server).items()]
    target = ["--backend", "file", "-o", f"path={tmp_path / 't'}"]
    assert main(["import", f"s3://{bucket}/records/", *target, *source, "--no-progress"]) == 0
    assert "4 records read, 4 written" in capsys.readouterr().out


def test_dkv_import_refuses_the_memory_backend(dk_files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(dk_files / "store.json")]) == 2
    assert "keeps nothing" in capsys.readouterr().err


def test_the_committed_fixtures_import(s3_server: Any, tmp_path: Path) -> None:
    """The copies committed for machines without dataknobs-data stay importable as they are."""
    db = DatabaseFactory().create(backend="memory")
    import_dataknobs(FIXTURES / "store.json", db, progress=False)
    assert_imported(db, _expected(FIXTURES, "store.json"))
    bucket = f"dk-committed-{uuid.uuid4().hex[:8]}"
    client = s3_server.client()
    client.create_bucket(Bucket=bucket)
    for path in sorted((FIXTURES / "s3" / "records").glob("*.json")):
        client.put_object(Bucket=bucket, Key=f"records/{path.name}", Body=path.read_bytes())
    target = DatabaseFactory().create(backend="memory")
    import_dataknobs(f"s3://{bucket}/records/", target, s3_client=client, progress=False)
    assert_imported(target, _expected(FIXTURES, "s3"))
