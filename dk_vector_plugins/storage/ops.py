"""Object-store operations (sans I/O) and the drivers that perform them.

The table logic is written as generators that ``yield`` an operation and receive its result, as
h11 does for HTTP: it knows nothing of files, boto3 or event loops. :func:`run_sync` drives such a
generator against a :class:`SyncObjectStore`; :func:`run_async` against an
:class:`AsyncObjectStore`. :class:`Many` asks for several operations at once (a thread pool or
``asyncio.gather``), so a cold load fetches segments concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import attrs

__all__ = [
    "AsyncObjectStore",
    "Delete",
    "Flush",
    "Get",
    "GetArray",
    "GetIfChanged",
    "List",
    "Listed",
    "Many",
    "Op",
    "Put",
    "PutIfAbsent",
    "PutIfMatch",
    "Stat",
    "SyncObjectStore",
    "Versioned",
    "GetRange",
    "run_async",
    "run_sync",
    "runs_parallel",
]

T = TypeVar("T")


@attrs.frozen
class Versioned:
    """An object's bytes and its entity tag (S3 ETag; locally inode/mtime/size)."""

    data: bytes
    etag: str


@attrs.frozen
class Listed:
    """One key of a listing, with its size and age."""

    key: str
    size: int
    mtime: float


class Op:
    """An operation on an object store."""


@attrs.frozen
class Get(Op):
    """Read an object: :class:`Versioned`, or ``None`` when it does not exist (``missing_ok``)."""

    key: str
    missing_ok: bool = False


@attrs.frozen
class GetIfChanged(Op):
    """Read an object unless its etag is still ``etag``: :class:`Versioned`, ``None`` if unchanged.

    A missing object reads as ``Versioned(b"", "")``.
    """

    key: str
    etag: str | None


@attrs.frozen
class GetRange(Op):
    """Read ``length`` bytes of an object from byte ``start`` (fewer at its end): ``bytes``."""

    key: str
    start: int
    length: int


@attrs.frozen
class GetArray(Op):
    """Load a ``.npy`` object as an array (memory-mapped where the store is local)."""

    key: str


#: An object's bytes: one buffer, or several written one after the other (``.npy`` header and
#: array data without joining them: a local store writes them with one ``writev``).
Data = bytes | bytearray | memoryview | tuple[bytes | bytearray | memoryview, ...]


def data_len(data: Data) -> int:
    """The size in bytes of ``data``."""
    if isinstance(data, tuple):
        return sum(memoryview(b).nbytes for b in data)
    return memoryview(data).nbytes


def joined(data: Data) -> bytes | bytearray:
    """``data`` as one ``bytes`` object (joining parts costs one copy)."""
    if isinstance(data, tuple):
        return b"".join(data)
    return bytes(data) if isinstance(data, memoryview) else data


@attrs.frozen
class Put(Op):
    """Write an object (new, uniquely named objects: segments)."""

    key: str
    data: Data


@attrs.frozen
class PutIfAbsent(Op):
    """Create an object only if no object has that key; ``True`` if created. Atomic."""

    key: str
    data: bytes | bytearray


@attrs.frozen
class PutIfMatch(Op):
    """Replace an object only if its etag is ``etag`` (``None``: only if absent).

    The result is the new etag, or ``None`` when the object had changed (nothing written).
    ``durable=False``: the object is a hint that may be lost in a power failure (a local store
    does not fsync it; its readers recover without it).
    """

    key: str
    data: bytes | bytearray
    etag: str | None
    durable: bool = True


@attrs.frozen
class List(Op):
    """Keys under a prefix: a list of :class:`Listed`, by key.

    ``stat=False``: a store where an object's size and age cost a call per key (a local
    directory) may leave them unknown (``-1``, NaN); :class:`Stat` reads them for one key.
    """

    prefix: str
    stat: bool = True


@attrs.frozen
class Stat(Op):
    """One object's size and age: a :class:`Listed`, or ``None`` when it is missing."""

    key: str


@attrs.frozen
class Delete(Op):
    """Delete an object (missing is fine)."""

    key: str


@attrs.frozen
class Flush(Op):
    """Make every completed write durable before what follows (fsync of the directory locally)."""


@attrs.frozen
class Many(Op):
    """Several operations at once; the result is the list of their results, in order."""

    ops: Sequence[Op]


class SyncObjectStore(Protocol):
    """A blocking object store: one method per operation.

    A store may also define ``parallel_ops(ops) -> bool`` to say which :class:`Many` batches
    run on the thread pool (see :func:`runs_parallel`); without it, all of them do.
    """

    #: How many requests :class:`Many` may run at once.
    concurrency: int

    def do(self, op: Op) -> Any:
        """Perform one operation (not :class:`Many`)."""

    def describe(self, key: str) -> str:
        """A human name for a key (a path, or ``s3://bucket/key``)."""


class AsyncObjectStore(Protocol):
    """An asyncio object store: one coroutine per operation."""

    concurrency: int

    async def do(self, op: Op) -> Any:
        """Perform one operation (not :class:`Many`)."""

    def describe(self, key: str) -> str:
        """A human name for a key."""


Program = Generator[Op, Any, T]


def runs_parallel(store: SyncObjectStore, ops: Sequence[Op]) -> bool:
    """Whether the operations of one :class:`Many` go to the thread pool: a store may decide per
    batch with a ``parallel_ops(ops)`` method (the local store: small writes only); without one,
    they always do."""
    decide: Callable[[Sequence[Op]], bool] | None = getattr(store, "parallel_ops", None)
    return True if decide is None else decide(ops)


def _in_parallel(pool: ThreadPoolExecutor, store: SyncObjectStore, ops: Sequence[Op]) -> list[Any]:
    """``store.do`` of every op on ``pool``, results in order; those the pool no longer takes
    (shut down: the interpreter exits while a store's maintenance thread finishes) run here."""
    futures = []
    for o in ops:
        try:
            futures.append(pool.submit(store.do, o))
        except RuntimeError as e:
            if "cannot schedule new futures" not in str(e):
                raise  # (e.g. no thread could start: the op may be queued already)
            break
    rest = [store.do(o) for o in ops[len(futures) :]]
    return [f.result() for f in futures] + rest


def run_sync(program: Program[T], store: SyncObjectStore, pool: ThreadPoolExecutor | None = None) -> T:
    """Drive a table program against a sync store; :class:`Many` runs on ``pool`` when given."""
    try:
        op = next(program)
        while True:
            if isinstance(op, Many):
                if pool is not None and len(op.ops) > 1 and runs_parallel(store, op.ops):
                    result: Any = _in_parallel(pool, store, op.ops)
                else:
                    result = [store.do(o) for o in op.ops]
            else:
                result = store.do(op)
            op = program.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(program: Program[T], store: AsyncObjectStore) -> T:
    """Drive a table program against an async store; :class:`Many` runs with bounded gather."""
    sem = asyncio.Semaphore(max(1, store.concurrency))

    async def one(o: Op) -> Any:
        async with sem:
            return await store.do(o)

    try:
        op = next(program)
        while True:
            if isinstance(op, Many):
                result: Any = list(await asyncio.gather(*(one(o) for o in op.ops)))
            else:
                result = await store.do(op)
            op = program.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
