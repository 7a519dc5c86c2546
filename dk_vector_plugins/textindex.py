"""The full-text index: per run of rows an immutable inverted index, and BM25 over the live rows.

A table's text index for one field is a list of :class:`Postings`, each covering a run of rows
(the rows of one stored segment, or of the rows indexed together on first use): its terms, for
each term the rows that hold it and how often (CSR: ``ptr``, ``docs``, ``tfs``), and each row's
length in terms. Runs are immutable like segments; deletes and updates retire rows, which
searches skip. Stored tables keep the postings of the fields named in ``text_search_fields`` with
every segment (written in the same commit as the rows); any other string field is indexed on its
first search and kept.

Scores are BM25 over the live records as one corpus, whatever the layout (Lucene's variant, as
``bm25s`` computes it with ``method="lucene"``)::

    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score(d, q) = sum over the terms t of q:  idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))

where ``N`` is the number of live records, ``df(t)`` how many of them hold ``t``, ``|d|`` the
record's length in terms and ``avgdl`` the mean length over the live records. A search over
several fields treats a record's fields as one document (their terms together). A term repeated
in the query counts as often as it appears. Statistics are computed at query time from the
postings and the live rows, so deletes, updates and compaction never leave stale statistics.
"""

from __future__ import annotations

import itertools
import json
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from .errors import StorageError
from .types import Analyzer
from .vectors import run_starts, unique_ints, unique_inverse

__all__ = [
    "CorpusStats",
    "PartStats",
    "Postings",
    "TextIndex",
    "TextSettings",
    "bm25_top",
    "build_postings",
    "field_without_text",
    "index_texts",
    "merge_stats",
    "part_stats",
    "postings_of",
    "text_of",
]

IntArray = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]

_UIDS = itertools.count()

#: Parts merge while the older neighbour is at most this many times the size of the newer one,
_MERGE_RATIO = 2
#: once an index has more parts than this.
_MAX_PARTS = 16


@attrs.frozen
class TextSettings:
    """A store's full-text settings, as the table uses them.

    :ivar analyzer: turns texts and queries into terms.
    :ivar key: the analyzer's identity (name and options, JSON): stored postings made by another
        analyzer are not used.
    :ivar fields: the fields indexed with every write (``text_search_fields``); others are
        indexed on first search.
    :ivar k1: BM25's term-frequency saturation.
    :ivar b: BM25's length normalization.
    """

    analyzer: Analyzer
    key: str
    fields: tuple[str, ...] = ()
    k1: float = 1.5
    b: float = 0.75

    def terms(self, text: str) -> list[str]:
        """The analyzer's terms of ``text``."""
        return self.analyzer.analyze(text)


