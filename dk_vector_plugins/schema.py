"""A store's schema: what each vector field is (dimensions, metric, source text, embedder).

The schema is built from the configuration a store is opened with and, for file and S3 stores,
written into every manifest of the table (format 4), so that a store reopens with only its
location: settings that were not given are taken from the table, and settings that were given
are checked against it (a difference is a :class:`~dk_vector_plugins.SchemaMismatchError` that
names both values). A memory store keeps its schema in the process.

The embedder is recorded by name, its options (never credentials: :class:`Secret` values and
credential-like keys stay in the process), its model id, and a *fingerprint*: the first values of
its embedding of a fixed probe text. The fingerprint is checked the first time a process builds
the embedder, so a model that changed behind the same name is caught before it writes vectors
that do not match the stored ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

from .errors import ConfigError, SchemaMismatchError
from .types import Secret
from .vectors import normalize_metric

__all__ = [
    "FINGERPRINT_TOLERANCE",
    "PROBE_TEXT",
    "EmbedderRef",
    "FieldSchema",
    "StoreSchema",
    "TextSchema",
    "fingerprint_of",
    "public_options",
]

#: The text whose embedding identifies an embedder (its first values are stored).
PROBE_TEXT = "dk_vector_plugins embedder fingerprint: the quick brown fox jumps over the lazy dog, 0123456789."
#: How many projections of the normalized probe embedding the fingerprint keeps.
FINGERPRINT_VALUES = 16
#: The largest difference between stored and recomputed values that still counts as the same
#: embedder (numeric noise of BLAS and of GPUs across machines is far below it).
FINGERPRINT_TOLERANCE = 2e-3
#: Option names holding one of these words are credentials: never stored, never shown.
_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


def is_credential_key(key: Any) -> bool:
    """Whether an option of this name holds a credential (``api_key``, ``token``, ...)."""
    return isinstance(key, str) and any(w in key.lower() for w in _SECRET_WORDS)


def _is_secret(key: Any, value: Any) -> bool:
    return isinstance(value, Secret) or is_credential_key(key)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists; other objects their ``str``)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def public_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Embedder options that may be stored: without credentials, as JSON values."""
    return {k: _jsonable(v) for k, v in sorted((options or {}).items()) if not _is_secret(k, v)}


