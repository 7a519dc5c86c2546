"""Full-text (BM25) and hybrid search: scores against reference implementations, every backend,
persisted postings, analyzers as plugins, the text-search hooks, bad input."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dk_vector_plugins import (
    AnalyzerSpec,
    ConfigError,
    DatabaseFactory,
    DimensionMismatchError,
    DkvError,
    FusionStrategy,
    HybridSearchConfig,
    HybridSearchResult,
    InvalidRequestError,
    InvalidVectorError,
    PluginError,
    Record,
    SchemaMismatchError,
    StorageError,
    TextSearchResult,
    hookimpl,
)
from dk_vector_plugins.analysis import StandardAnalyzer
from dk_vector_plugins.search import fuse
from dk_vector_plugins.textindex import (
    Postings,
    TextIndex,
    bm25_top,
    build_postings,
    merge_postings,
    merge_stats,
    part_stats,
)

K1, B = 1.5, 0.75


# --- references --------------------------------------------------------------------------------


def reference(docs: dict[str, list[str]], query: Sequence[str], k: int, allowed: set[str] | None = None) -> list[tuple[str, float]]:
    """BM25 (Lucene's variant) over ``docs`` as one corpus, written out term by term: the top
    ``k`` (id, score) among the ``allowed`` documents holding a query term, ties by id. A
    document's contributions are added in the store's order: by each term's largest
    contribution over the corpus, descending, ties by term."""
    n = len(docs)
    if n == 0:
        return []
    avgdl = float(np.sum(np.array([len(t) for t in docs.values()], dtype=np.float64))) / n or 1.0
    counts: dict[str, int] = {}
    for t in query:
        counts[t] = counts.get(t, 0) + 1
    per_term: list[tuple[float, str, dict[str, float]]] = []
    for term, times in counts.items():
        df = sum(1 for toks in docs.values() if term in toks)
        if df == 0:
            continue
        idf = float(np.log1p((n - df + 0.5) / (df + 0.5)))
        weights: dict[str, float] = {}
        for rid, toks in docs.items():
            tf = float(toks.count(term))
            if tf:
                norm = K1 * (1.0 - B + B * len(toks) / avgdl)
                weight = idf * (tf / (tf + norm))
                weights[rid] = weight if times == 1 else times * weight
        per_term.append((max(weights.values()), term, weights))
    scores: dict[str, float] = {}
    for _, _, weights in sorted(per_term, key=lambda t: (-t[0], t[1])):
        for rid, w in weights.items():
            if allowed is None or rid in allowed:
                scores[rid] = scores.get(rid, 0.0) + w
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def bm25s_scores(docs: dict[str, list[str]], query: Sequence[str]) -> dict[str, float]:
    """bm25s (``method="lucene"``) over the same tokens: its score of every document."""
    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(t, len(vocab)) for t in toks] for toks in docs.values()]
    vocab.setdefault("", len(vocab))  # bm25s's empty-document token
    retriever = bm25s.BM25(method="lucene", k1=K1, b=B)
    retriever.index(bm25s.tokenization.Tokenized(ids=ids, vocab=vocab), show_progress=False)
    got = retriever.get_scores([t for t in query if t in vocab])
    return dict(zip(docs, got.tolist()))


def hits(results: Sequence[Any]) -> list[tuple[str, float]]:
    return [(r.record.id, r.score) for r in results]


ANALYZER = StandardAnalyzer()
WORDS = ["apple", "banana", "cherry", "date", "elder", "fig", "grape", "honey"]


def corpus(seed: int, n: int) -> dict[str, str]:
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, len(WORDS) + 1)
    zipf /= zipf.sum()
    return {
        f"r{i:03d}": " ".join(rng.choice(WORDS, size=int(rng.integers(1, 9)), p=zipf).tolist()) for i in range(n)
    }


# --- the index itself ---------------------------------------------------------------------------


def test_postings_round_trip_merge_and_select() -> None:
    tokens = [["a", "b", "a"], [], ["c"], ["b", "c", "c"]]
    p = build_postings(tokens, 0, "k")
    assert p.get("a") is not None and p.get("a")[0].tolist() == [0] and p.get("a")[1].tolist() == [2]  # type: ignore[index]
    assert p.get("c")[0].tolist() == [2, 3] and p.get("c")[1].tolist() == [1, 2]  # type: ignore[index]
    terms, arr = p.encode()
    back = Postings.decode(terms, arr, 4, 7, "here", "k")
    assert back.start == 7 and back.analyzer == "k" and back.lengths.tolist() == [3, 0, 1, 3]
    assert {t: back.get(t)[0].tolist() for t in back.terms} == {"a": [0], "b": [0, 3], "c": [2, 3]}  # type: ignore[index]
    merged = merge_postings(build_postings(tokens[:2], 0), build_postings(tokens[2:], 2))
    assert {t: merged.get(t)[0].tolist() for t in merged.terms} == {"a": [0], "b": [0, 3], "c": [2, 3]}  # type: ignore[index]
    sel = p.select(np.array([1, 3]), 0)
    assert sel.lengths.tolist() == [0, 3] and sel.get("a") is None and sel.get("c")[0].tolist() == [1]  # type: ignore[index]
    for bad in (arr[:-1], arr.astype(np.int64)):
        with pytest.raises(StorageError, match="corrupt text index here"):
            Postings.decode(terms, bad, 4, 0, "here")
    worse = arr.copy()
    worse[4 + 3 + 1] = 99  # a document past the segment's rows
    with pytest.raises(StorageError, match="do not fit"):
        Postings.decode(terms, worse, 4, 0, "here")
    with pytest.raises(StorageError, match="corrupt text index"):
        Postings.decode(b"{not json", arr, 4, 0, "here")


def test_indexing_keeps_no_list_per_row_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexing a commit's rows collects their terms flat (:func:`index_texts`): a list of
    terms per row, alive until the postings are built, made Python's cyclic garbage collector
    scan the whole heap again and again during big ingests (the text index then cost 2x the
    ingest instead of 1.3x). The objects the collector tracks when the postings are built: no
    more than before the rows were analyzed, give or take a few."""
    import gc

    import dk_vector_plugins.textindex as textindex
    from dk_vector_plugins.memtable import RecordTable
    from dk_vector_plugins.textindex import TextSettings

    tracked: list[int] = []
    build = textindex.postings_of

    def counting(*args: Any) -> Any:
        tracked.append(len(gc.get_objects()))
        return build(*args)

    monkeypatch.setattr(textindex, "postings_of", counting)
    table = RecordTable()
    table.text_provider = lambda: TextSettings(ANALYZER, "k", ("body",))
    rows = [(f"r{i}", {"body": f"w{i % 97} w{i % 13} common words"}, {}, {}) for i in range(20_000)]
    gc.collect()
    before = len(gc.get_objects())
    postings = table.index_rows(rows)["body"]
    assert postings.n == 20_000 and len(tracked) == 1
    assert tracked[0] - before < 1_000  # a list per row: 20,000 more


def test_indexing_holds_a_string_per_distinct_term_not_per_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each row's terms become term ids as the row is analyzed, so indexing holds one string
    per distinct term, not one per token (100,000 token strings alive at once cost memory and
    page faults that slowed the rest of the commit). Memory held when the analysis of 20,000
    rows of 5 tokens is done: the term ids and lengths (~0.9 MB), not the tokens (~6 MB)."""
    import tracemalloc

    import dk_vector_plugins.textindex as textindex
    from dk_vector_plugins.memtable import RecordTable
    from dk_vector_plugins.textindex import TextSettings

    held: list[int] = []
    build = textindex.postings_of

    def measuring(*args: Any) -> Any:
        held.append(tracemalloc.get_traced_memory()[0])
        return build(*args)

    monkeypatch.setattr(textindex, "postings_of", measuring)
    table = RecordTable()
    table.text_provider = lambda: TextSettings(ANALYZER, "k", ("body",))
    rows = [(f"r{i}", {"body": f"w{i % 97} w{i % 13} common words here"}, {}, {}) for i in range(20_000)]
    tracemalloc.start()
    try:
        postings = table.index_rows(rows)["body"]
    finally:
        tracemalloc.stop()
    assert postings.n == 20_000 and postings.get("common") is not None and len(held) == 1
    assert held[0] < 1_500_000, held


def test_take_reads_only_the_stored_parts_it_keeps_rows_of() -> None:
    """A merge of the newest segments selects their rows' postings: only the parts still in
    storage that hold some of those rows are read, not every segment's."""
    tokens = [["a", "b"], ["b"], ["c", "a"], ["a"], ["b", "c"], ["c"]]
    read: list[int] = []

    def loader(first: int) -> Any:
        def load(start: int) -> Postings:
            read.append(first)
            return build_postings(tokens[first : first + 2], start, "k")

        return load

    index = TextIndex()
    for first in (0, 2, 4):
        index.add_stored(first, 2, loader(first), "k")
    kept = index.take(np.array([4, 5], dtype=np.int64))
    assert read == [4]
    whole = TextIndex()
    whole.add(build_postings(tokens, 0, "k"))
    assert kept.postings("c", 2) is not None
    for term in ("a", "b", "c"):
        got, want = kept.postings(term, 2), whole.take(np.array([4, 5], dtype=np.int64)).postings(term, 2)
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()


def test_small_writes_leave_few_parts() -> None:
    index = TextIndex()
    for i in range(1000):
        index.add(build_postings([["w", f"t{i}"]], i))
    assert len(index.parts) <= 12
    assert index.gaps(1000) == [] and index.postings("w", 1000)[0].tolist() == list(range(1000))  # type: ignore[index]
    index.truncate(500)
    assert index.postings("w", 1000)[0].tolist() == list(range(500))  # type: ignore[index]
    assert index.gaps(600) == [(500, 600)]


# --- scores: equal to BM25 over the live records as one corpus ----------------------------------


ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 11), st.lists(st.sampled_from(WORDS[:5]), max_size=6)),
        st.tuples(st.just("delete"), st.integers(0, 11), st.just([])),
        st.tuples(st.just("compact"), st.just(0), st.just([])),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, query=st.lists(st.sampled_from([*WORDS[:6]]), min_size=1, max_size=4), k=st.integers(1, 6))
