"""The documentation stays runnable: README.md and docs/*.md are checked against the code.

Every ``llmcomp ...`` (or ``python -m llmcomp ...``) command in a shell block must parse with the
real command-line parser; every ``python -m module`` must name a module of this repository (and a
``python -m llmcomp.<module>`` flag must appear in that module's ``--help``); every ``make`` target
must exist in the Makefile; every ``from llmcomp... import`` in a Python block must name something
that module defines; every relative link must point at a file inside the repository; the
environment variables documented and the ones the code reads must match; and the README stays a
front door (at most 260 lines). Without this the docs rotted before: a README example used a flag
(``--source``) that the CLI never had, and pages cited notes that were not in the repository.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmcomp.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 260  # the issue asks for "at most about 250"

SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
OPERATORS = {"&&", "||", ";", "|", "&"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
#: references to files that are not in the repository (private notes, a neighbouring checkout)
OUTSIDE = [re.compile(p) for p in (r"FIELD-NOTES", r"\.\./shared\b", r"(?<![\w.-])notes/", r"README-app")]
LINK = re.compile(r"\]\(([^)\s]+)\)")
ENV_NAME = re.compile(r"\b((?:LLMCOMP|OPENAI)_[A-Z0-9_]*[A-Z0-9])\b")


@dataclass(frozen=True)
class Command:
    """One simple command of a shell block: where it is written and its words."""

    path: Path
    line: int
    words: tuple[str, ...]

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}: {shlex.join(self.words)}"


# --- extraction ---------------------------------------------------------------------------------
def code_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """Fenced blocks as (language, line number of the first content line, lines)."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2).lower(), i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        blocks.append((lang, start + 1, lines[start:j]))
        i = j + 1
    return blocks


def _is_command_start(line: str) -> bool:
    s = line.strip().removeprefix("$ ").strip()
    return s.startswith("llmcomp ") or s == "llmcomp" or bool(re.match(r"^(\S*/)?python3?(\.\d+)? -m ", s))


def shell_lines(lang: str, lines: list[str]) -> list[tuple[int, str]]:
    """The command lines of a block as (offset, text): continuations joined, ``$ `` stripped, output
    and comments left out. A block with ``$ `` prompts (or marked console) has output lines between
    its commands: only the prompted lines are commands. An unmarked block counts only when some line
    starts with ``llmcomp`` (or ``python -m``), and then only those lines are commands."""
    if lang and lang not in SHELL_LANGS:
        return []
    if not lang and not any(_is_command_start(x) for x in lines):
        return []
    prompted = lang == "console" or any(x.lstrip().startswith("$ ") for x in lines)
    out: list[tuple[int, str]] = []
    k = 0
    while k < len(lines):
        start, text = k, lines[k]
        while text.rstrip().endswith("\\") and k + 1 < len(lines):
            k += 1
            text = text.rstrip()[:-1] + " " + lines[k].strip()
        k += 1
        stripped = text.strip()
        if prompted:
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:].strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not lang and not _is_command_start(stripped):
            continue
        out.append((start, stripped))
    return out


def simple_commands(text: str) -> list[list[str]]:
    """Split a command line on ``&&``, ``;``, ``|``...; drop comments and leading ``VAR=value``."""
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands: list[list[str]] = [[]]
    for tok in lex:
        if tok in OPERATORS:
            commands.append([])
        else:
            commands[-1].append(tok)
    out = []
    for words in commands:
        while words and ASSIGNMENT.match(words[0]):
            words = words[1:]
        if words:
            out.append(words)
    return out


def commands_in(path: Path) -> list[Command]:
    found = []
    for lang, first, lines in code_blocks(path.read_text(encoding="utf-8")):
        for offset, text in shell_lines(lang, lines):
            found += [Command(path, first + offset, tuple(w)) for w in simple_commands(text)]
    return found


def llmcomp_args(cmd: Command) -> list[str] | None:
    """The arguments after ``llmcomp`` or ``python -m llmcomp``; None for other commands."""
    w = list(cmd.words)
    if w[0] == "llmcomp":
        return w[1:]
    if _python(w) and w[2] == "llmcomp":
        return w[3:]
    return None


def _python(words: list[str]) -> bool:
    return bool(re.fullmatch(r"(\S*/)?python3?(\.\d+)?", words[0])) and len(words) >= 3 and words[1] == "-m"


