"""Object stores on S3: :class:`S3ObjectStore` (boto3) and :class:`AsyncS3ObjectStore` (aioboto3).

Both answer the operations of :mod:`.ops` with the same requests:

* ``GetIfChanged`` is a conditional ``GetObject(IfNoneMatch=etag)``: one request, ``304`` when the
  object is unchanged; that is all a warm search costs;
* ``PutIfAbsent`` is ``PutObject(IfNoneMatch="*")`` and ``PutIfMatch`` is ``PutObject(IfMatch=...)``
  (``412`` when another writer was first);
* objects above ``multipart_threshold`` upload with explicit multipart calls;
* segments (immutable) may be kept in a local ``cache_dir``, so a restarted process downloads
  only what it has never seen.

Errors (missing bucket, access denied, unreachable endpoint) become :class:`StorageError` naming
the bucket and key.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import attrs

from ..errors import ConfigError, StorageError
from .npy import load_npy, open_npy
from .ops import (
    Delete,
    Flush,
    Get,
    GetArray,
    GetIfChanged,
    GetRange,
    List,
    Listed,
    Op,
    Put,
    PutIfAbsent,
    PutIfMatch,
    Stat,
    Versioned,
    data_len,
    joined,
)

__all__ = ["AsyncS3ObjectStore", "S3ObjectStore", "client_kwargs", "require"]

_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
_PAST_END = {"InvalidRange", "416"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
SEGMENT_PREFIX = "segments/"


def require(module: str) -> Any:
    """Import boto3/aioboto3, or say which extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(
            f"the s3 backend needs {module}: install it with  pip install 'dk_vector_plugins[s3]'"
        ) from e


def client_kwargs(config: Any) -> dict[str, Any]:
    """boto3 client arguments from a validated store config."""
    kw: dict[str, Any] = {}
    for key in (
        "endpoint_url",
        "region_name",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
    ):
        if config.get(key) is not None:
            kw[key] = config[key]
    return kw


def _code(e: Exception) -> str:
    resp = getattr(e, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", ""))
    status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or str(status or "")


def _status(e: Exception) -> int | None:
    resp = getattr(e, "response", None) or {}
    return resp.get("ResponseMetadata", {}).get("HTTPStatusCode")  # type: ignore[no-any-return]


class S3Keys:
    """Key naming, error mapping and the segment cache shared by the sync and async stores."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        concurrency: int = 16,
        cache_dir: str | None = None,
        multipart_threshold: int = 64 << 20,
        part_size: int = 16 << 20,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.concurrency = concurrency
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.multipart_threshold = multipart_threshold
        self.part_size = max(5 << 20, part_size)

    def key(self, key: str) -> str:
        """The full S3 key of a table key."""
        return self.prefix + key

    def describe(self, key: str) -> str:
        """``s3://bucket/prefix/key``."""
        return f"s3://{self.bucket}/{self.key(key)}"

    def error(self, op: Op, e: Exception) -> StorageError:
        """A :class:`StorageError` naming the bucket and key of a failed request."""
        key = getattr(op, "key", None) or getattr(op, "prefix", "")
        code = _code(e)
        target = self.describe(key) if key else f"s3://{self.bucket}/{self.prefix}"
        if code == "NoSuchBucket":
            return StorageError(f"bucket {self.bucket!r} does not exist ({type(op).__name__} {target})")
        if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(
                f"access denied to {target} ({code}); check the credentials and bucket policy"
            )
        return StorageError(f"{type(op).__name__} {target} failed: {type(e).__name__}: {e}")

    def _cache_path(self, key: str) -> Path | None:
        if self.cache_dir is None or not key.startswith(SEGMENT_PREFIX):
            return None
        safe = f"{self.bucket}/{self.prefix}{key}".replace("/", "__")
        return self.cache_dir / safe

    def _cache_read(self, key: str, array: bool) -> Any:
        path = self._cache_path(key)
        if path is None or not path.exists():
            return None
        if array:
            try:
                return open_npy(path)
            except (ValueError, OSError):
                path.unlink(missing_ok=True)
                return None
        return Versioned(path.read_bytes(), "cache")

    def _cache_write(self, key: str, data: bytes) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)


@attrs.frozen
class Call:
    """One S3 API call a request program asks for: ``client.<method>(**kwargs)``.

    The driver answers with the response dict (a ``Body`` already read into bytes), or throws the
    botocore error into the program.
    """

    method: str
    kwargs: dict[str, Any]


Request = Generator[Call, Any, Any]


