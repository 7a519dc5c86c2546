"""The examples run and print what they promise.

Each script in ``examples/`` runs as a subprocess (``sys.executable``) on small data and its output
is checked. :func:`test_every_example_is_tested` fails for an example nobody checks. The code
blocks of README.md and docs/*.md are run and checked by ``tests/test_docs.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: Every example script and the tests that run it.
TESTED_EXAMPLES = {
    "basic_vector_search.py",
    "file_vector_search.py",
    "s3_vector_search.py",
    "async_vector_search.py",
    "host_app_config.py",
    "langchain_example.py",
    "llamaindex_example.py",
}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the package's and the examples' switches, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DKV_", "HOSTAPP")) and k not in ("S3_ENDPOINT_URL", "S3_BUCKET")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_example(name: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Any:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env or clean_env(),
        cwd=cwd or ROOT,
    )
    assert proc.returncode == 0, f"{name} failed:\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    return proc


def line_with(output: str, needle: str) -> str:
    lines = [line for line in output.splitlines() if needle in line]
    assert lines, f"no line with {needle!r} in:\n{output}"
    return lines[0]


def test_every_example_is_tested() -> None:
    assert {p.name for p in EXAMPLES.glob("*.py")} == TESTED_EXAMPLES
    assert (EXAMPLES / "host_app.toml").is_file()


# --- the example scripts ---------------------------------------------------------------------------


def test_basic_vector_search() -> None:
    out = run_example("basic_vector_search.py").stdout
    assert "embedded 40 records in 3 batches; the store holds 40" in out
    assert "running it again embeds 0 and skips 40 (already stored)" in out
    assert line_with(out, "1. astronomy-").startswith("  1. astronomy-")  # planets -> astronomy
    cooking = out.split("category=cooking and year >= 2020")[1].split("\n\n")[0]
    assert cooking.count("[cooking, 202") == 3
    assert "distance=" in out.split("euclidean:")[1]
    assert "manual-1       score=1.000" in out
    assert "deleted 'manual-1': exists=False, count=43" in out
    assert "batch of 3 queries, best hit each: ['astronomy-5', 'sports-2', 'nature-1']" in out


def test_file_vector_search_in_a_temporary_directory() -> None:
    out = run_example("file_vector_search.py").stdout
    assert "had 0 records, embedded 40, skipped 0" in out
    assert re.search(r"reopened in [\d.]+ ms: 40 records, version 2", out)
    assert "another handle added 'comet-1': the first handle now counts 41 (version 3)" in out
    assert "search 'comet tail': ['comet-1" in out
    assert "deleted the 8 sports records: 33 left" in out
    assert "{'version': 5, 'segments': 1, 'rows': 33, 'live': 33}" in out
    tmp = re.search(r"temporary directory (\S+) removed", out)
    assert tmp and not Path(tmp.group(1)).exists()


def test_file_vector_search_in_a_kept_directory_resumes(tmp_path: Path) -> None:
    store = tmp_path / "kept"
    first = run_example("file_vector_search.py", str(store)).stdout
    assert f"store at {store}: had 0 records" in first and (store / "manifests").is_dir()
    second = run_example("file_vector_search.py", str(store)).stdout
    # the 8 deleted sports records are embedded again, the other 32 sample records are skipped
    assert f"store at {store}: had 33 records, embedded 8, skipped 32" in second


def test_s3_vector_search_starts_its_own_server() -> None:
    out = run_example("s3_vector_search.py").stdout
    assert (
        "S3_ENDPOINT_URL is not set: starting a local moto S3 server (-m moto.server -H 127.0.0.1 -p" in out
    )
    assert re.search(r"reader: warm search\s+1 request ", out)
    assert re.search(r"reader: 5 more warm searches\s+5 requests", out)
    assert re.search(r"eventual reader: 5 searches within max_staleness_s\s+0 requests", out)
    # LATEST.json, the older manifest holding the first batch inline, the probe for a newer one
    assert re.search(r"reader: cold open \(small segments: inside their manifests\)\s+4 requests", out)
    assert re.search(r"reader: search after that commit \(its manifest holds it\)\s+1 request ", out)
    assert "after the writer's commit, the reader finds: ['comet-1']" in out
    assert "async store (aioboto3): 41 records" in out
    assert out.rstrip().endswith("stopped the local moto S3 server")


def test_s3_vector_search_uses_s3_endpoint_url(s3_server: Any) -> None:
    env = clean_env(S3_ENDPOINT_URL=s3_server.endpoint_url, S3_BUCKET="dkv-example-test")
    if s3_server.credentials:
        env.update(
            AWS_ACCESS_KEY_ID=s3_server.credentials["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=s3_server.credentials["aws_secret_access_key"],
            AWS_DEFAULT_REGION=s3_server.credentials["region_name"],
        )
    out = run_example("s3_vector_search.py", env=env).stdout
    assert f"using the S3 endpoint from S3_ENDPOINT_URL: {s3_server.endpoint_url}" in out
    assert "moto" not in out
    assert "store: s3://dkv-example-test/examples/" in out
    assert re.search(r"reader: warm search\s+1 request ", out)


def test_async_vector_search() -> None:
    out = run_example("async_vector_search.py").stdout
    assert "memory store (AsyncMemoryDatabase): embedded 40 records with an async embedding function" in out
    assert "'knead the dough'" in out and "-> ['cooking-1'" in line_with(out, "'knead the dough'")
    assert all(year < 2020 for year in map(int, re.findall(r"\('nature-\d', (\d+)\)", out)))
    assert "file store (AsyncFileDatabase) at store/: 38 records after 2 deletes" in out
    assert "reopened: 38 records" in out
    ticks = re.search(r"the heartbeat task ran (\d+) times", out)
    assert ticks and int(ticks.group(1)) > 0


def test_host_app_config_defaults() -> None:
    out = run_example("host_app_config.py").stdout
    assert f"configuration: {EXAMPLES / 'host_app.toml'}" in out
    assert "DKV_* switches in effect: none" in out
    assert re.search(r"Instrumentation\s+registered by the app\s+dkv_bulk_embed, dkv_vector_search", out)
    assert re.search(r"AppEmbedders\s+registered by the app\s+dkv_register_embedders", out)
    assert "call order (wrappers first, then tryfirst ... trylast): Instrumentation -> " in out
    assert "embedder: 'words' -> HashingEmbedder(dimensions=128, ngram=0)" in out
    assert "store 'articles': {'backend': 'memory'" in out and "store 'archive': {'backend': 'file'" in out
    assert re.search(r"search memory \(exact\)\s+3 calls", out)
    assert re.search(r"search file \(exact\)\s+3 calls", out)
    assert re.search(r"bulk embed memory\s+1 calls", out)


def test_host_app_config_environment_overrides(tmp_path: Path) -> None:
    env = clean_env(
        HOSTAPP__PLUGINS__BLOCK='["file"]',
        HOSTAPP__STORES__ARTICLES__VECTOR_METRIC="euclidean",
        HOSTAPP__EMBEDDER__NAME="hashing",
        HOSTAPP__EMBEDDER__DIMENSIONS="64",
        HOSTAPP__APP__DATA_DIR=str(tmp_path),
        DKV_TRACE_PLUGINS="1",
    )
    proc = run_example("host_app_config.py", env=env)
    out = proc.stdout
    assert "overridden from the environment: plugins.block = ['file']" in out
    assert "overridden from the environment: embedder.dimensions = 64" in out
    assert "DKV_* switches in effect: {'DKV_TRACE_PLUGINS': '1'}" in out
    assert "blocked: file" in out
    assert "store 'archive' is unavailable: ConfigError: unknown backend 'file'" in out
    assert "'vector_metric': 'euclidean', 'vector_dimensions': 64, 'embedder': 'hashing'" in out
    trace = line_with(proc.stderr, "[dkv] dkv_vector_search(db, request) -> impls: Instrumentation, ")
    assert trace.rstrip().endswith("defaults")  # the wrapper first; the built-in exact search last


def test_host_app_config_autoload_off_and_other_file(tmp_path: Path) -> None:
    config = tmp_path / "app.toml"
    config.write_text(
        '[plugins]\nautoload = false\ninstrument = false\n[embedder]\nname = "hashing"\ndimensions = 32\n'
        '[stores.only]\nbackend = "memory"\nvector_enabled = true\n'
    )
    out = run_example(
        "host_app_config.py", str(config), env=clean_env(DKV_DISABLE_PLUGIN_AUTOLOAD="1")
    ).stdout
    assert "DKV_* switches in effect: {'DKV_DISABLE_PLUGIN_AUTOLOAD': '1'}" in out
    assert "store 'only': {'backend': 'memory'" in out and "Instrumentation" not in out
    assert "instrumentation plugin" not in out


def test_langchain_example() -> None:
    out = run_example("langchain_example.py").stdout
    assert "DkvVectorStore(backend='memory', embedding=DkvEmbeddings" in out and "holds 40 documents" in out
    assert (
        "filter {'category': 'cooking', 'year': {'$gte': 2020}}: "
        "[('cooking-1', 2024), ('cooking-8', 2021), ('cooking-7', 2020)]"
    ) in out
    assert line_with(out, "similarity_search 'the moon and the earth'").count("'astronomy-") >= 2
    assert "retriever.invoke('forest animals'): ['nature-" in out
    assert "after deleting note-1 and the programming documents: 32 documents" in out
    assert "async answers: [['cooking-1'], ['sports-8']" in out
    assert "async add, sync read: ['Saturn has rings of ice']" in out
    assert "LangChainEmbedder(DeterministicFakeEmbedding" in out and "5 records, dimension 16" in out


def test_llamaindex_example() -> None:
    out = run_example("llamaindex_example.py").stdout
    assert "indexed 40 nodes in the memory backend" in out
    assert "cooking, year >= 2020: ['cooking-1', 'cooking-8', 'cooking-7']" in out
    assert all(c in ("astronomy", "nature", "sports") for c in re.findall(r"'(\w+)-\d'", line_with(out, "sports, nature or astronomy")))
    assert line_with(out, "mmr 'planet in the solar system'").startswith("mmr 'planet in the solar system': ['astronomy-")
    assert "after delete_ref_doc('astronomy-8'): ['astronomy-1'" in out
    assert "async answers: ['note-1', 'cooking-1', 'sports-8']" in out
    assert "after the async delete: 39 nodes" in out