def test_scores_equal_reference_after_any_writes(ops: list[tuple[str, int, list[str]]], query: list[str], k: int) -> None:
    db = DatabaseFactory().create(backend="memory")
    live: dict[str, list[str]] = {}
    for op, i, words in ops:
        rid = f"d{i:02d}"
        if op == "put":
            db.upsert(Record({"body": " ".join(words), "n": i}, id=rid))
            live[rid] = list(words)
        elif op == "delete":
            db.delete(rid)
            live.pop(rid, None)
        else:
            db.compact()
    if not any(live.values()):
        return
    got = hits(db.text_search(" ".join(query), k=k, text_fields="body"))
    assert got == reference(live, query, k)  # the same floats, the same order
    # a filter applies before ranking: exactly min(k, matches) come back
    even = {rid for rid in live if int(rid[1:]) % 2 == 0}
    filtered = hits(db.text_search(" ".join(query), k=k, text_fields=["body"], filter={"n": {"$in": [int(r[1:]) for r in even]}}))
    assert filtered == reference(live, query, k, allowed=even)
    db.close()


def test_scores_match_bm25s_after_deletes_updates_and_compaction(open_at: Callable[..., Any]) -> None:
    texts = corpus(1, 120)
    db = open_at(text_search_fields=["body"])
    db.create_batch([Record({"body": t, "n": i}, id=rid) for i, (rid, t) in enumerate(texts.items())])
    for rid in list(texts)[::7]:
        db.delete(rid)
        del texts[rid]
    for i, rid in enumerate(list(texts)[::5]):
        texts[rid] = f"{WORDS[i % 8]} honey fig"
        db.update(rid, Record({"body": texts[rid], "n": -1}))
    db.create(Record({"title": "no body at all"}, id="zz-empty"))  # a live record without the field
    tokens = {rid: ANALYZER.analyze(t) for rid, t in texts.items()}
    tokens["zz-empty"] = []

    def check(store: Any) -> None:
        for q in ("honey", "apple banana", "fig fig grape", "elder date cherry"):
            terms = ANALYZER.analyze(q)
            got = hits(store.text_search(q, k=10, text_fields="body"))
            assert got == reference(tokens, terms, 10)
            theirs = bm25s_scores(tokens, terms)
            for rid, score in got:
                assert score == pytest.approx(theirs[rid], rel=2e-6)

    check(db)
    db.compact()
    check(db)
    if open_at.backend != "memory":  # type: ignore[attr-defined]
        check(open_at())  # reopened: the stored postings, the stored analyzer


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.integers(1, 8), filtered=st.booleans())
def test_early_stopping_keeps_the_exact_top_k(seed: int, k: int, filtered: bool) -> None:
    """Queries mixing rare and common terms stop early (MaxScore), queries of rare terms only are
    summed sparsely; the answer stays exactly the reference's, with and without a filter, after
    deletes."""
    rng = np.random.default_rng(seed)
    common, rare = ["the", "and", "of"], [f"rare{i}" for i in range(5)]
    docs: dict[str, list[str]] = {}
    for i in range(600):
        words = list(rng.choice(common, size=int(rng.integers(1, 6))))
        if rng.random() < 0.15:
            words += list(rng.choice(rare, size=int(rng.integers(1, 3))))
        docs[f"d{i:04d}"] = [str(w) for w in words]
    db = DatabaseFactory().create(backend="memory")
    db.create_batch([Record({"body": " ".join(t), "n": i % 3}, id=rid) for i, (rid, t) in enumerate(docs.items())])
    for rid in list(docs)[::17]:
        db.delete(rid)
        del docs[rid]
    allowed = {rid for i, rid in enumerate(docs) if int(rid[1:]) % 3 == 0} if filtered else None
    flt = {"n": 0} if filtered else None
    for q in (["rare1", "the", "and"], ["rare2", "rare3", "of", "the"], ["and", "rare4", "rare4"], ["rare0"], ["rare1", "rare2", "rare1"]):
        got = hits(db.text_search(" ".join(q), k=k, text_fields="body", filter=flt))
        assert got == reference(docs, q, k, allowed)
    assert db.core.table._bm25_cache[("body",)].get("pruned", 0) > 0  # the early stop happened
    db.close()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(1, 199), max_size=5, unique=True),
    k=st.integers(1, 9),
    filtered=st.booleans(),
)
def test_parts_scored_with_merged_statistics_equal_one_corpus(seed: int, cuts: list[int], k: int, filtered: bool) -> None:
    """A table cut in parts (as the Dask executor does): each part's :func:`part_stats` merged by
    :func:`merge_stats`, each part's ``bm25_top`` with those statistics, the parts' top ``k``
    merged by score and id: the rows and scores (``==``) of one search over the whole table,
    with two fields searched as one document, dead rows and a filter."""
    rng = np.random.default_rng(seed)
    words = ["the", "and", "of", "apple", "fig", "rare1", "rare2", "rare3"]
    p = np.array([30, 20, 15, 8, 6, 1, 1, 1], dtype=np.float64)
    n = 200

    def field_tokens() -> list[list[str]]:
        return [[str(w) for w in rng.choice(words, size=int(rng.integers(0, 7)), p=p / p.sum())] for _ in range(n)]

    title, body = field_tokens(), field_tokens()
    live = rng.random(n) > 0.15
    mask = (live & (rng.random(n) > 0.5)) if filtered else None
    ids = [f"d{i:04d}" for i in range(n)]

    def id_of(rows: Any) -> list[str]:
        return [ids[r] for r in np.asarray(rows).tolist()]

    def index_of(tokens: list[list[str]], a: int, b: int) -> TextIndex:
        ix = TextIndex()
        ix.add(build_postings(tokens[a:b], 0))
        return ix

    queries = [["rare1", "the", "and"], ["apple", "apple", "fig"], ["rare2"], ["of", "rare3", "zzz"], ["zzz"]]
    whole = bm25_top([index_of(title, 0, n), index_of(body, 0, n)], queries, live, mask, k, K1, B, id_of)
    bounds = [0, *sorted(cuts), n]
    parts = [(a, b, [index_of(title, a, b), index_of(body, a, b)]) for a, b in itertools.pairwise(bounds)]
    terms = sorted({t for q in queries for t in q})
    corpus = merge_stats([part_stats(ixs, terms, live[a:b]) for a, b, ixs in parts], K1, B)
    per_part = [
        bm25_top(ixs, queries, live[a:b], None if mask is None else mask[a:b], k, K1, B,
                 lambda rows, a=a: id_of(np.asarray(rows) + a), corpus=corpus)
        for a, b, ixs in parts
    ]
    for qi, (rows, scores) in enumerate(whole):
        merged = sorted(
            ((s, int(r) + a) for (a, _, _), top in zip(parts, per_part) for r, s in zip(*top[qi])),
            key=lambda hit: (-hit[0], ids[hit[1]]),
        )[:k]
        assert [r for _, r in merged] == rows.tolist()
        assert [s for s, _ in merged] == scores.tolist()