def text_of(value: Any) -> str | None:
    """The text a field value contributes: a string, or the strings of a list joined by spaces."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return None


class Postings:
    """The inverted index of one field over rows ``start .. start + n`` (immutable).

    ``terms`` maps a term to its index; the rows holding term ``i`` are
    ``docs[ptr[i]:ptr[i + 1]]`` (relative to ``start``, ascending) with frequencies
    ``tfs[...]``; ``lengths[r]`` is row ``start + r``'s length in terms.
    """

    __slots__ = ("analyzer", "docs", "lengths", "ptr", "start", "terms", "tfs")

    def __init__(
        self,
        start: int,
        terms: dict[str, int],
        ptr: IntArray,
        docs: Int32Array,
        tfs: Int32Array,
        lengths: Int32Array,
        analyzer: str = "",
    ) -> None:
        #: The key of the analyzer that made the terms (:meth:`TextSettings.key`).
        self.analyzer = analyzer
        self.start = start
        self.terms = terms
        self.ptr = ptr
        self.docs = docs
        self.tfs = tfs
        self.lengths = lengths

    @property
    def n(self) -> int:
        """Rows covered."""
        return len(self.lengths)

    @property
    def stop(self) -> int:
        """The row after the last one covered."""
        return self.start + len(self.lengths)

    def at(self, start: int) -> Postings:
        """The same postings for rows starting at ``start``."""
        return Postings(start, self.terms, self.ptr, self.docs, self.tfs, self.lengths, self.analyzer)

    def get(self, term: str) -> tuple[Int32Array, Int32Array] | None:
        """The rows (relative) holding ``term`` and its frequencies, or ``None``."""
        i = self.terms.get(term)
        if i is None:
            return None
        a, b = int(self.ptr[i]), int(self.ptr[i + 1])
        if a == b:
            return None
        return self.docs[a:b], self.tfs[a:b]

    def _term_of_postings(self) -> IntArray:
        return np.repeat(np.arange(len(self.ptr) - 1, dtype=np.int64), np.diff(self.ptr))

    def select(self, keep: IntArray, start: int) -> Postings:
        """The postings of the relative rows ``keep`` (ascending), renumbered from 0, at ``start``."""
        new_of = np.full(self.n, -1, dtype=np.int64)
        new_of[keep] = np.arange(len(keep))
        mapped = new_of[self.docs]
        ok = mapped >= 0
        term = self._term_of_postings()[ok]
        ptr = np.zeros(len(self.ptr), dtype=np.int64)
        np.cumsum(np.bincount(term, minlength=len(self.ptr) - 1), out=ptr[1:])
        return Postings(
            start,
            self.terms,
            ptr,
            mapped[ok].astype(np.int32),
            self.tfs[ok],
            np.ascontiguousarray(self.lengths[keep]),
            self.analyzer,
        )

    # -- the stored form ----------------------------------------------------------------------------
    def encode(self) -> tuple[bytes, npt.NDArray[np.int32]]:
        """The stored form: the terms in index order (JSON), and one int32 array holding the
        lengths, ``ptr``, ``docs`` and ``tfs`` one after the other."""
        terms = sorted(self.terms, key=self.terms.__getitem__)
        raw = json.dumps(terms, ensure_ascii=False, separators=(",", ":")).encode()
        arr = np.concatenate(
            [self.lengths, self.ptr.astype(np.int32), self.docs, self.tfs]
        ).astype(np.int32, copy=False)
        return raw, arr

    @classmethod
    def decode(
        cls, terms_raw: bytes, arr: npt.NDArray[Any], rows: int, start: int, where: str, analyzer: str = ""
    ) -> Postings:
        """Read the stored form back, checking that its parts fit together (``where`` names it)."""
        try:
            terms = json.loads(terms_raw)
        except ValueError as e:
            raise StorageError(f"corrupt text index {where}: {e}") from None
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise StorageError(f"corrupt text index {where}: the terms are not a list of strings")
        t = len(terms)
        if arr.dtype != np.int32 or arr.ndim != 1 or (len(arr) - rows - t - 1) % 2 or len(arr) < rows + t + 1:
            raise StorageError(f"corrupt text index {where}: {arr.dtype} {arr.shape} does not fit {rows} rows")
        p = (len(arr) - rows - t - 1) // 2
        lengths = arr[:rows]
        ptr = arr[rows : rows + t + 1].astype(np.int64)
        docs = arr[rows + t + 1 : rows + t + 1 + p]
        tfs = arr[rows + t + 1 + p :]
        if (
            ptr[0] != 0
            or ptr[-1] != p
            or np.any(np.diff(ptr) < 0)
            or (p and (docs.min() < 0 or docs.max() >= rows or tfs.min() < 1))
            or (rows and lengths.min() < 0)
        ):
            raise StorageError(f"corrupt text index {where}: its postings do not fit its {rows} rows")
        index = {term: i for i, term in enumerate(terms)}
        if len(index) != t:
            raise StorageError(f"corrupt text index {where}: a term appears twice")
        return cls(start, index, ptr, docs, tfs, lengths, analyzer)


def build_postings(token_lists: Iterable[Sequence[str]], start: int = 0, analyzer: str = "") -> Postings:
    """The postings of rows ``start ..``, one sequence of terms per row (made by ``analyzer``).

    Each row's terms become term ids as the row comes (one dictionary lookup per token, in C),
    so only one string per distinct term outlives its row: a hundred thousand rows' tokens
    alive at once would cost memory, page faults, and (as a list per row) garbage collector
    scans of the whole heap.
    """
    vocab: defaultdict[str, int] = defaultdict(itertools.count().__next__)
    term_id = vocab.__getitem__
    tids = array("q")
    lengths = array("i")
    for terms in token_lists:
        tids.extend(map(term_id, terms))
        lengths.append(len(terms))
    return postings_of(
        dict(vocab),
        np.frombuffer(tids, dtype=np.int64) if tids else np.zeros(0, dtype=np.int64),
        np.frombuffer(lengths, dtype=np.int32).copy() if lengths else np.zeros(0, dtype=np.int32),
        start,
        analyzer,
    )


def index_texts(
    texts: Iterable[str | None], analyze: Callable[[str], Sequence[str]], start: int = 0, analyzer: str = ""
) -> Postings:
    """The postings of rows ``start ..``, one text each (``None`` or empty: no terms), analyzed
    by ``analyze`` (the analyzer whose key is ``analyzer``)."""
    return build_postings((analyze(text) if text else () for text in texts), start, analyzer)


def postings_of(
    terms: dict[str, int], tids: IntArray, lengths: Int32Array, start: int = 0, analyzer: str = ""
) -> Postings:
    """The postings of rows ``start ..`` whose tokens are the term ids ``tids`` (``terms``: term
    -> id, ids ``0 ..`` in order), row after row, ``lengths[r]`` of them for row ``r``."""
    n = len(lengths)
    t = len(terms)
    ptr = np.zeros(t + 1, dtype=np.int64)
    if not len(tids):
        empty = np.zeros(0, dtype=np.int32)
        return Postings(start, terms, ptr, empty, empty.copy(), lengths, analyzer)
    docs = np.repeat(np.arange(n, dtype=np.int64), lengths)
    keys = tids * max(n, 1) + docs
    keys.sort()
    starts = np.flatnonzero(run_starts(keys))
    uniq = keys[starts]
    tfs = np.diff(np.append(starts, len(keys))).astype(np.int32)
    term = uniq // max(n, 1)
    np.cumsum(np.bincount(term, minlength=t), out=ptr[1:])
    return Postings(start, terms, ptr, (uniq % max(n, 1)).astype(np.int32), tfs, lengths, analyzer)


def merge_postings(a: Postings, b: Postings) -> Postings:
    """One postings for two adjacent runs (``b`` starts where ``a`` stops)."""
    assert a.stop == b.start
    terms = dict(a.terms)
    setdefault = terms.setdefault
    map_b = np.fromiter((setdefault(term, len(terms)) for term in b.terms), dtype=np.int64, count=len(b.terms))
    t = len(terms)
    term_a = a._term_of_postings()
    term_b = map_b[b._term_of_postings()] if len(b.terms) else np.zeros(0, dtype=np.int64)
    term = np.concatenate([term_a, term_b])
    docs = np.concatenate([a.docs.astype(np.int64), b.docs.astype(np.int64) + a.n])
    tfs = np.concatenate([a.tfs, b.tfs])
    order = np.argsort(term * (a.n + b.n) + docs, kind="stable")
    ptr = np.zeros(t + 1, dtype=np.int64)
    np.cumsum(np.bincount(term, minlength=t), out=ptr[1:])
    return Postings(
        a.start,
        terms,
        ptr,
        docs[order].astype(np.int32),
        tfs[order],
        np.concatenate([a.lengths, b.lengths]),
        a.analyzer,
    )


class _Stored:
    """Postings still in storage: read on first use."""

    __slots__ = ("analyzer", "load", "n", "start")

    def __init__(self, start: int, n: int, load: Callable[[int], Postings], analyzer: str) -> None:
        self.start, self.n, self.load, self.analyzer = start, n, load, analyzer

    @property
    def stop(self) -> int:
        return self.start + self.n


class TextIndex:
    """One field's postings over the rows of a table: runs of rows, in row order, with gaps for
    rows not indexed yet (:meth:`gaps`), which the table fills on the field's next search."""

    def __init__(self) -> None:
        self.parts: list[Postings | _Stored] = []
        self._lengths: Int32Array | None = None
        #: Bumped by every change of the rows covered (caches of derived arrays check it).
        self.version = 0
        #: Distinguishes this index from every other one (caches key on it).
        self.uid = next(_UIDS)

    def gaps(self, nrows: int) -> list[tuple[int, int]]:
        """The runs of rows below ``nrows`` that no part covers."""
        out: list[tuple[int, int]] = []
        at = 0
        for p in self.parts:
            if p.start > at:
                out.append((at, min(p.start, nrows)))
            at = max(at, p.stop)
        if at < nrows:
            out.append((at, nrows))
        return [(a, b) for a, b in out if a < b]

    def add(self, part: Postings | _Stored) -> None:
        """Cover a run of rows (not covered yet); beyond ``_MAX_PARTS`` parts, adjacent loaded
        runs of similar size merge, so that many small writes leave few parts."""
        if part.n == 0:
            return
        i = 0
        while i < len(self.parts) and self.parts[i].start < part.start:
            i += 1
        self.parts.insert(i, part)
        self._lengths = None
        self.version += 1
        if len(self.parts) <= _MAX_PARTS:
            return
        # size-tiered: merge with the older neighbour while it is not much bigger
        while 0 < i < len(self.parts):
            left, right = self.parts[i - 1], self.parts[i]
            if (
                isinstance(left, _Stored)
                or isinstance(right, _Stored)
                or left.analyzer != right.analyzer
                or left.stop != right.start
                or left.n > _MERGE_RATIO * right.n
            ):
                break
            self.parts[i - 1 : i + 1] = [merge_postings(left, right)]
            i -= 1

    def add_stored(self, start: int, n: int, load: Callable[[int], Postings], analyzer: str) -> None:
        """Cover rows ``start .. start + n`` with postings read from storage on first use."""
        self.add(_Stored(start, n, load, analyzer))

    def resolve(self, analyzer: str) -> None:
        """Forget the parts another analyzer made (their rows are indexed again when needed)."""
        if any(p.analyzer != analyzer for p in self.parts):
            self.parts = [p for p in self.parts if p.analyzer == analyzer]
            self._lengths = None
            self.version += 1

    def loaded(self) -> list[Postings]:
        """Every part, reading those still in storage."""
        for i, p in enumerate(self.parts):
            if isinstance(p, _Stored):
                self.parts[i] = self._read(p)
        return self.parts  # type: ignore[return-value]

    @staticmethod
    def _read(p: _Stored) -> Postings:
        got = p.load(p.start)
        if got.n != p.n:
            raise StorageError(f"a stored text index covers {got.n} rows, its segment holds {p.n}")
        got.analyzer = p.analyzer
        return got

    def truncate(self, nrows: int) -> None:
        """Forget rows ``nrows ..``."""
        keep: list[Postings | _Stored] = []
        for p in self.parts:
            if p.stop <= nrows:
                keep.append(p)
            elif p.start < nrows:
                q = p if isinstance(p, Postings) else self._read(p)
                keep.append(q.select(np.arange(nrows - q.start, dtype=np.int64), q.start))
        self.parts = keep
        self._lengths = None
        self.version += 1

    def take(self, keep: IntArray) -> TextIndex:
        """The index after the table keeps only rows ``keep`` (ascending), renumbered from 0
        (parts still in storage are read only when they hold some of those rows: a merge of the
        newest segments reads theirs, not the whole table's)."""
        out = TextIndex()
        for i, p in enumerate(self.parts):
            a, b = np.searchsorted(keep, [p.start, p.stop])
            if a == b:
                continue
            if isinstance(p, _Stored):
                p = self.parts[i] = self._read(p)
            out.add(p.select(keep[a:b] - p.start, int(a)))
        return out

    def lengths(self, nrows: int) -> Int32Array:
        """Every row's length in terms (0 where not covered), for rows below ``nrows``."""
        got = self._lengths
        if got is None or len(got) < nrows:
            got = np.zeros(nrows, dtype=np.int32)
            for p in self.loaded():
                if p.start < nrows:
                    got[p.start : min(p.stop, nrows)] = p.lengths[: nrows - p.start]
            self._lengths = got
        return got[:nrows]

    def postings(self, term: str, nrows: int) -> tuple[npt.NDArray[Any], Int32Array] | None:
        """The rows (absolute, ascending; int32 or int64) below ``nrows`` holding ``term``, and
        its frequencies."""
        docs: list[npt.NDArray[Any]] = []
        tfs: list[Int32Array] = []
        for p in self.loaded():
            got = p.get(term)
            if got is not None:
                d: npt.NDArray[Any] = got[0] if p.start == 0 else got[0].astype(np.int64) + p.start
                if p.stop > nrows:
                    ok = d < nrows
                    d, t = d[ok], got[1][ok]
                else:
                    t = got[1]
                docs.append(d)
                tfs.append(t)
        if not docs:
            return None
        if len(docs) == 1:
            return docs[0], tfs[0]
        return np.concatenate(docs), np.concatenate(tfs)



