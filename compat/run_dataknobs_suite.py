#!/usr/bin/env python3
"""Run dataknobs-data 0.11.0's own tests against dataknobs-data and against dk_vector_plugins.

A conformance report (like a benchmark; not part of CI). It

1. finds a Python >= 3.12 (dataknobs-data needs it): ``$DKV_COMPAT_PYTHON``, else
   ``$DKV_DATAKNOBS_PYTHON``, else the first of ``python3.14``, ``python3.13``, ``python3.12``,
   ``python3`` on ``PATH`` that runs and is >= 3.12 (a pyenv shim whose version is not enabled is
   retried with every installed pyenv version enabled);
2. creates a venv in the cache directory (``--cache-dir``, else ``$DKV_COMPAT_CACHE``, else
   ``$XDG_CACHE_HOME/dk_vector_plugins-compat`` when ``XDG_CACHE_HOME`` is set, else
   ``<repo>/.compat-cache``), downloads the dataknobs-data 0.11.0 sdist with that venv's pip and
   extracts its ``tests/``, ``examples/`` and ``pyproject.toml`` (the pytest configuration);
3. installs there dataknobs-data 0.11.0 from that sdist (extras ``s3``, ``sqlite``, ``duckdb``, and
   the Postgres drivers, which some selected files import at module level), its test
   requirements, and this repository (``pip install -e <repo>[s3]``; installed again whenever
   ``pyproject.toml`` changed, since the entry points of our built-in plugins live in the installed
   metadata);
4. starts moto's S3 server on 127.0.0.1 (``tests/moto_locked_server.py``) and sets ``TEST_S3=true``
   and ``LOCALSTACK_ENDPOINT`` for both runs (the server is reset between them);
5. runs the selection (``SELECTION`` below, minus the deselected SQL / DuckDB / Postgres /
   Elasticsearch lanes) twice: (a) against dataknobs-data itself, (b) against dk_vector_plugins
   through a names-only shim: a generated ``dataknobs_data`` package, first on ``sys.path``,
   whose modules only re-export our names under dataknobs's module paths (``compat/name_map.py``);
6. prints, per file, passed / failed / errors / skipped on both, and the number of tests that pass
   on ours among those that pass on dataknobs-data.

Options: ``--keep`` reuses the venv, the download and the reference run's results (the reference
is pinned, so they only change with the environment); ``--only FILE`` (repeatable; a selected
path, its file name, or a unique part of it); ``--junit-dir DIR``; ``--json OUT`` (every test's
outcome and failure message in both runs); ``--shim stub`` (diagnostic: a dataknobs name with no
counterpart becomes a placeholder that raises ``NotImplementedError`` when used, instead of an
``ImportError`` at import time, so tests behind a missing name still run); ``--shim package``
(the compatibility distribution ``compat/dataknobs-data-compat``, pip-installed into
``<cache>/shim-package`` instead of the generated shim: dataknobs's names *defined* in its module
paths, as code that enumerates a module's classes needs).

Exit status 0 whenever a report was produced, 2 when it could not run at all.
See docs/COMPATIBILITY.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from name_map import CLASS_RENAMES, NAME_MAP, OUT_OF_SCOPE  # noqa: E402

DATAKNOBS = "dataknobs-data"
VERSION = "0.11.0"
SDIST = f"dataknobs_data-{VERSION}.tar.gz"

# dataknobs-data itself, with the extras that the selected files import at module level (their
# SQL/DuckDB/Postgres lanes are deselected, but the imports must work for the files to collect).
REFERENCE_EXTRAS = "s3,sqlite,duckdb"
REFERENCE_DRIVERS = ["asyncpg>=0.29", "psycopg2-binary>=2.9", "sqlalchemy>=2.0"]
# its test requirements ([project.optional-dependencies] dev and [dependency-groups] dev, less
# linters and the servers we do not run), plus pytest-timeout so that no test can hang a run.
# boto3 is left to aioboto3's pins (a boto3 floor here sent pip's resolver backtracking for many
# minutes); our own [s3] extra's floor is checked when this repository is installed after it.
TEST_REQUIREMENTS = [
    "pytest>=8",
    "pytest-asyncio>=1.1.0",
    "pytest-mock>=3.11.0",
    "pytest-timeout>=2.2",
    "moto[server]>=5.1.10",
    "aioboto3>=15.0.0",
    "blockbuster>=1.5.26,<2.0.0",
]
OURS = f"-e {REPO}[s3]"
# The optional compatibility distribution (``--shim package``): a ``dataknobs_data`` package whose
# backend classes are defined in dataknobs's modules.
COMPAT_DIST = HERE / "dataknobs-data-compat"

# (file as in the 0.11.0 sdist, what it covers)
SELECTION: list[tuple[str, str]] = [
    ("tests/test_vector_fields.py", "vector fields"),
    ("tests/test_vector_queries.py", "vector queries"),
    ("tests/test_vector_mixin_lane_parity.py", "vector mixin lanes"),
    ("tests/test_async_bulk_embed_wiring.py", "bulk embed wiring"),
    ("tests/test_embedding_fn_shapes.py", "embedding-fn shapes"),
    ("tests/test_query.py", "queries: basic"),
    ("tests/test_query_enhanced.py", "queries: enhanced"),
    ("tests/test_query_operator_vocabulary.py", "queries: operator vocabulary"),
    ("tests/test_boolean_logic.py", "queries: boolean logic"),
    ("tests/test_range_operators.py", "queries: range operators"),
    ("tests/test_range_operators_integration.py", "queries: range operators (backend lanes)"),
    ("tests/test_nested_field_queries.py", "queries: nested fields"),
    ("tests/test_id_field_filtering.py", "queries: id filtering"),
    ("tests/test_complex_query_backend_parity.py", "queries: complex-query backend parity"),
    ("tests/test_records.py", "records"),
    ("tests/test_fields.py", "fields"),
    ("tests/test_record_id_handling.py", "record ids"),
    ("tests/test_empty_record_round_trip.py", "empty records"),
    ("tests/test_read_preserves_storage_id.py", "storage ids"),
    ("tests/test_memory_backend.py", "memory backend"),
    ("tests/test_backends/test_file.py", "file backend"),
    ("tests/test_backends/test_file_edge_cases.py", "file backend: edge cases"),
    ("tests/test_file_backend_malformed_json.py", "file backend: malformed JSON"),
    ("tests/test_file_temp_default.py", "file backend: temp-file default"),
    ("tests/integration/test_s3_backend.py", "S3: integration"),
    ("tests/test_async_s3_native.py", "S3: native async"),
    ("tests/test_s3_id_filtering.py", "S3: id filtering"),
    ("tests/test_async_file_offload.py", "async file offload"),
    ("tests/test_upsert_batch.py", "upsert batch"),
    ("tests/test_create_payload_id_resolution.py", "payload id resolution"),
    ("tests/test_connection_management.py", "connection management"),
    ("tests/test_factory.py", "factory"),
    ("tests/test_backend_factory_parity.py", "factory parity"),
    ("tests/test_unknown_config_keys.py", "factory: unknown config keys"),
    ("tests/examples/test_basic_vector_search.py", "example: basic vector search"),
    ("tests/examples/test_vector_multi_backend.py", "example: vector multi-backend"),
]

# Lanes of backends that dk_vector_plugins does not re-do: every test whose id, class, module or
# markers name one (pytest -k matches all of those, case-insensitively).
DESELECT_K = "not sqlite and not duckdb and not postgres and not elasticsearch"

# Tests of those lanes whose ids do not name the backend (read from the tests' source).
DESELECT_IDS: list[tuple[str, str]] = [
    (
        "tests/test_vector_mixin_lane_parity.py::TestEveryBackendsVectorMethodsMatchItsLane"
        "::test_the_sweep_found_the_backends",
        "asserts dataknobs's 14 backend classes, SQL/DuckDB/Postgres/Elasticsearch included",
    ),
    (
        "tests/test_vector_mixin_lane_parity.py::TestEveryBackendsVectorMethodsMatchItsLane"
        "::test_the_sweep_found_live_cells",
        "counts the vector methods of those 14 classes",
    ),
    (
        "tests/test_unknown_config_keys.py::test_a_misspelled_host_is_rejected_rather_than_silently_defaulted",
        "backend='postgres'",
    ),
    ("tests/test_unknown_config_keys.py::test_the_legacy_connection_key_is_rejected", "backend='postgres'"),
] + [
    (
        f"tests/examples/test_basic_vector_search.py::{t}",
        "the example's database is SQLite (setup_database())",
    )
    for t in (
        "TestVectorSearchExample::test_setup_database",
        "TestVectorSearchExample::test_create_documents_with_embeddings",
        "TestVectorSearchExample::test_create_custom_documents",
        "TestVectorSearchExample::test_perform_vector_search",
        "TestVectorSearchExample::test_perform_filtered_search",
        "TestVectorSearchExample::test_cleanup",
        "TestVectorSearchExample::test_full_workflow",
        "TestIntegrationWithRealModel::test_with_real_model",
        "test_example_main_function",
    )
]

TEST_TIMEOUT_S = 300  # per test (pytest-timeout)
RUN_TIMEOUT_S = 40 * 60  # per run

OUTCOMES = ("passed", "failed", "error", "skipped")


# ----------------------------------------------------------------------------------------------
# output


def log(msg: str) -> None:
    print(f"[compat] {msg}", file=sys.stderr, flush=True)


class CannotRun(Exception):
    """The report could not be produced (exit status 2)."""


def run(
    cmd: list[str],
    *,
    log_file: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 1800,
) -> None:
    """Run a setup command, its output to ``log_file``; raise ``CannotRun`` with the tail on failure."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        try:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise CannotRun(f"timed out after {timeout:.0f}s: {' '.join(cmd)} (log: {log_file})") from None
    if r.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
        raise CannotRun(f"failed (exit {r.returncode}): {' '.join(cmd)}\n{tail}\n(log: {log_file})")