def test_several_fields_are_one_document(open_at: Callable[..., Any]) -> None:
    db = open_at()
    rows = {"a": ("apple pie", "sweet apple"), "b": ("banana", "apple split"), "c": ("cherry", None)}
    db.create_batch(
        [Record({"title": t, **({"body": b} if b else {})}, id=rid) for rid, (t, b) in rows.items()]
    )
    tokens = {rid: ANALYZER.analyze(" ".join(x for x in pair if x)) for rid, pair in rows.items()}
    got = hits(db.text_search("apple", text_fields=["title", "body"]))
    assert got == reference(tokens, ["apple"], 10)
    # default fields: every field holding text
    assert hits(db.text_search("apple")) == got


@pytest.mark.parametrize("at_commit", [False, True], ids=["first-search", "commit"])
def test_field_paths_resolve_alike_however_rows_are_indexed(open_at: Callable[..., Any], at_commit: bool) -> None:
    """A text field is a path resolved as filters resolve it (``id`` is the record's id,
    ``metadata.x`` its metadata), whether the rows were indexed at commit
    (``text_search_fields``) or on the field's first search, also for a record without data."""
    fields = ["metadata.title", "id"]
    db = open_at(**({"text_search_fields": fields} if at_commit else {}))
    db.create_batch(
        [
            Record({}, metadata={"title": "alpha beta"}, id="only-metadata"),
            Record({"body": "gamma"}, metadata={"title": "alpha"}, id="with-data"),
            Record({"body": "delta", "id": "data-id"}, id="record-id"),
        ]
    )
    assert {h.record.id for h in db.text_search("alpha", text_fields="metadata.title")} == {
        "only-metadata",
        "with-data",
    }
    assert [h.record.id for h in db.text_search("metadata", text_fields="id")] == ["only-metadata"]
    assert [h.record.id for h in db.text_search("record", text_fields="id")] == ["record-id"]
    assert db.text_search("data", text_fields="id") and all(
        h.record.id != "record-id" for h in db.text_search("data", text_fields="id")
    )