def _lengths(indexes: Sequence[TextIndex], nrows: int) -> npt.NDArray[np.float64]:
    """Each row's length in terms over the fields searched (one document per row)."""
    lengths = indexes[0].lengths(nrows).astype(np.float64)
    for ix in indexes[1:]:
        lengths += ix.lengths(nrows)
    return lengths


def _norm_of(lengths: npt.NDArray[np.float64], avgdl: float, k1: float, b: float) -> npt.NDArray[np.float64]:
    """BM25's length norm ``k1 * (1 - b + b * |d| / avgdl)`` of documents of ``lengths``
    (elementwise: a row's norm is the same float whichever array holds it)."""
    out: npt.NDArray[np.float64] = k1 * (1.0 - b + b * lengths / avgdl)
    return out


def _weight_of(idf: float, tf: npt.NDArray[np.float64], norms: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """A term's contribution to documents holding it ``tf`` times, of length norms ``norms``."""
    out: npt.NDArray[np.float64] = idf * (tf / (tf + norms))
    return out


def _idf(n_live: int, df: int) -> float:
    return float(np.log1p((n_live - df + 0.5) / (df + 0.5)))


def _norms(
    indexes: Sequence[TextIndex],
    live: BoolArray,
    n_live: int,
    k1: float,
    b: float,
    cache: dict[Any, Any],
    corpus: CorpusStats | None = None,
) -> npt.NDArray[np.float64]:
    """Per row ``k1 * (1 - b + b * |d| / avgdl)``, kept in ``cache`` while the table and the
    indexes stay as they are (rows only ever join a table, so ``(rows, live rows)`` and the
    indexes' versions identify its state). ``corpus``: the average length is the whole
    corpus's, not these rows'."""
    nrows = len(live)
    key = (tuple((ix.uid, ix.version) for ix in indexes), nrows, n_live, k1, b, corpus)
    got = cache.get("norms")
    if got is not None and got[0] == key:
        norms: npt.NDArray[np.float64] = got[1]
        return norms
    lengths = _lengths(indexes, nrows)
    # integers: an exact sum, whichever order
    avgdl = (float(lengths[live].sum()) / n_live or 1.0) if corpus is None else corpus.avgdl
    norms = _norm_of(lengths, avgdl, k1, b)
    cache["norms"] = (key, norms)
    return norms


@attrs.frozen
class PartStats:
    """What one part of a corpus (a shard of a table) contributes to the corpus statistics of a
    set of terms (:func:`part_stats`; :func:`merge_stats` combines every part's).

    :ivar n_live: its live rows.
    :ivar lengths: per field searched, the live rows' total length in terms.
    :ivar df: per term, how many live rows hold it.
    :ivar frontier: per term, for each distinct frequency ``tf`` of it in a live row, the
        shortest such row's length (over the fields searched): a term's largest contribution
        is at one of these, whatever the corpus's average length.
    """

    n_live: int
    lengths: tuple[int, ...]
    df: dict[str, int]
    frontier: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]


