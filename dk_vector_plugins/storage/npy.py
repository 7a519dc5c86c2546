""".npy helpers: the one place segment arrays are encoded, decoded and memory-mapped.

The table writes vectors and norms as ``.npy`` (format 1.0, plain dtype, C order) so that a
local file can be memory-mapped and an S3 object read by byte range; these functions never
unpickle anything.
"""

from __future__ import annotations

import io
import mmap
import os
import re
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["dump_npy", "load_npy", "npy_header", "open_npy"]


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
    arr = np.ascontiguousarray(array)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(arr))
    return head.getvalue(), arr.reshape(-1).view(np.uint8).data