def secret_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The embedder options that are never stored (credentials)."""
    return {k: v for k, v in (options or {}).items() if _is_secret(k, v)}


def fingerprint_of(probe_vector: npt.ArrayLike) -> list[float]:
    """The fingerprint of an embedder: its normalized probe embedding projected on
    :data:`FINGERPRINT_VALUES` fixed pseudo-random unit directions (seeded, so the same in every
    process), scaled by the square root of the dimension. Every coordinate counts, so a sparse
    embedding is identified as well as a dense one."""
    vec = np.asarray(probe_vector, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(vec))
    if norm > 0:
        vec = vec / norm
    directions = np.random.default_rng(20261129).standard_normal((FINGERPRINT_VALUES, vec.shape[0]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return [round(float(x), 5) for x in (directions @ vec) * math.sqrt(vec.shape[0])]


@attrs.define
class EmbedderRef:
    """Which embedder made a field's vectors: a registered name and its options.

    ``secrets`` are the credential options given in this process (never stored); ``model`` the
    model id the embedder reports; ``fingerprint`` see :func:`fingerprint_of`.
    """

    name: str
    options: dict[str, Any] = attrs.field(factory=dict)
    secrets: dict[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    model: str | None = None
    fingerprint: list[float] | None = attrs.field(default=None, eq=False)

    def build_options(self) -> dict[str, Any]:
        """The keyword arguments for the embedder's factory (stored options plus credentials)."""
        return {**self.options, **self.secrets}

    def describe(self) -> str:
        """``name`` with its options, as the user would write them."""
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name!r}" + (f" ({opts})" if opts else "")

    def same_embedder(self, other: EmbedderRef) -> bool:
        """Whether ``other`` names the same embedder with the same stored options."""
        return self.name == other.name and self.options == other.options

    def matches(self, fingerprint: list[float]) -> bool:
        """Whether a recomputed fingerprint is this one's (within :data:`FINGERPRINT_TOLERANCE`)."""
        if self.fingerprint is None:
            return True
        if len(fingerprint) != len(self.fingerprint):
            return False
        return all(abs(a - b) <= FINGERPRINT_TOLERANCE for a, b in zip(self.fingerprint, fingerprint))

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        out: dict[str, Any] = {"name": self.name, "options": self.options}
        if self.model is not None:
            out["model"] = self.model
        if self.fingerprint is not None:
            out["fingerprint"] = self.fingerprint
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> EmbedderRef:
        """Read the stored form (a malformed one is a :class:`ConfigError` naming ``where``)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            raise ConfigError(f"{where}: the stored embedder {data!r} has no name")
        options = data.get("options") or {}
        fp = data.get("fingerprint")
        if not isinstance(options, dict) or (
            fp is not None
            and (not isinstance(fp, list) or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in fp))
        ):
            raise ConfigError(f"{where}: the stored embedder {data!r} is malformed")
        model = data.get("model")
        return cls(data["name"], dict(options), {}, model if isinstance(model, str) else None, fp)


@attrs.define
class FieldSchema:
    """What one vector field is.

    :param dim: the vectors' dimension (``None`` until the first vector or a configured one).
    :param metric: the default metric of searches on this field.
    :param source: the text field(s) the vectors are embedded from (``None``: vectors are given).
    :param separator: what joins the source fields' values.
    :param embedder: the embedder that makes the vectors (``None``: vectors are given).
    """

    dim: int | None = None
    metric: str = "cosine"
    source: tuple[str, ...] | None = None
    separator: str = " "
    embedder: EmbedderRef | None = None

    @property
    def embeds(self) -> bool:
        """Whether writes embed this field from its source text."""
        return self.source is not None and self.embedder is not None

    def to_json(self, dim: int | None) -> dict[str, Any]:
        """The stored form (``dim``: the table's, when it knows one)."""
        out: dict[str, Any] = {"dim": dim if dim is not None else self.dim, "metric": self.metric}
        if self.source is not None:
            out["source"] = list(self.source)
            out["separator"] = self.separator
        if self.embedder is not None:
            out["embedder"] = self.embedder.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> FieldSchema:
        """Read the stored form."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: a stored vector field schema is {data!r}, not an object")
        dim = data.get("dim")
        source = data.get("source")
        embedder = data.get("embedder")
        return cls(
            dim=dim if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 else None,
            metric=normalize_metric(data.get("metric", "cosine")),
            source=tuple(source) if isinstance(source, list) and source else None,
            separator=str(data.get("separator", " ")),
            embedder=EmbedderRef.from_json(embedder, where) if embedder is not None else None,
        )


@attrs.define
class TextSchema:
    """How a store's full-text index is made: the analyzer (name and options) and the fields
    indexed with every write.

    :param analyzer: the registered analyzer's name.
    :param options: its options (JSON values).
    :param fields: ``text_search_fields``: fields whose postings every segment stores.
    """

    analyzer: str = "standard"
    options: dict[str, Any] = attrs.field(factory=dict)
    fields: tuple[str, ...] = ()

    def key(self) -> str:
        """The analyzer's identity: postings made by another analyzer are not used."""
        return json.dumps({"name": self.analyzer, "options": _jsonable(self.options)}, sort_keys=True)

    def to_json(self) -> dict[str, Any]:
        """The stored form."""
        return {"analyzer": self.analyzer, "options": _jsonable(self.options), "fields": list(self.fields)}

    @classmethod
    def from_json(cls, data: Any, where: str) -> TextSchema:
        """Read the stored form."""
        if not isinstance(data, Mapping) or not isinstance(data.get("analyzer"), str):
            raise ConfigError(f"{where}: the stored text schema {data!r} is malformed")
        options = data.get("options") or {}
        fields = data.get("fields") or []
        if not isinstance(options, Mapping) or not isinstance(fields, list):
            raise ConfigError(f"{where}: the stored text schema {data!r} is malformed")
        return cls(str(data["analyzer"]), dict(options), tuple(str(f) for f in fields))


def text_fields(value: Any) -> tuple[str, ...] | None:
    """The ``text_field`` config value as a tuple of field names (``None`` when not set)."""
    if value is None:
        return None
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"config key 'text_field' must be a field name or a list of them, got {value!r}")
    return names


def _as_given(fields: tuple[str, ...]) -> str | list[str]:
    """Source fields as the ``text_field`` key takes them: one name, or a list of several."""
    return fields[0] if len(fields) == 1 else list(fields)


