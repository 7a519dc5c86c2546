"""The record model: Record, Field, VectorField and VectorSearchResult, as in dataknobs-data 0.11."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dk_vector_plugins import (
    DimensionMismatchError,
    Field,
    InvalidVectorError,
    Record,
    VectorField,
    VectorSearchResult,
)
from dk_vector_plugins.records import is_vector_value, new_id


def test_record_positional_constructor_and_id() -> None:
    r = Record({"text": "hi", "n": 1}, {"src": "x"}, "r1")
    assert r.id == "r1"
    assert r.metadata == {"src": "x"}
    assert r["text"] == "hi"
    assert r.storage_id == "r1"


def test_record_id_sources() -> None:
    assert Record({"id": "from-data"}).id == "from-data"
    assert Record({"x": 1}, metadata={"id": "from-meta"}).id == "from-meta"
    assert Record({"id": "data"}, id="explicit").id == "explicit"
    assert Record({"id": 7}).id == "7"  # ids are strings
    assert Record({"x": 1}, storage_id="s").id == "s"
    r = Record({"x": 1})
    assert r.id is None
    r.id = 5  # type: ignore[assignment]
    assert r.id == "5"
    r.id = None
    assert r.id is None


def test_new_id_is_unique_uuid() -> None:
    a, b = new_id(), new_id()
    assert a != b and len(a) == 36


def test_getitem_contains_len_iter_get() -> None:
    r = Record({"a": 1, "b": None, "v": VectorField([1, 2])})
    assert r["a"] == 1
    assert r["b"] is None
    assert isinstance(r["v"], np.ndarray) and r["v"].tolist() == [1.0, 2.0]
    assert "a" in r and "zz" not in r
    assert len(r) == 3
    assert list(r) == ["a", "b", "v"]
    assert r.get("zz", "dflt") == "dflt"
    with pytest.raises(KeyError):
        r["zz"]
    r["c"] = 3
    assert r["c"] == 3
    del r["c"]
    assert "c" not in r


def test_get_value_dotted_paths() -> None:
    r = Record(
        {"a": {"b": {"c": 1}}, "flat.key": 2, "lst": [1, 2]},
        metadata={"source": {"name": "crm"}},
        id="r1",
    )
    assert r.get_value("a.b.c") == 1
    assert r.get_value("a.b") == {"c": 1}
    assert r.get_value("flat.key") == 2  # an exact field name wins
    assert r.get_value("a.x.c", "d") == "d"
    assert r.get_value("lst.0", "d") == "d"  # no list indexing
    assert r.get_value("missing") is None
    assert r.get_value("id") == "r1"
    assert r.get_value("metadata.source.name") == "crm"
    assert r.get_value("fields.a.b.c") == 1
    r2 = Record({"metadata": {"x": 1}}, metadata={"x": 2})
    assert r2.get_value("metadata.x") == 1  # a data field called metadata wins
    v = Record({"e": VectorField([1, 2])})
    assert v.get_value("e").tolist() == [1.0, 2.0]


def test_fields_gives_field_objects() -> None:
    r = Record({"text": "hi", "emb": VectorField([1, 2, 3], model_name="m")})
    fields = r.fields
    assert isinstance(fields["text"], Field)
    assert fields["text"].name == "text" and fields["text"].value == "hi"
    assert isinstance(fields["emb"], VectorField)
    assert fields["emb"].name == "emb"  # named after its key
    assert fields["emb"].model_name == "m"
    assert fields["emb"].dimensions == 3


def test_field_objects_in_data_are_unwrapped() -> None:
    r = Record({"a": Field("a", 5), "b": Field("ignored-name", "x")})
    assert r.data == {"a": 5, "b": "x"}
    assert Field("a", np.array([1, 2])) == Field("a", np.array([1, 2]))
    assert Field("a", 1) != Field("b", 1)


def test_data_property_and_vector_fields() -> None:
    arr = np.array([1.0, 2.0], dtype=np.float64)
    r = Record({"t": "x", "v": VectorField([3, 4]), "raw": arr, "mat": np.ones((2, 2))})
    d = r.data
    assert d["t"] == "x"
    assert d["v"].dtype == np.float32
    vf = r.vector_fields()
    assert set(vf) == {"v", "raw"}  # a 1-D numeric array is a vector; a 2-D one is not
    assert vf["raw"].value.dtype == np.float32
    assert is_vector_value(arr) and not is_vector_value(np.ones((2, 2)))
    assert not is_vector_value(np.array(["a", "b"]))
    assert not is_vector_value([1.0, 2.0])


def test_to_dict_from_dict_round_trip() -> None:
    r = Record({"t": "x", "n": 1, "v": VectorField([1.5, 2.5]), "raw": np.array([1, 2])}, {"m": 1}, "r1")
    d = r.to_dict()
    assert d == {"t": "x", "n": 1, "v": [1.5, 2.5], "raw": [1, 2], "_id": "r1"}
    json.dumps(d)  # JSON-ready
    dm = r.to_dict(include_metadata=True)
    assert dm["_metadata"] == {"m": 1}
    back = Record.from_dict(dm)
    assert back.id == "r1"
    assert back.metadata == {"m": 1}
    assert back["v"] == [1.5, 2.5]  # vectors come back as plain lists
    assert Record.from_dict({"a": 1}).id is None


def test_copy_is_deep_by_default() -> None:
    r = Record({"nested": {"a": [1]}, "v": VectorField([1, 2], model_name="m")}, {"m": {"x": 1}}, "r1")
    c = r.copy()
    assert c == r and c is not r
    c["nested"]["a"].append(2)
    c["v"][0] = 99
    c.metadata["m"]["x"] = 2
    assert r["nested"] == {"a": [1]}
    assert r["v"].tolist() == [1.0, 2.0]
    assert r.metadata == {"m": {"x": 1}}
    assert c.fields["v"].model_name == "m"
    shallow = r.copy(deep=False)
    shallow["nested"]["a"].append(3)
    assert r["nested"] == {"a": [1, 3]}
    shallow["new"] = 1
    assert "new" not in r


def test_record_equality() -> None:
    a = Record({"x": 1, "v": VectorField([1, 2])}, {"m": 1}, "r")
    assert a == Record({"x": 1, "v": VectorField([1, 2])}, {"m": 1}, "r")
    assert a != Record({"x": 1, "v": VectorField([1, 3])}, {"m": 1}, "r")
    assert a != Record({"x": 1, "v": VectorField([1, 2])}, {"m": 2}, "r")
    assert a != Record({"x": 1, "v": VectorField([1, 2])}, {"m": 1}, "other")
    assert a != Record({"x": 1}, {"m": 1}, "r")
    assert Record({"a": np.array([1.0, 2.0])}) == Record({"a": np.array([1.0, 2.0])})
    assert Record({"a": np.array([1.0, 2.0])}) != Record({"a": [1.0, 2.0]})
    assert (a == "not a record") is False
    with pytest.raises(TypeError):
        hash(a)


def test_vector_field_is_float32_copy() -> None:
    src = np.array([1, 2, 3], dtype=np.float64)
    vf = VectorField(src, name="e", source_field="text", model_name="m", model_version="2")
    assert vf.value.dtype == np.float32
    src[0] = 9
    assert vf.value[0] == 1.0
    assert vf.dimensions == 3
    assert vf.to_list() == [1.0, 2.0, 3.0]
    assert vf.type == "vector"
    assert vf.info() == {"source_field": "text", "model_name": "m", "model_version": "2"}
    assert VectorField([1]).name == "embedding"
    assert "dimensions=3" in repr(vf)


def test_vector_field_dimensions_mismatch_raises() -> None:
    assert VectorField([1, 2, 3], dimensions=3).dimensions == 3
    with pytest.raises(DimensionMismatchError):
        VectorField([1, 2, 3], dimensions=4)
    with pytest.raises(ValueError):  # DimensionMismatchError is a ValueError
        VectorField([1, 2], dimensions=3)


@pytest.mark.parametrize("bad", [[], [[1, 2]], ["a"], [np.nan], [np.inf], "abc", None])
def test_vector_field_rejects_bad_values(bad: object) -> None:
    with pytest.raises(InvalidVectorError):
        VectorField(bad)  # type: ignore[arg-type]


def test_vector_field_copy_equality_and_info_round_trip() -> None:
    vf = VectorField([1, 2], name="e", model_name="m", metadata={"k": [1]})
    c = vf.copy()
    assert c == vf and c is not vf
    c.metadata["k"].append(2)
    assert vf.metadata == {"k": [1]}
    back = VectorField.from_info(vf.value, "e", vf.info())
    assert back == vf and back.metadata == {"k": [1]}
    assert vf != VectorField([1, 2], name="e", model_name="other")
    assert (vf == [1, 2]) is False


def test_vector_field_renamed_to_its_key_without_touching_original() -> None:
    vf = VectorField([1, 2], name="original")
    r = Record({"emb": vf})
    assert r.fields["emb"].name == "emb"
    assert vf.name == "original"


def test_vector_search_result() -> None:
    rec = Record({"text": "hello", "emb": VectorField([1, 0])}, id="r1")
    hit = VectorSearchResult(record=rec, score=0.5, source_text="hello", vector_field="emb", distance=1.0)
    assert hit.id == "r1"
    d = hit.to_dict()
    assert d == {
        "id": "r1",
        "score": 0.5,
        "distance": 1.0,
        "vector_field": "emb",
        "source_text": "hello",
        "data": {"text": "hello"},
    }
    json.dumps(d)