@attrs.frozen(eq=False)
class CorpusStats:
    """The statistics of a whole corpus that BM25 needs beyond one part's postings (merged
    exactly from every part's :class:`PartStats` by :func:`merge_stats`).

    :ivar n_live: the live rows of the corpus.
    :ivar total_length: their total length in terms (over the fields searched).
    :ivar df: per term, how many live rows hold it.
    :ivar top: per term, its largest contribution to a live row's score.
    """

    n_live: int
    total_length: int
    df: dict[str, int]
    top: dict[str, float]

    @property
    def avgdl(self) -> float:
        """The average length (as a search over the whole corpus computes it)."""
        return float(self.total_length) / self.n_live or 1.0


def part_stats(indexes: Sequence[TextIndex], terms: Iterable[str], live: BoolArray) -> PartStats:
    """This part's contribution to the corpus statistics of ``terms`` (see :class:`PartStats`)."""
    nrows = len(live)
    n_live = int(np.count_nonzero(live))
    all_live = n_live == nrows
    lengths = _lengths(indexes, nrows) if indexes else np.zeros(nrows)
    totals = tuple(int(ix.lengths(nrows)[live].sum()) for ix in indexes)
    df: dict[str, int] = {}
    frontier: dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = {}
    for term in dict.fromkeys(terms):
        got = _term_rows(indexes, term, live, all_live) if indexes and n_live else None
        if got is None:
            continue
        docs, tf = got
        lens = lengths[docs]
        order = np.lexsort((lens, tf))  # by frequency, then length: each frequency's shortest first
        tf, lens = tf[order], lens[order]
        first = run_starts(tf)
        df[term] = len(docs)
        frontier[term] = (tf[first], lens[first])
    return PartStats(n_live, totals, df, frontier)


