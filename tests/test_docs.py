"""Every code block of README.md and docs/*.md runs, or is checked, here: the docs cannot drift.

Each document is walked top to bottom, in a temporary working directory, with the S3 environment
pointing at the local S3 server (``s3_server``: ``S3_ENDPOINT_URL`` and ``AWS_ENDPOINT_URL``, so a
block naming only a bucket reaches it too). Every fenced block must carry a language this file
handles (:data:`LANGUAGES`):

* ``python``: executed, all blocks of a document in one namespace. A ``print(...)`` line with a
  trailing comment must print what the comment shows (:func:`check_output_comment`). A block whose
  first line is ``# name.py`` is a module file: it runs as module ``name``. A block the document
  presents as an excerpt of a source file (:data:`EXCERPTS`) runs in that module's namespace and
  must match the source. A block that cannot run here starts with ``# not run: <reason>``, and
  that reason is listed in :data:`NOT_RUN` (the test checks both ways); it is still compiled.
* ``bash`` / ``console``: every command is run or checked (:func:`check_command`): ``dkv`` and
  ``python3 -m dk_vector_plugins`` run in a subprocess (exit 0; a ``console`` block's output must
  match), ``pip install`` names existing extras and paths, the CI tools are the commands
  ``.ci/run`` runs, scripts exist and answer ``--help`` with the options the doc uses, ``dask``
  commands parse with dask's own command line.
* ``toml``: parses; a store config builds a store.
* ``text``: diagrams and output; :data:`TEXT_CHECKS` checks those that show a program's output.

Where a block needs a service that is not here, :data:`SUBSTITUTIONS` swaps in a local one (the
OpenAI-compatible test server, a ``distributed.LocalCluster``); every substitution must match.
:data:`AFTER` runs more checks right after a given block (e.g. the commands a doc gives in prose
for a TOML file it shows).
"""

from __future__ import annotations

import ast
import builtins
import functools
import inspect
import io
import os
import re
import shlex
import subprocess
import sys
import tokenize
import types
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dk_vector_plugins import DatabaseFactory, Record
from dk_vector_plugins import hookspecs as hookspecs_module

if sys.version_info >= (3, 11):
    import tomllib
else:  # the package depends on tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
USEARCH_SRC = ROOT / "examples" / "dkv-usearch-override"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

#: Every document with code blocks is walked by :func:`test_doc_runs`.
DOC_PATHS = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

LANGUAGES = {"python", "bash", "console", "toml", "text"}

#: (document, reason) of every block marked ``# not run: <reason>``.
NOT_RUN = {
    ("S3_VECTOR_OPTIMIZATION.md", "needs opensearch-py and an OpenSearch cluster"),
}

#: document -> [(start of a block, module)]: blocks that are excerpts of a source module.
EXCERPTS = {
    "PLUGINS.md": [("@hookspec", "dk_vector_plugins.hookspecs")],
    "S3_VECTOR_OPTIMIZATION.md": [
        ("def _settings(db):\n", "dkv_usearch_override.plugin")
    ],
}

#: Comments on a ``print`` line that explain its output rather than show it.
EXPLANATIONS = {
    "cosine similarity": "INTEGRATIONS.md: a loop printing each hit's id and similarity",
}

FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.M | re.S,
)


@dataclass
class Block:
    doc: str
    lang: str
    code: str
    line: int  # the document's line of the block's first code line

    @property
    def label(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        indent = len(m["indent"])
        code = "".join(line[indent:] for line in m["body"].splitlines(keepends=True))
        out.append(Block(path.name, m["lang"], code, text.count("\n", 0, m.start()) + 2))
    return out


def not_run_reason(block: Block) -> str | None:
    m = re.match(r"# not run: (.+)\n", block.code)
    return m[1].strip() if m else None


def module_name(block: Block) -> str | None:
    m = re.match(r"# (\w+)\.py\n", block.code)
    return m[1] if m else None


# --- the structure of the documents ----------------------------------------------------------------


def test_every_fence_is_a_block_of_a_known_language() -> None:
    for path in DOC_PATHS:
        fences = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip().startswith("```")]
        found = blocks(path)
        assert len(fences) == 2 * len(found), f"{path.name}: an unbalanced fence near lines {fences}"
        for b in found:
            assert b.lang in LANGUAGES, f"{b.label}: a block needs a language, one of {sorted(LANGUAGES)}"