class _S3Programs(S3Keys):
    """The S3 requests of every operation, written once for both drivers (sans I/O)."""

    _client_error: type[Exception]

    def _get(self, key: str, **extra: Any) -> Generator[Call, Any, Versioned]:
        resp = yield Call("get_object", {"Bucket": self.bucket, "Key": self.key(key), **extra})
        return Versioned(resp["Body"], resp["ETag"])

    def program(self, op: Op) -> Request:
        """The calls of one operation and its result."""
        ce = self._client_error
        if isinstance(op, Get):
            cached = self._cache_read(op.key, array=False)
            if cached is not None:
                return cached
            try:
                got = yield from self._get(op.key)
            except ce as e:
                if _code(e) in _MISSING_CODES:
                    if op.missing_ok:
                        return None
                    raise StorageError(f"missing object {self.describe(op.key)}") from e
                raise
            self._cache_write(op.key, got.data)
            return got
        if isinstance(op, GetRange):
            cached = self._cache_read(op.key, array=False)
            if cached is not None:
                return cached.data[op.start : op.start + op.length]
            try:
                got = yield from self._get(op.key, Range=f"bytes={op.start}-{op.start + op.length - 1}")
            except ce as e:
                if _code(e) in _MISSING_CODES:
                    raise StorageError(f"missing object {self.describe(op.key)}") from e
                if _code(e) in _PAST_END or _status(e) == 416:
                    return b""  # a range from the object's end on: no bytes (as a local file)
                raise
            return got.data
        if isinstance(op, GetIfChanged):
            try:
                return (yield from self._get(op.key, **({"IfNoneMatch": op.etag} if op.etag else {})))
            except ce as e:
                if _status(e) == 304 or _code(e) in ("304", "NotModified"):
                    return None
                if _code(e) in _MISSING_CODES:
                    return None if op.etag == "" else Versioned(b"", "")
                raise
        if isinstance(op, GetArray):
            cached = self._cache_read(op.key, array=True)
            if cached is not None:
                return cached
            got = yield from self.program(Get(op.key))
            try:
                return load_npy(got.data)
            except ValueError as e:  # npy.load_npy: whatever is wrong with the header or size
                raise StorageError(f"corrupt or truncated object {self.describe(op.key)}: {e}") from e
        if isinstance(op, Put):
            body = joined(op.data)
            if data_len(body) > self.multipart_threshold:
                yield from self._multipart(op.key, body)
            else:
                yield Call("put_object", {"Bucket": self.bucket, "Key": self.key(op.key), "Body": body})
            return None
        if isinstance(op, (PutIfAbsent, PutIfMatch)):
            cond = (
                {"IfNoneMatch": "*"}
                if isinstance(op, PutIfAbsent) or op.etag is None
                else {"IfMatch": op.etag}
            )
            try:
                resp = yield Call(
                    "put_object", {"Bucket": self.bucket, "Key": self.key(op.key), "Body": op.data, **cond}
                )
            except ce as e:
                if _code(e) in _PRECONDITION or _status(e) in (409, 412):
                    return False if isinstance(op, PutIfAbsent) else None
                raise
            return True if isinstance(op, PutIfAbsent) else resp["ETag"]
        if isinstance(op, List):
            out: list[Listed] = []
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.key(op.prefix)}
            while True:
                page = yield Call("list_objects_v2", kwargs)
                for obj in page.get("Contents", []):
                    out.append(
                        Listed(obj["Key"][len(self.prefix) :], obj["Size"], obj["LastModified"].timestamp())
                    )
                if not page.get("IsTruncated"):
                    return out
                kwargs = {**kwargs, "ContinuationToken": page["NextContinuationToken"]}
        if isinstance(op, Stat):
            try:
                head = yield Call("head_object", {"Bucket": self.bucket, "Key": self.key(op.key)})
            except ce as e:
                if _code(e) in _MISSING_CODES or _status(e) == 404:
                    return None
                raise
            return Listed(op.key, head["ContentLength"], head["LastModified"].timestamp())
        if isinstance(op, Delete):
            yield Call("delete_object", {"Bucket": self.bucket, "Key": self.key(op.key)})
            return None
        if isinstance(op, Flush):
            return None  # S3 writes are durable when acknowledged
        raise StorageError(f"unsupported operation {op!r}")  # pragma: no cover

    def _multipart(self, key: str, data: bytes | bytearray) -> Request:
        full = self.key(key)
        upload = yield Call("create_multipart_upload", {"Bucket": self.bucket, "Key": full})
        ident = {"Bucket": self.bucket, "Key": full, "UploadId": upload["UploadId"]}
        try:
            parts = []
            for n, start in enumerate(range(0, len(data), self.part_size), 1):
                body = data[start : start + self.part_size]
                resp = yield Call("upload_part", {**ident, "PartNumber": n, "Body": body})
                parts.append({"ETag": resp["ETag"], "PartNumber": n})
            yield Call("complete_multipart_upload", {**ident, "MultipartUpload": {"Parts": parts}})
        except BaseException:
            try:
                yield Call("abort_multipart_upload", ident)
            except Exception:  # pragma: no cover - best effort
                pass
            raise

    def check_bucket_program(self, create: bool) -> Request:
        """Make sure the bucket exists (creating it when asked); a clear error otherwise."""
        try:
            yield Call("head_bucket", {"Bucket": self.bucket})
        except self._client_error as e:
            missing = _code(e) in ("404", "NoSuchBucket", "NotFound")
            if not missing:
                raise StorageError(f"cannot reach bucket {self.bucket!r}: {type(e).__name__}: {e}") from e
            if not create:
                raise StorageError(
                    f"bucket {self.bucket!r} does not exist (create it, or pass create_bucket=True)"
                ) from e
            args: dict[str, Any] = {"Bucket": self.bucket}
            region = getattr(getattr(getattr(self, "client", None), "meta", None), "region_name", None)
            if region and region != "us-east-1":  # elsewhere S3 wants the region named
                args["CreateBucketConfiguration"] = {"LocationConstraint": region}
            try:
                yield Call("create_bucket", args)
            except self._client_error as e2:
                raise StorageError(f"cannot create bucket {self.bucket!r}: {e2}") from e2