def merge_stats(parts: Sequence[PartStats], k1: float, b: float) -> CorpusStats:
    """The corpus statistics of all ``parts`` together: counts summed; each term's largest
    contribution computed from the parts' frontiers with the same float operations a search
    over the whole corpus uses (so it is that search's value, bit for bit)."""
    n_live = sum(p.n_live for p in parts)
    total = sum(sum(p.lengths) for p in parts)
    df: dict[str, int] = {}
    for p in parts:
        for term, n in p.df.items():
            df[term] = df.get(term, 0) + n
    corpus = CorpusStats(n_live, total, df, {})
    for term, n in df.items():  # a term some part holds: n_live > 0
        tf = np.concatenate([p.frontier[term][0] for p in parts if term in p.frontier])
        lens = np.concatenate([p.frontier[term][1] for p in parts if term in p.frontier])
        corpus.top[term] = float(_weight_of(_idf(n_live, n), tf, _norm_of(lens, corpus.avgdl, k1, b)).max())
    return corpus


#: How many postings entries the per-term weights cache of a table holds at most.
_TERM_CACHE_ENTRIES = 1 << 22


def _term_rows(
    indexes: Sequence[TextIndex], term: str, live: BoolArray, all_live: bool
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64]] | None:
    """The live rows holding ``term`` (ascending) and how often (over the fields searched, as
    one document per row), or ``None``."""
    found = [got for ix in indexes if (got := ix.postings(term, len(live))) is not None]
    if not found:
        return None
    docs: npt.NDArray[Any]
    if len(found) == 1:
        docs, tf = found[0][0], found[0][1].astype(np.float64)
    else:  # several fields: one document per row, frequencies summed
        docs, inverse = unique_inverse(np.concatenate([f[0] for f in found]))
        weights = np.concatenate([f[1] for f in found]).astype(np.float64)
        tf = np.bincount(inverse, weights=weights).astype(np.float64, copy=False)
    if not all_live:
        alive = live[docs]
        docs, tf = docs[alive], tf[alive]
    return (docs, tf) if len(docs) else None