def test_not_run_marks_are_exactly_the_listed_ones() -> None:
    marked = set()
    for path in DOC_PATHS:
        for b in blocks(path):
            if b.lang == "python" and (reason := not_run_reason(b)) is not None:
                marked.add((b.doc, reason))
                compile(b.code, b.label, "exec")  # not run, but valid Python
            else:
                assert "not run" not in b.code.lower(), f"{b.label}: a 'not run' mark must be its first line"
    assert marked == NOT_RUN


# --- checking what a print line printed ------------------------------------------------------------


class Printed:
    """A ``print`` for the docs' namespaces: prints, and records the text per (file, line)."""

    def __init__(self) -> None:
        self.lines: dict[tuple[str, int], list[str]] = defaultdict(list)

    def __call__(self, *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False) -> None:
        if file is None:
            frame = sys._getframe(1)
            self.lines[(frame.f_code.co_filename, frame.f_lineno)].append((sep or " ").join(map(str, args)))
        builtins.print(*args, sep=sep, end=end, file=file, flush=flush)


def output_comments(block: Block) -> list[tuple[int, str]]:
    """(line in the block, comment) of every ``print(...)`` call line with a trailing comment."""
    tree = ast.parse(block.code)
    print_lines = {
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
    }
    comments = {
        tok.start[0]: tok.string[1:].strip()
        for tok in tokenize.generate_tokens(io.StringIO(block.code).readline)
        if tok.type == tokenize.COMMENT
    }
    return [(line, comments[line]) for line in sorted(print_lines) if line in comments]


def output_matches(comment: str, out: str) -> bool:
    """Whether ``comment`` shows ``out``: the output itself; the output and an explanation after
    ``:`` or in parentheses; its start, then ``...``; or the ids it lists, in order (``n4, n3``,
    ``dataknobs-data style: n4, n3``, ``n3 (on the async store)``)."""
    if out and (comment == out or (comment.startswith(out) and comment[len(out) :].startswith((":", " (")))):
        return True
    if "..." in comment:
        head = comment.split("...")[0].rstrip(" ,")
        return bool(head) and head in out
    listed = re.sub(r"\s*\(.*\)$", "", comment).rsplit(": ", 1)[-1]
    ids = [s.strip() for s in listed.split(",")]
    if not all(re.fullmatch(r"[A-Za-z]+\d+", i) for i in ids):
        return False
    prefixes = sorted({re.match(r"[A-Za-z]+", i)[0] for i in ids})  # type: ignore[index]
    return re.findall(rf"\b(?:{'|'.join(prefixes)})\d+\b", out) == ids


def check_output_comment(block: Block, line: int, comment: str, printed: Printed) -> None:
    out = "\n".join(printed.lines.get((block.label, line), []))
    if comment in EXPLANATIONS:
        return
    assert output_matches(comment, out), (
        f"{block.doc}:{block.line + line - 1}: the comment shows {comment!r}, the line printed {out!r}"
    )


def test_output_matches() -> None:
    assert output_matches("5 2", "5 2") and not output_matches("5 2", "5 3")
    assert output_matches("5: the first handle sees the delete", "5")
    assert output_matches("vector_metric='dot_product' was given, ...", "refused: vector_metric='dot_product' was given, x")
    assert output_matches("dataknobs-data style: n4, n3", "[('n4', 0.52), ('n3', 0.03)]")
    assert not output_matches("dataknobs-data style: n4, n3", "[('n3', 0.52), ('n4', 0.03)]")
    assert not output_matches("n1, n3", "[('n1', 1), ('n3', 1), ('n5', 1)]")
    assert output_matches("n3 (on the async store)", "[Document(id='n3', metadata={'tag': 'cooking'})]")
    assert not output_matches("vectors are memory-mapped", "6 [('n5', 0.31)]")


# --- commands --------------------------------------------------------------------------------------