# ----------------------------------------------------------------------------------------------
# interpreter, cache, venv


def _probe(cmd: str, env: dict[str, str] | None = None) -> tuple[str, tuple[int, int]] | None:
    code = "import sys; print(sys.executable); print(sys.version_info[0], sys.version_info[1])"
    try:
        r = subprocess.run([cmd, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    lines = r.stdout.strip().splitlines()
    try:
        major, minor = (int(x) for x in lines[-1].split())
    except (ValueError, IndexError):
        return None
    return lines[0], (major, minor)


def _pyenv_env() -> dict[str, str] | None:
    """The environment with every installed pyenv version enabled (for a shim not enabled now)."""
    pyenv = shutil.which("pyenv")
    if not pyenv:
        return None
    try:
        r = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    versions = [v.strip() for v in r.stdout.splitlines() if v.strip() and "/" not in v]
    if r.returncode != 0 or not versions:
        return None
    return {**os.environ, "PYENV_VERSION": ":".join(reversed(versions))}


def find_python() -> str:
    """A Python >= 3.12 interpreter's real path (see the module docstring for the order)."""
    for var in ("DKV_COMPAT_PYTHON", "DKV_DATAKNOBS_PYTHON"):
        if os.environ.get(var):
            found = _probe(os.environ[var])
            if not found or found[1] < (3, 12):
                raise CannotRun(f"${var}={os.environ[var]!r} is not a runnable Python >= 3.12")
            return found[0]
    tried = []
    pyenv_env = _pyenv_env()
    for name in ("python3.14", "python3.13", "python3.12", "python3"):
        path = shutil.which(name)
        if not path:
            continue
        found = _probe(path) or (_probe(path, pyenv_env) if pyenv_env else None)
        tried.append(f"{name}: {found[1] if found else 'does not run'}")
        if found and found[1] >= (3, 12):
            return found[0]
    raise CannotRun(
        "no Python >= 3.12 found (dataknobs-data 0.11 needs it); set DKV_COMPAT_PYTHON. Tried: "
        + ("; ".join(tried) or "nothing on PATH")
    )


def cache_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg).resolve()
    if os.environ.get("DKV_COMPAT_CACHE"):
        return Path(os.environ["DKV_COMPAT_CACHE"]).resolve()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).resolve() / "dk_vector_plugins-compat"
    return REPO / ".compat-cache"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(cache: Path, base_python: str, keep: bool) -> tuple[Path, bool]:
    """The venv's python, and whether the venv is new (needs its packages)."""
    venv = cache / "venv"
    stamp = venv / "dkv-compat.json"
    want = {
        "python": base_python,
        "dataknobs": VERSION,
        "reference_drivers": REFERENCE_DRIVERS,
        "test_requirements": TEST_REQUIREMENTS,
    }
    if keep and stamp.exists():
        try:
            if json.loads(stamp.read_text()) == want and venv_python(venv).exists():
                log(f"reusing the venv {venv}")
                return venv_python(venv), False
        except (OSError, ValueError):
            pass
    if venv.exists():
        shutil.rmtree(venv)
    log(f"creating a venv with {base_python} in {venv}")
    run([base_python, "-m", "venv", str(venv)], log_file=cache / "logs" / "setup.log")
    return venv_python(venv), True


