"""int8 codes of float32 rows, with error bounds that certify an exact top-``k``.

The kernel (:mod:`dk_vector_plugins.kernel`) can scan int8 codes instead of the float32 rows: a
quarter of the bytes, and integer dot products from a SIMD library. The scan only *narrows* the
rows; the rows it keeps are ranked by the kernel's exact float64 scores as always, so results are
identical, bit for bit, to the float32 scan. What makes the narrowing safe is a bound.

The codes
---------
Each row ``x`` gets its own scale ``s = max|x_j| / 127`` (rounded to float32) and codes
``c = round(x / s)`` in ``[-127, 127]``, so ``x̂ = s·c``. Beside them :class:`Int8Codes` keeps the
residual norm ``r ≥ ‖x - x̂‖`` (computed in float64 from the stored scale and codes, rounded up to
float32) and the squared norm ``‖x‖²`` in float64. A row's codes depend on that row alone: a part
that grows, a compaction or a stored segment reuse them as they are (see :meth:`Int8Codes.take`,
:func:`concat_codes`), and the codes serve every metric (the scale is invariant: a row and the
row normalized have the same codes).

Per-row scales were measured against per-dimension scales (``benchmarks/bench_int8.py`` prints
the average bound radius of both); see "int8 scan" in ``docs/VECTOR_BACKENDS.md``.

The bound
---------
A query ``q`` is quantized the same way (``q̂ = s_q·c_q``). With ``e_x = x - x̂`` and
``e_q = q - q̂``::

    x·q - x̂·q̂ = e_x·q̂ + x·e_q        so   |x·q - x̂·q̂| ≤ ‖q̂‖·r_x + ‖e_q‖·‖x‖

by Cauchy-Schwarz, and ``x̂·q̂ = s·s_q·(c·c_q)`` with ``c·c_q`` an exact integer. From that
interval for ``x·q`` :func:`row_bounds` derives an interval for the value the kernel ranks by
(the score for cosine and dot product, minus the distance for euclidean), widened for every
floating-point rounding involved: of the stored norms and residuals, of the float64 arithmetic
here (each quantity's relative error is below ``(d + 16)·2⁻⁵³``, padded as :data:`EPS64`), and of
the kernel's own float64 summation of the exact score. So the interval holds the *computed*
score, not just the real one. A row whose upper bound is below the ``k``-th largest lower bound is
beaten by ``k`` rows whatever the rounding, so it cannot be in the top ``k``, ties included.

Rows whose norm lies outside ``[1e-15, 1e15]`` (zero vectors among them) and rows whose scale
underflows are *special*: they get the interval ``(-inf, inf)`` and are always ranked exactly.
"""

from __future__ import annotations

import functools
import itertools
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

__all__ = [
    "EPS32",
    "EPS64",
    "Int8Codes",
    "LoadedCodes",
    "QueryCodes",
    "available",
    "concat_codes",
    "int8_dots",
    "quantize_queries",
    "quantize_rows",
    "row_bounds",
]

FloatArray = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Int8Array = npt.NDArray[np.int8]

_nk: Any
try:  # the SIMD int8 kernels; without them the kernel keeps to its float32 scan
    import numkong as _nk
except ImportError:  # pragma: no cover - exercised by monkeypatching ``_nk`` in the tests
    _nk = None

#: Relative padding for every float64 quantity here: its rounding error is below
#: ``(d + 16)·2⁻⁵³``, under ``1.2e-10`` for ``d ≤ 2²⁰`` (:data:`MAX_DIM`).
EPS64 = 1e-9
#: Relative padding of the float32 keys the scan compares (a few roundings of ``2⁻²⁴`` each),
#: plus an absolute one that covers underflow to float32 subnormals.
EPS32 = 1e-5
ABS32 = 1e-36
#: The int8 path handles rows and queries of up to this many dimensions.
MAX_DIM = 1 << 20
#: Rows and queries whose norm lies outside this range are special (ranked exactly, always).
NORM_RANGE = (1e-15, 1e15)
_TINY32 = float(np.finfo(np.float32).tiny)
# rows quantized at a time (bounds the float64 temporaries: 8192 x d x 8 bytes)
_CHUNK = 8192
# a scan splits its rows among threads when it has at least this many
_THREAD_ROWS = 1 << 16


def available() -> bool:
    """Whether the SIMD int8 kernels (the ``numkong`` package) can be used."""
    return _nk is not None