def shell_commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, ``&&`` split."""
    out: list[list[str]] = []
    for line in code.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        while argv:
            cut = argv.index("&&") if "&&" in argv else len(argv)
            out.append(argv[:cut])
            argv = argv[cut + 1 :]
    return [c for c in out if c]


def extras(pyproject: dict[str, Any]) -> dict[str, list[str]]:
    return dict(pyproject["project"].get("optional-dependencies", {}))


def resolved_extra(name: str) -> set[str]:
    """The distribution names an extra of this project brings, its self-references resolved."""
    found: set[str] = set()
    for req in extras(PYPROJECT)[name]:
        m = re.match(r"([\w.-]+)(?:\[([\w,]+)\])?", req)
        assert m, req
        if m[1] == PYPROJECT["project"]["name"]:
            for extra in (m[2] or "").split(","):
                found |= resolved_extra(extra)
        else:
            found.add(m[1].lower().replace("_", "-"))
    return found


def check_pip_install(argv: list[str], label: str) -> None:
    """Every requirement is a local project (that exists) or this project, with existing extras."""
    reqs = [a for a in argv[argv.index("install") + 1 :] if not a.startswith("-")]
    assert reqs, f"{label}: pip install of nothing"
    for req in reqs:
        m = re.fullmatch(r"([^\[\]]+)(?:\[([\w,-]+)\])?", req)
        assert m, f"{label}: cannot read requirement {req!r}"
        target, wanted = m[1], [e for e in (m[2] or "").split(",") if e]
        if target.startswith((".", "/")) or "/" in target:
            project = ROOT / target
            assert (project / "pyproject.toml").is_file(), f"{label}: {target} is not a project directory"
            declared = extras(tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8")))
        else:
            assert target == PYPROJECT["project"]["name"], f"{label}: pip install of another distribution, {target}"
            declared = extras(PYPROJECT)
        for extra in wanted:
            assert extra in declared, f"{label}: {req}: no extra {extra!r} in {target}'s pyproject.toml"


def ci_commands() -> list[list[str]]:
    out = []
    for argv in shell_commands((ROOT / ".ci" / "run").read_text(encoding="utf-8")):
        while argv[:1] == ["env"]:  # env -u NAME python3 ...
            argv = argv[3:] if argv[1] == "-u" else argv[1:]
        argv = argv[: argv.index("|")] if "|" in argv else argv  # the pipe's first command
        argv = [a for a in argv if not re.match(r"\d?>", a)]  # no redirections
        if argv[:1] == ["python3"]:
            out.append(argv)
    return out


def normalized(argv: list[str]) -> list[str]:
    """A tool's command without what only says where output goes or how much it prints."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--outdir":
            skip = True
        elif a != "-q" and "$" not in a and not a.startswith(("dist/", "build/")):
            out.append(a)
    return out


CI_TOOLS = {"pytest", "ruff", "mypy", "sphinx", "build", "twine"}


def check_ci_tool(argv: list[str], label: str) -> None:
    tool = argv[0] if argv[0] == "tox" else argv[2]
    assert tool in resolved_extra("dev"), f"{label}: {tool} is not in the dev extra"
    if tool == "tox":
        assert (ROOT / "tox.ini").is_file(), f"{label}: tox without a tox.ini"
        return
    assert normalized(argv) in [normalized(c) for c in ci_commands()], f"{label}: {shlex.join(argv)} is not what .ci/run runs"


@functools.cache
def script_help(script: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DKV_")}
    return subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )


def check_script(argv: list[str], label: str) -> None:
    """``python3 path.py [options]``: the script exists and its ``--help`` names every option used."""
    script = ROOT / argv[1]
    assert script.is_file(), f"{label}: no script {argv[1]}"
    proc = script_help(script)
    assert proc.returncode == 0, f"{label}: {argv[1]} --help failed:\n{proc.stderr}"
    for option in re.findall(r"--[\w-]+", " ".join(argv[2:])):
        assert option in proc.stdout, f"{label}: {argv[1]} has no option {option}"


def check_dask_command(argv: list[str], label: str) -> None:
    """``dask scheduler|worker ...`` parses with dask's own command line (nothing is started)."""
    if argv[1] == "scheduler":
        from distributed.cli.dask_scheduler import main
    else:
        assert argv[1] == "worker", f"{label}: unknown dask command {argv[1]}"
        from distributed.cli.dask_worker import main
    main.make_context(f"dask {argv[1]}", argv[2:])


def is_dkv(argv: list[str]) -> bool:
    return argv[0] == "dkv" or argv[:3] in (["python3", "-m", "dk_vector_plugins"], ["python", "-m", "dk_vector_plugins"])