class S3ObjectStore(_S3Programs):
    """A blocking object store on one bucket/prefix through a boto3 client."""

    def __init__(self, client: Any, bucket: str, **kwargs: Any) -> None:
        super().__init__(bucket, **kwargs)
        self.client = client
        from botocore.exceptions import BotoCoreError, ClientError

        self._client_error = ClientError
        self._errors: tuple[type[Exception], ...] = (ClientError, BotoCoreError)

    def _drive(self, program: Request) -> Any:
        try:
            call = next(program)
            while True:
                try:
                    resp = getattr(self.client, call.method)(**call.kwargs)
                    if "Body" in resp:
                        resp = {**resp, "Body": resp["Body"].read()}
                except self._errors as e:
                    call = program.throw(e)
                else:
                    call = program.send(resp)
        except StopIteration as stop:
            return stop.value

    def check_bucket(self, create: bool) -> None:
        """See :meth:`_S3Programs.check_bucket_program`; network errors name the bucket."""
        try:
            self._drive(self.check_bucket_program(create))
        except self._errors as e:
            raise StorageError(f"cannot reach bucket {self.bucket!r}: {type(e).__name__}: {e}") from e

    def do(self, op: Op) -> Any:
        """Perform one operation."""
        try:
            return self._drive(self.program(op))
        except StorageError:
            raise
        except self._errors as e:
            raise self.error(op, e) from e


class AsyncS3ObjectStore(_S3Programs):
    """An asyncio object store on one bucket/prefix through an aioboto3 client.

    Uploads use ``put_object`` and explicit multipart calls (aioboto3's managed transfer is not
    used: it has failed on Python 3.11 with "Passing coroutines is forbidden").
    """

    def __init__(self, client: Any, bucket: str, **kwargs: Any) -> None:
        super().__init__(bucket, **kwargs)
        self.client = client
        from botocore.exceptions import BotoCoreError, ClientError

        self._client_error = ClientError
        self._errors: tuple[type[Exception], ...] = (ClientError, BotoCoreError)

    async def _drive(self, program: Request) -> Any:
        try:
            call = next(program)
            while True:
                try:
                    resp = await getattr(self.client, call.method)(**call.kwargs)
                    if "Body" in resp:
                        async with resp["Body"] as body:
                            resp = {**resp, "Body": await body.read()}
                except self._errors as e:
                    call = program.throw(e)
                else:
                    call = program.send(resp)
        except StopIteration as stop:
            return stop.value

    async def check_bucket(self, create: bool) -> None:
        """See :meth:`S3ObjectStore.check_bucket`."""
        try:
            await self._drive(self.check_bucket_program(create))
        except self._errors as e:
            raise StorageError(f"cannot reach bucket {self.bucket!r}: {type(e).__name__}: {e}") from e

    async def do(self, op: Op) -> Any:
        """Perform one operation."""
        try:
            return await self._drive(self.program(op))
        except StorageError:
            raise
        except self._errors as e:
            raise self.error(op, e) from e
