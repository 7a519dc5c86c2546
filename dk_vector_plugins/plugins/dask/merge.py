"""Merging best-first hit lists (of several parts, or of several workers) in the kernel's order.

Scores are the kernel's exact ones and ties are broken the kernel's way, so the merge of the
per-part top-``k`` lists equals the single-process ranking bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attrs
import numpy as np
import numpy.typing as npt

__all__ = ["Hits", "Shortlist", "empty_hits", "merge_hits", "merge_shortlists"]

#: One list of hits: table rows, scores, distances (euclidean) and ids, best first.
Hits = tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64] | None, list[str]]


@attrs.frozen
class Shortlist:
    """How the kernel's exact ranking went for one query over some parts (the
    :attr:`~dk_vector_plugins.kernel.TopK.reranked` and :attr:`~dk_vector_plugins.kernel.TopK.exact`
    of their searches, added up).

    :ivar reranked: how many rows the exact ranking scored, over all the parts.
    :ivar exact: which scan shortlisted them: ``"int8"`` or ``"float32"`` when every part used
        that one, ``"mixed"`` when the parts used different ones.
    """

    reranked: int
    exact: str


def merge_shortlists(items: Iterable[Shortlist | None]) -> Shortlist | None:
    """The :class:`Shortlist` of several parts' searches of one query (``None``: no part ranked
    any row)."""
    known = [s for s in items if s is not None]
    if not known:
        return None
    scans = {s.exact for s in known}
    return Shortlist(sum(s.reranked for s in known), scans.pop() if len(scans) == 1 else "mixed")


def empty_hits() -> Hits:
    """A list of no hits."""
    return (np.empty(0, np.int64), np.empty(0, np.float64), None, [])


def merge_hits(lists: Sequence[Hits], k: int, metric: str) -> Hits:
    """The best ``k`` of several best-first hit lists, in the kernel's order.

    (score desc, id asc); for euclidean (distance asc, id asc), which stays exact where the
    score ``1 / (1 + d)`` rounds equal for distinct tiny distances.
    """
    lists = [h for h in lists if len(h[0])]
    if not lists:
        return empty_hits()
    if len(lists) == 1:
        rows, scores, dists, ids = lists[0]
        return rows[:k], scores[:k], None if dists is None else dists[:k], ids[:k]
    rows = np.concatenate([h[0] for h in lists])
    scores = np.concatenate([h[1] for h in lists])
    ids = [i for h in lists for i in h[3]]
    dist_parts = [h[2] for h in lists]
    dists = None
    if all(d is not None for d in dist_parts):
        dists = np.concatenate(dist_parts)  # type: ignore[arg-type]
    if metric == "euclidean" and dists is not None:
        d = dists.tolist()
        order = sorted(range(len(ids)), key=lambda i: (d[i], ids[i]))[:k]
    else:
        s = scores.tolist()
        order = sorted(range(len(ids)), key=lambda i: (-s[i], ids[i]))[:k]
    idx = np.asarray(order, dtype=np.int64)
    return rows[idx], scores[idx], None if dists is None else dists[idx], [ids[i] for i in order]
