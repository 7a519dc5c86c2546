"""The record model: Record, Field, VectorField and VectorSearchResult, as in dataknobs-data 0.11."""

from __future__ import annotations

import datetime as dt
import json
import pickle

import numpy as np
import pytest

from dk_vector_plugins import (
    DimensionMismatchError,
    DuplicateRecordError,
    Field,
    FieldType,
    InvalidVectorError,
    Record,
    VectorField,
    VectorSearchResult,
)
from dk_vector_plugins.records import detect_field_type, is_vector_value, new_id


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


# --- dataknobs-data's record API: FieldType, Field, and the Record methods ------------------------


@pytest.mark.parametrize(
    "value, ftype",
    [
        (None, FieldType.STRING),
        (True, FieldType.BOOLEAN),
        (42, FieldType.INTEGER),
        (3.5, FieldType.FLOAT),
        ("hi", FieldType.STRING),
        ("x" * 1001, FieldType.TEXT),
        (dt.datetime(2024, 1, 1), FieldType.DATETIME),
        ({"k": 1}, FieldType.JSON),
        ([1], FieldType.JSON),
        (b"\x00", FieldType.BINARY),
        (VectorField([1.0]), FieldType.VECTOR),
    ],
)
def test_field_type_is_detected(value: object, ftype: FieldType) -> None:
    assert detect_field_type(value) is ftype
    assert Field("f", value).type is ftype


def test_field_type_values_validate_convert_and_dict() -> None:
    assert [t.value for t in FieldType][:8] == [
        "string",
        "integer",
        "float",
        "boolean",
        "datetime",
        "json",
        "binary",
        "text",
    ]
    assert FieldType.VECTOR == "vector"  # a member equals its value
    f = Field("age", 25, "integer", {"unit": "years"})
    assert f.type is FieldType.INTEGER and f.validate()
    assert not Field("bad", "text", FieldType.INTEGER).validate()
    assert not Field("b", 1, FieldType.BOOLEAN).validate()
    assert Field("n", None, FieldType.INTEGER).validate()
    assert f.convert_to(FieldType.STRING).value == "25"
    assert Field("s", "true").convert_to("boolean").value is True
    assert f.convert_to(FieldType.INTEGER) is f
    with pytest.raises(ValueError):
        Field("s", "x").convert_to(FieldType.INTEGER)
    with pytest.raises(ValueError, match="no conversion"):
        Field("j", {}).convert_to(FieldType.INTEGER)
    with pytest.raises(ValueError, match="unknown field type"):
        Field("x", 1, "decimal")  # type: ignore[arg-type]
    d = Field("w", 70.5, FieldType.FLOAT, {"unit": "kg"}).to_dict()
    assert d == {"name": "w", "value": 70.5, "type": "float", "metadata": {"unit": "kg"}}
    assert Field.from_dict(d) == Field("w", 70.5) and Field.from_dict(d).metadata == {"unit": "kg"}
    assert Field.from_dict({"name": "a", "value": 25}).type is FieldType.INTEGER
    vf = Field.from_dict(VectorField([1, 2], name="e", model_name="m", metadata={"k": 1}).to_dict())
    assert isinstance(vf, VectorField) and vf.model_name == "m" and vf.metadata == {"k": 1}
    c = f.copy()
    c.metadata["unit"] = "days"
    assert f.metadata == {"unit": "years"}


def test_vector_field_dict_similarity_and_validate() -> None:
    vf = VectorField([3, 4], name="e", source_field="text", model_name="m", model_version="1")
    d = vf.to_dict()
    assert d["type"] == "vector" and d["dimensions"] == 2 and d["value"] == [3.0, 4.0]
    assert d["metadata"] == {"dimensions": 2, "source_field": "text", "model": {"name": "m", "version": "1"}}
    back = VectorField.from_dict(d)
    assert back == vf and back.metadata == {}
    json.dumps(d)
    assert vf.euclidean_distance([0, 0]) == pytest.approx(5.0)
    assert vf.cosine_similarity(VectorField([6, 8])) == pytest.approx(1.0)
    assert vf.cosine_similarity(np.array([-4.0, 3.0])) == pytest.approx(0.0)
    assert vf.validate()
    made = VectorField.from_text("abc", lambda t: [float(len(t)), 1.0], model_name="len")
    assert made.to_list() == [3.0, 1.0] and made.source_field == "text" and made.model_name == "len"


def test_record_field_methods() -> None:
    r = Record({"a": 1, "b": 2, "c": 3})
    assert r.field_names() == ["a", "b", "c"] and r.field_count() == 3
    assert r.has_field("a") and not r.has_field("z")
    assert r.remove_field("b") is True and r.remove_field("b") is False
    assert r.get_field("zz") is None
    r.set_field("t", 25.5, FieldType.FLOAT, {"unit": "c"})
    t = r.get_field("t")
    assert isinstance(t, Field) and t.type is FieldType.FLOAT and t.metadata == {"unit": "c"}
    assert r.get_field_object("t") is t
    with pytest.raises(KeyError):
        r.get_field_object("zz")
    r.set_value("t", 30.0)  # a typed field keeps its type and metadata
    assert r["t"] == 30.0 and r.get_field("t") is t and t.value == 30.0
    assert r.validate()
    r.fields["bad"] = Field("bad", "text", FieldType.INTEGER)
    assert not r.validate()