def _term_weights(
    indexes: Sequence[TextIndex],
    term: str,
    live: BoolArray,
    all_live: bool,
    norms: npt.NDArray[np.float64],
    cache: dict[Any, Any],
    corpus: CorpusStats | None = None,
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float64], float] | None:
    """The live rows holding ``term`` (ascending), their score for it
    (``idf * (tf / (tf + norm))``) and the largest of those (over the whole ``corpus`` when
    these rows are part of one); kept in ``cache`` (by term) while the norms stay the same, so
    a frequent term costs one scatter-add."""
    terms: dict[str, Any] = cache.setdefault("terms", {})
    if cache.get("terms_of") is not norms:  # the table changed: the weights are stale
        terms.clear()
        cache["terms_of"] = norms
        cache["terms_size"] = 0
    hit = terms.get(term)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    got = _term_rows(indexes, term, live, all_live)
    if got is None:
        return None
    docs, tf = got
    df = len(docs)
    idf = _idf(int(cache["n_live"]), df) if corpus is None else _idf(corpus.n_live, corpus.df[term])
    weights = _weight_of(idf, tf, norms[docs])
    entry = (docs, weights, float(weights.max()) if corpus is None else corpus.top[term])
    cache["terms_size"] += df
    while terms and cache["terms_size"] > _TERM_CACHE_ENTRIES:  # the oldest go first
        old = terms.pop(next(iter(terms)))
        cache["terms_size"] -= len(old[0])
    terms[term] = entry
    return entry