def run_dkv(argv: list[str], ctx: Walk, label: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    args = argv[1:] if argv[0] == "dkv" else argv[3:]
    proc = subprocess.run(
        [sys.executable, "-m", "dk_vector_plugins", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=ctx.subprocess_env(),
        cwd=ctx.cwd,
    )
    assert proc.returncode == expect, (
        f"{label}: {shlex.join(argv)} exited {proc.returncode}:\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )
    return proc


def check_command(argv: list[str], ctx: Walk, label: str) -> subprocess.CompletedProcess[str] | None:
    """Run (``dkv``) or check one command of a shell block."""
    if is_dkv(argv):
        return run_dkv(argv, ctx, label)
    python = argv[0] in ("python", "python3")
    if argv[0] in ("pip", "pip3") or (python and argv[1:3] == ["-m", "pip"]):
        check_pip_install(argv, label)
    elif argv[0] == "tox" or (python and argv[1] == "-m" and argv[2] in CI_TOOLS):
        check_ci_tool(argv, label)
    elif python and argv[1].endswith(".py"):
        check_script(argv, label)
    elif argv[0] == "dask":
        check_dask_command(argv, label)
    else:
        pytest.fail(f"{label}: no rule runs or checks {shlex.join(argv)}")
    return None


# --- walking a document ----------------------------------------------------------------------------


@dataclass
class Walk:
    """One document's walk: its working directory, namespace, environment and local services."""

    doc: str
    cwd: Path
    request: pytest.FixtureRequest
    monkeypatch: pytest.MonkeyPatch
    namespace: dict[str, Any] = field(default_factory=dict)
    printed: Printed = field(default_factory=Printed)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for subprocesses
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)  # the stdout of every command run

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)

    def subprocess_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DKV_", "HOSTAPP"))}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        return env


#: document -> [(text in a block, replacement(walk))]: local services for remote ones.
SUBSTITUTIONS: dict[str, list[tuple[str, Callable[[Walk], str]]]] = {
    "VECTOR_GETTING_STARTED.md": [
        ("http://localhost:11434/v1", lambda w: w.fixture("embedding_server").url),
    ],
    "SCALE_OUT.md": [
        ("n_workers=4,", lambda w: f"scheduler_address={w.fixture('dask_cluster').scheduler_address!r},"),
        ("tcp://A:8786", lambda w: w.fixture("dask_cluster").scheduler_address),
    ],
}


def substituted(ctx: Walk, block: Block, used: set[int]) -> str:
    code = block.code
    for i, (old, new) in enumerate(SUBSTITUTIONS.get(ctx.doc, [])):
        if old in code and not (block.lang == "bash" and old.startswith("tcp://")):  # dask commands: parsed only
            code = code.replace(old, new(ctx))
            used.add(i)
    return code


def run_excerpt(block: Block, module: str) -> None:
    """Run ``block`` in a copy of ``module``'s namespace; each function it defines must be the
    module's function (signature and decorators; and the body, unless the block shows ``...``)."""
    mod = __import__(module, fromlist=["_"])
    ns = dict(mod.__dict__)
    exec(compile(block.code, block.label, "exec"), ns)
    source = ast.parse(inspect.getsource(mod))
    real = {n.name: n for n in source.body if isinstance(n, ast.FunctionDef)}
    shown = [n for n in ast.parse(block.code).body if isinstance(n, ast.FunctionDef)]
    assert shown, f"{block.label}: an excerpt without a function"
    for fn in shown:
        assert fn.name in real, f"{block.label}: {module} has no function {fn.name}"
        ref = real[fn.name]
        if any(a.annotation for a in fn.args.args) or fn.returns:  # the signature as declared
            assert ast.dump(fn.args) == ast.dump(ref.args), f"{block.label}: {fn.name}'s arguments differ from {module}'s"
            assert ast.dump(fn.returns or ast.Constant(None)) == ast.dump(ref.returns or ast.Constant(None)), (
                f"{block.label}: {fn.name}'s return annotation differs from {module}'s"
            )
        else:  # the argument names only
            assert [a.arg for a in fn.args.args] == [a.arg for a in ref.args.args], f"{block.label}: {fn.name}'s arguments"
        assert [ast.dump(d) for d in fn.decorator_list] == [ast.dump(d) for d in ref.decorator_list], (
            f"{block.label}: {fn.name}'s decorators differ from {module}'s"
        )
        body = ref.body[1:] if ast.get_docstring(ref) is not None else ref.body
        if not (len(fn.body) == 1 and isinstance(fn.body[0], ast.Expr) and fn.body[0].value.value is Ellipsis):  # type: ignore[attr-defined]
            assert [ast.dump(s) for s in fn.body] == [ast.dump(s) for s in body], (
                f"{block.label}: {fn.name}'s body differs from {module}'s"
            )
        assert callable(ns[fn.name])


def run_python(ctx: Walk, block: Block, code: str) -> None:
    if not_run_reason(block) is not None:
        return
    for start, module in EXCERPTS.get(ctx.doc, []):
        if block.code.startswith(start):
            run_excerpt(block, module)
            return
    if (name := module_name(block)) is not None:  # a module file: importable by the blocks after it
        mod = types.ModuleType(name)
        mod.__file__ = str(ctx.cwd / f"{name}.py")
        exec(compile(code, block.label, "exec"), mod.__dict__)
        ctx.monkeypatch.setitem(sys.modules, name, mod)
        return
    exec(compile(code, block.label, "exec"), ctx.namespace)
    for line, comment in output_comments(block):
        check_output_comment(block, line, comment, ctx.printed)


def run_shell(ctx: Walk, block: Block, code: str) -> None:
    for argv in shell_commands(code):
        proc = check_command(argv, ctx, block.label)
        if proc is not None:
            ctx.outputs.append(proc.stdout)


def run_console(ctx: Walk, block: Block, code: str) -> None:
    """``$ command`` lines, each followed by the output it must print (exactly, but for trailing
    spaces); a ``#`` comment on the command line says under what condition."""
    parts = re.split(r"^\$ ", code, flags=re.M)
    assert parts[0].strip() == "", f"{block.label}: a console block starts with '$ '"
    for part in parts[1:]:
        command, _, expected = part.partition("\n")
        for argv in shell_commands(command):
            proc = check_command(argv, ctx, block.label)
            if proc is not None and expected.strip():
                got = [line.rstrip() for line in proc.stdout.strip("\n").splitlines()]
                assert got == [line.rstrip() for line in expected.strip("\n").splitlines()], (
                    f"{block.label}: `{command.strip()}` printed:\n{proc.stdout}"
                )


def run_toml(ctx: Walk, block: Block, code: str) -> None:
    data = tomllib.loads(code)
    if "backend" in data:  # a store configuration
        DatabaseFactory().create(**data).close()
    elif "project" in data:  # a plugin's pyproject.toml: the entry-point group
        assert set(data["project"]["entry-points"]) == {"dk_vector_plugins"}, block.label


def run_text(ctx: Walk, block: Block, code: str) -> None:
    for (doc, start), check in TEXT_CHECKS.items():
        if doc == ctx.doc and code.startswith(start):
            check(ctx, block)


RUNNERS: dict[str, Callable[[Walk, Block, str], None]] = {
    "python": run_python,
    "bash": run_shell,
    "console": run_console,
    "toml": run_toml,
    "text": run_text,
}


def walk(ctx: Walk, path: Path) -> None:
    ctx.namespace.update({"__name__": f"doc_{path.stem.lower()}", "print": ctx.printed})
    used: set[int] = set()
    after = {start: fn for (doc, start), fn in AFTER.items() if doc == ctx.doc}
    after_used = set()
    for block in blocks(path):
        code = substituted(ctx, block, used)
        RUNNERS[block.lang](ctx, block, code)
        for start, fn in after.items():
            if start in block.code:
                fn(ctx, block)
                after_used.add(start)
    assert used == set(range(len(SUBSTITUTIONS.get(ctx.doc, [])))), f"{ctx.doc}: a substitution matches nothing"
    assert after_used == set(after), f"{ctx.doc}: no block for {set(after) - after_used}"


# --- checks after particular blocks ----------------------------------------------------------------


def after_getting_started_toml(ctx: Walk, block: Block) -> None:
    """The doc: "The same in a TOML file for `dkv ingest --config store.toml`": ingest the notes
    through the (local) OpenAI-compatible server, then search them."""
    toml = ctx.cwd / "store.toml"
    toml.write_text(substituted(ctx, block, set()), encoding="utf-8")
    with (ctx.cwd / "notes.jsonl").open("w", encoding="utf-8") as f:
        for note in ctx.namespace["notes"]:
            f.write(__import__("json").dumps(note) + "\n")
    server = ctx.fixture("embedding_server")
    before = len(server.requests)
    run_dkv(["dkv", "ingest", "notes.jsonl", "--config", "store.toml", "--no-progress"], ctx, block.label)
    assert len(server.requests) > before  # embedded by the server
    with DatabaseFactory().create(**tomllib.loads(toml.read_text(encoding="utf-8"))) as db:
        assert db.count() == len(ctx.namespace["notes"])
        assert db.vector_search("bread dough", k=1)[0].id in ("n1", "n4")  # the query too


def after_plugins_hello(ctx: Walk, block: Block) -> None:
    """The doc: with dkv-hello installed, `embedder="length"` embeds with it."""
    hello = sys.modules["dkv_hello"]
    db = DatabaseFactory(plugins=[hello], load_entrypoints=False).create(
        backend="memory", vector_enabled=True, embedder="length"
    )
    db.bulk_embed_and_store([Record({"text": "two words"}, id="a")], text_field="text")
    assert db.get("a")["embedding"][:3].tolist() == [9.0, 2.0, 1.0]


def after_plugins_override(ctx: Walk, block: Block) -> None:
    """The override declines a store without ``index="remote"``, sync and async."""
    plain = DatabaseFactory().create(backend="memory", vector_enabled=True)
    assert ctx.namespace["dkv_vector_search"](plain, None) is None
    assert ctx.namespace["dkv_vector_search_async"](plain, None) is None


def after_plugins_options(ctx: Walk, block: Block) -> None:
    """The declared keys are accepted, type-checked and converted."""
    from dk_vector_plugins import ConfigError

    plugin = types.SimpleNamespace(dkv_register_options=ctx.namespace["dkv_register_options"])
    factory = DatabaseFactory(plugins=[plugin], load_entrypoints=False)
    assert factory.create(backend="memory", vector_enabled=True, index="hnsw").config["hnsw_ef"] == 64
    with pytest.raises(ConfigError, match="hnsw_ef"):
        factory.create(backend="memory", vector_enabled=True, hnsw_ef=0)


def after_plugins_fake_index(ctx: Walk, block: Block) -> None:
    ctx.namespace["test_fake_index_answers_only_its_stores"]()


def after_plugins_installed(ctx: Walk, block: Block) -> None:
    """Run the doc's test as pytest would (from the repository's root), then keep its site
    directory for the `dkv plugins --all` listing further down."""
    tmp = ctx.cwd / "installed"
    tmp.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        ctx.namespace["test_installed_plugin_is_found"](tmp, mp)
    forget_modules("dkv_usearch_override")
    ctx.env["PYTHONPATH"] = str(tmp / "site")


def after_s3_hnsw(ctx: Walk, block: Block) -> None:
    ctx.namespace["db"].close()


def after_scale_out_python(ctx: Walk, block: Block) -> None:
    from dk_vector_plugins.plugins.dask import close_client

    db = ctx.namespace["db"]
    assert db.config["executor"] == "dask"
    close_client(db)
    db.close()


def after_scale_out_toml(ctx: Walk, block: Block) -> None:
    """The doc: `dkv search "text" --config store.toml` with this file: a table is ingested
    (bulk embedding on the cluster), then searched on it."""
    text = substituted(ctx, block, set())
    (ctx.cwd / "store.toml").write_text(text, encoding="utf-8")
    config = tomllib.loads(text)
    for key in ("executor", "scheduler_address"):  # the table is written without the cluster
        config.pop(key)
    with DatabaseFactory().create(**config, text_field="text") as table:
        table.upsert_batch([Record({"text": f"note {i} about {w}"}, id=f"d{i}") for i, w in enumerate(["text", "bread", "maps"])])
    out = run_dkv(["dkv", "search", "text", "--config", "store.toml", "--k", "1"], ctx, block.label).stdout
    assert "d0" in out, out


def after_integrations_llamaindex(ctx: Walk, block: Block) -> None:
    ctx.namespace["index"].vector_store.close()


def forget_modules(prefix: str) -> None:
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]