def _given(key: str, value: Any) -> str:
    return f"{key}={value!r}"


class StoreSchema:
    """The schema of a store: its vector fields and which one the configuration describes.

    :param config: the validated configuration (defaults filled in).
    :param given: the configuration keys the caller gave explicitly (the others may be taken
        from a stored schema).
    """

    def __init__(self, config: Mapping[str, Any], given: Iterable[str] = ()) -> None:
        self.given = frozenset(given)
        self.default_field: str = config.get("vector_field") or "embedding"
        source = text_fields(config.get("text_field"))
        options = config.get("embedder_options") or {}
        self._options, self._secrets = public_options(options), secret_options(options)
        embedder = None
        if source is not None or "embedder" in self.given:
            embedder = EmbedderRef(str(config.get("embedder") or "hashing"), self._options, self._secrets)
        self.fields: dict[str, FieldSchema] = {
            self.default_field: FieldSchema(
                dim=config.get("vector_dimensions"),
                metric=normalize_metric(config.get("vector_metric") or "cosine"),
                source=source,
                separator=str(config.get("text_separator") or " "),
                embedder=embedder,
            )
        }
        #: The full-text index: analyzer and the fields indexed with every write.
        self.text = TextSchema(
            str(config.get("analyzer") or "standard"),
            dict(config.get("analyzer_options") or {}),
            text_fields(config.get("text_search_fields")) or (),
        )
        #: Where the stored schema was read from (``None``: nothing stored yet, or memory).
        self.stored_at: str | None = None
        #: Bumped whenever the schema changes (embedders built for an older one are rebuilt).
        self.generation = 0

    # -- reading ------------------------------------------------------------------------------
    def field(self, name: str | None = None) -> FieldSchema | None:
        """The schema of a vector field (the default field when ``name`` is ``None``)."""
        return self.fields.get(name or self.default_field)

    def metric(self, name: str | None = None) -> str:
        """The default metric of searches on a field."""
        f = self.field(name) or self.fields[self.default_field]
        return f.metric

    def embedding_fields(self) -> list[tuple[str, FieldSchema]]:
        """The fields that writes embed from their source text."""
        return [(name, f) for name, f in self.fields.items() if f.embeds]

    def config_values(self) -> dict[str, Any]:
        """The configuration keys this schema determines (for a store's ``config``)."""
        f = self.fields[self.default_field]
        out: dict[str, Any] = {
            "vector_field": self.default_field,
            "vector_dimensions": f.dim,
            "vector_metric": f.metric,
            "text_field": (f.source[0] if len(f.source) == 1 else list(f.source)) if f.source else None,
        }
        if f.embedder is not None:
            out["embedder"] = f.embedder.name
            out["embedder_options"] = f.embedder.build_options() or None
        out["analyzer"] = self.text.analyzer
        out["analyzer_options"] = dict(self.text.options) or None
        out["text_search_fields"] = list(self.text.fields) or None
        return out

    # -- writing ------------------------------------------------------------------------------
    def to_json(self, dims: Mapping[str, int | None]) -> dict[str, Any]:
        """The stored form; ``dims`` are the dimensions the table knows per field."""
        fields = {name: f.to_json(dims.get(name)) for name, f in sorted(self.fields.items())}
        for name, dim in sorted(dims.items()):  # vector fields written without configuration
            if name not in fields and dim is not None:
                fields[name] = FieldSchema(dim=dim, metric=self.metric()).to_json(dim)
        return {"default_field": self.default_field, "fields": fields, "text": self.text.to_json()}

    def set_fingerprint(self, field: str, fingerprint: list[float], model: str | None) -> None:
        """Record the fingerprint (and model id) of a field's embedder, computed in this process."""
        f = self.fields[field]
        assert f.embedder is not None
        f.embedder.fingerprint = fingerprint
        if model is not None:
            f.embedder.model = model

    def replace_field(self, name: str, schema: FieldSchema) -> None:
        """Change a field's schema (re-embedding with another embedder)."""
        self.fields[name] = schema
        self.generation += 1

    # -- a stored schema ------------------------------------------------------------------------
    def adopt(self, stored: Any, where: str) -> None:
        """Take the settings a table was written with; settings given when opening the store
        must agree (:class:`SchemaMismatchError` naming both values otherwise).

        A setting the stored schema lacks (a table written before it was configured) is kept
        from the configuration and stored with the next commit.
        """
        if stored is None:
            return
        if not isinstance(stored, Mapping) or not isinstance(stored.get("fields"), Mapping):
            raise ConfigError(f"{where}: the stored schema {stored!r} is malformed")
        default = stored.get("default_field")
        if "vector_field" not in self.given and isinstance(default, str) and default and default != self.default_field:
            self.fields[default] = self.fields.pop(self.default_field)
            self.default_field = default
        fields = {name: FieldSchema.from_json(f, where) for name, f in stored["fields"].items()}
        changed = self._adopt_text(stored.get("text"), where)
        for name, theirs in fields.items():
            ours = self.fields.get(name)
            if ours is None:
                self.fields[name] = theirs
                changed = True
                continue
            merged = self._merge(name, ours, theirs, where, configured=name == self.default_field)
            if merged != ours or (
                merged.embedder is not None
                and ours.embedder is not None
                and merged.embedder.fingerprint != ours.embedder.fingerprint
            ):
                changed = True
            self.fields[name] = merged
        self.stored_at = where
        if changed:
            self.generation += 1

    def _adopt_text(self, stored: Any, where: str) -> bool:
        """Take the stored analyzer (a given one must agree) and indexed fields (given ones
        replace them: the next commit stores them); whether anything changed."""
        if stored is None:
            return False
        theirs = TextSchema.from_json(stored, where)
        ours = self.text
        for key, mine, stored_value in (
            ("analyzer", ours.analyzer, theirs.analyzer),
            ("analyzer_options", _jsonable(ours.options), _jsonable(theirs.options)),
        ):
            if key in self.given and mine != stored_value:
                raise SchemaMismatchError(
                    f"{where}: {_given(key, mine)} was given, but the store's full-text index was "
                    f"written with {_given(key, stored_value)}; open it without {key!r} to use the "
                    "stored value"
                )
        fields = ours.fields if "text_search_fields" in self.given else theirs.fields
        new = TextSchema(theirs.analyzer, dict(theirs.options), fields)
        if new == ours:
            return False
        self.text = new
        return True

    def _merge(self, name: str, ours: FieldSchema, theirs: FieldSchema, where: str, configured: bool) -> FieldSchema:
        given = self.given if configured else frozenset()

        def mismatch(key: str, mine: Any, stored: Any, hint: str = "") -> SchemaMismatchError:
            return SchemaMismatchError(
                f"{where}: {_given(key, mine)} was given, but the store's vector field {name!r} was "
                f"written with {_given(key, stored)}; open it without {key!r} to use the stored "
                f"value{hint}"
            )

        out = attrs.evolve(ours)
        if theirs.dim is not None:
            if "vector_dimensions" in given and ours.dim is not None and ours.dim != theirs.dim:
                raise mismatch("vector_dimensions", ours.dim, theirs.dim)
            out.dim = theirs.dim
        if "vector_metric" in given and ours.metric != theirs.metric:
            raise mismatch("vector_metric", ours.metric, theirs.metric, ", or pass metric= to a search")
        if "vector_metric" not in given:
            out.metric = theirs.metric
        reembed = " (to change it, re-embed the store: db.reembed(...))"
        if theirs.source is not None:
            if "text_field" in given and ours.source is not None and ours.source != theirs.source:
                raise mismatch("text_field", _as_given(ours.source), _as_given(theirs.source), reembed)
            if "text_separator" in given and ours.separator != theirs.separator:
                raise mismatch("text_separator", ours.separator, theirs.separator, reembed)
            out.source, out.separator = theirs.source, theirs.separator
        if theirs.embedder is not None:
            mine = ours.embedder
            if mine is not None and "embedder" in given and mine.name != theirs.embedder.name:
                raise mismatch("embedder", mine.name, theirs.embedder.name, reembed)
            if "embedder_options" in given and self._options != theirs.embedder.options:
                raise mismatch("embedder_options", self._options, theirs.embedder.options, reembed)
            out.embedder = attrs.evolve(theirs.embedder, secrets=self._secrets if configured else {})
        return out


def source_list(value: str | Sequence[str]) -> list[str]:
    """A ``text_field`` argument as a list of field names."""
    return [value] if isinstance(value, str) else list(value)