def download_sdist(py: Path, cache: Path, keep: bool) -> Path:
    dest = cache / "sdist"
    path = dest / SDIST
    if keep and path.exists():
        log(f"reusing {path}")
        return path
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    log(f"downloading the {DATAKNOBS} {VERSION} sdist with pip (builds its metadata: about a minute)")
    run(
        [
            str(py),
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"{DATAKNOBS}=={VERSION}",
            "-d",
            str(dest),
        ],
        log_file=cache / "logs" / "setup.log",
    )
    if not path.exists():
        raise CannotRun(f"pip download did not produce {path}")
    return path


def extract_suite(sdist: Path, cache: Path) -> Path:
    """``tests/``, ``examples/`` and ``pyproject.toml`` of the sdist (never ``src/``: the suite's
    conftest puts ``../src`` first on ``sys.path``, which must not shadow either run's package)."""
    dest = cache / "suite"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    top = f"dataknobs_data-{VERSION}/"
    with tarfile.open(sdist) as tar:
        members = []
        for m in tar.getmembers():
            if not m.name.startswith(top):
                continue
            rel = m.name[len(top) :]
            if rel == "pyproject.toml" or rel.startswith(("tests/", "examples/")):
                if not (m.isfile() or m.isdir()):
                    continue
                m.name = rel
                members.append(m)
        kwargs: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, members=members, **kwargs)
    return dest