# --- persisted postings ----------------------------------------------------------------------------


class CountingAnalyzer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def analyze(self, text: str) -> list[str]:
        self.calls.append(text)
        return ANALYZER.analyze(text)


class CountingPlugin:
    def __init__(self) -> None:
        self.made: list[CountingAnalyzer] = []

    @hookimpl
    def dkv_register_analyzers(self) -> list[AnalyzerSpec]:
        def make(**options: Any) -> CountingAnalyzer:
            self.made.append(CountingAnalyzer())
            return self.made[-1]

        return [AnalyzerSpec("counting", make, "the standard analyzer, counting its calls")]


def test_stored_postings_are_read_not_rebuilt(reopen_at: Callable[..., Any]) -> None:
    plugin = CountingPlugin()
    kw = {"factory_kwargs": {"plugins": [plugin]}}
    db = reopen_at(analyzer="counting", text_search_fields="body", **kw)
    texts = corpus(2, 50)
    db.create_batch([Record({"body": t}, id=rid) for rid, t in texts.items()])
    for rid, t in list(texts.items())[:5]:  # small commits: postings inline in the manifests
        db.create(Record({"body": t + " honey"}, id=rid + "x"))
    written = len(plugin.made[-1].calls)
    assert written == 55  # indexed once, at commit
    first = hits(db.text_search("honey date", k=5))
    assert len(plugin.made[-1].calls) == written + 1  # the query only
    again = reopen_at(**kw)  # the analyzer comes from the table
    assert hits(again.text_search("honey date", k=5)) == first
    assert again.config["analyzer"] == "counting" and again.config["text_search_fields"] == ["body"]
    assert plugin.made[-1].calls == ["honey date"]  # nothing re-analyzed: the stored postings
    again.verify()  # every object of every segment, the postings included, is there and intact


def test_text_objects_are_in_the_table_format(tmp_path: Path) -> None:
    path = tmp_path / "t"
    db = DatabaseFactory().create(backend="file", path=str(path), text_search_fields="body", inline_bytes=0)
    db.create_batch([Record({"body": "alpha beta"}, id="a"), Record({"body": "beta"}, id="b")])
    manifests = sorted((path / "manifests").glob("*.json"))
    manifest = json.loads(manifests[-1].read_bytes())
    assert manifest["format"] == 5 and manifest["schema"]["text"]["fields"] == ["body"]
    entry = manifest["segments"][-1]
    assert set(entry["text"]) == {"body"} and {"t0.terms.json", "t0.post.npy"} <= set(entry["checksums"]["objects"])
    db.close()
    post = next((path / "segments").glob("*.t0.post.npy"))
    raw = bytearray(post.read_bytes())
    raw[-40] ^= 0xFF  # damage the postings: the checksum catches it on first use
    post.write_bytes(bytes(raw))
    again = DatabaseFactory().create(backend="file", path=str(path))
    assert again.count() == 2  # the rows are fine
    with pytest.raises(StorageError):
        again.text_search("beta")
    again.close()


def test_merges_and_compaction_keep_scores(tmp_path: Path) -> None:
    db = DatabaseFactory().create(backend="file", path=str(tmp_path / "m"), text_search_fields="body", fsync=False)
    texts = corpus(3, 60)
    for rid, t in texts.items():  # one commit each: size-tiered merges happen on the way
        db.create(Record({"body": t}, id=rid))
    tokens = {rid: ANALYZER.analyze(t) for rid, t in texts.items()}
    assert hits(db.text_search("grape honey", k=8)) == reference(tokens, ["grape", "honey"], 8)
    reopened = DatabaseFactory().create(backend="file", path=str(tmp_path / "m"))
    assert hits(reopened.text_search("grape honey", k=8)) == reference(tokens, ["grape", "honey"], 8)
    db.close()
    reopened.close()