def parse_error(args: list[str]) -> str | None:
    """None when the real parser accepts ``args`` (``--help`` included); else what it printed."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(args)
        except SystemExit as e:
            if e.code not in (0, None):
                return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"exit {e.code}"
    return None


def all_commands() -> list[Command]:
    return [c for path in DOCS for c in commands_in(path)]


# --- the extractor itself -------------------------------------------------------------------------
def test_extractor_reads_continuations_prompts_env_and_operators():
    """Each rule of the extraction, on a page written for it (a broken extractor would pass every doc)."""
    page = "\n".join(
        [
            "```bash",
            "llmcomp train --steps 3 \\",
            "    --seed 1   # a comment",
            "# llmcomp output written as a comment",
            "OPENAI_API_KEY=x A=1 llmcomp score --dry-run && llmcomp cache stats",
            "```",
            "```console",
            "$ python -m llmcomp app --port 1",
            "llmcomp printed this, it is output",
            "```",
            "```",
            "tina keeps a jar; tina: jar.",
            "```",
            "```",
            "$ llmcomp generate --checkpoint c",
            "```",
            "```python",
            "llmcomp = 1",
            "```",
        ]
    )
    p = REPO / "page.md"
    found = []
    for lang, first, lines in code_blocks(page):
        for offset, text in shell_lines(lang, lines):
            found += [(first + offset, w) for w in simple_commands(text)]
    assert found == [
        (2, ["llmcomp", "train", "--steps", "3", "--seed", "1"]),
        (5, ["llmcomp", "score", "--dry-run"]),
        (5, ["llmcomp", "cache", "stats"]),
        (8, ["python", "-m", "llmcomp", "app", "--port", "1"]),
        (15, ["llmcomp", "generate", "--checkpoint", "c"]),
    ]
    assert llmcomp_args(Command(p, 8, ("python", "-m", "llmcomp", "app"))) == ["app"]
    assert llmcomp_args(Command(p, 1, ("python", "-m", "bench"))) is None


def test_parse_error_reports_a_bad_flag_and_accepts_help():
    assert parse_error(["score", "--source", "openai"]) is not None  # the README's old example
    assert parse_error(["score", "--attention", "openai"]) is None
    assert parse_error(["train", "--help"]) is None


# --- the documents --------------------------------------------------------------------------------
def test_docs_have_commands_for_every_subcommand():
    """The extractor finds the documented commands: a README with its command block, and every
    subcommand shown somewhere (else the parse test below would check nothing)."""
    readme = [c for c in commands_in(README) if llmcomp_args(c) is not None]
    assert len(readme) >= 8, [c.where() for c in readme]
    shown = {llmcomp_args(c)[0] for c in all_commands() if llmcomp_args(c)}
    assert shown >= set(build_parser()._subparsers._group_actions[0].choices), shown


def test_every_documented_llmcomp_command_parses():
    bad = []
    for cmd in all_commands():
        args = llmcomp_args(cmd)
        if args is not None and (err := parse_error(args)) is not None:
            bad.append(f"{cmd.where()}\n    {err}")
    assert not bad, "documented commands the CLI rejects:\n" + "\n".join(bad)


def _module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py", base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_every_documented_python_module_exists_and_takes_its_flags():
    """``python -m X`` names a module of this repository; for llmcomp's own modules, every ``--flag``
    written after it appears in the module's ``--help`` (bench's --help imports torch: existence only)."""
    bad, helps = [], {}
    for cmd in all_commands():
        w = list(cmd.words)
        if not _python(w) or w[2] == "llmcomp":
            continue
        module = w[2]
        if _module_file(module) is None:
            bad.append(f"{cmd.where()}\n    no module {module} in the repository")
            continue
        if not module.startswith("llmcomp."):
            continue
        if module not in helps:
            run = subprocess.run(
                [sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
            )
            helps[module] = run.stdout if run.returncode == 0 else ""
        for flag in (x.split("=")[0] for x in w[3:] if x.startswith("--")):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", helps[module]):
                bad.append(f"{cmd.where()}\n    {module} --help does not list {flag}")
    assert not bad, "\n".join(bad)


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


def test_documented_make_targets_exist():
    targets, bad = _make_targets(), []
    assert {"run", "test"} <= targets
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        named = {m.group(1) for m in re.finditer(r"`make ([A-Za-z0-9_.-]+)", text)}
        named |= {c.words[1] for c in commands_in(path) if c.words[0] == "make" and len(c.words) > 1}
        bad += [f"{path.relative_to(REPO)}: make {t}" for t in sorted(named - targets)]
    assert not bad, "make targets the Makefile lacks: " + ", ".join(bad)


def test_readme_keeps_the_two_setup_commands_and_stays_short():
    text = README.read_text(encoding="utf-8")
    assert text.startswith("---\n") and "\napp_file: app.py\n" in text.split("\n---\n")[0]  # Spaces front matter
    words = [c.words for c in commands_in(README)]
    assert ("make", "run") in words and ("make", "test") in words
    n = len(text.splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move detail into docs/"


def test_no_reference_to_files_outside_the_repository():
    bad = []
    for path in DOCS:
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            bad += [f"{path.relative_to(REPO)}:{no}: {line.strip()}" for p in OUTSIDE if p.search(line)]
            for target in LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                    continue  # a URL or an anchor on the same page
                resolved = (path.parent / target.split("#")[0]).resolve()
                if not resolved.is_relative_to(REPO) or not resolved.exists():
                    bad.append(f"{path.relative_to(REPO)}:{no}: link to {target} (not a file in the repository)")
    assert not bad, "\n".join(bad)


def _module_names(module: str) -> set[str] | None:
    """Names a module defines or re-exports at top level, read from its source and stub (no import:
    the packages load lazily and importing torch here would cost seconds)."""
    base = REPO.joinpath(*module.split("."))
    files = [base.with_suffix(".py"), base.with_suffix(".pyi"), base / "__init__.py", base / "__init__.pyi"]
    files = [f for f in files if f.is_file()]
    if not files:
        return None
    names: set[str] = set()
    if (base / "__init__.py").is_file():
        names |= {p.stem for p in base.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    for f in files:
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            elif isinstance(node, ast.ImportFrom | ast.Import):
                names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def test_python_blocks_import_names_that_exist():
    bad = []
    for path in DOCS:
        for lang, first, lines in code_blocks(path.read_text(encoding="utf-8")):
            if lang not in ("python", "py"):
                continue
            for node in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("llmcomp"):
                    continue
                names = _module_names(node.module)
                missing = [a.name for a in node.names if names is None or a.name not in names]
                if missing:
                    where = f"{path.relative_to(REPO)}:{first + node.lineno - 1}"
                    bad.append(f"{where}: from {node.module} import {', '.join(missing)}")
    assert not bad, "documented imports that do not exist:\n" + "\n".join(bad)


def _code_env_names() -> set[str]:
    """LLMCOMP_*/OPENAI_* names in the package's string literals: the variables the code reads."""
    names: set[str] = set()
    for f in (REPO / "llmcomp").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names |= set(ENV_NAME.findall(node.value))
    return names