#: (document, text in a block) -> a check run right after that block.
AFTER: dict[tuple[str, str], Callable[[Walk, Block], None]] = {
    ("VECTOR_GETTING_STARTED.md", 'embedder = "openai"'): after_getting_started_toml,
    ("PLUGINS.md", "# dkv_hello.py"): after_plugins_hello,
    ("PLUGINS.md", "return my_remote_search(db, request)"): after_plugins_override,
    ("PLUGINS.md", 'OptionSpec("hnsw_ef"'): after_plugins_options,
    ("PLUGINS.md", "def test_fake_index_answers_only_its_stores"): after_plugins_fake_index,
    ("PLUGINS.md", "def test_installed_plugin_is_found"): after_plugins_installed,
    ("S3_VECTOR_OPTIMIZATION.md", 'index="hnsw", hnsw_ef=64'): after_s3_hnsw,
    ("SCALE_OUT.md", 'executor="dask"'): after_scale_out_python,
    ("SCALE_OUT.md", 'executor = "dask"'): after_scale_out_toml,
    ("INTEGRATIONS.md", "VectorStoreIndex.from_vector_store"): after_integrations_llamaindex,
}


def check_trace(ctx: Walk, block: Block) -> None:
    """PLUGINS.md: what `DKV_TRACE_PLUGINS=1` prints for a search."""
    code = (
        "from dk_vector_plugins import DatabaseFactory\n"
        "db = DatabaseFactory().create(backend='memory', vector_enabled=True)\n"
        "db.add_vectors([[1.0, 0.0]], ids=['a'])\n"
        "db.vector_search([1.0, 0.0], k=1)\n"
    )
    env = {**ctx.subprocess_env(), "DKV_TRACE_PLUGINS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    trace = [line for line in proc.stderr.splitlines() if "dkv_vector_search" in line]
    assert trace == block.code.strip().splitlines(), f"{block.label}: the trace is:\n" + "\n".join(trace)


#: (document, start of a text block) -> a check of the output the block shows.
TEXT_CHECKS: dict[tuple[str, str], Callable[[Walk, Block], None]] = {
    ("PLUGINS.md", "[dkv] dkv_vector_search"): check_trace,
}


# --- fixtures and the walk of each document --------------------------------------------------------


@pytest.fixture
def embedding_server() -> Iterator[Any]:
    from embedder_http_server import EmbeddingServer

    with EmbeddingServer(dim=8) as server:
        yield server


@pytest.fixture(scope="module")
def dask_cluster(s3_server: Any) -> Iterator[Any]:
    """One worker process, with the S3 environment of the docs (its tasks read the test server)."""
    from distributed import LocalCluster

    env = {"AWS_ENDPOINT_URL": s3_server.endpoint_url, **aws_env(s3_server)}
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", env=env
    )
    cluster.wait_for_workers(1, timeout=60)
    yield cluster
    cluster.close()