def test_merges_and_compaction_reuse_the_postings(tmp_path: Path) -> None:
    """A size-tiered merge or a compaction stores the postings the table holds for the rows it
    rewrites (selected and merged), not postings of their text analyzed again; scores stay."""
    plugin = CountingPlugin()
    db = DatabaseFactory(plugins=[plugin]).create(
        backend="file", path=str(tmp_path / "m"), text_search_fields="body", analyzer="counting", fsync=False
    )
    texts = corpus(5, 60)
    for rid, t in texts.items():  # one commit each: size-tiered merges happen on the way
        db.create(Record({"body": t}, id=rid))
    analyzer = plugin.made[-1]
    assert len(analyzer.calls) == 60  # each text once, at its own commit
    assert len(db.storage.state.segments) < 60  # merged on the way
    for rid in list(texts)[::4]:
        db.delete(rid)
        del texts[rid]
    db.compact()
    assert len(analyzer.calls) == 60  # neither the merges nor the compaction analyzed again
    tokens = {rid: ANALYZER.analyze(t) for rid, t in texts.items()}
    assert hits(db.text_search("grape honey", k=8)) == reference(tokens, ["grape", "honey"], 8)
    reopened = DatabaseFactory(plugins=[plugin]).create(backend="file", path=str(tmp_path / "m"))
    assert hits(reopened.text_search("grape honey apple", k=8)) == reference(tokens, ["grape", "honey", "apple"], 8)
    db.close()
    reopened.close()


# --- analyzers --------------------------------------------------------------------------------------


def test_standard_analyzer_options() -> None:
    assert StandardAnalyzer().analyze("Ünïcode WORDS, naïve café_2!") == ["ünïcode", "words", "naïve", "café_2"]
    assert StandardAnalyzer(stopwords="english").analyze("the cat and the hat") == ["cat", "hat"]
    assert StandardAnalyzer(stopwords=["Cat"]).analyze("the cat") == ["the"]
    assert StandardAnalyzer(stemmer="english").analyze("running runs ran") == ["run", "run", "ran"]
    assert StandardAnalyzer(min_length=3).analyze("a an the cats") == ["the", "cats"]
    for bad in ({"stopwords": "klingon"}, {"stemmer": "klingon"}, {"min_length": 0}, {"lowercase": "yes"}):
        with pytest.raises(ConfigError):
            StandardAnalyzer(**bad)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x2FF)))
def test_standard_analyzer_is_unicode_words(text: str) -> None:
    """The ASCII fast path and the regex agree: the terms are the \\w+ runs, casefolded."""
    import re

    assert StandardAnalyzer().analyze(text) == re.findall(r"\w+", text.casefold())
    assert StandardAnalyzer(lowercase=False).analyze(text) == re.findall(r"\w+", text)


def test_stemming_store_and_analyzer_checked_on_reopen(reopen_at: Callable[..., Any]) -> None:
    db = reopen_at(analyzer_options={"stemmer": "english", "stopwords": "english"}, text_search_fields="body")
    db.create_batch([Record({"body": "runners running fast"}, id="a"), Record({"body": "the slow walk"}, id="b")])
    assert [h.id for h in db.text_search("run")] == ["a"]
    assert db.text_search("the") == []  # a stop word: no terms, no match
    reopened = reopen_at()
    assert [h.id for h in reopened.text_search("runs")] == ["a"]
    assert reopened.config["analyzer_options"] == {"stemmer": "english", "stopwords": "english"}
    with pytest.raises(SchemaMismatchError, match="analyzer='whitespace'"):
        reopen_at(analyzer="whitespace").count()
    with pytest.raises(SchemaMismatchError, match="analyzer_options"):
        reopen_at(analyzer_options={"stemmer": "english"}).count()


def test_unknown_analyzer_and_bad_options_fail_at_open() -> None:
    with pytest.raises(ConfigError, match=r"unknown analyzer 'nope'.*standard"):
        DatabaseFactory().create(backend="memory", analyzer="nope")
    with pytest.raises(ConfigError, match="klingon"):
        DatabaseFactory().create(backend="memory", analyzer_options={"stemmer": "klingon"})
    with pytest.raises(ConfigError, match="rejected its options"):
        DatabaseFactory().create(backend="memory", analyzer_options={"colour": "red"})


def test_an_analyzer_plugin_is_used_and_listed() -> None:
    plugin = CountingPlugin()
    db = DatabaseFactory(plugins=[plugin]).create(backend="memory", analyzer="counting")
    db.create(Record({"body": "plugged in"}, id="p"))
    assert [h.id for h in db.text_search("plugged")] == ["p"]
    assert plugin.made and "plugged" in plugin.made[-1].calls


# --- the API: every backend, sync and async ----------------------------------------------------------


def test_text_search_everywhere(open_at: Callable[..., Any]) -> None:
    db = open_at()
    db.create_batch(
        [
            Record({"body": "Error code E1234 in the parser", "kind": "bug"}, id="a"),
            Record({"body": "the parser is fast", "kind": "doc"}, id="b"),
            Record({"body": "unrelated words", "kind": "doc"}, id="c"),
        ]
    )
    found = db.text_search("e1234 parser", k=5, text_fields="body")
    assert [h.id for h in found] == ["a", "b"]
    assert all(isinstance(h, TextSearchResult) and h.text_fields == ("body",) for h in found)
    assert found[0].score > found[1].score and sorted(found, reverse=True) == found
    assert found[0].to_dict()["data"]["kind"] == "bug"
    assert [h.id for h in db.text_search("parser", filter={"kind": "doc"}, text_fields="body")] == ["b"]
    assert [h.id for h in db.text_search("parser", k=1, text_fields="body")] == ["b"]  # shorter document
    assert db.text_search("parser", text_fields="body", score_threshold=99) == []
    batch = db.text_search_batch(["parser", "unrelated", "zzz"], k=2, text_fields="body")
    assert [[h.id for h in b] for b in batch] == [["b", "a"], ["c"], []]
    db.delete("b")
    assert [h.id for h in db.text_search("parser", text_fields="body")] == ["a"]


