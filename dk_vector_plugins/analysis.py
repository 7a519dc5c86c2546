"""The built-in plugin ``analyzers``: how text becomes the terms of the full-text index.

An analyzer turns a text into a list of terms (``analyze(text)``); the same analyzer turns a
query into terms, so a term matches when both sides agree. Analyzers are plugins
(:func:`~dk_vector_plugins.hookspecs.dkv_register_analyzers`, the same entry-point group as
everything else); this module registers two:

``standard``
    Unicode words (``\\w+`` runs: letters, digits and ``_`` of every script), lowercased
    (``str.casefold``), optionally without stop words and stemmed. Options: ``lowercase``
    (default ``True``), ``stopwords`` (``None``, ``"english"`` or a list of words),
    ``stemmer`` (``None`` or a Snowball language such as ``"english"``; needs the ``text``
    extra, ``pip install 'dk_vector_plugins[text]'``), ``min_length`` (shorter terms are
    dropped; default 1).
``whitespace``
    The text split on whitespace, nothing else (options: ``lowercase``, default ``False``).

A store records its analyzer (name and options) with its table and refuses to reopen with
another one (:class:`~dk_vector_plugins.SchemaMismatchError`), as it does for its embedder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from .errors import ConfigError
from .hookspecs import hookimpl
from .types import AnalyzerSpec

__all__ = ["ENGLISH_STOPWORDS", "StandardAnalyzer", "WhitespaceAnalyzer", "dkv_register_analyzers"]

#: Lucene's English stop words (``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET``).
ENGLISH_STOPWORDS: frozenset[str] = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with"]
)

_WORD = re.compile(r"\w+")
#: ASCII text takes a faster path with the same result: bytes that are not ``\w`` become spaces
#: (and, for ``_ASCII_LOWER``, upper-case letters lower-case), then a split.
_ASCII_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_ASCII_KEEP = bytes(c if c in _ASCII_WORD else 32 for c in range(256))
_ASCII_LOWER = bytes(c + 32 if 65 <= c <= 90 else c for c in _ASCII_KEEP)
_STOPWORD_SETS = {"english": ENGLISH_STOPWORDS}


def _stopwords(value: Any) -> frozenset[str]:
    if value is None or value is False:
        return frozenset()
    if isinstance(value, str):
        found = _STOPWORD_SETS.get(value.lower())
        if found is None:
            raise ConfigError(
                f"unknown stop word list {value!r}; built in: {', '.join(sorted(_STOPWORD_SETS))} "
                "(or give a list of words)"
            )
        return found
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(w, str) for w in value):
        return frozenset(w.casefold() for w in value)
    raise ConfigError(f"stopwords must be None, a list name or a list of words, got {value!r}")


def _stemmer(language: Any) -> Callable[[list[str]], list[str]] | None:
    if language is None or language is False:
        return None
    if not isinstance(language, str):
        raise ConfigError(f"stemmer must be a Snowball language name such as 'english', got {language!r}")
    try:
        import snowballstemmer
    except ImportError as e:  # pragma: no cover - the test extra installs it
        raise ConfigError(
            "stemming needs the snowballstemmer package: pip install 'dk_vector_plugins[text]'"
        ) from e
    if language not in snowballstemmer.algorithms():
        raise ConfigError(
            f"unknown stemmer language {language!r}; available: {', '.join(snowballstemmer.algorithms())}"
        )
    stem_words: Callable[[list[str]], list[str]] = snowballstemmer.stemmer(language).stemWords
    return stem_words


class StandardAnalyzer:
    """Unicode words, lowercased, optionally without stop words and stemmed (see the module)."""

    def __init__(
        self,
        lowercase: bool = True,
        stopwords: str | Sequence[str] | None = None,
        stemmer: str | None = None,
        min_length: int = 1,
    ) -> None:
        if not isinstance(lowercase, bool):
            raise ConfigError(f"lowercase must be True or False, got {lowercase!r}")
        if isinstance(min_length, bool) or not isinstance(min_length, int) or min_length < 1:
            raise ConfigError(f"min_length must be an int >= 1, got {min_length!r}")
        self.lowercase = lowercase
        self.stopwords = _stopwords(stopwords)
        self.min_length = min_length
        self._stem = _stemmer(stemmer)
        self._stems: dict[str, str] = {}

    def analyze(self, text: str) -> list[str]:
        """The terms of ``text``, in order (repeats kept: they are term frequencies)."""
        if text.isascii():
            words = text.encode().translate(_ASCII_LOWER if self.lowercase else _ASCII_KEEP).decode().split()
        else:
            words = _WORD.findall(text.casefold() if self.lowercase else text)
        if self.stopwords:
            words = [w for w in words if w not in self.stopwords]
        if self.min_length > 1:
            words = [w for w in words if len(w) >= self.min_length]
        if self._stem is not None and words:
            stems = self._stems
            todo = [w for w in set(words) if w not in stems]
            if todo:
                if len(stems) > 1_000_000:  # a bound on memory for endless vocabularies
                    stems.clear()
                stems.update(zip(todo, self._stem(todo)))
            words = [stems[w] for w in words]
        return words


class WhitespaceAnalyzer:
    """The text split on whitespace (optionally lowercased); punctuation stays in the terms."""

    def __init__(self, lowercase: bool = False) -> None:
        if not isinstance(lowercase, bool):
            raise ConfigError(f"lowercase must be True or False, got {lowercase!r}")
        self.lowercase = lowercase

    def analyze(self, text: str) -> list[str]:
        """The whitespace-separated words of ``text``."""
        return (text.casefold() if self.lowercase else text).split()


@hookimpl
def dkv_register_analyzers() -> Sequence[AnalyzerSpec]:
    """The built-in analyzers ``standard`` and ``whitespace``."""
    return [
        AnalyzerSpec(
            "standard",
            StandardAnalyzer,
            "Unicode words, lowercased; options stopwords, stemmer (Snowball), min_length",
        ),
        AnalyzerSpec("whitespace", WhitespaceAnalyzer, "split on whitespace; option lowercase"),
    ]
