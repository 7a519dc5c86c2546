"""The ``dkv`` command, run in-process through ``main(argv)`` and once as a real console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import DatabaseFactory
from dk_vector_plugins.cli import main


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_demo_prints_searches(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "40 records embedded" in out
    assert "query: 'planets of the solar system'" in out
    assert "astronomy-" in out
    assert 'filter {"category": "sports"}' in out


def test_demo_with_own_query(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "-q", "bread dough", "--k", "1"]) == 0
    assert "cooking-1" in capsys.readouterr().out


def test_plugins_lists_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--all"]) == 0
    out = capsys.readouterr().out
    for name in ("memory", "file", "s3", "hashing"):
        assert name in out
    assert "dkv_vector_search" in out
    assert main(["plugins", "--all", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"memory", "file", "s3", "hashing"} <= {p["name"] for p in data}
    assert all(p["builtin"] for p in data if p["name"] in ("memory", "hashing"))


def test_plugins_without_third_party(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKV_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    # nothing third-party is loaded; one that is installed (e.g. the usearch example) is listed
    # as not loaded, never hidden
    rows = out.splitlines()[2:]
    assert "no third-party plugins" in out or all("not loaded" in row for row in rows), out


def test_ingest_and_search_file_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"id": "a", "text": "the cat sat on the mat", "kind": "pet"},
        {"id": "b", "text": "stock markets fell sharply", "kind": "news"},
        {"id": "c", "text": "a kitten and a cat play", "kind": "pet"},
    ]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    store = tmp_path / "store"
    common = ["--backend", "file", "-o", f"path={store}"]
    assert main(["ingest", str(src), *common, "--no-progress"]) == 0
    assert "3 embedded" in capsys.readouterr().out
    # re-running resumes: nothing to embed again
    assert main(["ingest", str(src), *common, "--no-progress"]) == 0
    assert "0 embedded, 3 already up to date" in capsys.readouterr().out

    assert main(["search", "cat", *common, "--k", "2"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()[2:]]
    assert sorted(line[1] for line in lines) == ["a", "c"]

    assert main(["search", "cat", *common, "--k", "5", "--filter", '{"kind": "news"}', "--format", "json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in hits] == ["b"]
    assert hits[0]["data"]["kind"] == "news"


def test_ingest_vectors_and_search_by_vector_with_toml_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "vstore"
    cfg = tmp_path / "store.toml"
    cfg.write_text(f'[dkv]\nbackend = "file"\npath = "{store}"\nvector_metric = "euclidean"\n')
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((5, 4)).round(3)
    rows = [{"id": f"v{i}", "embedding": vecs[i].tolist(), "n": i} for i in range(5)]
    src = _write_jsonl(tmp_path / "vecs.jsonl", rows)
    assert main(["ingest", str(src), "--config", str(cfg)]) == 0
    assert "5 with vectors" in capsys.readouterr().out
    assert main(["search", "--vector", json.dumps(vecs[3].tolist()), "--config", str(cfg), "--k", "1",
                 "--format", "json"]) == 0
    hit = json.loads(capsys.readouterr().out)[0]
    assert hit["id"] == "v3" and hit["distance"] == pytest.approx(0.0, abs=1e-5)


def test_bad_input_is_reported_with_line_and_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    src = tmp_path / "bad.jsonl"
    src.write_text('{"id": "ok", "text": "fine"}\n{not json}\n')
    assert main(["ingest", str(src), "--backend", "file", "-o", f"path={store}"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err
    src.write_text('{"id": "ok", "text": "fine"}\n{"id": "nan", "embedding": [1, "x"]}\n')
    assert main(["ingest", str(src), "--backend", "file", "-o", f"path={store}"]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    src.write_text('{"id": "empty"}\n')
    assert main(["ingest", str(src), "--backend", "file", "-o", f"path={store}"]) == 2
    assert "needs a vector in 'embedding' or a text in 'text'" in capsys.readouterr().err
    assert not store.exists()  # a failed first ingest leaves no empty store directory behind


def test_warnings_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--block", "no-such-plugin", "plugins"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("dkv: warning: ") and "no-such-plugin" in err
    assert len(err.strip().splitlines()) == 1 and ".py:" not in err  # no source path, no code line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "x", "--backend", "nope"], "unknown backend 'nope'"),
        (["search", "x", "-o", "colour=blue"], "unknown config key 'colour'"),
        (["search", "x", "-o", "novalue"], "key=value"),
        (["search"], "give a query text or --vector"),
        (["search", "--vector", "[1,"], "--vector must be a JSON list"),
        (["search", "x", "--filter", "{bad"], "--filter must be JSON"),
        (["search", "x", "--config", "/nonexistent/x.toml"], "cannot read config file"),
    ],
)
def test_errors_exit_2_with_a_message(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_invalid_toml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("backend = \n")
    assert main(["search", "x", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_memory_ingest_warns_that_nothing_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "hello"}])
    assert main(["ingest", str(src), "--no-progress"]) == 0
    assert "keeps nothing" in capsys.readouterr().err


def test_console_script_runs() -> None:
    exe = shutil.which("dkv") or shutil.which("dkv", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "dk_vector_plugins.cli"]
    out = subprocess.run([*cmd, "demo", "--k", "1"], capture_output=True, text=True, timeout=120, check=True)
    assert "records embedded" in out.stdout


def test_output_cut_short_by_a_pipe_is_not_an_error() -> None:
    """`dkv demo | head -1` ends quietly, without a BrokenPipeError traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dk_vector_plugins", "demo"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, like `head -1`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err


