"""The optional distribution ``compat/dataknobs-data-compat``: ``import dataknobs_data`` gives
dk_vector_plugins's objects under dataknobs-data's names, every name of the names-only shim's map
(``compat/name_map.py``) included, with the backend classes defined in dataknobs's modules.

Run in a subprocess with the distribution's ``src`` first on ``sys.path`` (as an installed copy
would be), so that this test process never imports a ``dataknobs_data``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "compat" / "dataknobs-data-compat"

CHECK = textwrap.dedent(
    """
    import importlib, inspect, json, sys
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[2])
    from name_map import NAME_MAP, OUT_OF_SCOPE
    import dataknobs_data
    out = {"origin": dataknobs_data.__file__, "missing": [], "different": [], "aliases": {}}
    for mod, names in NAME_MAP.items():
        module = importlib.import_module(mod)
        for dk_name, target in names.items():
            if not hasattr(module, dk_name):
                out["missing"].append(f"{mod}.{dk_name}")
                continue
            ours_mod, ours_name = target.split(":")
            ours = getattr(importlib.import_module(ours_mod), ours_name)
            got = getattr(module, dk_name)
            if got is ours:
                continue
            if inspect.isclass(got) and got.__dict__.get("__dataknobs_alias_of__") is ours:
                out["aliases"][f"{mod}.{dk_name}"] = [got.__module__, got.__name__]
            else:
                out["different"].append(f"{mod}.{dk_name}")
    out["out_of_scope"] = {}
    for mod, names in OUT_OF_SCOPE.items():
        module = importlib.import_module(mod)
        for name in names:
            try:
                getattr(module, name)()
                out["out_of_scope"][name] = "created"
            except NotImplementedError as e:
                out["out_of_scope"][name] = str(e)

    from dataknobs_data import DatabaseFactory, AsyncDatabase, SyncDatabase
    from dataknobs_data.backends.memory import SyncMemoryDatabase, AsyncMemoryDatabase
    from dk_vector_plugins.backends.memory import MemoryDatabase
    made = DatabaseFactory().create(backend="memory")
    direct = SyncMemoryDatabase()
    direct.create(dataknobs_data.Record({"a": 1}, id="x"))

    class Mine(SyncMemoryDatabase):
        pass

    out["checks"] = {
        "factory_instance": isinstance(made, SyncMemoryDatabase),
        "direct_instance": isinstance(direct, MemoryDatabase) and type(direct) is SyncMemoryDatabase,
        "direct_works": direct.read("x")["a"] == 1,
        "subclass": issubclass(MemoryDatabase, SyncMemoryDatabase) and issubclass(SyncMemoryDatabase, SyncDatabase),
        "not_async": not isinstance(made, AsyncMemoryDatabase) and issubclass(AsyncMemoryDatabase, AsyncDatabase),
        "user_subclass_is_ordinary": not isinstance(made, Mine) and isinstance(Mine(), SyncMemoryDatabase),
    }
    swept = {}
    for name in ("memory", "file", "s3", "s3_async"):
        module = importlib.import_module(f"dataknobs_data.backends.{name}")
        swept[name] = sorted(
            n for n, obj in vars(module).items()
            if inspect.isclass(obj) and obj.__module__ == module.__name__
            and issubclass(obj, (AsyncDatabase, SyncDatabase))
        )
    out["swept"] = swept
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-c", CHECK, str(DIST / "src"), str(REPO / "compat")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_it_imports_the_distributions_package(report: dict[str, Any]) -> None:
    assert Path(report["origin"]).resolve().is_relative_to(DIST / "src")


def test_every_name_of_the_shim_map_is_ours(report: dict[str, Any]) -> None:
    assert report["missing"] == [] and report["different"] == []


def test_the_backend_classes_are_defined_in_dataknobs_modules(report: dict[str, Any]) -> None:
    assert report["swept"] == {
        "memory": ["AsyncMemoryDatabase", "SyncMemoryDatabase"],
        "file": ["AsyncFileDatabase", "SyncFileDatabase"],
        "s3": ["SyncS3Database"],
        "s3_async": ["AsyncS3Database"],
    }
    assert report["aliases"]["dataknobs_data.backends.memory.SyncMemoryDatabase"] == [
        "dataknobs_data.backends.memory",
        "SyncMemoryDatabase",
    ]
    assert report["aliases"]["dataknobs_data.backends.s3_async.AsyncS3Database"] == [
        "dataknobs_data.backends.s3_async",
        "AsyncS3Database",
    ]


def test_an_instance_of_ours_is_an_instance_of_its_dataknobs_name(report: dict[str, Any]) -> None:
    assert report["checks"] == dict.fromkeys(report["checks"], True)
    assert len(report["checks"]) == 6


def test_out_of_scope_backends_import_and_refuse(report: dict[str, Any]) -> None:
    assert set(report["out_of_scope"]) >= {
        "SyncSQLiteDatabase",
        "AsyncPostgresDatabase",
        "SyncDuckDBDatabase",
    }
    for name, message in report["out_of_scope"].items():
        assert "dk_vector_plugins has no such backend" in message, name


def test_the_distribution_metadata() -> None:
    meta = tomllib.loads((DIST / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "dk-vector-plugins-dataknobs-compat"
    assert meta["project"]["dependencies"] == ["dk_vector_plugins"]
    assert meta["tool"]["setuptools"]["packages"]["find"]["where"] == ["src"]
    assert (DIST / "src" / "dataknobs_data" / "py.typed").exists()
    # the main distribution never ships the dataknobs_data import name
    main = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert main["tool"]["setuptools"]["packages"]["find"]["include"] == ["dk_vector_plugins*"]
    assert not (REPO / "dk_vector_plugins" / "dataknobs_data").exists()


def test_the_runner_offers_the_package_mode() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "compat" / "run_dataknobs_suite.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "package" in r.stdout