def test_empty_store_and_no_terms(open_at: Callable[..., Any]) -> None:
    db = open_at()
    assert db.text_search("anything") == []
    db.create(Record({"body": "words"}, id="a"))
    assert db.text_search("!!! ???", text_fields="body") == []  # no terms: nothing matches


# --- hybrid search -----------------------------------------------------------------------------------


def _hybrid_store(open_at: Callable[..., Any]) -> Any:
    db = open_at(text_field="body", embedder="hashing", vector_dimensions=64)
    db.create_batch(
        [
            Record({"body": "invoice number INV-2291 overdue", "kind": "billing"}, id="a"),
            Record({"body": "payment reminders for overdue invoices", "kind": "billing"}, id="b"),
            Record({"body": "a recipe for apple pie", "kind": "food"}, id="c"),
            Record({"body": "overdue library books", "kind": "misc"}, id="d"),
        ]
    )
    return db


def test_hybrid_search_fuses_both_rankings(open_at: Callable[..., Any]) -> None:
    db = _hybrid_store(open_at)
    got = db.hybrid_search("overdue invoice", k=3)  # the query embedded with the store's embedder
    assert len(got) == 3 and all(isinstance(h, HybridSearchResult) for h in got)
    text = db.text_search("overdue invoice", k=10)
    vector = db.vector_search("overdue invoice", k=10)
    assert [(h.id, h.combined_score) for h in got] == [
        (h.id, h.combined_score) for h in fuse(text, vector, HybridSearchConfig(), 3)
    ]
    top = got[0]
    assert top.text_rank is not None and top.vector_rank is not None
    assert top.combined_score == pytest.approx(0.5 / (60 + top.text_rank) + 0.5 / (60 + top.vector_rank))
    assert top.metadata["fusion_strategy"] == "rrf" and sorted(got) == got
    # an explicit vector, a filter on both sides: exactly min(k, matches)
    q = db.get("c").fields["embedding"].value
    only = db.hybrid_search("overdue", q, k=5, filter={"kind": "billing"})
    assert sorted(h.id for h in only) == ["a", "b"]
    weighted = db.hybrid_search(
        "overdue", k=4, config=HybridSearchConfig(text_weight=1.0, vector_weight=0.0, fusion_strategy="weighted_sum")
    )
    assert [h.id for h in weighted][:3] == [h.id for h in db.text_search("overdue", k=3)]
    assert weighted[0].combined_score == 1.0
    native = db.hybrid_search("overdue", k=4, config=HybridSearchConfig(fusion_strategy=FusionStrategy.NATIVE))
    assert [h.id for h in native] == [h.id for h in db.hybrid_search("overdue", k=4)]


def test_fusion_against_dataknobs_formulas() -> None:
    recs = {rid: Record({"x": rid}, id=rid) for rid in "abcd"}
    text = [TextSearchResult(recs["a"], 3.0), TextSearchResult(recs["b"], 1.0), TextSearchResult(recs["c"], 0.5)]
    from dk_vector_plugins import VectorSearchResult

    vector = [VectorSearchResult(recs["c"], 0.9), VectorSearchResult(recs["d"], 0.7), VectorSearchResult(recs["a"], 0.1)]
    rrf = {h.id: h.combined_score for h in fuse(text, vector, HybridSearchConfig(rrf_k=10), 4)}
    assert rrf == pytest.approx({"a": 0.5 / 11 + 0.5 / 13, "b": 0.5 / 12, "c": 0.5 / 13 + 0.5 / 11, "d": 0.5 / 12})
    ws = fuse(text, vector, HybridSearchConfig(text_weight=0.6, vector_weight=0.2, fusion_strategy="weighted_sum"), 4)
    want = {
        "a": 0.75 * 1.0 + 0.25 * 0.0,
        "b": 0.75 * (0.5 / 2.5),
        "c": 0.75 * 0.0 + 0.25 * 1.0,
        "d": 0.25 * (0.6 / 0.8),
    }
    assert {h.id: h.combined_score for h in ws} == pytest.approx(want)
    assert [h.id for h in ws] == sorted(want, key=lambda r: -want[r])


# --- hooks ------------------------------------------------------------------------------------------