def _round_up32(v: F64) -> FloatArray:
    """float32 values no smaller than ``v`` (non-negative ``v``)."""
    out: FloatArray = np.nextafter(v.astype(np.float32), np.float32(np.inf))
    return out


@attrs.define(eq=False)
class Int8Codes:
    """int8 codes of ``n`` float32 rows and what the bound needs (see the module docstring).

    Every field is a plain array, so the object can be written and read as ``.npy`` files:

    :ivar codes: int8 ``(n, d)``, C-contiguous; ``x̂ = scales[:, None] * codes``.
    :ivar scales: float32 ``(n,)`` (0 for a special row, whose codes are zeros).
    :ivar residuals: float32 ``(n,)``, ``≥ ‖x - x̂‖`` (rounded up).
    :ivar sqnorms: float64 ``(n,)``, ``‖x‖²`` (relative error below :data:`EPS64`).

    The rest is derived from those (:meth:`from_arrays` recomputes it).
    """

    codes: Int8Array
    scales: FloatArray
    residuals: FloatArray
    sqnorms: F64
    #: rows ranked exactly whatever the bound (sorted row numbers)
    special: IntArray = attrs.field(init=False)
    #: key weights: ``scales`` (dot product, euclidean) and ``scales / ‖x‖`` (cosine), float32
    w_dot: FloatArray = attrs.field(init=False)
    w_cos: FloatArray = attrs.field(init=False)
    #: ``‖x‖²`` as float32 (the euclidean key)
    sq32: FloatArray = attrs.field(init=False)
    #: maxima over the rows that are not special: ‖x‖, r, r/‖x‖, ‖x‖²
    max_norm: float = attrs.field(init=False)
    max_resid: float = attrs.field(init=False)
    max_rel_resid: float = attrs.field(init=False)
    max_sq: float = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        norms = np.sqrt(self.sqnorms)
        lo, hi = NORM_RANGE
        special = (norms < lo) | (norms > hi) | (self.scales < _TINY32)
        self.special = np.flatnonzero(special).astype(np.int64)
        self.w_dot = self.scales
        with np.errstate(divide="ignore", invalid="ignore"):
            self.w_cos = np.where(special, 0.0, self.scales / np.where(special, 1.0, norms)).astype(
                np.float32
            )
            rel = np.where(special, 0.0, self.residuals / np.where(special, 1.0, norms))
        with np.errstate(over="ignore"):  # beyond float32: a special row
            self.sq32 = self.sqnorms.astype(np.float32)
        ok = ~special
        self.max_norm = float(norms[ok].max()) if ok.any() else 0.0
        self.max_resid = float(self.residuals[ok].max()) if ok.any() else 0.0
        self.max_rel_resid = float(rel.max()) if ok.any() else 0.0
        self.max_sq = float(self.sqnorms[ok].max()) if ok.any() else 0.0

    @classmethod
    def from_arrays(
        cls, codes: Int8Array, scales: FloatArray, residuals: FloatArray, sqnorms: F64
    ) -> Int8Codes:
        """Codes read back from storage (four ``.npy`` arrays); shapes and dtypes are checked."""
        n = codes.shape[0]
        if (
            codes.ndim != 2
            or codes.dtype != np.int8
            or scales.shape != (n,)
            or scales.dtype != np.float32
            or residuals.shape != (n,)
            or residuals.dtype != np.float32
            or sqnorms.shape != (n,)
            or sqnorms.dtype != np.float64
        ):
            raise ValueError("int8 codes: expected int8 (n, d), float32 (n,), float32 (n,), float64 (n,)")
        return cls(np.ascontiguousarray(codes), scales, residuals, sqnorms)

    @property
    def n(self) -> int:
        """How many rows are coded."""
        return int(self.codes.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held (codes and per-row arrays)."""
        return int(
            self.codes.nbytes
            + self.scales.nbytes
            + self.residuals.nbytes
            + self.sqnorms.nbytes
            + self.w_cos.nbytes
            + self.sq32.nbytes
        )

    def take(self, rows: IntArray) -> Int8Codes:
        """The codes of ``rows`` (in that order): a row's codes depend on that row alone."""
        return Int8Codes(self.codes[rows], self.scales[rows], self.residuals[rows], self.sqnorms[rows])

    def head(self, n: int) -> Int8Codes:
        """The codes of the first ``n`` rows (views)."""
        if n >= self.n:
            return self
        return Int8Codes(self.codes[:n], self.scales[:n], self.residuals[:n], self.sqnorms[:n])


@attrs.frozen
class LoadedCodes:
    """Stored int8 codes already read: a reader of stored codes (called like any, it returns them)
    that a vector index adopts at once instead of keeping it for the first int8 search. A store
    opened with ``load_vectors="codes"`` hands these over; its parts hold their codes from the
    open on, while their float32 rows stay in storage."""

    codes: Int8Codes

    def __call__(self) -> Int8Codes:
        """The codes."""
        return self.codes


def concat_codes(parts: Sequence[Int8Codes]) -> Int8Codes:
    """The codes of consecutive runs of rows, one after the other."""
    if len(parts) == 1:
        return parts[0]
    return Int8Codes(
        np.concatenate([p.codes for p in parts]),
        np.concatenate([p.scales for p in parts]),
        np.concatenate([p.residuals for p in parts]),
        np.concatenate([p.sqnorms for p in parts]),
    )


def quantize_rows(matrix: Any, dim: int | None = None) -> Int8Codes:
    """int8 codes of the rows of a float32 matrix (any array-like of shape ``(n, d)``).

    Works through the rows in chunks (the temporaries stay small), on the machine's cores.
    """
    n = int(matrix.shape[0])
    d = int(matrix.shape[1]) if matrix.ndim == 2 else int(dim or 0)
    codes = np.empty((n, d), dtype=np.int8)
    scales = np.empty(n, dtype=np.float32)
    resid = np.empty(n, dtype=np.float32)
    sq = np.empty(n, dtype=np.float64)

    def one(s: int) -> None:
        x = np.asarray(matrix[s : s + _CHUNK], dtype=np.float32)
        z = s + len(x)
        codes[s:z], scales[s:z], resid[s:z], sq[s:z] = _quantize(x)

    starts = range(0, n, _CHUNK)
    if n >= 4 * _CHUNK and _threads() > 1:
        list(_pool().map(one, starts))
    else:
        for s in starts:
            one(s)
    return Int8Codes(codes, scales, resid, sq)


_U32 = 2.0**-24  # unit roundoff of float32
_SUB32 = 2.0**-149  # the smallest float32 subnormal


def _quantize(x: FloatArray) -> tuple[Int8Array, FloatArray, FloatArray, F64]:
    """Codes, scales, residual norms (rounded up) and float64 squared norms of rows ``x``.

    The residual ``x - s·c`` is computed in float32; with ``u = 2⁻²⁴`` each component errs by at
    most ``1.01u·|x_j| + 2.01u·|e_j|`` (the product ``s·c`` rounds once; the subtraction rounds
    once or is exact), and the float32 sum of squares by a factor ``(d + 2)·u`` plus ``d``
    subnormal spacings, so ``r = (√(ss + d·2⁻¹⁴⁹)/(1 - (d+2)u)) + 1.01u·‖x‖) / (1 - 2.01u)``
    bounds ``‖x - x̂‖`` from above.
    """
    m, d = x.shape
    if d == 0 or m == 0:
        z = np.zeros(m, dtype=np.float32)
        return np.zeros((m, d), dtype=np.int8), z, z.copy(), np.zeros(m, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # rows beyond 1e19: special, bound unused
        return _quantize_rows(x, m, d)


def _quantize_rows(x: FloatArray, m: int, d: int) -> tuple[Int8Array, FloatArray, FloatArray, F64]:
    amax = np.abs(x).max(axis=1)
    scale = amax / np.float32(127.0)
    scale[scale < _TINY32] = 0.0  # a zero row, or one whose scale would underflow: codes 0
    inv = np.divide(np.float32(1.0), scale, out=np.zeros(m, dtype=np.float32), where=scale > 0)
    buf = x * inv[:, None]
    np.rint(buf, out=buf)
    np.clip(buf, -127, 127, out=buf)
    codes = buf.astype(np.int8)
    np.multiply(buf, scale[:, None], out=buf)  # fl(s·c)
    np.subtract(x, buf, out=buf)  # the residual, e_j within 1.01u|x_j| + 2.01u|e_j|
    ss = np.einsum("ij,ij->i", buf, buf).astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    norm_err = np.sqrt((ss + d * _SUB32) / (1.0 - (d + 2) * _U32))
    r = (norm_err + 1.01 * _U32 * np.sqrt(sq)) / (1.0 - 2.01 * _U32) * (1.0 + EPS64)
    return codes, scale, _round_up32(r), sq


@attrs.frozen
class QueryCodes:
    """Quantized queries (float64 quantities are upper bounds where the bound needs them).

    :ivar codes: int8 ``(b, d)``.
    :ivar scale: ``s_q`` per query (float32-representable; 0 for a query the int8 path cannot
        bound: zero, or of a norm outside :data:`NORM_RANGE`).
    :ivar qhat_norm: ``≥ ‖q̂‖``.
    :ivar err_norm: ``≥ ‖q - q̂‖``.
    :ivar norm: ``‖q‖`` and ``sq``: ``‖q‖²`` (relative error below :data:`EPS64`).
    """

    codes: Int8Array
    scale: F64
    qhat_norm: F64
    err_norm: F64
    norm: F64
    sq: F64

    @property
    def usable(self) -> npt.NDArray[np.bool_]:
        """Which queries the int8 path can bound."""
        out: npt.NDArray[np.bool_] = self.scale > 0
        return out


def quantize_queries(queries: FloatArray) -> QueryCodes:
    """int8 codes of the (raw, float32) queries, with the norms the bound needs."""
    codes, scale32, _, sq = _quantize(np.ascontiguousarray(queries, dtype=np.float32))
    norm = np.sqrt(sq)
    lo, hi = NORM_RANGE
    scale = scale32.astype(np.float64)
    scale[(norm < lo) | (norm > hi)] = 0.0
    q64 = queries.astype(np.float64)
    qhat = scale[:, None] * codes
    err = q64 - qhat
    pad = 1.0 + EPS64
    return QueryCodes(
        codes=codes,
        scale=scale,
        qhat_norm=np.sqrt(np.einsum("ij,ij->i", qhat, qhat)) * pad,
        err_norm=np.sqrt(np.einsum("ij,ij->i", err, err)) * pad,
        norm=norm,
        sq=sq,
    )


def row_bounds(
    dots: IntArray | F64,
    scales: FloatArray,
    residuals: FloatArray,
    sqnorms: F64,
    special: npt.NDArray[np.bool_] | None,
    qc: QueryCodes,
    qi: int,
    metric: str,
) -> tuple[F64, F64]:
    """Lower and upper bounds of the value the kernel ranks rows by, for query ``qi``.

    ``dots`` holds the exact integer products ``c·c_q`` of the rows' codes with the query's. The
    ranked value is the score for cosine and dot product (as :func:`~dk_vector_plugins.kernel.
    exact_scores` computes it, rounding included) and minus the distance for euclidean. A special
    row gets ``(-inf, inf)``.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # special rows: replaced below
        lo, hi = _row_bounds(dots, scales, residuals, sqnorms, qc, qi, metric)
    if special is not None and special.any():
        lo = np.where(special, -np.inf, lo)
        hi = np.where(special, np.inf, hi)
    return lo, hi


def _row_bounds(
    dots: IntArray | F64,
    scales: FloatArray,
    residuals: FloatArray,
    sqnorms: F64,
    qc: QueryCodes,
    qi: int,
    metric: str,
) -> tuple[F64, F64]:
    e = EPS64
    sq_ = float(qc.scale[qi])
    qh, eq, nq, qq = float(qc.qhat_norm[qi]), float(qc.err_norm[qi]), float(qc.norm[qi]), float(qc.sq[qi])
    nx = np.sqrt(sqnorms)
    a = (scales.astype(np.float64) * sq_) * np.asarray(dots, dtype=np.float64)  # x̂·q̂
    absa = np.abs(a)
    # |x·q - x̂·q̂| ≤ ‖q̂‖·r + ‖e_q‖·‖x‖, padded for the rounding of every factor and of x̂·q̂
    rho = (qh * residuals.astype(np.float64) + eq * nx) * (1.0 + 4 * e) + e * absa
    if metric == "dot_product":
        # the kernel's float64 sum of x·q errs by at most (log2 d + 2)·2⁻⁵³·‖x‖·‖q‖
        rad = rho + e * (nx * nq + absa + rho)
        lo, hi = a - rad, a + rad
    elif metric == "cosine":
        den = nx * nq
        c = a / den
        rc = rho / den
        rad = rc * (1.0 + e) + e * (np.abs(c) + rc + 1.0)
        lo, hi = c - rad, c + rad
    else:  # euclidean: ‖x - q‖² = ‖x‖² + ‖q‖² - 2·x·q, then the (padded) square root
        base = sqnorms + qq - 2.0 * a
        pad = 2.0 * rho + e * (sqnorms + qq + 2.0 * absa + 2.0 * rho)
        lo2 = np.maximum(base - pad, 0.0) * (1.0 - e)
        hi2 = (base + pad) * (1.0 + e)
        lo, hi = -np.sqrt(hi2) * (1.0 + e), -np.sqrt(lo2) * (1.0 - e)
    return lo, hi


def key_threshold(
    tau: float, codes_max: tuple[float, float, float, float], qc: QueryCodes, qi: int, metric: str
) -> float:
    """The smallest float32 key a row can have if its upper bound (:func:`row_bounds`) is at
    least ``tau``, for rows that are not special (a lower value is fine: more rows are checked).

    ``codes_max``: the maxima of ‖x‖, r, r/‖x‖, ‖x‖² over the rows (see :class:`Int8Codes`).
    The keys are ``fl32(c·c_q)·w`` (``w``: ``s`` or ``s/‖x‖``), and for euclidean
    ``key·2s_q - ‖x‖²``, each within ``EPS32`` (relative) plus ``ABS32`` of its real value.
    """
    if not math.isfinite(tau):
        return -math.inf
    e = EPS64
    max_norm, max_resid, max_rel, max_sq = codes_max
    sq_ = float(qc.scale[qi])
    qh, eq, nq, qq = float(qc.qhat_norm[qi]), float(qc.err_norm[qi]), float(qc.norm[qi]), float(qc.sq[qi])
    amax = qh * (max_norm + max_resid) * (1.0 + e)  # ≥ |x̂·q̂| ≥ |a|
    rho = (qh * max_resid + eq * max_norm) * (1.0 + 4 * e) + e * amax
    if metric == "dot_product":
        rad = rho + e * (max_norm * nq + amax + rho)
        # U = a + rad ≥ tau  ⇒  a ≥ tau - rad;  key ≈ a / s_q
        theta = (tau - rad) / sq_
        slack = EPS32 * (amax / sq_ + abs(theta)) + ABS32
    elif metric == "cosine":
        cmax = qh * (1.0 + max_rel) / nq * (1.0 + e)  # ≥ |c|
        rc = (qh * max_rel + eq) / nq * (1.0 + 8 * e) + 2 * e * cmax  # ≥ rho / (‖x‖·‖q‖)
        rad = rc * (1.0 + e) + e * (cmax + rc + 1.0)
        # c = s_q·key/‖q‖ (key = c·c_q·s/‖x‖)
        theta = (tau - rad) * nq / sq_
        slack = EPS32 * (cmax * nq / sq_ + abs(theta)) + ABS32
    else:
        # U = -sqrt(lo2)·(1-e) ≥ tau (tau ≤ 0)  ⇒  lo2 ≤ tau²/(1-e)²,  lo2 ≥ (base - pad)·(1-e)
        #   ⇒  ‖x‖² + ‖q‖² - 2a - pad ≤ tau²·(1+8e)  ⇒  2a - ‖x‖² ≥ ‖q‖² - pad - tau²·(1+8e)
        pad = 2.0 * rho + e * (max_sq + qq + 2.0 * amax + 2.0 * rho)
        theta = qq - pad - tau * tau * (1.0 + 8 * e)
        slack = EPS32 * (2.0 * amax + max_sq + abs(theta)) + ABS32
    theta -= slack + e * abs(theta)
    return theta


# -- the SIMD int8 products ----------------------------------------------------------------------
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


@functools.cache
def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="dkv-int8")
        return _POOL


def int8_dots(qcodes: Int8Array, codes: Int8Array, out: FloatArray) -> None:
    """``out[i, j] = qcodes[i] · codes[j]`` (integer dot products, written as float32: exact
    while ``127²·d < 2²⁴``, else rounded to float32).

    Computed by ``numkong`` (SIMD, without the GIL), the rows split among the machine's cores.
    ``out`` may be a column slice of a larger array.
    """
    if _nk is None:
        raise RuntimeError("the int8 kernels need the numkong package")
    n = codes.shape[0]
    t = _threads()
    if n < _THREAD_ROWS or t == 1:
        _nk.cdist(qcodes, codes, metric="dot", out=out, out_dtype="float32")
        return
    edges = np.linspace(0, n, t + 1).astype(np.int64).tolist()
    futures = [
        _pool().submit(_nk.cdist, qcodes, codes[a:b], metric="dot", out=out[:, a:b], out_dtype="float32")
        for a, b in itertools.pairwise(edges)
        if b > a
    ]
    for f in futures:
        f.result()


def exact_dots(codes: Int8Array, qcodes: Int8Array) -> IntArray:
    """Exact integer products ``codes[j] · qcodes`` of a few rows with one query's codes."""
    out: IntArray = codes.astype(np.int64) @ qcodes.astype(np.int64)
    return out