def aws_env(s3_server: Any) -> dict[str, str]:
    creds = s3_server.credentials
    if not creds:
        return {}
    return {
        "AWS_ACCESS_KEY_ID": creds["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": creds["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": creds["region_name"],
    }


#: Buckets the docs name without `create_bucket=True` (they exist in the reader's account).
DOC_BUCKETS = {"my-bucket": None, "my-vectors": "eu-west-1"}


@pytest.fixture
def walk_doc(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Path, pytest.FixtureRequest], Walk]]:
    """``walk_doc(path, request)`` walks a document in ``tmp_path`` with the S3 environment of the test server."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.startswith(("DKV_", "HOSTAPP"))]:
        monkeypatch.delenv(name)
    env = {"S3_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ENDPOINT_URL": s3_server.endpoint_url, **aws_env(s3_server)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client = s3_server.client()
    for bucket, region in DOC_BUCKETS.items():
        try:
            if region:
                client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
            else:
                client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
    modules = set(sys.modules)
    made: list[Walk] = []

    def run(path: Path, request: pytest.FixtureRequest) -> Walk:
        ctx = Walk(path.name, tmp_path, request, monkeypatch)
        made.append(ctx)
        walk(ctx, path)
        return ctx

    yield run
    for ctx in made:
        for cleanup in ctx.cleanups:
            cleanup()
    for name in set(sys.modules) - modules:
        if name.startswith(("dkv_hello", "dkv_usearch_override")):
            del sys.modules[name]


@pytest.fixture
def usearch_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """examples/dkv-usearch-override as installed, without a build: its source on ``sys.path``
    and a ``*.dist-info`` with its metadata and its pyproject's entry points beside it (what
    ``pip install examples/dkv-usearch-override`` leaves, so the host finds the entry point)."""
    project = tomllib.loads((USEARCH_SRC / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    site = tmp_path / "usearch-site"
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    info.joinpath("METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n", encoding="utf-8"
    )
    points = "".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
        for group, entries in project["entry-points"].items()
    )
    info.joinpath("entry_points.txt").write_text(points, encoding="utf-8")
    monkeypatch.syspath_prepend(str(USEARCH_SRC))
    monkeypatch.syspath_prepend(str(site))
    return site


#: Documents whose walk needs more than the defaults.
NEEDS = {"S3_VECTOR_OPTIMIZATION.md": ["usearch_on_path"]}


@pytest.mark.parametrize("path", [p for p in DOC_PATHS if blocks(p)], ids=lambda p: p.name)
def test_doc_runs(
    path: Path,
    walk_doc: Callable[[Path, pytest.FixtureRequest], Walk],
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in NEEDS.get(path.name, []):
        request.getfixturevalue(name)
    ctx = walk_doc(path, request)
    if path.name in DOC_CHECKS:
        DOC_CHECKS[path.name](ctx, capsys.readouterr().out)


def check_getting_started(ctx: Walk, out: str) -> None:
    """The getting-started story, top to bottom (the output comments are checked on the way)."""
    assert "5 2" in out  # count after the update and the delete, and the work notes
    assert "['n4', 'n5', 'n3']" in out  # the async answers the doc shows
    assert "text 256" in out  # reopened with the location only: the stored settings
    assert "refused: vector_metric='dot_product' was given" in out
    assert "5 {'dimensions': 256, 'seed': 1}" in out  # reembed's report and the new stored embedder
    assert (ctx.cwd / "notes-store" / "manifests").is_dir()


def check_readme(ctx: Walk, out: str) -> None:
    """The quick start's demo embeds the bundled sample and answers its searches."""
    assert ctx.outputs[0].startswith("dkv demo: 40 records embedded") and "1  astronomy-" in ctx.outputs[0]


