"""Helpers shared by the benchmark scripts in this folder (not a benchmark itself).

The scripts are run as ``python benchmarks/bench_x.py``, so this folder is first on ``sys.path``
and ``from _common import ...`` works from each of them.

The comparisons with dataknobs-data (``bench_memory``, ``bench_file``, ``bench_s3``) run it in a
separate interpreter, since it needs Python >= 3.12 (see ``find_dataknobs_python``):

* ``DKV_DATAKNOBS_PYTHON``: the interpreter to use, a path or a command name on ``PATH`` (e.g. a
  venv's ``bin/python`` with ``dataknobs-data`` installed; ``bench_s3`` also needs ``boto3``
  there). When it is set, it is the only candidate.
* otherwise the first of ``python3.14``, ``python3.13``, ``python3.12``, ``python3`` found on
  ``PATH`` (and this interpreter) that is Python >= 3.12 and can import ``dataknobs_data`` and
  ``numpy``.

When none qualifies, the dataknobs check is reported as skipped, with a message saying what was
tried; the rest of the report is unaffected.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

CATEGORIES = 10  # metadata "category" = i % CATEGORIES (bench_memory, bench_s3)

# ----------------------------------------------------------------------------------------------
# progress and formatting

_LOG_TAG = "bench"


def run_report(main: Callable[[], Any]) -> None:
    """Run a benchmark's ``main()`` as a report: a crash prints its traceback and a ``FAIL`` line,
    and the process exits 0 all the same (a report, not a test)."""
    try:
        main()
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"FAIL: benchmark aborted: {type(exc).__name__}: {exc}")
    sys.exit(0)


def set_log_tag(tag: str) -> None:
    """The ``[tag]`` in front of every progress line (the script's name)."""
    global _LOG_TAG
    _LOG_TAG = tag


def log(msg: str) -> None:
    """Progress goes to stderr so stdout holds only the report."""
    print(f"[{_LOG_TAG}] {msg}", file=sys.stderr, flush=True)


def fmt_ms(seconds: float, micro: bool = True) -> str:
    """A duration in s / ms / us (``micro=False``: never below ms)."""
    ms = seconds * 1e3
    if ms >= 1000:
        return f"{ms / 1e3:.2f} s"
    if ms >= 10:
        return f"{ms:.1f} ms"
    if ms >= 1 or not micro:
        return f"{ms:.2f} ms"
    return f"{ms * 1e3:.0f} us"


def fmt_mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def median(xs: list[float]) -> float:
    return float(np.median(np.asarray(xs, dtype=np.float64)))


def spread(xs: list[float]) -> str:
    a = np.asarray(xs, dtype=np.float64)
    p10, p50, p90 = np.percentile(a, [10, 50, 90])
    return f"p10 {fmt_ms(p10)} / p50 {fmt_ms(p50)} / p90 {fmt_ms(p90)} (n={len(a)})"


# ----------------------------------------------------------------------------------------------
# timing


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def interleaved(
    variants: dict[str, Callable[[int], Any]],
    reps: int,
    warmup: int,
    seed: int = 0,
    after: Callable[[str, Any], Any] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Time each variant ``reps`` times, interleaved in a shuffled order per repetition.

    Each variant is called with the repetition number (to pick its query), after ``warmup``
    untimed rounds. Returns the per-call times (seconds) and the results of every timed call.
    ``after(name, result)``, if given, runs untimed after each call (warm-ups too) and its return
    value is kept as the result (e.g. to close a cold-opened store).
    """
    names = list(variants)
    for w in range(warmup):
        for name in names:
            res = variants[name](w)
            if after is not None:
                after(name, res)
    gc.collect()
    times: dict[str, list[float]] = {n: [] for n in names}
    results: dict[str, list[Any]] = {n: [] for n in names}
    rng = np.random.default_rng(seed)
    for r in range(reps):
        for j in rng.permutation(len(names)):
            name = names[j]
            t0 = time.perf_counter_ns()
            res = variants[name](r)
            times[name].append((time.perf_counter_ns() - t0) * 1e-9)
            if after is not None:
                res = after(name, res)
            results[name].append(res)
    return times, results


def interleaved_selftimed(
    variants: dict[str, Callable[[int], tuple[float, Any]]],
    reps: int,
    seed: int,
    warm: bool = True,
    on_call: Callable[[int, str, float], None] | None = None,
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Like ``interleaved`` for variants that time themselves, with a ``gc.collect()`` before each.

    A variant is ``fn(rep) -> (seconds, result)``, so per-run setup (a fresh directory, closing a
    store) stays out of the measurement. With ``warm``, each runs once untimed first (rep -1).
    ``on_call(rep, name, seconds)`` is called after each timed call (progress lines).
    """
    order = list(variants)
    if warm:
        for name in order:
            variants[name](-1)
    times: dict[str, list[float]] = {k: [] for k in order}
    results: dict[str, list[Any]] = {k: [] for k in order}
    rnd = random.Random(seed)
    for r in range(reps):
        rnd.shuffle(order)
        for name in order:
            gc.collect()
            t, res = variants[name](r)
            times[name].append(t)
            results[name].append(res)
            if on_call is not None:
                on_call(r, name, t)
    return times, results


# ----------------------------------------------------------------------------------------------
# references


def make_ids(n: int) -> list[str]:
    return [f"doc-{i:07d}" for i in range(n)]


def numpy_topk(m: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    """Bare numpy exact top-k of unit rows ``m`` against ``q``: matvec, argpartition, sort of k."""
    scores = m @ (q / np.linalg.norm(q))
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def hit_ids(hits: list[Any]) -> list[str]:
    return [h.id for h in hits]


# ----------------------------------------------------------------------------------------------
# environment


def _openblas_libs() -> list[Any]:
    with open("/proc/self/maps") as f:
        return [ctypes.CDLL(p) for p in sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())))]