def test_record_fields_is_live() -> None:
    r = Record({"n": 1})
    r.fields["emb"] = VectorField([1, 2])
    assert "emb" in r and r.vector_fields()["emb"].name == "emb"
    field = r.fields["n"]
    assert r.fields["n"] is field  # kept: the same object on the next read
    field.value = 2
    assert r["n"] == 2 and r.data == {"n": 2, "emb": r["emb"]}
    del r.fields["emb"]
    assert list(r.fields) == ["n"] and len(r.fields) == 1 and dict(r.fields) == {"n": Field("n", 2)}
    r.fields = {"x": 5}
    assert r.data == {"x": 5}
    raw = Record({"v": np.array([1.0, 2.0])})
    assert isinstance(raw.fields["v"], VectorField)
    assert raw["v"].dtype == np.float64  # reading a vector's field object does not change the data


def test_record_positional_and_attribute_access() -> None:
    r = Record({"name": "Test", "value": 42})
    assert r[0] == Field("name", "Test") and r[1].value == 42
    with pytest.raises(IndexError):
        r[2]
    with pytest.raises(IndexError):
        r[-1]
    assert r.name == "Test" and r.value == 42  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        r.missing  # type: ignore[attr-defined]  # noqa: B018
    r["_private"] = "s"
    assert r["_private"] == "s"
    with pytest.raises(AttributeError):
        r._private  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError):  # fields are not set as attributes (see Record)
        r.country = "USA"  # type: ignore[attr-defined]
    assert hasattr(r, "fields") and hasattr(r, "metadata") and hasattr(r, "id")


def test_record_merge_project_and_ids() -> None:
    a = Record({"a": 1, "b": 2}, metadata={"v": 1}, id="ra")
    b = Record({"b": 3, "c": 4}, metadata={"v": 2}, id="rb")
    m = a.merge(b)
    assert m.data == {"a": 1, "b": 3, "c": 4} and m.metadata == {"v": 2} and m.id == "ra"
    m = a.merge(b, overwrite=False)
    assert m.data == {"a": 1, "b": 2, "c": 4} and m.metadata == {"v": 1}
    assert Record({"x": 1}).merge(b).id == "rb"
    p = Record({"n": "T", "age": 3, "e": "x"}, metadata={"k": 1}, id="r").project(["n", "e", "zz"])
    assert p.data == {"n": "T", "e": "x"} and p.id == "r" and p.metadata == {"k": 1}
    r = Record({"name": "t"}, metadata={})
    assert r.has_storage_id() is False
    rid = r.generate_id()
    assert r.id == rid and len(rid) == 36 and r.metadata == {} and r.has_storage_id()
    assert Record({"id": 7}).get_user_id() == "7" and Record({"x": 1}).get_user_id() is None


def test_record_payload_id_resolution() -> None:
    """As dataknobs-data: data "id", then metadata "id", then data "record_id"; none is moved."""
    r = Record({"record_id": "rec-1", "name": "t"}, metadata={"source": "api"})
    assert r.id == "rec-1" and r.metadata == {"source": "api"} and r["record_id"] == "rec-1"
    assert Record({"id": "d", "record_id": "x"}, metadata={"id": "m"}).id == "d"
    assert Record({"record_id": "x"}, metadata={"id": "m"}).id == "m"
    assert Record({"id": None, "record_id": 5}).id == "5"
    r = Record({"id": 7})
    assert r.id == "7" and r.get_value("id") == 7  # the data field keeps its value


def test_record_to_dict_structured_and_from_dict() -> None:
    r = Record({"name": "T", "value": 42, "v": VectorField([1, 2])}, metadata={"version": 1}, id="r1")
    full = r.to_dict(include_metadata=True, flatten=False)
    assert full["id"] == "r1" and full["metadata"] == {"version": 1}
    assert full["fields"]["name"] == {"name": "name", "value": "T", "type": "string", "metadata": {}}
    assert full["fields"]["v"]["value"] == [1.0, 2.0]
    json.dumps(full)
    assert r.to_dict(flatten=False, include_field_objects=False) == {
        "fields": {"name": "T", "value": 42, "v": [1.0, 2.0]},
        "id": "r1",
    }
    back = Record.from_dict(full)
    assert back.id == "r1" and back.metadata == {"version": 1} and back["name"] == "T"
    assert isinstance(back.fields["v"], VectorField) and back.get_field("value").type is FieldType.INTEGER
    typed = Record.from_dict({"fields": {"age": {"name": "age", "value": "30", "type": "string"}}})
    assert typed.get_field("age").type is FieldType.STRING and typed.id is None
    # a flat record with a data field called "fields" stays flat
    flat = Record.from_dict({"fields": {"a": 1}, "other": 2})
    assert flat.data == {"fields": {"a": 1}, "other": 2}


def test_duplicate_record_error_carries_the_id() -> None:
    err = DuplicateRecordError("a record with id 'x' already exists", id="x")
    assert err.id == "x" and isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert again.id == "x" and str(again) == str(err)
    assert DuplicateRecordError("no id given").id is None