#: document -> a check of the whole walk's output.
DOC_CHECKS: dict[str, Callable[[Walk, str], None]] = {
    "VECTOR_GETTING_STARTED.md": check_getting_started,
    "README.md": check_readme,
}


# --- the hook reference in docs/PLUGINS.md ---------------------------------------------------------


def hookspecs() -> list[tuple[str, list[str], Any]]:
    """(name, argument names, function) of every hook specification."""
    out = []
    for name, fn in inspect.getmembers(hookspecs_module, inspect.isfunction):
        if getattr(fn, f"{hookspecs_module.PROJECT_NAME}_spec", None) is not None:
            out.append((name, list(inspect.signature(fn).parameters), fn))
    return out


def test_there_are_hooks() -> None:
    names = {name for name, _, _ in hookspecs()}
    assert {"dkv_register_backends", "dkv_vector_search", "dkv_register_options"} <= names


@pytest.mark.parametrize("name,args", [(n, a) for n, a, _ in hookspecs()])  # as datasette's test does
def test_plugin_hooks_are_documented(name: str, args: list[str]) -> None:
    doc = (DOCS / "PLUGINS.md").read_text(encoding="utf-8")
    assert f"{name}({', '.join(args)})" in doc, f"docs/PLUGINS.md does not document {name}({', '.join(args)})"


