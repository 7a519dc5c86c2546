"""Shared fixtures: backend-parametrized stores that run the same tests on sync and async classes.

``BACKENDS`` lists ``(backend name, is_async)`` pairs. Every behavioural test that takes the
``store`` (or ``make_store_for``) fixture runs once per pair. An async store is wrapped in
:class:`SyncAdapter`, which runs each coroutine method to completion on one event loop owned by
the fixture, so the very same test body drives ``SyncDatabase`` and ``AsyncDatabase`` classes.

To add a backend, append its pairs to ``BACKENDS`` and register a config builder in
``BACKEND_CONFIG``: a function ``(store_dir, request) -> dict`` returning the backend's own config
keys (``{"path": store_dir}`` for ``file``; for ``s3`` a bucket on a test server, e.g.
``request.getfixturevalue("s3_server")``). ``store_dir`` is a fresh directory per store.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, settings

from dk_vector_plugins import AsyncDatabaseFactory, DatabaseFactory

if TYPE_CHECKING:
    from s3_server import S3Server

sys.path.insert(0, str(Path(__file__).parent))  # tests/s3_server.py

# Keep property tests quick and deterministic in CI; `HYPOTHESIS_PROFILE=thorough` digs deeper.
settings.register_profile(
    "dkv",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dkv"))

#: (backend name, is_async) pairs every behavioural test runs against.
BACKENDS: list[tuple[str, bool]] = [
    ("memory", False),
    ("memory", True),
    ("file", False),
    ("file", True),
    ("s3", False),
    ("s3", True),
]

ConfigBuilder = Callable[[Path, "pytest.FixtureRequest | None"], dict[str, Any]]

#: Backend name -> builder of that backend's own config keys (the extension point).
BACKEND_CONFIG: dict[str, ConfigBuilder] = {
    "memory": lambda store_dir, request: {},
    "file": lambda store_dir, request: {"path": str(store_dir / "store")},
    "s3": lambda store_dir, request: _s3_config(request),
}


def _s3_config(request: pytest.FixtureRequest | None) -> dict[str, Any]:
    if request is None:
        raise RuntimeError("an s3 store needs the pytest request (for the s3_server fixture)")
    return request.getfixturevalue("s3_server").config()  # type: ignore[no-any-return]


def backend_id(param: tuple[str, bool]) -> str:
    """``"memory-sync"``, ``"memory-async"``, ..."""
    name, is_async = param
    return f"{name}-{'async' if is_async else 'sync'}"


class SyncAdapter:
    """Drive an async store synchronously: every awaitable a method returns is run on ``loop``.

    Attributes that are not coroutines (``config``, ``vector_dimension``, ``core``...) pass
    through unchanged. ``close()`` closes the store and then the loop.
    """

    def __init__(self, store: Any) -> None:
        self._store = store
        self._loop = asyncio.new_event_loop()

    @property
    def wrapped(self) -> Any:
        """The async store itself."""
        return self._store

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the adapter runs coroutines on."""
        return self._loop

    def run(self, awaitable: Any) -> Any:
        """Run one awaitable to completion on the adapter's loop."""
        return self._loop.run_until_complete(awaitable)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr) or inspect.isclass(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            return self.run(result) if inspect.isawaitable(result) else result

        call.__name__ = name
        return call

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.run(self._store.close())
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()

    def __repr__(self) -> str:
        return f"SyncAdapter({self._store!r})"


_store_counter = itertools.count()


def make_store(
    backend: str,
    is_async: bool,
    tmp_path: Path,
    *,
    request: pytest.FixtureRequest | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    **config: Any,
) -> Any:
    """Build a store through ``DatabaseFactory`` / ``AsyncDatabaseFactory``.

    Returns the sync store, or a :class:`SyncAdapter` around the async one. The caller closes it.
    ``factory_kwargs`` go to the factory (``plugins=[...]``, ``block=[...]``).
    """
    store_dir = tmp_path / f"{backend}-{next(_store_counter)}"
    store_dir.mkdir(parents=True, exist_ok=True)
    full = {"backend": backend, **BACKEND_CONFIG[backend](store_dir, request), **config}
    factory_cls = AsyncDatabaseFactory if is_async else DatabaseFactory
    db = factory_cls(**(factory_kwargs or {})).create(full)
    return SyncAdapter(db) if is_async else db


@pytest.fixture(params=BACKENDS, ids=backend_id)
def backend(request: pytest.FixtureRequest) -> tuple[str, bool]:
    """One (backend name, is_async) pair."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def make_store_for(
    backend: tuple[str, bool], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Any]]:
    """A function ``(**config) -> store`` for the parametrized backend; closes every store it made."""
    made: list[Any] = []

    def make(**config: Any) -> Any:
        db = make_store(backend[0], backend[1], tmp_path, request=request, **config)
        made.append(db)
        return db

    yield make
    for db in reversed(made):
        db.close()


def _opener_at_one_location(
    pair: tuple[str, bool], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Any]]:
    backend_name, is_async = pair
    location = {"backend": backend_name, **BACKEND_CONFIG[backend_name](tmp_path, request)}
    made: list[Any] = []

    def open_(factory_kwargs: dict[str, Any] | None = None, **config: Any) -> Any:
        factory_cls = AsyncDatabaseFactory if is_async else DatabaseFactory
        db = factory_cls(**(factory_kwargs or {})).create({**location, **config})
        db = SyncAdapter(db) if is_async else db
        made.append(db)
        return db

    open_.backend = backend_name  # type: ignore[attr-defined]
    yield open_
    for db in reversed(made):
        db.close()


@pytest.fixture
def open_at(backend: tuple[str, bool], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``open(factory_kwargs=None, **config)``: a store of the parametrized backend at ONE
    location per test, so a second call reopens what the first wrote; closes every store."""
    yield from _opener_at_one_location(backend, tmp_path, request)


#: The (backend, is_async) pairs whose stores persist (reopening them finds what was written).
PERSISTED = [b for b in BACKENDS if b[0] != "memory"]


@pytest.fixture(params=PERSISTED, ids=backend_id)
def reopen_at(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """:func:`open_at` over the backends that persist (file and S3, sync and async)."""
    yield from _opener_at_one_location(request.param, tmp_path, request)


@pytest.fixture
def store(make_store_for: Callable[..., Any]) -> Any:
    """A vector-enabled store of each backend, sync and async (through :class:`SyncAdapter`)."""
    return make_store_for(vector_enabled=True)


# --- S3: a real server over HTTP on 127.0.0.1 --------------------------------------------------


@pytest.fixture(params=["file", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Where a table lives: a directory, or a prefix on the test S3 server (config keys)."""
    if request.param == "file":
        return {"backend": "file", "path": str(tmp_path / "s")}
    server: S3Server = request.getfixturevalue("s3_server")
    return {"backend": "s3", **server.config()}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The S3 server of the session: moto's standalone server on a free port, started here; with
    ``TEST_S3=true``, the external one at ``S3_ENDPOINT_URL`` (default ``http://localhost:4566``)."""
    import s3_server as s3mod

    server = s3mod.external()
    if server is not None:
        s3mod.check_reachable(server)
    else:
        server = s3mod.start()
    yield server
    server.stop()
