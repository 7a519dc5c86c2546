"""The text a vector is built from, and its content hash.

A vector field with a source (``text_field``) is embedded from the record's source field values,
joined on a separator (falsy values dropped). The content hash is taken over exactly that string,
so "re-embed if and only if the text changed" holds with no false positives. The digest and the
metadata keys are dataknobs-data 0.11's (``dataknobs_data.vector.content``), so vectors written by
either library are recognised as current by the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "CONTENT_HASH_KEY",
    "DEFAULT_FIELD_SEPARATOR",
    "FIELD_SEPARATOR_KEY",
    "MODEL_NAME_KEY",
    "SOURCE_FIELDS_KEY",
    "assemble_source_text",
    "compute_content_hash",
    "content_hash_metadata",
]

#: What source field values are joined on.
DEFAULT_FIELD_SEPARATOR = " "
#: Vector metadata key: the digest of the assembled text.
CONTENT_HASH_KEY = "content_hash"
#: Vector metadata key: the model that produced the vector.
MODEL_NAME_KEY = "model_name"
#: Vector metadata key: the source field names, in order.
SOURCE_FIELDS_KEY = "content_source_fields"
#: Vector metadata key: the separator they were joined on.
FIELD_SEPARATOR_KEY = "content_field_separator"


def _value(data: Mapping[str, Any], name: str) -> Any:
    """``data[name]``, or a dotted path into nested dicts (``"meta.title"``); ``None`` if absent."""
    if name in data:
        return data[name]
    cur: Any = data
    for part in name.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def assemble_source_text(
    data: Mapping[str, Any], source_fields: Sequence[str], separator: str = DEFAULT_FIELD_SEPARATOR
) -> str:
    """The text a vector over ``source_fields`` is embedded from: the truthy values, as strings,
    joined on ``separator`` (empty when no source field holds a value). ``data`` is a record (or
    any mapping of field names to values)."""
    parts = []
    for name in source_fields:
        value = _value(data, name)
        if value:
            parts.append(str(value))
    return separator.join(parts)


def compute_content_hash(content: str) -> str:
    """The digest of assembled text, for change detection (MD5 hex, as dataknobs-data stores it;
    not a security primitive)."""
    return hashlib.md5(content.encode()).hexdigest()


def content_hash_metadata(source_fields: Sequence[str], separator: str, content_hash: str) -> dict[str, Any]:
    """The vector metadata describing how its text was assembled and what it hashed to."""
    return {
        CONTENT_HASH_KEY: content_hash,
        SOURCE_FIELDS_KEY: list(source_fields),
        FIELD_SEPARATOR_KEY: separator,
    }
