"""A host application that configures dk_vector_plugins from a TOML file and environment variables.

    python examples/host_app_config.py                       # examples/host_app.toml
    python examples/host_app_config.py my_app.toml
    HOSTAPP__STORES__ARTICLES__VECTOR_METRIC=euclidean HOSTAPP__PLUGINS__BLOCK='["usearch"]' \\
        python examples/host_app_config.py
    DKV_TRACE_PLUGINS=1 python examples/host_app_config.py   # the package's own switches apply too

What a real application does with the package, in one file:

* its configuration (``host_app.toml``, overridable per key by ``HOSTAPP__...`` variables) says
  which plugins to load or block, which embedder to use and which stores to open;
* it registers its own plugins explicitly with ``DatabaseFactory(plugins=[...])``: an
  *instrumentation* plugin (``wrapper=True`` implementations that time every search and bulk embed,
  whichever plugin answers) and an *embedder* plugin (``dkv_register_embedders``);
* ``block=`` and ``load_entrypoints=`` come from its config; ``DKV_DISABLE_PLUGIN_AUTOLOAD``,
  ``DKV_PLUGINS`` and ``DKV_TRACE_PLUGINS`` are honoured by the factory as usual.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from dk_vector_plugins import (
    DatabaseFactory,
    DkvError,
    EmbedderSpec,
    HashingEmbedder,
    Record,
    hookimpl,
    list_plugins,
)

HERE = Path(__file__).resolve().parent
ENV_PREFIX = "HOSTAPP__"
DKV_SWITCHES = ("DKV_DISABLE_PLUGIN_AUTOLOAD", "DKV_PLUGINS", "DKV_TRACE_PLUGINS")


# --- configuration: TOML, then environment overrides ------------------------------------------------


def parse_env_value(raw: str) -> Any:
    """A TOML value (``64``, ``true``, ``["a"]``, ``"x"``), or the raw text when it is not one."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load_config(path: Path, environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The TOML file with every ``HOSTAPP__A__B=value`` applied as ``config[a][b] = value``."""
    with path.open("rb") as f:
        config = tomllib.load(f)
    applied = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX) :].split("__") if k]
        node = config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = parse_env_value(raw)
        applied.append(f"{'.'.join(keys)} = {node[keys[-1]]!r}")
    return config, applied


# --- the application's own plugins --------------------------------------------------------------------


class Instrumentation:
    """Times every vector search and bulk embed, whichever plugin answers (``wrapper=True``)."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)

    def _record(self, what: str, t0: float) -> None:
        self.calls[what] += 1
        self.seconds[what] += time.perf_counter() - t0

    @staticmethod
    def _answered_by(result: Any) -> str:
        hits = result[0]  # a search hook answers one list of results per query
        return str(hits[0].metadata.get("index", "exact")) if hits else "exact"

    @hookimpl(wrapper=True)
    def dkv_vector_search(self, db: Any, request: Any) -> Any:
        t0 = time.perf_counter()
        result = yield  # the override (if any) or the built-in answers here
        self._record(f"search {db.backend_name} ({self._answered_by(result)})", t0)
        return result

    @hookimpl(wrapper=True)
    def dkv_vector_search_async(self, db: Any, request: Any) -> Any:
        awaitable = yield  # async implementations return an awaitable: time its completion
        if awaitable is None:
            return None

        async def timed() -> Any:
            t0 = time.perf_counter()
            result = await awaitable
            self._record(f"async search {db.backend_name} ({self._answered_by(result)})", t0)
            return result

        return timed()

    @hookimpl(wrapper=True)
    def dkv_bulk_embed(self, db: Any, request: Any) -> Any:
        t0 = time.perf_counter()
        report = yield
        self._record(f"bulk embed {db.backend_name}", t0)
        return report

    def summary(self) -> Iterator[str]:
        for what in sorted(self.calls):
            n = self.calls[what]
            yield f"  {what:<34} {n:>3} calls, {self.seconds[what] * 1000 / n:7.2f} ms each"


class AppEmbedders:
    """The application's embedders: ``words`` hashes whole words only (no character n-grams)."""

    @hookimpl
    def dkv_register_embedders(self) -> list[EmbedderSpec]:
        def words(dimensions: int = 128, **options: Any) -> HashingEmbedder:
            return HashingEmbedder(dimensions, ngram=0, **options)

        return [EmbedderSpec("words", words, "feature hashing of whole words")]


# --- the application ---------------------------------------------------------------------------------