def blas_summary() -> str:
    try:
        from threadpoolctl import threadpool_info  # type: ignore[import-not-found]

        infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
        if infos:
            return "; ".join(
                f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
                f"{i.get('num_threads')} threads, threadpoolctl)"
                for i in infos
            )
    except Exception:
        pass
    name, version = "?", "?"
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]  # type: ignore[func-returns-value,index]
        name, version = cfg.get("name", "?"), cfg.get("version", "?")
    except Exception:
        pass
    core, threads = None, None
    try:  # ask the loaded OpenBLAS directly (what threadpoolctl does)
        for lib in _openblas_libs():
            for prefix in ("scipy_openblas_", "openblas_"):
                for suffix in ("64_", ""):
                    fn = getattr(lib, f"{prefix}get_corename{suffix}", None)
                    if fn is not None and core is None:
                        fn.restype = ctypes.c_char_p
                        core = fn().decode()
                    fn = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                    if fn is not None and threads is None:
                        threads = int(fn())
    except Exception:
        pass
    extra = ", ".join(x for x in (core and f"core {core}", threads and f"threads={threads}") if x)
    return f"{name} {version}" + (
        f" ({extra}, threadpoolctl not installed)" if extra else " (threadpoolctl not installed)"
    )


def set_blas_threads(n: int) -> str:
    """Limit BLAS threads in this process (threadpoolctl if installed, else the OpenBLAS C API)."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found]

        threadpool_limits(limits=n, user_api="blas")
        return "threadpoolctl"
    except ImportError:
        pass
    done = False
    for lib in _openblas_libs():
        for name in (
            "scipy_openblas_set_num_threads64_",
            "openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
            "openblas_set_num_threads",
        ):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done = True
                break
    return "openblas C API" if done else "not applied (no threadpoolctl, no OpenBLAS found)"


def env_summary(extra: str = "") -> str:
    """One line: python, numpy, BLAS, cpus, machine, loadavg, BLAS env vars (+ ``extra``)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    blas_env = {
        k: v
        for k, v in sorted(os.environ.items())
        if re.match(r"(OPENBLAS|OMP|MKL|NVPL|BLIS|VECLIB|GOTO)_", k)
    }
    blas_env.setdefault("OPENBLAS_CORETYPE", "unset")
    env_txt = " ".join(f"{k}={v}" for k, v in blas_env.items())
    try:
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "?"
    return (
        f"Environment: python {platform.python_version()} | numpy {np.__version__} | "
        f"BLAS {blas_summary()} | cpus {os.cpu_count()} (affinity {affinity}) | "
        f"{platform.machine()} | loadavg {load} | {env_txt}" + (f" | {extra}" if extra else "")
    )


# ----------------------------------------------------------------------------------------------
# dataknobs-data subprocess


#: How every dataknobs-data child script starts (each benchmark appends its own body): the
#: imports, and the vectors (``x``), queries (``qs``) and JSON ``spec`` it is given as arguments.
DK_CHILD_PREAMBLE = r"""
import collections, json, logging, os, sys, tempfile, time
import numpy as np
logging.disable(logging.WARNING)
from dataknobs_data import Record, VectorField, database_factory
import dataknobs_data

x = np.load(sys.argv[1])
qs = np.load(sys.argv[2])
with open(sys.argv[3]) as f:
    spec = json.load(f)
"""