def install(py: Path, sdist: Path, cache: Path, fresh: bool) -> None:
    setup_log = cache / "logs" / "setup.log"
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    if fresh:
        log(f"installing {DATAKNOBS} {VERSION} [{REFERENCE_EXTRAS}] and the test requirements")
        run(
            [*pip, f"{sdist}[{REFERENCE_EXTRAS}]", *REFERENCE_DRIVERS, *TEST_REQUIREMENTS], log_file=setup_log
        )
    else:
        r = subprocess.run(
            [str(py), "-c", "import dk_vector_plugins; print(dk_vector_plugins.__file__)"],
            capture_output=True,
            text=True,
        )
        if (
            r.returncode == 0
            and Path(r.stdout.strip()).resolve().is_relative_to(REPO)
            and _ours_stamp(py).exists()
            and _ours_stamp(py).read_text() == _pyproject_digest()
        ):
            # an editable install of this working tree, its metadata (the entry points that
            # register the built-in plugins) from the current pyproject.toml: nothing to refresh
            return
    log(f"installing dk_vector_plugins (pip install {OURS})")
    run([*pip, "-e", f"{REPO}[s3]"], log_file=setup_log)
    _ours_stamp(py).write_text(_pyproject_digest())


def _ours_stamp(py: Path) -> Path:
    """The digest of the pyproject.toml that the venv's editable install was made from."""
    return py.parent.parent / "dkv-compat-ours.sha256"


def _pyproject_digest() -> str:
    return hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()


def write_stamp(py: Path, base_python: str) -> None:
    stamp = py.parent.parent / "dkv-compat.json"
    stamp.write_text(
        json.dumps(
            {
                "python": base_python,
                "dataknobs": VERSION,
                "reference_drivers": REFERENCE_DRIVERS,
                "test_requirements": TEST_REQUIREMENTS,
            }
        )
    )


# ----------------------------------------------------------------------------------------------
# the shim and the reporter plugin

SHIM_SUPPORT = '''\
"""Support of the generated dataknobs_data shim (compat/run_dataknobs_suite.py). No behaviour:
out-of-scope backend classes that only raise, and, in the diagnostic stub mode only,
placeholders for dataknobs names that dk_vector_plugins has no counterpart for."""

import importlib.abc
import importlib.machinery
import sys


def out_of_scope(module, name):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            f"{module}.{name}: a backend dk_vector_plugins does not re-do (its lane is deselected)"
        )

    return type(name, (), {"__init__": __init__, "__module__": module})


class _Missing(type):
    def __call__(cls, *args, **kwargs):
        raise NotImplementedError(f"{cls._dkv_name} has no counterpart in dk_vector_plugins (shim placeholder)")

    def __getattr__(cls, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        raise NotImplementedError(
            f"{cls._dkv_name}.{attr}: {cls._dkv_name} has no counterpart in dk_vector_plugins (shim placeholder)"
        )


def placeholder(module, name):
    return _Missing(name, (), {"_dkv_name": f"{module}.{name}", "__module__": module})


def module_getattr(module):
    made = {}

    def __getattr__(name):
        if name.startswith("_"):
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if name not in made:
            made[name] = placeholder(module, name)
        return made[name]

    return __getattr__


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Any dataknobs_data submodule the shim lacks: an empty module of placeholders."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("dataknobs_data."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__path__ = []
        module.__getattr__ = module_getattr(module.__name__)


def install_finder():
    if not any(isinstance(f, _StubFinder) for f in sys.meta_path):
        sys.meta_path.append(_StubFinder())
'''

