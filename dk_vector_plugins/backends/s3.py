"""The built-in ``s3`` backend plugin: the log-structured table on S3 (boto3 sync, aioboto3 async).

``DatabaseFactory().create(backend="s3", bucket="b", prefix="tables/docs", vector_enabled=True)``;
``endpoint_url`` points it at another S3-compatible server. Credentials come from the usual boto3
chain unless given (``aws_access_key_id``, ...). Needs the ``s3`` extra:
``pip install 'dk_vector_plugins[s3]'``.

Cost model (N records of d dimensions):

* **cold open** downloads every segment once, concurrently: about ``N x d x 4`` bytes of vectors
  plus the ids and row JSON, in about ``4 x segments`` GETs (ids, rows, vectors and their norms;
  compaction keeps segments few). Memory afterwards: the float32 vectors (``N x d x 4`` bytes)
  plus the records. A
  :class:`~dk_vector_plugins.DkvPerformanceWarning` is emitted before a load larger than
  ``warn_download_bytes`` (1 GiB by default).
* **warm search**: exactly one request, a conditional GET of ``LATEST.json`` answered ``304``;
  none with ``consistency="eventual"`` while the last check is younger than ``max_staleness_s``.
  Scoring is local: one matrix product.
* **after another writer's commit**: that request returns the new manifest (200), then one GET
  per object of each new segment (ids, rows, vectors and norms of each vector field).
* **a commit**: one PUT per segment object (multipart above ``multipart_threshold``), one
  conditional PUT of the manifest (``IfNoneMatch="*"``), and a GET + conditional PUT of
  ``LATEST.json``; a writer that loses the race retries with backoff, ``ConflictError`` after
  ``commit_retries``.

Where it differs from dataknobs-data 0.11's S3 backends, on purpose (a store behaves the same on
every backend, sync or async, so code moves between memory, file and S3 unchanged):

* **a record's metadata is stored as given.** dataknobs-data stamps ``metadata['id']``,
  ``created_at`` and ``updated_at`` into every record its S3 backends write (and ``id`` into
  every record its async one reads); its memory and file backends do not. Here a record reads
  back with the metadata it was written with on every backend: stamps would make the same code
  see other metadata on S3 than on memory or file.
* **``delete(id)`` answers ``False`` for an id that is not stored**, as every store here and
  dataknobs-data's sync S3 backend do (its async one answers ``True``: it deletes without looking).
* **no ``connect()`` is needed**: an async store opens its client on its first awaited call
  (``connect()`` does it earlier), where dataknobs-data's raise ``RuntimeError``. A sync store
  checks its bucket (creating it when allowed) and loads its table when it is created, so a
  missing bucket, bad credentials or an unreachable endpoint are errors at that point.
* **``prefix`` defaults to ``''``** (the bucket's root) for both classes: a sync and an async
  store of one config open the same table. dataknobs-data's sync backend defaults to
  ``records/``, its async one to ``''``.
* the settings are read-only attributes of a store (``bucket``, ``prefix``, ``region``,
  ``endpoint_url``, ``max_workers``: see :class:`_Setting`).
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

from ..core import StoreCore
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..storage.driver import TableStorage, async_runner, sync_runner
from ..storage.ops import Program
from ..storage.s3 import AsyncS3ObjectStore, S3Keys, S3ObjectStore, client_kwargs, require
from ..types import BackendSpec, OptionSpec
from .tabled import TABLE_OPTIONS, AsyncTableDatabase, TableDatabase, local_path, table_options

__all__ = ["AsyncS3Database", "S3Database"]

_B = ("s3",)


def _endpoint_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ConfigError(
            f"config key 'endpoint_url' must be an http:// or https:// URL with a host, got {value!r}"
        )
    return value


#: Client arguments a store sets from its own keys (``extra_client_kwargs`` may not give them).
_OWN_CLIENT_KEYS = frozenset(
    {"config", "endpoint_url", "region_name", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
)


def _client_extras(value: dict[str, Any]) -> dict[str, Any]:
    clash = sorted(set(value) & _OWN_CLIENT_KEYS)
    if clash:
        raise ConfigError(
            f"config key 'extra_client_kwargs' may not set {', '.join(map(repr, clash))}: "
            "give them as the store's own config keys"
        )
    return dict(value)


_OPTIONS = (
    OptionSpec("bucket", (str,), None, "the bucket holding the table", required=True, backends=_B),
    OptionSpec("prefix", (str,), "", "key prefix of the table inside the bucket", backends=_B),
    OptionSpec(
        "endpoint_url",
        (str,),
        None,
        "S3-compatible endpoint, an http(s) URL (e.g. a local server)",
        backends=_B,
        convert=_endpoint_url,
    ),
    OptionSpec("region_name", (str,), None, "AWS region", backends=_B, aliases=("region",)),
    OptionSpec(
        "aws_access_key_id",
        (str,),
        None,
        "access key (default: boto3's chain)",
        backends=_B,
        aliases=("access_key_id",),
        secret=True,
    ),
    OptionSpec(
        "aws_secret_access_key",
        (str,),
        None,
        "secret key (default: boto3's chain)",
        backends=_B,
        aliases=("secret_access_key",),
        secret=True,
    ),
    OptionSpec(
        "aws_session_token",
        (str,),
        None,
        "session token (default: boto3's chain)",
        backends=_B,
        aliases=("session_token",),
        secret=True,
    ),
    OptionSpec(
        "create_bucket",
        (bool,),
        True,
        "create the bucket when it does not exist, as dataknobs-data does (False: a missing bucket is an error)",
        backends=_B,
    ),
    OptionSpec(
        "concurrency",
        (int,),
        16,
        "parallel requests of a cold load or commit",
        backends=_B,
        aliases=("max_pool_connections", "max_workers"),
        minimum=1,
    ),
    OptionSpec(
        "max_attempts",
        (int,),
        3,
        "retries of a failed S3 request after the first try (botocore's retries max_attempts)",
        backends=_B,
        aliases=("max_retries",),
        minimum=0,
    ),
    OptionSpec(
        "retry_mode",
        (str,),
        "standard",
        "boto3 retry mode",
        backends=_B,
        choices=("standard", "adaptive", "legacy"),
    ),
    OptionSpec(
        "extra_client_kwargs",
        (dict,),
        None,
        "further keyword arguments for the boto3 / aioboto3 client",
        backends=_B,
        convert=_client_extras,
    ),
    OptionSpec(
        "cache_dir",
        (str, os.PathLike),
        None,
        "local cache of (immutable) segments",
        backends=_B,
        convert=local_path("cache_dir"),
    ),
    OptionSpec(
        "consistency",
        (str,),
        "strong",
        "'strong': check for changes on every call; 'eventual': at most every max_staleness_s",
        backends=_B,
        choices=("strong", "eventual"),
    ),
    OptionSpec(
        "max_staleness_s", (int, float), 1.0, "with consistency='eventual'", backends=_B, minimum=0
    ),
    OptionSpec(
        "warn_download_bytes",
        (int,),
        1 << 30,
        "warn before a cold load larger than this",
        backends=_B,
        minimum=0,
    ),
    OptionSpec(
        "multipart_threshold",
        (int,),
        64 << 20,
        "upload objects above this size in parts",
        backends=_B,
        minimum=0,
    ),
    OptionSpec(
        "multipart_chunksize",
        (int,),
        16 << 20,
        "size of one part of a multipart upload (S3's minimum, 5 MiB, applies)",
        backends=_B,
        minimum=1,
    ),
    OptionSpec("lazy_rows", (bool,), False, "fetch row data on first use instead of on load", backends=_B),
    *TABLE_OPTIONS("s3"),
)


T = TypeVar("T")


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


class _Setting(Generic[T]):
    """A config value of an S3 store as an attribute, under dataknobs-data's name.

    dataknobs-data's S3 stores keep their settings in plain attributes (``db.bucket``,
    ``db.prefix``, ``db.region``, ``db.endpoint_url``, ``db.max_workers``). Ours read the same
    names from the store's config, on both classes:

    * on a store, the attribute is read-only. A store's location and client are fixed when it is
      created (a sync store has checked its bucket and loaded its table by then; an async one
      opens its client on whichever call comes first), so assigning one raises :class:`AttributeError` naming the config key to create another store with,
      instead of being silently ignored while the store goes on using the old value;
    * on an instance that is not a store (made with ``cls.__new__``, so it has no config and never
      connected, as dataknobs-data's ``test_custom_endpoint`` builds one), the attribute is an
      ordinary one: what was assigned is read back.
    """

    def __init__(self, key: str, doc: str, convert: Callable[[Any], T]) -> None:
        self.key = key
        self.convert = convert
        self.name = key
        self.__doc__ = f"{doc} (config key ``{key}``; read-only on a store)"

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, db: None, owner: type | None = None) -> _Setting[T]: ...

    @overload
    def __get__(self, db: object, owner: type | None = None) -> T: ...

    def __get__(self, db: object | None, owner: type | None = None) -> T | _Setting[T]:
        if db is None:
            return self
        config = vars(db).get("_config")
        if config is None:  # not a store: an ordinary attribute
            try:
                return vars(db)[self.name]  # type: ignore[no-any-return]
            except KeyError:
                raise AttributeError(f"{type(db).__name__!r} object has no attribute {self.name!r}") from None
        return self.convert(config.get(self.key))

    def __set__(self, db: object, value: Any) -> None:
        if "_config" in vars(db):
            raise AttributeError(
                f"{self.name!r} of an S3 store is its config key {self.key!r}, fixed when the store is "
                f"created: create a store with {self.key}=... instead"
            )
        vars(db)[self.name] = value


class _S3Config:
    """What the sync and async S3 stores share: their settings as attributes under
    dataknobs-data's names (see :class:`_Setting`), the client's arguments, the table storage."""

    backend_name = "s3"
    config: Any

    bucket = _Setting("bucket", "The bucket", str)
    prefix = _Setting("prefix", "The key prefix of the table", lambda v: str(v or ""))
    region = _Setting("region_name", "The region, if one was given", _optional_str)
    endpoint_url = _Setting("endpoint_url", "The S3 endpoint, if one was given", _optional_str)
    max_workers = _Setting("concurrency", "Parallel requests of a cold load or commit", int)

    def _store_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {
            "prefix": c["prefix"],
            "concurrency": c["concurrency"],
            "cache_dir": c.get("cache_dir"),
            "multipart_threshold": c["multipart_threshold"],
            "part_size": c["multipart_chunksize"],
        }

    def _client_args(self, config_class: Any) -> dict[str, Any]:
        """Keyword arguments of the boto3 / aioboto3 client: pool, retries, endpoint, credentials."""
        c = self.config
        pool = config_class(
            max_pool_connections=max(10, c["concurrency"]),
            retries={"mode": c["retry_mode"], "max_attempts": c["max_attempts"]},
        )
        return {**dict(c.get("extra_client_kwargs") or {}), "config": pool, **client_kwargs(c)}

    def _table_storage(self, runner: Any, describe: Any, closer: Any = None) -> TableStorage:
        c = self.config
        options = table_options(c, c["lazy_rows"])
        options.warn_load_bytes = c["warn_download_bytes"]
        staleness = float(c["max_staleness_s"]) if c["consistency"] == "eventual" else 0.0
        return TableStorage(runner, describe, options, closer, max_staleness_s=staleness)


class S3Database(_S3Config, TableDatabase):
    """A store on S3, sync API (boto3)."""

    def _make_storage(self) -> TableStorage:
        boto3 = require("boto3")
        from botocore.config import Config

        try:
            self.s3_client = boto3.client("s3", **self._client_args(Config))
        except (ValueError, TypeError) as e:  # botocore's check of the endpoint, region, extra arguments
            raise ConfigError(f"the S3 client rejected this store's config: {e}") from e
        store = S3ObjectStore(self.s3_client, self.config["bucket"], **self._store_kwargs())
        store.check_bucket(self.config["create_bucket"])
        run, close = sync_runner(store)
        return self._table_storage(run, store.describe, close)


class AsyncS3Database(_S3Config, AsyncTableDatabase):
    """A store on S3, async API (aioboto3). The client opens on the first awaited call."""

    def _make_storage(self) -> TableStorage:
        require("aioboto3")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._astore: AsyncS3ObjectStore | None = None
        self._client_cm: Any = None
        self.s3_client: Any = None
        self._open_lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        names = S3Keys(self.config["bucket"], prefix=self.config["prefix"])  # key naming only
        return self._table_storage(self._bridge, names.describe)

    def _bridge(self, program: Program[Any]) -> Any:
        if self._loop is None or self._astore is None:
            raise ConfigError("the async S3 store is not open: await one of its methods first")
        return async_runner(self._astore, self._loop)(program)

    def _make_core(self) -> StoreCore:
        core = super()._make_core()
        core.connect_async = self._open_client
        core.async_closers.append(self._close_client)
        return core

    async def _open_client(self) -> None:
        """Open the aioboto3 client and check the bucket (before the store's first core call).

        The client belongs to the event loop that opened it. A store used from another loop
        later (``asyncio.run`` twice) opens a new client there; the old one, whose loop is gone,
        is dropped. One store serves one event loop at a time.
        """
        loop = asyncio.get_running_loop()
        if self._astore is not None and self._loop is loop:
            return
        if self._open_lock is None or self._lock_loop is not loop:
            self._open_lock, self._lock_loop = asyncio.Lock(), loop
        async with self._open_lock:
            if self._astore is not None and self._loop is loop:
                return
            if self._astore is not None:  # opened on a loop that has ended: its client is unusable
                self._astore, self._client_cm, self.s3_client = None, None, None
            aioboto3 = require("aioboto3")
            from aiobotocore.config import AioConfig

            session = aioboto3.Session()
            self._client_cm = session.client("s3", **self._client_args(AioConfig))
            try:
                client = await self._client_cm.__aenter__()
            except (ValueError, TypeError) as e:  # botocore's check of the endpoint, region, extra arguments
                self._client_cm = None
                raise ConfigError(f"the S3 client rejected this store's config: {e}") from e
            store = AsyncS3ObjectStore(client, self.config["bucket"], **self._store_kwargs())
            try:
                await store.check_bucket(self.config["create_bucket"])
            except BaseException:
                await self._client_cm.__aexit__(None, None, None)
                raise
            self.s3_client = client
            self._loop = loop
            self._astore = store

    async def _close_client(self) -> None:
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
            self._client_cm = None


@hookimpl
def dkv_register_backends() -> list[BackendSpec]:
    """The ``s3`` backend."""
    return [
        BackendSpec(
            name="s3",
            sync_class=S3Database,
            async_class=AsyncS3Database,
            options=_OPTIONS,
            description="log-structured table on S3 (boto3 / aioboto3)",
        )
    ]