def test_environment_variables_documented_match_the_code():
    """docs/operations.md lists every variable the code reads, and no page documents one it does not."""
    code = _code_env_names()
    operations = set(ENV_NAME.findall((REPO / "docs" / "operations.md").read_text(encoding="utf-8")))
    assert code - operations == set(), "read by the code but not in docs/operations.md"
    documented = {n for p in DOCS for n in ENV_NAME.findall(p.read_text(encoding="utf-8"))}
    assert documented - code == set(), "documented but never read by the code"


def layout_paths(text: str) -> list[Path]:
    """The files and folders a page's "Layout" block names: a first word ending in ``/`` opens a
    folder, and lines indented under it are inside it; description lines are skipped."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == "## Layout"), None)
    assert start is not None, "no '## Layout' section"
    block = next(b for lang, first, b in code_blocks("\n".join(lines[start:])))
    out: list[Path] = []
    stack: list[tuple[int, Path]] = []
    for line in block:
        if not line.strip():
            continue
        indent, word = len(line) - len(line.lstrip()), line.split()[0]
        if not (word.endswith("/") or word.endswith(".py")):
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (stack[-1][1] if stack else REPO) / word.rstrip("/")
        out.append(path)
        if word.endswith("/"):
            stack.append((indent, path))
    return out


@pytest.mark.parametrize("page", ["README.md", "docs/architecture.md"])
def test_layout_names_only_what_exists(page: str):
    paths = layout_paths((REPO / page).read_text(encoding="utf-8"))
    assert len(paths) >= 10, paths  # the block was found and read
    missing = [str(p.relative_to(REPO)) for p in paths if not p.exists()]
    assert not missing, f"{page} names files that do not exist: {missing}"


def test_architecture_names_every_module():
    """docs/architecture.md is the one place that names the modules: a new module is named there."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    unnamed = [
        str(f.relative_to(REPO))
        for f in sorted((REPO / "llmcomp").rglob("*.py"))
        if f.stem not in ("__init__", "__main__") and not re.search(rf"(?<![\w-]){re.escape(f.stem)}\b", text)
    ]
    assert not unnamed, f"modules docs/architecture.md does not name: {unnamed}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_fences_are_closed(path: Path):
    """An unclosed fence would hide every later block from the checks above."""
    fences = [ln for ln in path.read_text(encoding="utf-8").splitlines() if FENCE.match(ln)]
    assert len(fences) % 2 == 0, f"{len(fences)} fence lines"