REPORTER = '''\
"""pytest plugin of compat/run_dataknobs_suite.py: every test's outcome as JSON lines."""

import importlib.util
import json
import os

_PATH = os.environ["DKV_COMPAT_REPORT"]


def _write(rec):
    with open(_PATH, "a") as f:
        f.write(json.dumps(rec) + "\\n")


def _message(report):
    lr = report.longrepr
    if lr is None:
        return None, []
    if isinstance(lr, tuple) and len(lr) == 3:  # a skip: (path, line, reason)
        return str(lr[2]), []
    crash = getattr(lr, "reprcrash", None)
    frames = []
    tb = getattr(lr, "reprtraceback", None)
    for entry in getattr(tb, "reprentries", None) or []:
        loc = getattr(entry, "reprfileloc", None)
        if loc is not None:
            frames.append(f"{loc.path}:{loc.lineno}")
    if crash is not None:
        return crash.message[:3000], frames[-8:]
    text = str(lr).strip().splitlines()
    return ("\\n".join(text[-5:]))[:3000], frames[-8:]


def pytest_sessionstart(session):
    open(_PATH, "w").close()
    spec = importlib.util.find_spec("dataknobs_data")
    _write({"kind": "session", "dataknobs_data": spec.origin if spec else None})


def pytest_collectreport(report):
    if report.failed:
        msg, frames = _message(report)
        _write({"kind": "collect", "nodeid": report.nodeid, "message": msg, "frames": frames})


def pytest_runtest_logreport(report):
    msg, frames = (None, [])
    if report.failed or report.skipped:
        msg, frames = _message(report)
    _write({"kind": "test", "nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
            "xfail": hasattr(report, "wasxfail"), "message": msg, "frames": frames})
'''


def write_support(cache: Path) -> Path:
    plugins = cache / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    (plugins / "dkv_compat_report.py").write_text(REPORTER)
    return plugins


def write_shim(cache: Path, mode: str) -> Path:
    """Generate the fake ``dataknobs_data`` package from ``NAME_MAP`` (and ``OUT_OF_SCOPE``)."""
    root = cache / f"shim-{mode}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    (root / "_dkv_compat_shim.py").write_text(SHIM_SUPPORT)
    modules: dict[str, dict[str, str] | list[str]] = {**NAME_MAP, **OUT_OF_SCOPE}
    names = set(modules)
    for mod in list(names):  # parents
        parts = mod.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in modules:
                modules[parent] = {}
    for mod, content in sorted(modules.items()):
        is_pkg = any(other.startswith(mod + ".") for other in modules)
        parts = mod.split(".")
        path = (
            root.joinpath(*parts, "__init__.py") if is_pkg else root.joinpath(*parts[:-1], parts[-1] + ".py")
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f'"""{mod} -> dk_vector_plugins: generated names-only shim (compat/name_map.py)."""', ""]
        exported: list[str] = []
        if isinstance(content, dict):
            for dk_name, target in content.items():
                our_mod, our_name = target.split(":")
                lines.append(f"from {our_mod} import {our_name} as {dk_name}")
                exported.append(dk_name)
        else:
            lines.append("from _dkv_compat_shim import out_of_scope as _out_of_scope")
            for dk_name in content:
                lines.append(f"{dk_name} = _out_of_scope(__name__, {dk_name!r})")
                exported.append(dk_name)
        lines.append(f"__all__ = {sorted(exported)!r}")
        if mode == "stub":
            lines += [
                "",
                "from _dkv_compat_shim import module_getattr as _module_getattr",
                "__getattr__ = _module_getattr(__name__)",
            ]
            if mod == "dataknobs_data":
                lines += ["import _dkv_compat_shim", "_dkv_compat_shim.install_finder()"]
        path.write_text("\n".join(lines) + "\n")
    return root


def install_package_shim(py: Path, cache: Path) -> Path:
    """``pip install`` the compatibility distribution into ``<cache>/shim-package`` (``--target``,
    without dependencies: dk_vector_plugins is the venv's editable install). Not into the venv's
    site-packages, which hold the reference dataknobs-data under the same import name. It is
    built from a copy, so that the build leaves nothing in the working tree."""
    if not (COMPAT_DIST / "pyproject.toml").exists():
        raise CannotRun(f"{COMPAT_DIST} is missing (the compatibility distribution)")
    root = cache / "shim-package"
    build = cache / "build" / COMPAT_DIST.name
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(COMPAT_DIST, build, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    log(f"installing {COMPAT_DIST.name} into {root}")
    run(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--no-deps",
            "--target",
            str(root),
            str(build),
        ],
        log_file=cache / "logs" / "setup.log",
    )
    if not (root / "dataknobs_data" / "__init__.py").exists():
        raise CannotRun(f"pip installed no dataknobs_data package into {root}")
    return root


# ----------------------------------------------------------------------------------------------
# S3 server