def field_without_text(fields: Sequence[str], holds: Sequence[bool]) -> str | None:
    """The field a text search over ``fields`` is refused for (``holds``: whether any live
    record holds text in each), or ``None``: the first of them when none holds text. A field
    without text among others that hold some is passed over (an optional field, as
    dataknobs-data's ``text_fields`` lists name them), and the answer is the same for every
    query."""
    return None if any(holds) or not fields else fields[0]


def bm25_top(
    indexes: Sequence[TextIndex],
    queries: Iterable[Sequence[str]],
    live: BoolArray,
    mask: BoolArray | None,
    k: int,
    k1: float,
    b: float,
    id_of: Callable[[IntArray], list[str]],
    cache: dict[Any, Any] | None = None,
    corpus: CorpusStats | None = None,
) -> list[tuple[IntArray, npt.NDArray[np.float64]]]:
    """The top-``k`` rows and their BM25 scores per query (best first, ties by id).

    ``indexes`` are the fields searched (one document per row: their terms together), ``live``
    the live rows (the corpus), ``mask`` the rows a filter lets through (``None``: all live
    ones). Only rows holding at least one query term are ranked. ``cache`` keeps the per-row
    length norms, recent terms' weights and the score accumulator between calls.

    ``corpus``: these rows are part of a larger corpus (a shard of a table), whose statistics
    (:func:`merge_stats` of every part's :func:`part_stats`) the scores use, so that each part
    scores its rows exactly as a search over the whole corpus would.

    A row's score is the sum of its terms' contributions (a term once, times its count in the
    query), added in one order: by the term's largest contribution over the live rows,
    descending (ties by term). So it depends on the row and the live corpus only, never on how
    the rows are split in parts, and that order lets a search stop early (MaxScore): once the
    k-th best partial score of the rows seen exceeds what the remaining terms could add
    together, no other row can reach the top ``k``, and the remaining terms are only looked up
    for the rows seen.
    """
    nrows = len(live)
    n_live = int(np.count_nonzero(live))
    all_live = n_live == nrows
    if cache is None:
        cache = {}
    out: list[tuple[IntArray, npt.NDArray[np.float64]]] = []
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64))
    norms: npt.NDArray[np.float64] | None = None
    # the scores of one query; all zeros between queries (a search zeroes what it touched), taken
    # from the cache so that a search does not allocate and fault in a table-sized array
    acc: npt.NDArray[np.float64] | None = cache.pop("acc", None)
    if acc is None or len(acc) != nrows:
        acc = np.zeros(nrows, dtype=np.float64)
    for terms in queries:
        if not terms or n_live == 0 or not indexes:
            out.append(empty)
            continue
        if norms is None:
            norms = _norms(indexes, live, n_live, k1, b, cache, corpus)
            cache["n_live"] = n_live
        counts: dict[str, int] = {}
        for t in terms:
            counts[t] = counts.get(t, 0) + 1
        items: list[tuple[float, str, npt.NDArray[Any], npt.NDArray[np.float64]]] = []
        for term, times in counts.items():
            got = _term_weights(indexes, term, live, all_live, norms, cache, corpus)
            if got is not None:
                docs, weights, top = got
                items.append((times * top, term, docs, weights if times == 1 else times * weights))
        if not items:
            out.append(empty)
            continue
        items.sort(key=lambda it: (-it[0], it[1]))
        if sum(map(len, map(itemgetter(2), items))) * 8 < nrows:  # few postings: no early stop needed
            out.append(_top_sparse(items, acc, mask, k, id_of))
            continue
        # rest[i]: what the terms after i can add at most, summed in the order scores are
        # (float addition is monotonic, so no row's remaining contributions exceed it)
        rest = [0.0] * len(items)
        for i in range(len(items) - 1):
            total = 0.0
            for it in items[i + 1 :]:
                total += it[0]
            rest[i] = total
        after = [0] * len(items)  # postings of the terms after i
        for i in range(len(items) - 2, -1, -1):
            after[i] = after[i + 1] + len(items[i + 1][2])
        touched: list[npt.NDArray[Any]] = []
        seen: npt.NDArray[Any] | None = None  # the only rows that can make the top k
        for i, (_, _, docs, weights) in enumerate(items):
            if seen is not None:  # a term the rest cannot do without: looked up for those rows
                pos = np.searchsorted(docs, seen)
                pos[pos == len(docs)] = 0
                hit = docs[pos] == seen
                acc[seen[hit]] += weights[pos[hit]]
                continue
            acc[docs] += weights  # a row at most once per term
            touched.append(docs)
            if i + 1 < len(items) and after[i] > 4 * sum(map(len, touched)):
                rows_seen = touched[0] if len(touched) == 1 else unique_ints(np.concatenate(touched))
                if mask is not None:
                    rows_seen = rows_seen[mask[rows_seen]]
                if len(rows_seen) >= k:
                    partial = acc[rows_seen]
                    kth = np.partition(partial, len(partial) - k)[len(partial) - k]
                    if rest[i] < kth:  # no row unseen can reach the k-th partial score
                        seen = rows_seen
                        cache["pruned"] = cache.get("pruned", 0) + 1
        rows = (seen if seen is not None else _rows_of(acc, touched, mask, k)).astype(np.int64, copy=False)
        scores = acc[rows]
        if sum(map(len, touched)) * 8 > nrows:
            acc.fill(0.0)
        else:
            for docs in touched:
                acc[docs] = 0.0
        out.append(_ranked(rows, scores, k, id_of))
    cache["acc"] = acc
    return out


