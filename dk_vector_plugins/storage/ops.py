"""Object-store operations (sans I/O) and the drivers that perform them.

The table logic is written as generators that ``yield`` an operation and receive its result, as
h11 does for HTTP: it knows nothing of files, boto3 or event loops. :func:`run_sync` drives such a
generator against a :class:`SyncObjectStore`; :func:`run_async` against an
:class:`AsyncObjectStore`. :class:`Many` asks for several operations at once (a thread pool or
``asyncio.gather``), so a cold load fetches segments concurrently.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import re
import threading
from collections.abc import Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import attrs
import numpy as np
import numpy.typing as npt

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
    "SyncObjectStore",
    "Versioned",
    "GetRange",
    "run_async",
    "run_sync",
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
    """

    key: str
    data: bytes | bytearray
    etag: str | None


@attrs.frozen
class List(Op):
    """Keys under a prefix: a list of :class:`Listed`."""

    prefix: str


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
    """A blocking object store: one method per operation."""

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


def run_sync(program: Program[T], store: SyncObjectStore, pool: ThreadPoolExecutor | None = None) -> T:
    """Drive a table program against a sync store; :class:`Many` runs on ``pool`` when given."""
    try:
        op = next(program)
        while True:
            if isinstance(op, Many):
                if pool is not None and len(op.ops) > 1 and getattr(store, "parallel_io", True):
                    result: Any = list(pool.map(store.do, op.ops))
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


# numpy parses a .npy header with ast.literal_eval, and CPython 3.11 can fail with "SystemError:
# AST constructor recursion depth mismatch" when threads build ASTs at the same moment (the I/O
# pool loads segments in parallel). Header parsing is short: do it one thread at a time.
_NPY_HEADER_LOCK = threading.Lock()


# The header this package writes (format 1.0, a plain dtype, C order): parsed without numpy's
# ast-based reader, which costs ~0.1 ms a file (a table of many segments opens many files).
_SIMPLE_HEADER = re.compile(
    rb"\{'descr': '([<>|][a-z][0-9]{1,2})', 'fortran_order': False, 'shape': \(((?:\d+, ?)*\d*)\), \} *\n"
)


def open_npy(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Memory-map a ``.npy`` file read-only (no pickles)."""
    with open(path, "rb") as f:
        head = f.read(128)
        m = _SIMPLE_HEADER.match(head, 10) if head[:8] == b"\x93NUMPY\x01\x00" else None
        if m is not None and int.from_bytes(head[8:10], "little") + 10 == m.end():
            dtype = np.dtype(m.group(1).decode())
            shape = tuple(int(x) for x in m.group(2).split(b",") if x.strip())
            count = int(np.prod(shape)) if shape else 1
            size = os.fstat(f.fileno()).st_size
            if size < m.end() + count * dtype.itemsize:
                raise ValueError(f"truncated: {size - m.end()} bytes of data for shape {shape}")
            if count == 0:
                return np.empty(shape, dtype=dtype)
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            return np.frombuffer(mm, dtype=dtype, count=count, offset=m.end()).reshape(shape)
    with _NPY_HEADER_LOCK:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # type: ignore[no-any-return]


def npy_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """(shape, fortran order, dtype, offset of the data) of ``.npy`` bytes (their start will do).

    Raises ``ValueError`` or ``EOFError`` for anything else.
    """
    import io

    header = io.BytesIO(data)
    with _NPY_HEADER_LOCK:
        version = np.lib.format.read_magic(header)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"npy format {version}")
        v1 = version == (1, 0)
        read = np.lib.format.read_array_header_1_0 if v1 else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(header)
    return tuple(shape), bool(fortran), np.dtype(dtype), header.tell()


def load_npy(data: bytes) -> npt.NDArray[Any]:
    """Parse ``.npy`` bytes without copying them (a read-only view; no pickles)."""
    import io

    try:
        shape, fortran, dtype, offset = npy_header(data)
    except (ValueError, EOFError):
        with _NPY_HEADER_LOCK:  # let numpy explain
            return np.load(io.BytesIO(data), allow_pickle=False)  # type: ignore[no-any-return]
    if dtype.hasobject:
        raise ValueError("object arrays are not loaded")
    count = int(np.prod(shape)) if shape else 1
    if len(data) - offset < count * dtype.itemsize:
        raise ValueError(f"truncated: {len(data) - offset} bytes of data for shape {shape}")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return arr.reshape(shape, order="F" if fortran else "C")


def dump_npy(array: npt.NDArray[Any]) -> tuple[bytes, memoryview]:
    """An array as ``.npy`` data: the header and a view of the array's bytes (no copy; the
    caller must not change the array before the data is written)."""
    import io

    arr = np.ascontiguousarray(array)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(arr))
    return head.getvalue(), arr.reshape(-1).view(np.uint8).data
