"""Planning a search on the client: the parts of the loaded version, their dead rows, their workers.

The unit of distribution is the immutable segment of the log-structured table; a segment of more
than ``shard_rows`` rows is cut into near-equal row ranges ("parts"), so a compacted table of one
big segment still spreads over the workers. Segment ``i`` covers table rows ``[sum(rows of
earlier segments), + rows)``: table-backed stores never renumber rows except by storage
compaction, which rewrites the segment list accordingly.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

import attrs
import numpy as np
import numpy.typing as npt

from ...errors import StorageError
from ...storage.segments import SegmentInfo, snapshot
from ...types import AsyncStore, SearchRequest, Store
from .options import shard_rows, table_core

__all__ = ["PartOwners", "SearchPlan", "ShardRange", "plan_parts", "plan_search", "split_parts"]


@attrs.frozen
class ShardRange:
    """What a worker searches of one part: rows ``[start, stop)`` of ``segment``, which are table
    rows from ``base``, less its ``dead`` ones."""

    segment: SegmentInfo
    start: int
    stop: int
    base: int  # table row of the part's first row
    dead: npt.NDArray[np.int64] = attrs.field(eq=False)  # offsets (within the part) of rows no longer live

    @property
    def name(self) -> str:
        """The part's name: its segment and first row."""
        return f"{self.segment.name}:{self.start}"


@attrs.frozen
class SearchPlan:
    """The table version a search answers for, its segments, and the parts per worker."""

    version: int
    names: frozenset[str]
    groups: dict[str, list[ShardRange]]


class PartOwners(Protocol):
    """Who assigns parts ``(name, rows)`` to workers (:meth:`StoreCluster.owners
    <dk_vector_plugins.plugins.dask.cluster.StoreCluster.owners>`)."""

    def owners(self, parts: list[tuple[str, int]], workers: list[str]) -> list[str]:
        """A worker per part."""
        ...


def split_parts(
    segments: Sequence[SegmentInfo], rows_per_part: int
) -> list[tuple[SegmentInfo, int, int, int]]:
    """(segment, start, stop, table row of the segment's first row) per part, in table order."""
    out: list[tuple[SegmentInfo, int, int, int]] = []
    base = 0
    for segment in segments:
        m = segment.rows
        if m:
            n = -(-m // rows_per_part)
            bounds = [m * i // n for i in range(n + 1)]
            out.extend((segment, a, b, base) for a, b in itertools.pairwise(bounds))
        base += m
    return out


def plan_search(
    db: Store | AsyncStore, request: SearchRequest, cluster: PartOwners, workers: list[str]
) -> SearchPlan | None:
    """Under the store lock: the parts to search and their dead rows (``None``: nothing to search)."""
    core, _ = table_core(db)
    if not core.table.check_search(request.vector_field, request.queries.shape[1]):
        return None  # the field holds no vector at all
    return plan_parts(db, cluster, workers, request.vector_field)


def plan_parts(
    db: Store | AsyncStore, cluster: PartOwners, workers: list[str], vector_field: str | None = None
) -> SearchPlan:
    """Under the store lock: the parts of the loaded version (those holding ``vector_field``,
    when given), their dead rows and their workers."""
    core, storage = table_core(db)
    table = core.table
    version = snapshot(storage)
    if version.rows != table.nrows:
        raise StorageError(
            f"the loaded table has {table.nrows} rows but its manifest version {version.version} names "
            f"{version.rows}: cannot map segments to rows"
        )
    live = table.mask(None)
    parts = split_parts(version.segments, shard_rows(db.config))
    owners = cluster.owners([(f"{s.name}:{a}", b - a) for s, a, b, _ in parts], workers)
    groups: dict[str, list[ShardRange]] = {}
    for (segment, a, b, base), owner in zip(parts, owners):
        if vector_field is not None and segment.field(vector_field) is None:
            continue
        dead = np.flatnonzero(~live[base + a : base + b]).astype(np.int64)
        if len(dead) == b - a:
            continue
        groups.setdefault(owner, []).append(ShardRange(segment, a, b, base + a, dead))
    return SearchPlan(version.version, version.names, groups)