# --- errors that used to be silent, and `dkv info` ----------------------------------------------


def test_search_on_the_memory_backend_says_why_it_is_empty(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "anything", "--backend", "memory"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dkv: error: the memory backend keeps nothing between commands")
    assert "--backend file" in err
    assert main(["search", "anything"]) == 2  # no store named at all
    assert capsys.readouterr().err.startswith('dkv: error: which store? give its location after the query (dkv search "anything" DIR')


def test_search_of_a_location_without_a_table_is_an_error_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "typo"
    assert main(["search", "x", "--backend", "file", "-o", f"path={typo}"]) == 2
    assert "no table at" in capsys.readouterr().err
    assert not typo.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["search", "x", "--backend", "file", "-o", f"path={empty}"]) == 2
    assert "no table at" in capsys.readouterr().err
    assert main(["info", str(typo)]) == 2


def test_a_missing_input_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(tmp_path / "missing.jsonl"), "--backend", "file", "-o", f"path={tmp_path / 's'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dkv: error: cannot read") and "Traceback" not in err
    assert not (tmp_path / "s").exists()


def test_info_describes_a_file_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"id": f"r{i}", "text": f"document number {i}", "n": i} for i in range(5)]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    store = tmp_path / "store"
    assert main(["ingest", str(src), "--backend", "file", "-o", f"path={store}", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "records:" in out and " 5" in out
    assert "embedding (dimensions 384, vectors stored 5)" in out
    assert main(["info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == 5 and info["version"] >= 1 and info["segments"] >= 1
    assert info["vector fields"] == {"embedding": {"dimensions": 384, "vectors stored": 5}}
    assert info["objects"] > 0 and info["size"].endswith(("KiB", "MiB", "B"))


def test_info_describes_an_s3_store(s3_server: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from dk_vector_plugins import DatabaseFactory

    cfg = s3_server.config()
    db = DatabaseFactory().create(backend="s3", vector_enabled=True, **cfg)
    db.add_vectors(np.eye(3, dtype=np.float32), ids=["a", "b", "c"])
    db.close()
    opts = [arg for k, v in cfg.items() if k not in ("bucket", "prefix") for arg in ("-o", f"{k}={json.dumps(v)}")]
    assert main(["info", f"s3://{cfg['bucket']}/{cfg['prefix']}", *opts, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["records"] == 3 and info["backend"] == "s3" and info["objects"] > 0
    secret = cfg.get("aws_secret_access_key")
    assert not secret or secret not in json.dumps(info)


def test_the_configuration_reference_is_generated_from_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/CONFIGURATION.md is `dkv options --markdown` of the built-ins: a key added, removed or
    changed in the code without regenerating the page fails here."""
    from dk_vector_plugins import DatabaseFactory
    from dk_vector_plugins.cli import config_reference
    from dk_vector_plugins.factory import CORE_OPTIONS, backends, extra_options

    factory = DatabaseFactory(load_entrypoints=False)
    page = (Path(__file__).resolve().parents[1] / "docs" / "CONFIGURATION.md").read_text(encoding="utf-8")
    assert page == config_reference(factory), "regenerate: DKV_DISABLE_PLUGIN_AUTOLOAD=1 dkv options --markdown > docs/CONFIGURATION.md"
    keys = {o.name for o in CORE_OPTIONS} | {o.name for o in extra_options(factory.pm)}
    for spec in backends(factory.pm).values():
        keys |= {o.name for o in spec.options}
    for key in keys:
        assert f"| `{key}`" in page, key
    assert main(["options", "--backend", "s3"]) == 0
    out = capsys.readouterr().out
    assert "aws_secret_access_key" in out and "secret (never shown)" in out
    assert "directory of the table" not in out  # the file backend's path


def test_versions_lists_the_commits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "coffee"}\n{"id": "b", "text": "tea"}\n')
    store = tmp_path / "store"
    assert main(["ingest", str(src), "--backend", "file", "-o", f"path={store}"]) == 0
    capsys.readouterr()
    assert main(["versions", str(store)]) == 0
    out = capsys.readouterr().out
    assert "operation" in out and " write " in out
    assert main(["versions", str(store), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["version"] for v in listed] == [1] and listed[0]["added"] == 2
    assert main(["versions", str(tmp_path / "nothing")]) == 2


def test_diff_shows_how_each_golden_query_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``dkv diff`` between two versions: per golden query, whether its exact top-k changed, the
    overlap, the records added, removed and moved; ``--fail-on-change`` makes it a CI check."""
    from dk_vector_plugins import DatabaseFactory

    store = tmp_path / "store"
    src = tmp_path / "in.jsonl"
    src.write_text(
        "".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(["coffee beans", "green tea", "black tea", "espresso coffee"]))
    )
    assert main(["ingest", str(src), "--backend", "file", "-o", f"path={store}", "-o", "text_search_fields=text"]) == 0
    db = DatabaseFactory().create(backend="file", path=str(store))
    db.tag("before")
    db.delete("d1")  # green tea leaves
    db.close()
    golden = tmp_path / "golden.jsonl"
    golden.write_text('{"id": "tea", "query": "tea", "k": 2}\n{"id": "coffee", "query": "coffee", "k": 2}\n')
    capsys.readouterr()
    assert main(["diff", str(store), "before", "2", "--queries", str(golden), "--mode", "text"]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 queries changed between before and 2" in out and "d1" in out
    assert main(["diff", str(store), "1", "2", "--queries", str(golden), "--mode", "text", "--json", "--fail-on-change"]) == 1
    got = json.loads(capsys.readouterr().out)
    tea, coffee = got["queries"]
    assert tea["changed"] and tea["removed"] == ["d1"] and "d1" in tea["before"] and "d1" not in tea["after"]
    assert not coffee["changed"] and coffee["overlap"] == 1.0 and got["changed"] == 1
    # vector mode embeds the query with the store's embedder; the same version twice: no change
    assert main(["diff", str(store), "2", "2", "--queries", str(golden), "--fail-on-change"]) == 0
    assert "0 of 2 queries changed" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"nothing": 1}\n')
    assert main(["diff", str(store), "1", "2", "--queries", str(bad)]) == 2
    assert "a query is" in capsys.readouterr().err
    assert main(["diff", str(store), "1", "nope", "--queries", str(golden)]) == 2
    assert "no tag 'nope'" in capsys.readouterr().err


def test_reembed_changes_the_stored_embedder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "coffee beans"}\n{"id": "b", "text": "green tea"}\n')
    store = tmp_path / "store"
    assert main(["ingest", str(src), "--backend", "file", "-o", f"path={store}"]) == 0
    capsys.readouterr()
    assert main(["reembed", str(store), "-e", "seed=3", "--no-progress"]) == 0
    assert "re-embedded 2 of 2 records with 'hashing' (seed=3)" in capsys.readouterr().out
    assert main(["reembed", str(store), "-e", "seed=3", "--no-progress"]) == 0  # done: resumes at the end
    assert "re-embedded 0 of 2 records" in capsys.readouterr().out
    db = DatabaseFactory().create(backend="file", path=str(store))
    assert db.schema.field().embedder.options == {"seed": 3}
    assert [h.id for h in db.vector_search("coffee", k=1)] == ["a"]
    assert main(["reembed", str(store), "-e", "dimensions=8", "--no-progress"]) == 2
    assert "new vector field" in capsys.readouterr().err


def test_search_modes_text_and_hybrid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"id": "a", "text": "invoice INV-22 overdue", "kind": "bill"},
        {"id": "b", "text": "apple pie recipe", "kind": "food"},
        {"id": "c", "text": "overdue library books", "kind": "misc"},
    ]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    store = tmp_path / "store"
    where = ["--backend", "file", "-o", f"path={store}"]
    assert main(["ingest", str(src), *where, "-o", "text_field=text", "-o", "text_search_fields=text", "--no-progress"]) == 0
    manifest = json.loads(sorted((store / "manifests").iterdir())[-1].read_text())
    assert "text" in manifest["segments"][-1]  # ingest stored the postings of text_search_fields
    capsys.readouterr()
    assert main(["search", "overdue", "--mode", "text", *where, "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [h["id"] for h in found] == ["c", "a"] and found[0]["text_fields"] == ["text"]
    assert main(["search", "overdue", "--mode", "text", "--text-fields", "kind", *where]) == 0
    assert capsys.readouterr().out.strip() == "no results"
    assert main(["search", "overdue", "--mode", "text", "--text-fields", "nope,kind", *where]) == 0  # kind holds text
    assert capsys.readouterr().out.strip() == "no results"
    assert main(["search", "overdue", "--mode", "text", "--text-fields", "nope", *where]) == 2
    assert "no record holds text in field 'nope'" in capsys.readouterr().err
    assert main(["search", "overdue invoice", "--mode", "hybrid", *where, "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[2].split()[1] == "a"  # first on both sides
    assert main(["search", "--mode", "text", "--vector", "[1, 0]", *where]) == 2
    assert "--mode text needs a query text" in capsys.readouterr().err


def test_search_takes_the_location_as_info_does_and_searches_a_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `dkv search "q" DIR` was "unrecognized arguments: DIR"; `-o path=DIR` without --backend
    # was an unknown key of the memory backend; no --as-of; info showed no full-text settings
    from dk_vector_plugins import DatabaseFactory

    rows = [{"id": "a", "text": "invoice overdue"}, {"id": "b", "text": "apple pie recipe"}]
    src = _write_jsonl(tmp_path / "in.jsonl", rows)
    store = tmp_path / "store"
    assert main(["ingest", str(src), "-o", f"path={store}", "-o", "text_search_fields=text", "--no-progress"]) == 0
    db = DatabaseFactory().create(backend="file", path=str(store))
    first = db.tag("first")
    db.delete("a")
    db.close()
    capsys.readouterr()
    assert main(["search", "invoice", str(store), "--mode", "text", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    for as_of in ("first", str(first)):
        assert main(["search", "invoice", str(store), "--mode", "text", "--as-of", as_of, "--format", "json"]) == 0
        assert [h["id"] for h in json.loads(capsys.readouterr().out)] == ["a"]
    assert main(["search", "invoice", str(store), "--as-of", "first", "--format", "json"]) == 0  # vector mode
    assert "a" in [h["id"] for h in json.loads(capsys.readouterr().out)]
    assert main(["search", "invoice", "-o", f"path={store}", "--mode", "text"]) == 0  # backend from path=
    assert capsys.readouterr().out.strip() == "no results"
    vec = json.dumps([1.0] + [0.0] * 383)
    for argv in (
        ["--vector", vec, str(store)],
        ["--vector", vec, str(store), "--backend", "file"],  # a location beside other options
        ["some text", "--vector", vec, "-o", f"path={store}"],  # a text beside -o path= is no location
    ):
        assert main(["search", *argv, "--format", "json"]) == 0
        assert [h["id"] for h in json.loads(capsys.readouterr().out)] == ["b"]
    assert main(["search", "invoice", str(store), "--mode", "hybrid", "--as-of", "first"]) == 2
    assert "--as-of works with --mode text or vector" in capsys.readouterr().err
    assert main(["info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["full text"] == {"text_search_fields": ["text"], "analyzer": "standard"}
    assert main(["info", str(store)]) == 0
    assert "full text:" in capsys.readouterr().out