def _top_sparse(
    items: Sequence[tuple[float, str, npt.NDArray[Any], npt.NDArray[np.float64]]],
    acc: npt.NDArray[np.float64],
    mask: BoolArray | None,
    k: int,
    id_of: Callable[[IntArray], list[str]],
) -> tuple[IntArray, npt.NDArray[np.float64]]:
    """:func:`bm25_top` for one query whose terms hold few rows: every row holding a term is
    ranked (the contributions added in the same order, so the scores are the same floats)."""
    for _, _, docs, weights in items:
        acc[docs] += weights
    if len(items) == 1:
        touched = rows = items[0][2]
    else:
        touched = np.concatenate([it[2] for it in items])
        rows = unique_ints(touched)
    if mask is not None:
        rows = rows[mask[rows]]
    scores = acc[rows]
    acc[touched] = 0.0
    return _ranked(rows.astype(np.int64, copy=False), scores, k, id_of)


def _ranked(
    rows: IntArray, scores: npt.NDArray[np.float64], k: int, id_of: Callable[[IntArray], list[str]]
) -> tuple[IntArray, npt.NDArray[np.float64]]:
    """The best ``k`` of ``rows`` by ``scores``, best first, ties broken by id."""
    if len(rows) > k:
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        sel = scores >= kth  # every row tied with the k-th: ties are broken by id below
        rows, scores = rows[sel], scores[sel]
    ids = id_of(rows)
    # (score descending, id): tuples compared in C (distinct rows have distinct ids)
    best = sorted(zip((-scores).tolist(), ids, range(len(rows))))[:k]
    pick = np.fromiter(map(itemgetter(2), best), dtype=np.int64, count=len(best))
    return rows[pick], scores[pick]


def _rows_of(
    acc: npt.NDArray[np.float64],
    touched: list[npt.NDArray[Any]],
    mask: BoolArray | None,
    k: int,
) -> npt.NDArray[Any]:
    """The rows (ascending) that the filter lets through, among those with a score, that can be
    in the top ``k``: those at least as good as the k-th best (all when fewer)."""
    nrows = len(acc)
    if sum(len(t) for t in touched) * 2 > nrows:  # most rows touched: over the dense scores
        dense = acc if mask is None else acc * mask
        if k < nrows:
            kth = dense[np.argpartition(dense, nrows - k)[nrows - k :]].min()
            return np.flatnonzero(dense >= kth) if kth > 0 else np.flatnonzero(dense)
        return np.flatnonzero(dense)
    cand = touched[0] if len(touched) == 1 else np.concatenate(touched)  # a row once per term
    if mask is not None:
        cand = cand[mask[cand]]
    scores = acc[cand]
    if len(cand) > k:
        # the k * terms best entries hold at least k distinct rows, so the k-th best distinct
        # score is among them
        m = min(len(cand), k * len(touched))
        top = np.argpartition(scores, len(scores) - m)[len(scores) - m :]
        best = acc[unique_ints(cand[top])]
        j = len(best) - min(k, len(best))
        cand = cand[scores >= np.partition(best, j)[j]]  # ties with the k-th: by id later
    return unique_ints(cand)