def load_sample() -> list[dict[str, Any]]:
    text = files("dk_vector_plugins").joinpath("data/sample.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def build_factory(config: Mapping[str, Any], instrumentation: Instrumentation | None) -> DatabaseFactory:
    plugins_cfg = config.get("plugins", {})
    plugins: list[object] = [AppEmbedders()]
    if instrumentation is not None:
        plugins.append(instrumentation)
    return DatabaseFactory(
        plugins=plugins,
        block=list(plugins_cfg.get("block", [])),
        strict=bool(plugins_cfg.get("strict", False)),
        # None: load entry points unless DKV_DISABLE_PLUGIN_AUTOLOAD says otherwise
        load_entrypoints=None if plugins_cfg.get("autoload", True) else False,
    )


def store_configs(config: Mapping[str, Any], data_dir: Path, dimensions: int) -> dict[str, dict[str, Any]]:
    embedder = config.get("embedder", {})
    out = {}
    for name, raw in config.get("stores", {}).items():
        store = dict(raw)
        if store.get("backend") == "file":
            store["path"] = str(data_dir / store.get("path", name))
        store.setdefault("vector_dimensions", dimensions)
        store.setdefault("embedder", embedder.get("name", "hashing"))
        store.setdefault("embedder_options", dict(embedder.get("options", {})))
        out[name] = store
    return out


def run(config: dict[str, Any], data_dir: Path) -> None:
    instrumentation = Instrumentation() if config.get("plugins", {}).get("instrument", True) else None
    factory = build_factory(config, instrumentation)

    print("\nplugins (dkv plugins --all):")
    for info in list_plugins(factory.pm, all=True):
        origin = f"{info.distribution} {info.version}" if info.distribution else "registered by the app"
        state = f"FAILED: {info.error}" if info.error else ", ".join(info.hooks)
        print(f"  {info.name:<16} {origin:<28} {state}")
    blocked = list(config.get("plugins", {}).get("block", []))
    if blocked:
        print(f"  blocked: {', '.join(blocked)}")
    order = [impl.plugin_name for impl in reversed(factory.pm.hook.dkv_vector_search.get_hookimpls())]
    print(f"dkv_vector_search call order (wrappers first, then tryfirst ... trylast): {' -> '.join(order)}")

    dims = int(config.get("embedder", {}).get("dimensions", 128))
    embedder_name = config.get("embedder", {}).get("name", "hashing")
    embedder = factory.embedder(embedder_name, dims, **config.get("embedder", {}).get("options", {}))
    print(f"\nembedder: {embedder_name!r} -> {embedder!r}")

    docs = load_sample()
    stores = {}
    for name, store_cfg in store_configs(config, data_dir, dims).items():
        try:
            db = factory.create(store_cfg)
        except DkvError as e:  # e.g. its backend's plugin is blocked, or a key is misspelt
            print(f"store {name!r} is unavailable: {type(e).__name__}: {e}")
            continue
        keys = ("backend", "vector_metric", "vector_dimensions", "embedder", "path", "index")
        shown = {k: db.config[k] for k in keys if db.config.get(k) is not None}
        # recent documents in the first store, older ones in the others
        recent = name == next(iter(config["stores"]))
        part = [Record(d, id=d["id"]) for d in docs if (d["year"] >= 2020) == recent]
        report = db.bulk_embed(part, text_field="text", progress=False)  # the store's embedder
        print(f"store {name!r}: {shown}; embedded {report.embedded} records")
        stores[name] = db

    print()
    for text in ("telescope photographs of galaxies", "bread and pasta", "the marathon"):
        q = embedder.embed([text])[0]
        for name, db in stores.items():
            hits = db.vector_search(q, k=2)
            print(f"  {name:<9} {text!r:<38} -> {[f'{h.id} ({h.score:.2f})' for h in hits]}")
    for db in stores.values():
        db.close()
    if instrumentation is not None:
        print("\ninstrumentation plugin (wrapper=True) saw:")
        for line in instrumentation.summary():
            print(line)


def main(argv: list[str]) -> None:
    path = Path(argv[1]) if len(argv) > 1 else Path(os.environ.get("HOSTAPP_CONFIG", HERE / "host_app.toml"))
    config, applied = load_config(path, os.environ)
    print(f"configuration: {path}")
    for line in applied:
        print(f"  overridden from the environment: {line}")
    switches = {k: os.environ[k] for k in DKV_SWITCHES if k in os.environ}
    print(f"  DKV_* switches in effect: {switches or 'none'}")
    data_dir = config.get("app", {}).get("data_dir") or ""
    if data_dir:
        run(config, Path(data_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="dkv-host-app-") as tmp:
            run(config, Path(tmp))


if __name__ == "__main__":
    main(sys.argv)