@pytest.mark.parametrize("name,fn", [(n, f) for n, _, f in hookspecs()])
def test_hook_docstrings_are_in_the_docs(name: str, fn: Any) -> None:
    """The reference is the specification's docstring: its summary line must appear verbatim."""
    summary = inspect.cleandoc(fn.__doc__ or "").splitlines()[0]
    summary = re.sub(
        r":(?:class|func|data|meth|attr|mod):`~?([\w.]+)`",
        lambda m: f"`{m.group(1).split('.')[-1]}`",
        summary,
    )
    summary = re.sub(r"``([^`]+)``", r"`\1`", summary)
    doc = (DOCS / "PLUGINS.md").read_text(encoding="utf-8")
    section = doc.split(f"### `{name}(", 1)
    assert len(section) == 2, f"no section for {name} in docs/PLUGINS.md"
    assert summary in section[1].split("\n### ", 1)[0], (
        f"the docstring summary of {name} is not in its section"
    )


def test_every_hook_has_its_specification_in_the_docs() -> None:
    """Each hook's section shows its specification as a block (an excerpt the walk checks)."""
    shown = {
        m[1]
        for b in blocks(DOCS / "PLUGINS.md")
        if b.lang == "python" and b.code.startswith("@hookspec")
        for m in [re.search(r"def (\w+)\(", b.code)]
        if m
    }
    assert shown == {name for name, _, _ in hookspecs()}


def test_substitutions_and_checks_name_known_documents() -> None:
    names = {p.name for p in DOC_PATHS}
    for table in (SUBSTITUTIONS, EXCERPTS, NEEDS):
        assert set(table) <= names
    assert {doc for doc, _ in [*AFTER, *TEXT_CHECKS, *NOT_RUN]} <= names
