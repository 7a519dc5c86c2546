"""A third-party override found through real entry-point metadata: examples/dkv-usearch-override.

The distribution is built and installed with pip into a throwaway directory (``pip install
--no-deps --target``, from a copy of its source so the tree stays clean); a test puts that
directory on ``sys.path``, where ``importlib.metadata`` finds its ``*.dist-info`` and the host
loads the entry point ``usearch`` like any installed plugin. A second, hand-made dist-info whose
entry point module raises ``ImportError`` stands for a broken installation.

Offline: pip runs with ``--no-index --no-deps --no-build-isolation``, so it neither downloads the
distribution's dependencies nor its build requirements; it builds with the running interpreter's
setuptools and wheel (in the ``test`` extra), and ``--check-build-dependencies`` says so if they
are missing. The installed copy runs against this interpreter's dk_vector_plugins, usearch, numpy.

Needs ``usearch`` importable (the override's only dependency beyond this package).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import usearch  # noqa: F401  - the plugin needs it; fail loudly here rather than in a warning

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    ConfigError,
    DatabaseFactory,
    PluginLoadWarning,
    list_plugins,
)
from dk_vector_plugins.factory import extra_options

DIST_SRC = Path(__file__).resolve().parents[1] / "examples" / "dkv-usearch-override"
EP_NAME = "usearch"
BROKEN_EP = "usearch-broken"
ENV_VARS = ("DKV_DISABLE_PLUGIN_AUTOLOAD", "DKV_PLUGINS", "DKV_TRACE_PLUGINS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The distribution, built and installed by pip into a throwaway ``--target`` directory."""
    root = tmp_path_factory.mktemp("usearch-dist")
    src = root / "src"
    shutil.copytree(
        DIST_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests", "*.pyc")
    )
    target = root / "site"
    offline = ["--no-index", "--no-deps", "--no-build-isolation", "--check-build-dependencies"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", *offline, "--quiet", "--target", str(target), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"pip could not install {DIST_SRC}:\n{proc.stdout}\n{proc.stderr}"
    return target


@pytest.fixture(scope="module")
def broken_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second installed distribution whose entry point module raises ImportError on import."""
    root = tmp_path_factory.mktemp("usearch-broken")
    pkg = root / "dkv_usearch_broken"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "plugin.py").write_text(
        'raise ImportError("dkv_usearch_broken needs usearch_native_extension (deliberately broken)")\n'
    )
    info = root / "dkv_usearch_broken-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dkv-usearch-broken\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[dk_vector_plugins]\n{BROKEN_EP} = dkv_usearch_broken.plugin\n")
    (info / "RECORD").write_text("")
    return root


def _forget_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("dkv_usearch_override", "dkv_usearch_broken"):
            del sys.modules[name]


@pytest.fixture
def installed(site_dir: Path) -> Iterator[Path]:
    """The override installed: its dist-info directory is on sys.path for this test only."""
    sys.path.insert(0, str(site_dir))
    importlib.invalidate_caches()
    try:
        yield site_dir
    finally:
        sys.path.remove(str(site_dir))
        _forget_modules()
        importlib.invalidate_caches()


@pytest.fixture
def with_broken(installed: Path, broken_dir: Path) -> Iterator[Path]:
    """The override and the broken copy, both installed."""
    sys.path.insert(0, str(broken_dir))
    importlib.invalidate_caches()
    try:
        yield broken_dir
    finally:
        sys.path.remove(str(broken_dir))
        _forget_modules()


def clustered(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((10, d)).astype(np.float32) * 3
    return (centres[rng.integers(0, 10, n)] + rng.standard_normal((n, d))).astype(np.float32)


DATA = clustered(600)


def fill(db: Any) -> Any:
    db.add_vectors(
        DATA, ids=[f"r{i}" for i in range(len(DATA))], metadata=[{"g": i % 4} for i in range(len(DATA))]
    )
    return db


def answered_by_hnsw(hits: list[Any]) -> bool:
    return bool(hits) and all(h.metadata.get("index") == "hnsw" for h in hits)


# --- discovery -----------------------------------------------------------------------------------


def test_the_installed_distribution_declares_the_entry_point(installed: Path) -> None:
    eps = [ep for ep in importlib.metadata.entry_points(group="dk_vector_plugins") if ep.name == EP_NAME]
    assert len(eps) == 1
    assert eps[0].value == "dkv_usearch_override.plugin"
    assert eps[0].dist is not None and eps[0].dist.metadata["Name"] == "dkv-usearch-override"
    assert Path(str(eps[0].dist.locate_file(""))).resolve() == installed.resolve()


def test_it_is_listed_with_its_distribution_and_hooks(installed: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        factory = DatabaseFactory()
    (info,) = [p for p in list_plugins(factory.pm) if p.name == EP_NAME]
    assert (info.distribution, info.version, info.builtin, info.error) == (
        "dkv-usearch-override",
        "0.1.0",
        False,
        None,
    )
    assert info.hooks == ("dkv_register_options", "dkv_vector_search", "dkv_vector_search_async")
    assert {"index", "hnsw_ef", "hnsw_connectivity"} <= {o.name for o in extra_options(factory.pm)}


def test_it_wins_when_installed(installed: Path, tmp_path: Path) -> None:
    factory = DatabaseFactory()
    mem = fill(factory.create(backend="memory", vector_enabled=True, index="hnsw"))
    hits = mem.vector_search(DATA[3], k=5)
    assert hits[0].id == "r3" and answered_by_hnsw(hits)
    with factory.create(backend="file", path=str(tmp_path / "f"), vector_enabled=True, index="hnsw") as db:
        hits = fill(db).vector_search(DATA[4], k=5, filter={"g": {"$in": [0, 1, 2]}})
        assert hits[0].id == "r4" and answered_by_hnsw(hits)


async def test_it_wins_for_async_stores(installed: Path) -> None:
    db = AsyncDatabaseFactory().create(backend="memory", vector_enabled=True, index="hnsw")
    await db.add_vectors(DATA, ids=[f"r{i}" for i in range(len(DATA))])
    hits = await db.vector_search(DATA[8], k=3)
    assert hits[0].id == "r8" and answered_by_hnsw(hits)
    await db.close()


def test_it_declines_for_stores_without_index_hnsw(installed: Path) -> None:
    factory = DatabaseFactory()
    assert factory.pm.has_plugin(EP_NAME)
    hits = fill(factory.create(backend="memory", vector_enabled=True)).vector_search(DATA[3], k=5)
    assert hits[0].id == "r3" and not answered_by_hnsw(hits)
    exact = fill(factory.create(backend="memory", vector_enabled=True, index="exact")).vector_search(
        DATA[3], k=5
    )
    assert [h.id for h in exact] == [h.id for h in hits] and "index" not in exact[0].metadata


# --- switching it off ------------------------------------------------------------------------------


def test_blocked_by_name(installed: Path) -> None:
    factory = DatabaseFactory(block=[EP_NAME])
    assert not factory.pm.has_plugin(EP_NAME) and factory.pm.is_blocked(EP_NAME)
    # a blocked entry point is not even imported
    assert not any(str(installed) in (getattr(m, "__file__", None) or "") for m in list(sys.modules.values()))
    with pytest.raises(ConfigError, match="unknown config key 'index'"):
        factory.create(backend="memory", vector_enabled=True, index="hnsw")
    hits = fill(factory.create(backend="memory", vector_enabled=True)).vector_search(DATA[3], k=5)
    assert hits[0].id == "r3" and not answered_by_hnsw(hits)


def test_bypassed_with_autoload_disabled(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKV_DISABLE_PLUGIN_AUTOLOAD", "1")
    factory = DatabaseFactory()
    assert not factory.pm.has_plugin(EP_NAME)
    assert set(factory.get_available_backends()) >= {"memory", "file", "s3"}  # built-ins still load
    with pytest.raises(ConfigError, match="unknown config key 'index'"):
        factory.create(backend="memory", vector_enabled=True, index="hnsw")
    monkeypatch.delenv("DKV_DISABLE_PLUGIN_AUTOLOAD")
    assert DatabaseFactory().pm.has_plugin(EP_NAME)


def test_dkv_plugins_selects_it(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DKV_PLUGINS", "something-else")
    with pytest.warns(PluginLoadWarning, match="names no installed plugin: 'something-else'"):
        assert not DatabaseFactory().pm.has_plugin(EP_NAME)
    monkeypatch.setenv("DKV_PLUGINS", EP_NAME)
    db = fill(DatabaseFactory().create(backend="memory", vector_enabled=True, index="hnsw"))
    assert answered_by_hnsw(db.vector_search(DATA[0], k=3))


# --- a broken installation -----------------------------------------------------------------------


def test_a_broken_copy_does_not_take_the_host_down(with_broken: Path, tmp_path: Path) -> None:
    with pytest.warns(
        PluginLoadWarning, match=r"'usearch-broken' \(from dkv-usearch-broken 0\.0\.1\).*ImportError"
    ):
        factory = DatabaseFactory()
    (err,) = [p for p in list_plugins(factory.pm) if p.name == BROKEN_EP]
    assert err.error is not None and "deliberately broken" in err.error
    # the other backends, and the working override, keep working
    for backend, extra in (("memory", {}), ("file", {"path": str(tmp_path / "f")})):
        db = fill(factory.create(backend=backend, vector_enabled=True, **extra))
        assert db.vector_search(DATA[5], k=2)[0].id == "r5"
        db.close()
    hits = fill(factory.create(backend="memory", vector_enabled=True, index="hnsw")).vector_search(
        DATA[5], k=2
    )
    assert hits[0].id == "r5" and answered_by_hnsw(hits)
    # blocking the broken one silences it
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginLoadWarning)
        assert DatabaseFactory(block=[BROKEN_EP]).pm.has_plugin(EP_NAME)


# --- the distribution's benchmark script -----------------------------------------------------------


def test_benchmark_script_runs_on_small_data() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(DIST_SRC / "bench_usearch.py"),
            *["--n", "3000", "--d", "16", "--queries", "20", "--repeat", "1", "--ef", "16,64"],
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "N=3000 d=16 clustered" in out
    row = next(line for line in out.splitlines() if line.startswith("hnsw ef=64 (db.vector_search)"))
    recall = float(row.split()[3])
    assert recall >= 0.8
    assert "(20/20 answered by HNSW)" in out
