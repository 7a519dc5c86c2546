"""dataknobs-data's helper names and store methods: ``vector_ops`` (``VectorConfig``,
``compute_distance``, ...), ``embedding_fn.call_embedding_fn``, ``list_all`` / ``_count_all``,
and ``bulk_embed_and_store(embedder=...)`` with its source-text metadata."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from dk_vector_plugins import (
    AsyncDatabaseFactory,
    DatabaseFactory,
    DistanceMetric,
    InvalidRequestError,
    Record,
)
from dk_vector_plugins.backends.memory import AsyncMemoryDatabase, MemoryDatabase
from dk_vector_plugins.content import (
    CONTENT_HASH_KEY,
    FIELD_SEPARATOR_KEY,
    SOURCE_FIELDS_KEY,
    compute_content_hash,
)
from dk_vector_plugins.embedding_fn import call_embedding_fn, call_embedding_fn_batch, is_async_callable
from dk_vector_plugins.testing import DeterministicEmbedder
from dk_vector_plugins.vector_ops import (
    VectorConfig,
    VectorIndexConfig,
    VectorMetadata,
    batch_compute_distances,
    compute_distance,
    compute_similarity,
    normalize_vector,
    validate_vector_dimensions,
)

# -- vector_ops -------------------------------------------------------------------------------


def test_normalize_vector() -> None:
    assert np.allclose(normalize_vector(np.array([3.0, 4.0])), [0.6, 0.8])
    zero = np.zeros(2)
    assert normalize_vector(zero) is not None and np.allclose(normalize_vector(zero), zero)


@pytest.mark.parametrize(
    ("metric", "distance", "similarity"),
    [
        (DistanceMetric.COSINE, 1.0, 0.0),
        ("cosine", 1.0, 0.0),
        (DistanceMetric.EUCLIDEAN, np.sqrt(2), 1 / (1 + np.sqrt(2))),
        (DistanceMetric.L2, np.sqrt(2), 1 / (1 + np.sqrt(2))),
        ("l2", np.sqrt(2), 1 / (1 + np.sqrt(2))),
        (DistanceMetric.L1, 2.0, 1 / 3),
        ("manhattan", 2.0, 1 / 3),
        (DistanceMetric.DOT_PRODUCT, 0.0, 0.0),
        (DistanceMetric.INNER_PRODUCT, 0.0, 0.0),
    ],
)
def test_distance_and_similarity(metric: Any, distance: float, similarity: float) -> None:
    a, b = [1.0, 0.0], [0.0, 1.0]
    assert compute_distance(a, b, metric) == pytest.approx(distance)
    assert compute_similarity(a, b, metric) == pytest.approx(similarity)
    batch = batch_compute_distances(a, np.array([b, a]), metric)
    assert batch.shape == (2,) and batch[0] == pytest.approx(distance)
    assert batch[1] == pytest.approx(compute_distance(a, a, metric))


def test_distance_edge_cases() -> None:
    assert compute_distance([0.0, 0.0], [1.0, 0.0], "cosine") == 1.0
    assert compute_similarity([0.0, 0.0], [1.0, 0.0], "cosine") == 0.0
    assert compute_distance([1.0, 2.0], [3.0, 4.0], DistanceMetric.DOT_PRODUCT) == -11.0
    assert batch_compute_distances([1.0, 0.0], [0.0, 0.0], "cosine").tolist() == [1.0]
    with pytest.raises(ValueError, match="Unknown distance metric"):
        compute_distance([1.0], [1.0], "hamming")


def test_validate_vector_dimensions() -> None:
    out = validate_vector_dimensions([0.1, 0.2, 0.3], 3)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and len(out) == 3
    assert validate_vector_dimensions(np.ones((2, 4)), 4).shape == (2, 4)
    with pytest.raises(ValueError, match="dimension mismatch for field 'test': expected 3, got 2"):
        validate_vector_dimensions([0.1, 0.2], 3, field_name="test")


def test_vector_config_and_index_config() -> None:
    VectorConfig(768, DistanceMetric.COSINE, True, "text", "bert").validate()
    with pytest.raises(ValueError, match="must be positive"):
        VectorConfig(dimensions=0).validate()
    with pytest.raises(ValueError, match="exceeds maximum"):
        VectorConfig(dimensions=100_000).validate()
    auto = VectorIndexConfig()
    assert auto.get_optimal_params(1000) == {"type": "flat"}
    assert auto.get_optimal_params(200_000) == {"type": "ivfflat", "lists": 200, "probes": 10}
    assert auto.get_optimal_params(10_000_000) == {
        "type": "hnsw",
        "m": 16,
        "ef_construction": 200,
        "ef_search": 64,
    }
    assert VectorIndexConfig("ivfflat", quantization="scalar").get_optimal_params(5) == {
        "type": "ivfflat",
        "lists": 100,
        "probes": 10,
        "quantization": "scalar",
    }


def test_vector_metadata_round_trip() -> None:
    meta = VectorMetadata(
        768, "text", "bert", "1.0", "2024-01-01T00:00:00Z", index_type="hnsw", metric="cosine"
    )
    data = meta.to_dict()
    assert data["model"] == {"name": "bert", "version": "1.0"} and data["dimensions"] == 768
    assert VectorMetadata.from_dict(data) == meta
    assert VectorMetadata(3).to_dict()["model"] is None
    assert VectorMetadata.from_dict({"dimensions": 3, "model": None}) == VectorMetadata(3)


# -- embedding_fn -----------------------------------------------------------------------------


def _vec(text: str) -> np.ndarray:
    return np.array([float(len(text)), 1.0])


async def _async_fn(text: str) -> np.ndarray:
    return _vec(text)


def _sync_fn(text: str) -> np.ndarray:
    return _vec(text)


class _AsyncObject:
    async def __call__(self, text: str) -> np.ndarray:
        return _vec(text)


class _SyncObject:
    def __init__(self) -> None:
        self.threads: set[int] = set()

    def __call__(self, text: str) -> np.ndarray:
        self.threads.add(threading.get_ident())
        return _vec(text)


def _returns_coroutine(text: str) -> Any:
    return _async_fn(text)


@pytest.mark.parametrize("fn", [_async_fn, _sync_fn, _AsyncObject(), _SyncObject(), _returns_coroutine])
async def test_call_embedding_fn_takes_every_shape(fn: Callable[..., Any]) -> None:
    out = await call_embedding_fn(fn, "abcd")
    assert isinstance(out, np.ndarray) and out[0] == 4.0


async def test_call_embedding_fn_runs_sync_code_off_the_loop_and_bounds_async_code() -> None:
    obj = _SyncObject()
    await call_embedding_fn(obj, "x")
    assert obj.threads and threading.get_ident() not in obj.threads

    async def slow(text: str) -> None:
        await asyncio.sleep(10)

    with pytest.raises(TimeoutError):
        await call_embedding_fn(slow, "x", timeout=0.05)
    out = await call_embedding_fn_batch(lambda texts: [_vec(t) for t in texts], ["a", "bb"])
    assert [v[0] for v in out] == [1.0, 2.0]


def test_is_async_callable() -> None:
    import functools

    assert is_async_callable(_async_fn) and is_async_callable(_AsyncObject())
    assert is_async_callable(functools.partial(_async_fn))
    assert not is_async_callable(_sync_fn) and not is_async_callable(_SyncObject())
    assert not is_async_callable(_returns_coroutine)


# -- list_all / _count_all --------------------------------------------------------------------


def test_list_all_and_count_all(make_store_for: Callable[..., Any]) -> None:
    db = make_store_for()
    assert db.list_all() == [] and db._count_all() == 0
    ids = [db.create(Record({"n": i})) for i in range(3)]
    assert sorted(db.list_all()) == sorted(ids) and db._count_all() == 3
    db.delete(ids[0])
    assert sorted(db.list_all()) == sorted(ids[1:]) and db._count_all() == 2


# -- bulk_embed_and_store(embedder=...) -------------------------------------------------------


async def test_bulk_embed_takes_dataknobs_embedder_keyword() -> None:
    db = AsyncMemoryDatabase()
    embedder = DeterministicEmbedder(dimensions=8, model_id="nomic-embed-text")
    ids = await db.bulk_embed_and_store(
        [Record({"title": "alpha", "body": "bravo"}, id="a")],
        ["title", "body"],
        embedder=embedder,
        field_separator=" | ",
    )
    assert ids == ["a"]
    vf = (await db.read("a")).fields["embedding"]
    assert vf.model_name == "nomic-embed-text"
    assert vf.value.tolist() == pytest.approx((await embedder.embed(["alpha | bravo"]))[0])
    assert vf.metadata[SOURCE_FIELDS_KEY] == ["title", "body"]
    assert vf.metadata[FIELD_SEPARATOR_KEY] == " | "
    assert vf.metadata[CONTENT_HASH_KEY] == compute_content_hash("alpha | bravo")
    await db.bulk_embed_and_store(
        [Record({"title": "c"}, id="c")], "title", model_name="mine", embedder=embedder
    )
    assert (await db.read("c")).fields["embedding"].model_name == "mine"
    await db.close()


def test_bulk_embed_sources_one_of_two() -> None:
    db = MemoryDatabase()
    with pytest.raises(InvalidRequestError, match="not both"):
        db.bulk_embed_and_store(
            [Record({"t": "x"})], "t", embedding_fn=lambda t: [[1.0]], embedder=lambda t: [[1.0]]
        )
    # a store with no vector settings has no embedder of its own
    with pytest.raises(ValueError, match="embedder is required"):
        db.bulk_embed_and_store([], "t")
    assert db.bulk_embed_and_store([Record({"t": "x"}, id="x")], "t", embedder=lambda t: [[1.0, 0.0]]) == [
        "x"
    ]
    # one created with vector settings embeds with its own (the hashing embedder by default)
    own = DatabaseFactory().create(backend="memory", vector_enabled=True)
    assert own.bulk_embed_and_store([Record({"t": "x"}, id="x")], "t") == ["x"]
    assert own.read("x").fields["embedding"].metadata[CONTENT_HASH_KEY] == compute_content_hash("x")


async def test_bulk_embed_async_store_without_source() -> None:
    db = AsyncDatabaseFactory().create(backend="memory")
    with pytest.raises(ValueError, match="embedder is required"):
        await db.bulk_embed_and_store([], "t")
    await db.close()


# -- VectorTextSynchronizer / IncrementalVectorizer --------------------------------------------


async def test_the_synchronizer_embeds_stale_records_once() -> None:
    from dk_vector_plugins.vector_sync import IncrementalVectorizer, VectorTextSynchronizer

    db = AsyncMemoryDatabase(config={"vector_enabled": True})
    await db.create(Record({"content": "the document"}, id="d"))
    await db.create(Record({"other": 1}, id="empty"))
    obj = _AsyncObject()
    sync = VectorTextSynchronizer(database=db, embedding_fn=obj, text_fields=["content"], model_name="m")
    assert await sync.sync_all() == {"total": 2, "updated": 1, "skipped": 0, "failed": 1}
    vf = (await db.read("d")).fields["embedding"]
    assert vf.value[0] == len("the document") and vf.model_name == "m"
    assert vf.metadata[CONTENT_HASH_KEY] == compute_content_hash("the document")
    assert (await sync.sync_all())["skipped"] == 1  # current now
    vectorizer = IncrementalVectorizer(database=db, embedding_fn=_sync_fn, text_fields="content")
    assert (await vectorizer.run())["skipped"] == 1
    assert await vectorizer._process_record(await db.get("d"))
    await db.close()


async def test_the_synchronizer_drives_a_sync_store() -> None:
    from dk_vector_plugins.vector_sync import VectorTextSynchronizer

    db = MemoryDatabase()
    db.create(Record({"a": "x", "b": "y"}, id="r"))
    sync = VectorTextSynchronizer(db, _returns_coroutine, ["a", "b"], field_separator="|")
    assert (await sync.sync_all(force=True))["updated"] == 1
    assert db.read("r").fields["embedding"].metadata[CONTENT_HASH_KEY] == compute_content_hash("x|y")


def test_results_sort_by_score_and_dimension_errors_name_their_numbers() -> None:
    from dk_vector_plugins import DatabaseFactory, DimensionMismatchError

    db = DatabaseFactory().create()
    db.add_vectors([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], ids=["a", "b", "c"])
    hits = db.vector_search([1.0, 0.0], k=3)
    assert [h.id for h in sorted(hits, reverse=True)] == [h.id for h in hits] == ["a", "b", "c"]
    err = DimensionMismatchError(expected=768, actual=512, field_name="embedding")
    assert (err.expected, err.actual, err.field_name) == (768, 512, "embedding")
    assert "768" in str(err) and "512" in str(err) and "'embedding'" in str(err)
    assert str(DimensionMismatchError("plain")) == "plain"


def test_s3_store_names_its_bucket_prefix_and_region(s3_server: Any) -> None:
    from dk_vector_plugins import DatabaseFactory

    config = s3_server.config()
    db = DatabaseFactory().create(backend="s3", **config)
    assert (db.bucket, db.prefix) == (config["bucket"], config["prefix"])
    assert db.region == config.get("region_name")
