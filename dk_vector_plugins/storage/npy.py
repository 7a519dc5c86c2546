""".npy helpers: the one place segment arrays are encoded, decoded and memory-mapped.

The table writes vectors and norms as ``.npy`` (format 1.0, plain dtype, C order) so that a
local file can be memory-mapped and an S3 object read by byte range; these functions never
unpickle anything. A header is untrusted input: whatever is wrong with it (numpy's parser can
raise ``SyntaxError``, ``tokenize.TokenError``, ``MemoryError``...) is a ``ValueError`` here, and
the data it describes must be there in full before an array is made of it.

An array from :func:`open_npy` or :func:`load_npy` is a view whose ``base`` is the whole object
(the file's memory map, or the bytes): :func:`npy_source` gives it back, so that a caller can
check the object's checksum without reading it again. Bytes after the array's data (the table
appends block checksums there) are allowed.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import re
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["dump_npy", "load_npy", "npy_header", "npy_header_bytes", "npy_source", "open_npy"]


# numpy parses a .npy header with ast.literal_eval, and CPython 3.11 can fail with "SystemError:
# AST constructor recursion depth mismatch" when threads build ASTs at the same moment (the I/O
# pool loads segments in parallel). Header parsing is short: do it one thread at a time.
_NPY_HEADER_LOCK = threading.Lock()

#: The longest header read (numpy itself refuses headers above 10,000 bytes by default).
MAX_HEADER = 1 << 16

# The header this package writes (format 1.0, a plain dtype, C order): parsed without numpy's
# ast-based reader, which costs ~0.1 ms a file (a table of many segments opens many files).
_SIMPLE_HEADER = re.compile(
    rb"\{'descr': '([<>|][a-z][0-9]{1,2})', 'fortran_order': False, 'shape': \(((?:\d+, ?)*\d*)\), \} *\n"
)

Header = tuple[tuple[int, ...], bool, np.dtype[Any], int]


def npy_header(data: bytes | bytearray | memoryview) -> Header:
    """(shape, fortran order, dtype, offset of the data) of ``.npy`` bytes (their start will do).

    Raises ``ValueError`` for anything else, whatever numpy's parser raised: a bad magic or
    version, a header cut short or not a dict, a dtype that is not a plain number or bool.
    """
    head = bytes(data[: MAX_HEADER + 12])
    if head[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy object (bad magic)")
    if head[6:8] == b"\x01\x00":
        m = _SIMPLE_HEADER.match(head, 10)
        if m is not None and int.from_bytes(head[8:10], "little") + 10 == m.end():
            dtype = _plain_dtype(m.group(1).decode())
            shape = tuple(int(x) for x in m.group(2).split(b",") if x.strip())
            return shape, False, dtype, m.end()
    try:
        header = io.BytesIO(head)
        with _NPY_HEADER_LOCK:
            version = np.lib.format.read_magic(header)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"npy format {version}")
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(header, max_header_size=MAX_HEADER)
        offset = header.tell()
    except Exception as e:  # the header is untrusted: any failure to parse it says "corrupt"
        raise ValueError(f"corrupt .npy header: {type(e).__name__}: {e}") from None
    return tuple(int(x) for x in shape), bool(fortran), _plain_dtype(dtype), offset


def _plain_dtype(descr: Any) -> np.dtype[Any]:
    try:
        dtype: np.dtype[Any] = np.dtype(descr)
    except Exception as e:
        raise ValueError(f"corrupt .npy header: dtype {descr!r}: {e}") from None
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"a .npy object of dtype {dtype} (only plain numbers are stored)")
    return dtype


def _data_size(shape: tuple[int, ...], dtype: np.dtype[Any], available: int) -> int:
    """Bytes of data ``shape`` needs; ``ValueError`` when ``available`` bytes hold less."""
    if any(n < 0 for n in shape):
        raise ValueError(f"corrupt .npy header: shape {shape}")
    need = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on a crafted shape
    if available < need:
        raise ValueError(f"truncated: {available} bytes of data for shape {shape}")
    return need


def _view(buffer: Any, header: Header) -> npt.NDArray[Any]:
    shape, fortran, dtype, offset = header
    array: npt.NDArray[Any] = np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset, order="F" if fortran else "C")
    return array


def open_npy(path: str | os.PathLike[str]) -> npt.NDArray[Any]:
    """Memory-map a ``.npy`` file read-only (no pickles); its ``base`` maps the whole file."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(128)
        if len(head) >= 10 and head[6:8] == b"\x01\x00":
            hlen = 10 + int.from_bytes(head[8:10], "little")
        elif len(head) >= 12 and head[6:8] in (b"\x02\x00", b"\x03\x00"):
            hlen = 12 + int.from_bytes(head[8:12], "little")
        else:
            hlen = len(head)
        if len(head) < hlen:
            head += f.read(min(hlen, MAX_HEADER + 12) - len(head))
        header = npy_header(head)
        _data_size(header[0], header[2], size - header[3])
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return _view(mm, header)


def load_npy(data: bytes | bytearray | memoryview) -> npt.NDArray[Any]:
    """Parse ``.npy`` bytes without copying them (a read-only view whose ``base`` is ``data``;
    no pickles)."""
    header = npy_header(data)
    _data_size(header[0], header[2], len(data) - header[3])
    return _view(data, header)


def npy_source(array: npt.NDArray[Any]) -> bytes | bytearray | memoryview | mmap.mmap | None:
    """The whole object an array of :func:`open_npy` or :func:`load_npy` views (header, data and
    anything after), or ``None`` for another array."""
    base = array.base
    return base if isinstance(base, (bytes, bytearray, memoryview, mmap.mmap)) else None


def npy_header_bytes(shape: tuple[int, ...], dtype: np.dtype[Any]) -> bytes:
    """The header :func:`dump_npy` writes for a C-order array of ``shape`` and ``dtype``."""
    head = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(dtype)
    np.lib.format.write_array_header_1_0(head, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return head.getvalue()


def dump_npy(array: npt.NDArray[Any]) -> tuple[bytes, memoryview]:
    """An array as ``.npy`` data: the header and a view of the array's bytes (no copy; the
    caller must not change the array before the data is written)."""
    arr = np.ascontiguousarray(array)
    return npy_header_bytes(arr.shape, arr.dtype), arr.reshape(-1).view(np.uint8).data