class ExternalEngine:
    """Routes text search elsewhere (here: every record, score 1), as an Elasticsearch plugin would."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    @hookimpl(tryfirst=True)
    def dkv_text_search(self, db: Any, request: Any) -> Any:
        self.requests.append(request)
        return [[TextSearchResult(r, 1.0, request.text_fields) for r in db.read_batch(["b"]) if r] for _ in request.queries]


def test_a_plugin_answers_text_search_and_hybrid_uses_it() -> None:
    engine = ExternalEngine()
    db = DatabaseFactory(plugins=[engine]).create(backend="memory")
    vec = {"a": np.array([1.0, 0.0], dtype=np.float32), "b": np.array([0.0, 1.0], dtype=np.float32)}
    db.create_batch([Record({"body": "alpha", "embedding": vec["a"]}, id="a"), Record({"body": "beta", "embedding": vec["b"]}, id="b")])
    assert [h.id for h in db.text_search("alpha")] == ["b"]
    request = engine.requests[-1]
    assert request.queries == ("alpha",) and request.terms == (("alpha",),) and request.text_fields == ("body",)
    fused = {h.id: h for h in db.hybrid_search("alpha", [1.0, 0.0], k=2)}
    assert fused["b"].text_rank == 1 and fused["a"].text_rank is None and fused["a"].vector_rank == 1


class ExternalVectors:
    """Answers vector search itself (every record but ``a``, score 0.5), as a remote index would."""

    @hookimpl(tryfirst=True)
    def dkv_vector_search(self, db: Any, request: Any) -> Any:
        from dk_vector_plugins import VectorSearchResult

        hits = [VectorSearchResult(r, 0.5) for r in db.all() if r.id != "a"]
        return [hits for _ in range(len(request.queries))]


def test_a_plugin_answers_vector_search_and_hybrid_uses_it() -> None:
    db = DatabaseFactory(plugins=[ExternalVectors()]).create(backend="memory")
    vec = {"a": np.array([1.0, 0.0], dtype=np.float32), "b": np.array([0.0, 1.0], dtype=np.float32)}
    db.create_batch([Record({"body": "alpha", "embedding": vec["a"]}, id="a"), Record({"body": "beta", "embedding": vec["b"]}, id="b")])
    fused = {h.id: h for h in db.hybrid_search("alpha", [1.0, 0.0], k=2)}
    assert fused["a"].text_rank == 1 and fused["a"].vector_rank is None  # the built-in text side
    assert fused["b"].vector_rank == 1 and fused["b"].vector_score == 0.5  # the plugin's vector side


def test_hybrid_search_without_plugins_builds_only_the_fused_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in answer runs both sides in one pass and builds the records of the ``k``
    fused hits only (each side ranks ``3k`` rows)."""
    from dk_vector_plugins.memtable import RecordTable

    db = DatabaseFactory().create(backend="memory")
    rng = np.random.default_rng(3)
    db.create_batch(
        [Record({"body": f"word{i % 7} common", "embedding": rng.standard_normal(4).astype(np.float32)}, id=f"r{i:02d}") for i in range(60)]
    )
    built: list[int] = []
    records = RecordTable.records

    def counting(self: RecordTable, rows: Sequence[int], fields: Any = None) -> list[Record]:
        built.append(len(rows))
        return records(self, rows, fields)

    monkeypatch.setattr(RecordTable, "records", counting)
    got = db.hybrid_search("word3 common", [1.0, 0.0, 0.0, 0.0], k=5)
    assert built == [5] and len(got) == 5
    built.clear()
    text = db.text_search("word3 common", k=15)
    vector = db.vector_search([1.0, 0.0, 0.0, 0.0], k=15)
    assert [(h.id, h.combined_score, h.text_rank, h.vector_rank) for h in got] == [
        (h.id, h.combined_score, h.text_rank, h.vector_rank) for h in fuse(text, vector, HybridSearchConfig(), 5)
    ]
    assert all(h.record.fields["embedding"].value.shape == (4,) for h in got)


def test_hybrid_search_with_the_defaults_blocked_is_a_plugin_error() -> None:
    db = DatabaseFactory(block=["defaults"]).create(backend="memory")
    db.create(Record({"body": "alpha", "embedding": np.array([1.0, 0.0], dtype=np.float32)}, id="a"))
    with pytest.raises(PluginError, match="no plugin answered dkv_text_search"):
        db.hybrid_search("alpha", [1.0, 0.0])


def test_a_plugin_answering_the_wrong_shape_is_named() -> None:
    class Broken:
        @hookimpl(tryfirst=True)
        def dkv_text_search(self, db: Any, request: Any) -> Any:
            return ["not a list of lists"]

    db = DatabaseFactory(plugins=[Broken()]).create(backend="memory")
    db.create(Record({"body": "x"}, id="a"))
    with pytest.raises(PluginError, match=r"dkv_text_search.*TextSearchResult"):
        db.text_search("x")


# --- bad input: a DkvError naming the value, nothing changes ---------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda db: db.text_search(""), "must not be empty"),
        (lambda db: db.text_search("   "), "must not be empty"),
        (lambda db: db.text_search(None), "must be a string"),
        (lambda db: db.text_search("x", text_fields="nope"), "'nope'.*body"),
        (lambda db: db.text_search("x", text_fields=[]), "text_fields"),
        (lambda db: db.text_search("x", k=0), "k must be > 0"),
        (lambda db: db.text_search("x", colour=1), "colour"),
        (lambda db: db.text_search_batch([], k=1), "non-empty list"),
        (lambda db: db.hybrid_search("x", [1.0, 0.0], config=HybridSearchConfig(fusion_strategy="best")), "'best'"),
        (lambda db: db.hybrid_search("", [1.0, 0.0]), "must not be empty"),
    ],
)
def test_bad_input_is_refused(call: Callable[[Any], Any], match: str) -> None:
    db = DatabaseFactory().create(backend="memory")
    db.create(Record({"body": "words here", "embedding": np.array([1.0, 0.0], dtype=np.float32)}, id="a"))
    with pytest.raises(DkvError, match=match):
        call(db)
    assert db.count() == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"text_weight": -0.1}, "text_weight.*-0.1"),
        ({"vector_weight": 2}, "vector_weight.*2"),
        ({"rrf_k": 0}, "rrf_k.*0"),
        ({"fusion_strategy": "magic"}, "'magic'"),
        ({"text_fields": []}, "text_fields"),
    ],
)
def test_bad_hybrid_config(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidRequestError, match=match):
        HybridSearchConfig(**kwargs)
    with pytest.raises(ValueError):  # dataknobs-data code catches ValueError
        HybridSearchConfig(**kwargs)