DATAKNOBS_PYTHON_ENV = "DKV_DATAKNOBS_PYTHON"
_DATAKNOBS_PATH_NAMES = ("python3.14", "python3.13", "python3.12", "python3")
_DATAKNOBS_PROBE = "import sys, dataknobs_data, numpy; assert sys.version_info >= (3, 12), sys.version"


def _dataknobs_candidates() -> tuple[list[str], list[str]]:
    """Interpreters to try (absolute paths, in order) and the names that resolved to nothing."""
    env = os.environ.get(DATAKNOBS_PYTHON_ENV, "").strip()
    names = [env] if env else [*_DATAKNOBS_PATH_NAMES, sys.executable]
    found: list[str] = []
    missing: list[str] = []
    for name in names:
        path = shutil.which(name)
        if path is None:
            label = f"${DATAKNOBS_PYTHON_ENV}={name}" if env else name
            missing.append(f"{label} (not found)")
            continue
        path = os.path.abspath(path)  # not realpath: a venv's python is a symlink to its base
        if path not in found:
            found.append(path)
    return found, missing


def find_dataknobs_python() -> tuple[str | None, list[str]]:
    """The first candidate interpreter that imports dataknobs_data; plus what was tried.

    ``$DKV_DATAKNOBS_PYTHON`` if set (then nothing else), else ``python3.14``, ``python3.13``,
    ``python3.12``, ``python3`` on ``PATH`` and this interpreter; a candidate qualifies when it
    is Python >= 3.12 and imports ``dataknobs_data`` and ``numpy``.
    """
    candidates, tried = _dataknobs_candidates()
    for py in candidates:
        try:
            r = subprocess.run([py, "-c", _DATAKNOBS_PROBE], capture_output=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            tried.append(f"{py} ({type(e).__name__})")
            continue
        if r.returncode == 0:
            return py, tried
        lines = [ln.strip() for ln in r.stderr.decode(errors="replace").splitlines() if ln.strip()] or ["?"]
        why = next((ln for ln in reversed(lines) if "rror" in ln), lines[0])  # ...Error, or a shim's note
        tried.append(f"{py} ({why})")
    return None, tried


def dataknobs_skip_message(tried: list[str], needs: str = "dataknobs-data") -> str:
    """Why a dataknobs comparison is skipped, and how to enable it."""
    return (
        f"skipped: no Python >= 3.12 with {needs} found; set {DATAKNOBS_PYTHON_ENV} to such an "
        "interpreter (or put python3.12+ with it installed on PATH). Tried: "
        + "; ".join(tried or ["nothing"])
    )


def run_child(
    py: str,
    child: str,
    x: np.ndarray,
    qs: np.ndarray,
    spec: dict[str, Any],
    *,
    prefix: str,
    workdir: str | None = None,
    timeout: float = 3600,
) -> dict[str, Any]:
    """Run the script ``child`` as ``py child x.npy q.npy spec.json``; its last stdout line is JSON."""
    with tempfile.TemporaryDirectory(prefix=prefix, dir=workdir) as d:
        xp, qp, sp, cp = (os.path.join(d, n) for n in ("x.npy", "q.npy", "spec.json", "child.py"))
        np.save(xp, x)
        np.save(qp, qs)
        with open(sp, "w") as f:
            json.dump(spec, f)
        with open(cp, "w") as f:
            f.write(child)
        r = subprocess.run([py, cp, xp, qp, sp], capture_output=True, timeout=timeout)
    if r.returncode != 0:
        tail = "\n".join(r.stderr.decode(errors="replace").strip().splitlines()[-5:])
        raise RuntimeError(f"dataknobs subprocess failed (rc={r.returncode}): {tail}")
    return json.loads(r.stdout.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------------------
# the report


class Report:
    """The markdown table of checks (check, ours, reference, ratio, target, pass/fail) + notes."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []
        self.notes: list[str] = []

    def add(self, check: str, ours: str, ref: str, ratio: str, target: str, ok: bool | None) -> None:
        verdict = "info" if ok is None else ("PASS" if ok else "**FAIL**")
        self.rows.append((check, ours, ref, ratio, target, verdict))

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        log(msg)

    def print(self, header: str, env: str, runtime: float) -> None:
        cols = ("check", "ours", "reference", "ratio", "target", "pass/fail")
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(cols)]

        def line(cells: tuple[str, ...]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

        print(header)
        print()
        print(line(cols))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for r in self.rows:
            print(line(r))
        print()
        print(env)
        fails = [r[0] for r in self.rows if r[5] == "**FAIL**"]
        print(
            f"Result: {'FAIL: ' + '; '.join(fails) if fails else 'all targets PASS'} (runtime {runtime:.1f} s)"
        )
        if self.notes:
            print()
            for n in self.notes:
                print(f"- {n}")