class S3Server:
    def __init__(self, py: Path, cache: Path) -> None:
        script = REPO / "tests" / "moto_locked_server.py"
        if not script.exists():
            raise CannotRun(f"{script} is missing (it starts moto's S3 server)")
        self.log = open(cache / "logs" / "moto.log", "w")  # noqa: SIM115 - open while the server runs
        self.proc = subprocess.Popen(
            [str(py), str(script), "127.0.0.1", "0"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT"):
            self.stop()
            raise CannotRun(f"moto's server did not start (said {line!r}); see {cache / 'logs' / 'moto.log'}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise CannotRun(f"moto's server at {self.url} did not become ready") from None
                time.sleep(0.2)

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=30):
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ----------------------------------------------------------------------------------------------
# runs


def selected(only: list[str]) -> list[str]:
    files = [f for f, _ in SELECTION]
    if not only:
        return files
    out: list[str] = []
    for want in only:
        hits = [f for f in files if f == want or Path(f).name == want] or [f for f in files if want in f]
        if len(hits) != 1:
            raise CannotRun(
                f"--only {want!r} matches {hits or 'no selected file'}; choose one of: " + ", ".join(files)
            )
        out.append(hits[0])
    return list(dict.fromkeys(out))


def pytest_command(py: Path, files: list[str], junit: Path | None) -> list[str]:
    cmd = [
        str(py),
        "-m",
        "pytest",
        *files,
        "-k",
        DESELECT_K,
        "-p",
        "dkv_compat_report",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rN",
        "--continue-on-collection-errors",
        f"--timeout={TEST_TIMEOUT_S}",
        "-W",
        "ignore::DeprecationWarning",
    ]
    for nodeid, _ in DESELECT_IDS:
        if nodeid.split("::")[0] in files:
            cmd += ["--deselect", nodeid]
    if junit is not None:
        cmd.append(f"--junitxml={junit}")
    return cmd


def run_suite(
    label: str,
    py: Path,
    suite: Path,
    files: list[str],
    env: dict[str, str],
    report: Path,
    junit: Path | None,
    log_file: Path,
) -> None:
    cmd = pytest_command(py, files, junit)
    log(f"run ({label}): {len(files)} files; log {log_file}")
    t0 = time.monotonic()
    env = {**env, "DKV_COMPAT_REPORT": str(report)}
    report.unlink(missing_ok=True)
    with open(log_file, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(
            cmd, cwd=suite, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log(f"run ({label}) stopped after {RUN_TIMEOUT_S}s; its results are partial")
            rc = -1
    lines = log_file.read_text(errors="replace").strip().splitlines()
    summary = next(
        (ln for ln in reversed(lines) if re.search(r"\d+ (passed|failed|errors?|deselected)\b", ln)), ""
    )
    log(f"run ({label}) exit {rc} in {time.monotonic() - t0:.0f}s: {summary.strip('= ')}")
    if not report.exists() or report.stat().st_size == 0:
        raise CannotRun(f"pytest ({label}) produced no report; see {log_file}")


def read_report(path: Path, rename: bool) -> tuple[dict[str, dict[str, Any]], dict[str, str], str | None]:
    """Per test: outcome (passed/failed/error/skipped) and message; collection errors; the origin
    of ``dataknobs_data`` in that run."""
    tests: dict[str, dict[str, Any]] = {}
    collect: dict[str, str] = {}
    origin = None
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] == "session":
            origin = rec["dataknobs_data"]
            continue
        nodeid = normalize(rec["nodeid"]) if rename else rec["nodeid"]
        if rec["kind"] == "collect":
            collect[nodeid] = rec["message"] or ""
            continue
        t = tests.setdefault(nodeid, {"outcome": "passed", "message": None, "frames": []})
        when, outcome = rec["when"], rec["outcome"]
        if outcome == "skipped":
            if rec["xfail"]:
                outcome = "skipped"  # an expected failure counts as a skip
            if t["outcome"] == "passed":
                t.update(outcome="skipped", message=rec["message"])
        elif outcome == "failed":
            kind = "failed" if when == "call" else "error"
            if rec["xfail"]:
                kind = "skipped"
            if t["outcome"] in ("passed", "skipped") or (t["outcome"] == "failed" and kind == "error"):
                t.update(outcome=kind, message=rec["message"], frames=rec["frames"], when=when)
        elif outcome == "passed" and rec["xfail"] and when == "call":
            pass  # xpassed (non-strict): counts as passed
    return tests, collect, origin


_RENAME_RE = re.compile(r"\b(" + "|".join(map(re.escape, CLASS_RENAMES)) + r")\b") if CLASS_RENAMES else None


def normalize(nodeid: str) -> str:
    """Our class names in parametrize ids back to dataknobs's (``MemoryDatabase`` -> ``SyncMemoryDatabase``)."""
    if _RENAME_RE is None or "[" not in nodeid:
        return nodeid
    head, _, params = nodeid.partition("[")
    return head + "[" + _RENAME_RE.sub(lambda m: CLASS_RENAMES[m.group(1)], params)


def file_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


# ----------------------------------------------------------------------------------------------
# the report


def build_rows(
    files: list[str],
    ref: dict[str, dict[str, Any]],
    ours: dict[str, dict[str, Any]],
    ours_collect: dict[str, str],
) -> list[dict[str, Any]]:
    rows = []
    for f in files:
        r_tests = {k: v for k, v in ref.items() if file_of(k) == f}
        o_tests = {k: v for k, v in ours.items() if file_of(k) == f}
        row: dict[str, Any] = {"file": f}
        row["ref"] = {o: sum(1 for v in r_tests.values() if v["outcome"] == o) for o in OUTCOMES}
        row["ours"] = {o: sum(1 for v in o_tests.values() if v["outcome"] == o) for o in OUTCOMES}
        row["ours"]["not_collected"] = sum(1 for k in r_tests if k not in o_tests)
        row["ours"]["collect_error"] = f in ours_collect or any(file_of(k) == f for k in ours_collect)
        ref_pass = [k for k, v in r_tests.items() if v["outcome"] == "passed"]
        row["ref_passed"] = len(ref_pass)
        row["both_passed"] = sum(1 for k in ref_pass if ours.get(k, {}).get("outcome") == "passed")
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]], out: Any = sys.stdout) -> None:
    w = max(len(r["file"]) for r in [*rows, {"file": "file"}])
    head = f"{'file':<{w}}  {'dataknobs P/F/E/S':>18}  {'ours P/F/E/S (+n/c)':>22}  {'pass on ours / pass on dk':>26}"
    print(head, file=out)
    print("-" * len(head), file=out)
    tot_ref = dict.fromkeys(OUTCOMES, 0)
    tot_ours = dict.fromkeys((*OUTCOMES, "not_collected"), 0)
    both = refp = 0
    for r in rows:
        dk = "/".join(str(r["ref"][o]) for o in OUTCOMES)
        ours = "/".join(str(r["ours"][o]) for o in OUTCOMES)
        if r["ours"]["not_collected"]:
            ours += f" +{r['ours']['not_collected']}"
        if r["ours"]["collect_error"]:
            ours += " CE"
        pct = f"{100 * r['both_passed'] / r['ref_passed']:.0f}%" if r["ref_passed"] else "-"
        print(
            f"{r['file']:<{w}}  {dk:>18}  {ours:>22}  {r['both_passed']:>8} / {r['ref_passed']:<6} {pct:>6}",
            file=out,
        )
        for o in OUTCOMES:
            tot_ref[o] += r["ref"][o]
        for o in (*OUTCOMES, "not_collected"):
            tot_ours[o] += r["ours"][o]
        both += r["both_passed"]
        refp += r["ref_passed"]
    print("-" * len(head), file=out)
    dk = "/".join(str(tot_ref[o]) for o in OUTCOMES)
    ours = "/".join(str(tot_ours[o]) for o in OUTCOMES) + f" +{tot_ours['not_collected']}"
    pct = f"{100 * both / refp:.1f}%" if refp else "-"
    print(f"{'TOTAL':<{w}}  {dk:>18}  {ours:>22}  {both:>8} / {refp:<6} {pct:>6}", file=out)
    print(file=out)
    print(
        "P/F/E/S: passed / failed / errors (setup or teardown) / skipped. +n/c: tests of the dataknobs "
        "run that ours did not collect; CE: a collection error on ours (see --json).",
        file=out,
    )
    print(
        f"Passed on dk_vector_plugins among the tests that pass on dataknobs-data {VERSION}: "
        f"{both} of {refp} ({pct}).",
        file=out,
    )


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="reuse the venv, the sdist and the reference run's results in the cache",
    )
    ap.add_argument(
        "--only", action="append", default=[], metavar="FILE", help="run only this selected file (repeatable)"
    )
    ap.add_argument("--junit-dir", metavar="DIR", help="write reference.xml and ours.xml (JUnit) there")
    ap.add_argument("--json", metavar="OUT", help="write every test's outcome in both runs as JSON")
    ap.add_argument(
        "--shim",
        choices=("strict", "stub", "package"),
        default="strict",
        help="strict (default): a name with no counterpart is absent; stub: a placeholder that "
        "raises NotImplementedError when used (diagnostic); package: the compatibility "
        "distribution compat/dataknobs-data-compat, pip-installed (backend classes defined in "
        "dataknobs's module paths)",
    )
    ap.add_argument(
        "--cache-dir",
        help="default: $DKV_COMPAT_CACHE, $XDG_CACHE_HOME/dk_vector_plugins-compat or <repo>/.compat-cache",
    )
    ap.add_argument(
        "--list", action="store_true", help="print the selection and the deselected tests, and exit"
    )
    args = ap.parse_args(argv)

    if args.list:
        for f, what in SELECTION:
            print(f"{f:<50} {what}")
        print(f"\n-k {DESELECT_K!r}")
        for nodeid, why in DESELECT_IDS:
            print(f"--deselect {nodeid}  # {why}")
        return 0

    server: S3Server | None = None
    try:
        files = selected(args.only)
        cache = cache_dir(args.cache_dir)
        (cache / "logs").mkdir(parents=True, exist_ok=True)
        (cache / "logs" / "setup.log").unlink(missing_ok=True)
        base = find_python()
        py, fresh = ensure_venv(cache, base, args.keep)
        sdist = download_sdist(py, cache, args.keep)
        suite = extract_suite(sdist, cache)
        install(py, sdist, cache, fresh)
        write_stamp(py, base)
        plugins = write_support(cache)
        shim = install_package_shim(py, cache) if args.shim == "package" else write_shim(cache, args.shim)

        server = S3Server(py, cache)
        log(f"S3 server (moto) at {server.url}")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AWS_", "PYTEST_", "DKV_"))
            and k not in ("PYTHONPATH", "LOCALSTACK_ENDPOINT")
        }
        env.update(
            {
                "TEST_S3": "true",
                "LOCALSTACK_ENDPOINT": server.url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "DKV_DISABLE_PLUGIN_AUTOLOAD": "1",  # our built-ins only, whatever else is installed
                "PYTHONDONTWRITEBYTECODE": "1",
            }
        )
        junit_dir = Path(args.junit_dir).resolve() if args.junit_dir else None
        if junit_dir:
            junit_dir.mkdir(parents=True, exist_ok=True)
        key = re.sub(r"[^A-Za-z0-9]+", "_", "+".join(files)) if args.only else "all"
        ref_report = cache / "results" / f"reference-{key[:120]}.jsonl"
        ref_report.parent.mkdir(parents=True, exist_ok=True)
        if args.keep and not fresh and ref_report.exists() and not junit_dir:
            log(f"reusing the reference results {ref_report}")
        else:
            run_suite(
                "dataknobs-data",
                py,
                suite,
                files,
                {**env, "PYTHONPATH": str(plugins)},
                ref_report,
                junit_dir / "reference.xml" if junit_dir else None,
                cache / "logs" / "reference.log",
            )
        server.reset()
        ours_report = cache / "results" / f"ours-{args.shim}-{key[:120]}.jsonl"
        run_suite(
            "dk_vector_plugins",
            py,
            suite,
            files,
            {**env, "PYTHONPATH": os.pathsep.join([str(shim), str(plugins)])},
            ours_report,
            junit_dir / "ours.xml" if junit_dir else None,
            cache / "logs" / f"ours-{args.shim}.log",
        )

        ref, ref_collect, ref_origin = read_report(ref_report, rename=False)
        ours, ours_collect, ours_origin = read_report(ours_report, rename=True)
        if not ours_origin or not Path(ours_origin).resolve().is_relative_to(shim):
            raise CannotRun(
                f"the run against ours imported dataknobs_data from {ours_origin}, not the shim {shim}"
            )
        if ref_origin and Path(ref_origin).resolve().is_relative_to(shim):
            raise CannotRun("the reference run imported the shim")
        if ref_collect:
            log(f"warning: collection errors on dataknobs-data itself: {sorted(ref_collect)}")

        rows = build_rows(files, ref, ours, ours_collect)
        print(
            f"dataknobs-data {VERSION}'s own tests (selection: {len(files)} files, SQL/DuckDB/Postgres/"
            f"Elasticsearch lanes deselected), shim: {args.shim}\n"
        )
        print_table(rows)
        if args.json:
            out = {
                "dataknobs_version": VERSION,
                "shim": args.shim,
                "files": files,
                "deselect_k": DESELECT_K,
                "deselect_ids": [n for n, _ in DESELECT_IDS],
                "rows": rows,
                "collect_errors": {"reference": ref_collect, "ours": ours_collect},
                "tests": {
                    k: {"reference": ref.get(k), "ours": ours.get(k)} for k in sorted(set(ref) | set(ours))
                },
            }
            Path(args.json).write_text(json.dumps(out, indent=1))
            log(f"wrote {args.json}")
        return 0
    except CannotRun as e:
        log(f"cannot run: {e}")
        return 2
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