def test_bulk_writes_store_postings_in_their_commits(tmp_path: Path) -> None:
    path = tmp_path / "bulk"
    db = DatabaseFactory().create(backend="file", path=str(path), text_search_fields=["title"], inline_bytes=0)
    vectors = np.eye(4, dtype=np.float32)
    db.add_vectors(vectors, ids=list("abcd"), metadata=[{"title": f"vector {w}"} for w in ("one", "two", "three", "four")])
    db.bulk_embed_and_store(
        [Record({"title": "embedded five", "t": "five"}, id="e"), Record({"title": "embedded six", "t": "six"}, id="f")],
        "t",
        embedding_fn="hashing",
        batch_size=1,
    )
    manifest = json.loads(sorted((path / "manifests").glob("*.json"))[-1].read_bytes())
    with_text = [s for s in manifest["segments"] if "text" in s]
    assert len(with_text) == len(manifest["segments"]) >= 3  # every commit: one per embed batch
    assert [h.id for h in db.text_search("vector three")] == ["c", "a", "b", "d"]
    assert [h.id for h in db.text_search("embedded", k=1)] == ["e"]
    db.close()


def test_dataknobs_hybrid_hooks(open_at: Callable[..., Any]) -> None:
    """dataknobs-data's vector mixin asks a store for its text side and whether it fuses natively;
    ours answer from BM25 text search, in the store's lane (a coroutine on an async store)."""
    db = open_at()
    db.create_batch([Record({"content": "hello world"}, id="a"), Record({"content": "goodbye"}, id="b")])
    pairs = db._text_search_for_hybrid("hello", ["content"], k=5)
    assert [(r.id, s) for r, s in pairs] == hits(db.text_search("hello", text_fields="content", k=5))
    assert db._text_search_for_hybrid("hello", None, 5, {"content": "goodbye"}) == []
    assert db._supports_native_hybrid() is True


@pytest.mark.parametrize("metric", ["cosine", "dot_product"])
def test_a_text_query_without_words_in_vector_and_hybrid_search(metric: str) -> None:
    # vector_search("") and vector_search("!!!") said "a zero query vector has no direction";
    # hybrid_search("!!!") raised that too, though text_search("!!!") matches nothing
    db = DatabaseFactory().create(backend="memory", text_field="body", vector_metric=metric)
    db.create_batch([Record({"body": "invoice overdue"}, id="a"), Record({"body": "password reset"}, id="b")])
    for blank in ("", "   "):
        with pytest.raises(InvalidRequestError, match=f"a text query must not be empty, got {blank!r}"):
            db.vector_search(blank, k=3)
        with pytest.raises(InvalidRequestError, match=f"a text query must not be empty, got {blank!r}"):
            db.vector_search_batch(["invoice", blank], k=3)
    assert db.text_search("!!!") == []
    assert db.hybrid_search("invoice", k=3)[0].record.id == "a"
    if metric == "cosine":  # a zero vector gives cosine no direction: the text is named
        for call in (lambda: db.vector_search("!!!", k=3), lambda: db.vector_search_batch(["invoice", "!!!"], k=3)):
            with pytest.raises(InvalidVectorError, match="the query text '!!!' embeds to a zero vector"):
                call()
        assert db.hybrid_search("!!!", k=3) == []  # the text side alone: no terms, no hits
        with pytest.raises(ConfigError, match="unknown vector metric 'bogus'"):
            db.hybrid_search("!!!", k=3, metric="bogus")  # still checked
        with pytest.raises(InvalidVectorError, match="a zero query vector has no direction"):
            db.hybrid_search("invoice", np.zeros(db.vector_dimension("embedding"), dtype=np.float32))
        dim = db.vector_dimension("embedding")
        with pytest.raises(DimensionMismatchError, match=r"query vectors\[1\] has 3 dimensions"):
            db.vector_search_batch([[1.0] * dim, [1.0] * 3], k=1)  # vectors given: their own errors
        with pytest.raises(InvalidVectorError, match="must be numeric"):
            db.vector_search(["a", 1.0], k=1)
    else:  # other metrics rank by a zero vector as before (every score 0)
        assert len(db.vector_search("!!!", k=3)) == 2
        assert [len(hits) for hits in db.vector_search_batch(["invoice", "!!!"], k=3)] == [2, 2]


def test_a_searched_field_without_text_is_judged_the_same_whatever_the_query() -> None:
    # a name in text_search_fields that no record holds text in made a search raise only when
    # the query matched nothing; a list of text_fields with an unknown name was accepted
    records = [Record({"body": "invoice overdue"}, id="a"), Record({"body": "password reset"}, id="b")]
    db = DatabaseFactory().create(backend="memory", text_search_fields=["title", "body"])
    db.create_batch(records)
    for query, want in (("invoice", ["a"]), ("zzzz", []), ("the", []), ("!!!", [])):
        assert [h.id for h in db.text_search(query)] == want  # title: configured, empty for now
    for query in ("invoice", "zzzz"):
        # a field without text among others is passed over (dataknobs-data's text_fields lists
        # name optional fields); alone, it is refused
        want = ["a"] if query == "invoice" else []
        assert [h.id for h in db.text_search(query, text_fields=["body", "nosuch"])] == want
        with pytest.raises(InvalidRequestError, match="no record holds text in field 'nosuch'; the fields holding text: body"):
            db.text_search(query, text_fields="nosuch")
        with pytest.raises(InvalidRequestError, match="no record holds text in field 'nosuch'"):
            db.text_search(query, text_fields=["nosuch", "other"])
    only = DatabaseFactory().create(backend="memory", text_search_fields=["title"])
    only.create_batch(records)
    for query in ("invoice", "zzzz"):  # no searched field holds text: refused, whatever the query
        with pytest.raises(InvalidRequestError, match="no record holds text in field 'title'"):
            only.text_search(query)
