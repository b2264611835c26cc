"""The docs cannot go stale silently: what README.md and docs/ show is checked against the code.

- every `ryzanstein ...` command line parses with the real CLI parser, and every `python benchmarks/x.py ...`
  line with that script's `parser()`; a synopsis (`[--model M]`, `NAME`, `a|b`) names only real subcommands
  and flags, and only values a flag with fixed choices accepts;
- every `--flag` shown in code is a flag of the CLI or of a benchmark script, and a value listed for a flag
  with choices (`--backend native|llama.cpp|torch`) is one of them;
- every RYZANSTEIN_* variable is one the code reads, and RYZANSTEIN_NATIVE_ISA's values are the kernels' names;
- every relative link (and the heading anchor it names) and every repository path named in code exists;
- the README is short and links every docs page; no page holds a commit hash or a work-item number.

The checker is `check_page(name, text, folder)`, a list of problems; `test_the_checker_reports_*` feed it a bad
snippet to show that it does fail.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "ryzanstein"
README_MAX_LINES = 220
# flags of tools that are not ours (pip; `ray start`), allowed in the docs
OTHER_TOOLS_FLAGS = {"--no-deps", "--no-cache-dir", "--head", "--address"}
PIPE_TOKENS = {"|", "||", "&&", ";"}


def pages() -> list[Path]:
    """README.md, every docs page, and the committed benchmark reports."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "benchmarks" / "results").glob("**/report.md"))]


# --- what the code accepts -------------------------------------------------------------------------------------

@cache
def cli_parser() -> argparse.ArgumentParser:
    from ryzanstein.cli.main import build_parser

    return build_parser()


@cache
def script_parser(script: str) -> argparse.ArgumentParser | None:
    """benchmarks/x.py's parser(), built without running the script (None if it has none)."""
    path = ROOT / script
    spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parser() if hasattr(module, "parser") else None


def subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: sp for a in p._actions if isinstance(a, argparse._SubParsersAction) for name, sp in a.choices.items()}


def all_parsers() -> list[argparse.ArgumentParser]:
    out, todo = [], [cli_parser()]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(subparsers(p).values())
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        p = script_parser(str(script.relative_to(ROOT)))
        if p is not None:
            out.append(p)
    return out


@cache
def known_flags() -> dict[str, set[str] | None]:
    """Every long flag of the CLI and the benchmark scripts -> the union of its fixed choices (None: some parser
    takes any value for it)."""
    flags: dict[str, set[str] | None] = {f: None for f in OTHER_TOOLS_FLAGS}
    for p in all_parsers():
        for a in p._actions:
            choices = {str(c) for c in a.choices} if a.choices and not isinstance(a.choices, dict) else None
            for s in a.option_strings:
                if s.startswith("--"):
                    if s not in flags:
                        flags[s] = choices
                    elif flags[s] is not None:
                        flags[s] = None if choices is None else flags[s] | choices
    return flags


@cache
def isa_names() -> set[str]:
    """The instruction-set names the native kernels answer to: each `rz_isa` table's name string in csrc/, and
    what the built extension reports (this CPU's subset)."""
    names = set()
    for f in (ROOT / "csrc").rglob("*.[ch]"):
        names |= set(re.findall(r'rz_isa\s+rz_isa_\w+\s*=\s*\{\s*"([^"]+)"', f.read_text()))
    with contextlib.suppress(Exception):
        from ryzanstein.models import _native

        names |= set(_native.isa_names())
    assert names, "found no instruction-set names in csrc/ or the _native extension"
    return names


@cache
def env_values() -> dict[str, set[str]]:
    from ryzanstein.config import DEVICES

    return {"RYZANSTEIN_NATIVE_ISA": isa_names(), "RYZANSTEIN_TEST_DEVICE": set(DEVICES)}


@cache
def env_vars_in_code() -> set[str]:
    names = set()
    for folder in ("src", "tests", "benchmarks", "csrc"):
        for f in (ROOT / folder).rglob("*"):
            if f.suffix in (".py", ".c", ".h", ".sh") and f.name != "test_docs.py":
                names |= set(re.findall(r"RYZANSTEIN_[A-Z0-9_]+", f.read_text()))
    for f in (ROOT / "install.sh", ROOT / "setup.py"):
        if f.exists():
            names |= set(re.findall(r"RYZANSTEIN_[A-Z0-9_]+", f.read_text()))
    return names


# --- reading a page ---------------------------------------------------------------------------------------------

def split_page(text: str) -> tuple[list[tuple[str, int, str]], list[tuple[int, str]], list[tuple[int, str]]]:
    """(code-block lines as (language, line number, logical line), inline code spans, prose lines)."""
    blocks, spans, prose = [], [], []
    fence, lang, pending = None, "", ""
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*(```+|~~~+)\s*(\S*)", line)
        if m and (fence is None or m.group(1).startswith(fence)):
            fence, lang = (m.group(1), m.group(2).lower()) if fence is None else (None, "")
            continue
        if fence is not None:
            pending += line
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            blocks.append((lang, n, pending))
            pending = ""
            continue
        prose.append((n, line))
        for s in re.findall(r"(?<!`)`([^`]+)`(?!`)", line):
            spans.append((n, s.replace("\\|", "|")))
    return blocks, spans, prose


def is_placeholder(tok: str) -> bool:
    t = tok.strip("[]")
    return (tok == "..." or tok.startswith("[") or tok.endswith("]") or "<" in tok
            or ("|" in tok and tok not in PIPE_TOKENS) or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*(,\.\.\.)?", t)))


def commands(line: str) -> list[list[str]]:
    """The commands of one shell line (split at |, &&, ;), env assignments and .venv/bin/ dropped."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return []
    out, cur = [], []
    synopsis = any(t.startswith("[") for t in tokens)  # there `a | b` is a choice, not a pipe
    for t in tokens + [";"]:
        if t in PIPE_TOKENS and not (synopsis and t == "|"):
            while cur and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", cur[0]):
                cur.pop(0)
            if cur:
                cur[0] = re.sub(r"^(\./)?\.venv/bin/", "", cur[0])
                out.append(cur)
            cur = []
        else:
            cur.append(t)
    return out


def parse_errors(p: argparse.ArgumentParser, args: list[str]) -> str | None:
    """What argparse says about args (None: they parse)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            p.parse_args(args)
    except SystemExit as e:
        return None if e.code in (0, None) else err.getvalue().strip() or f"exit {e.code}"
    return None


def check_synopsis(p: argparse.ArgumentParser, args: list[str], where: str) -> list[str]:
    """A synopsis: its subcommands exist, its flags are the parser's, values listed for choices are allowed."""
    problems = []
    for i, tok in enumerate(args):
        word = tok.strip("[]")
        subs = subparsers(p)
        if word in subs:
            p = subs[word]
            continue
        if word.startswith("--"):
            flag = word.split("=")[0]
            actions = {s: a for a in p._actions for s in a.option_strings}
            top = {s: a for a in cli_parser()._actions for s in a.option_strings}
            action = actions.get(flag) or top.get(flag)
            if action is None:
                problems.append(f"{where}: {flag} is not a flag of `{p.prog}`")
                continue
            value = word.split("=", 1)[1] if "=" in word else (args[i + 1].strip("[]") if i + 1 < len(args) else "")
            if action.choices and value and not value.startswith("-") and not re.fullmatch(r"[A-Z][A-Z0-9_]*", value):
                bad = [v for v in value.split("|") if v not in {str(c) for c in action.choices}]
                if bad:
                    problems.append(f"{where}: {flag} does not accept {', '.join(bad)} (choices: "
                                    f"{', '.join(map(str, action.choices))})")
    return problems


def check_command(cmd: list[str], where: str, inline: bool) -> list[str]:
    """One command shown: `ryzanstein ...` or `python benchmarks/x.py ...`."""
    problems = []
    if cmd[0] == "ryzanstein":
        parser, args, name = cli_parser(), cmd[1:], "ryzanstein"
    elif re.fullmatch(r"(.*/)?python3?", cmd[0]) and len(cmd) > 1 and re.fullmatch(r"benchmarks/\w+\.py", cmd[1]):
        if not (ROOT / cmd[1]).is_file():
            return [f"{where}: {cmd[1]} does not exist"]
        parser, args, name = script_parser(cmd[1]), cmd[2:], cmd[1]
        if parser is None:
            return [f"{where}: {cmd[1]} has no parser() to check `{' '.join(cmd)}` against"]
    else:
        return []
    for tok in args:
        if re.match(r"(src|tests|benchmarks|docs|csrc)/", tok) and not is_placeholder(tok) and not (ROOT / tok).exists():
            problems.append(f"{where}: {tok} (in `{' '.join(cmd)}`) does not exist")
    if any(is_placeholder(t) for t in args):
        return problems + check_synopsis(parser, args, where)
    err = parse_errors(parser, args)
    if err and inline and "arguments are required" in err:  # `ryzanstein generate` named in a sentence
        return problems + check_synopsis(parser, args, where)
    if err:
        problems.append(f"{where}: `{name} {' '.join(args)}` does not parse: {err}")
    return problems


def check_flag_mentions(code: str, where: str) -> list[str]:
    """Every --flag in a piece of code is a real one; values listed after a flag with choices are allowed."""
    problems, flags = [], known_flags()
    for m in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?:[= ]([^\s`]+))?", code):
        flag, value = m.group(1), m.group(2)
        if flag not in flags:
            problems.append(f"{where}: {flag} is not a flag of the CLI or of a benchmark script")
        elif flags[flag] and value and not value.startswith("-") and not is_placeholder(value.replace("|", "")):
            bad = [v for v in value.strip("[](),;.").split("|") if v and v not in flags[flag]]
            if bad:
                problems.append(f"{where}: {flag} does not accept {', '.join(bad)} "
                                f"(choices: {', '.join(sorted(flags[flag]))})")
    return problems


def check_env(text: str, where: str) -> list[str]:
    problems = []
    for name in sorted(set(re.findall(r"RYZANSTEIN_[A-Z0-9_]+", text))):
        if name not in env_vars_in_code():
            problems.append(f"{where}: {name} is read nowhere in the code")
    for name, value in re.findall(r"(RYZANSTEIN_[A-Z0-9_]+)=([^\s`'\"]+)", text):
        allowed = env_values().get(name)
        if allowed is not None:
            bad = [v for v in value.strip(".,;)").split("|") if v not in allowed]
            if bad:
                problems.append(f"{where}: {name}={value}: {', '.join(bad)} is not one of {', '.join(sorted(allowed))}")
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    h = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    _, _, prose = split_page(text)
    for _, line in prose:
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def resolve_repo_path(span: str) -> bool | None:
    """Whether a code span naming a repository path exists (None: the span is not such a path)."""
    if not re.fullmatch(r"[\w.\-/]+", span) or "..." in span or span.startswith(("bench-results", ".venv", "/", "~")):
        return None
    if re.search(r"[A-Z]{3,}", span) and not span.startswith(("README", "MANIFEST")):  # NAME, DIR: placeholders
        return None
    path = span.rstrip("/")
    if "/" not in path:
        if not re.search(r"\.(py|c|h)$", path):  # config.json, report.md: generic file names, not paths
            return None
        return any(p.is_file() for p in [ROOT / path, PACKAGE / path, ROOT / "csrc" / "native" / path,
                                         *[d / path for d in PACKAGE.iterdir() if d.is_dir()]])
    first = path.split("/")[0]
    tops = {"src", "tests", "benchmarks", "docs", "csrc", ".ci"}
    package_dirs = {d.name for d in PACKAGE.iterdir() if d.is_dir() and not d.name.startswith("_")} | {"spec"}
    if first in tops:
        return (ROOT / path).exists()
    if first in package_dirs:
        return (PACKAGE / path).exists()
    return None


def check_page(name: str, text: str, folder: Path) -> list[str]:
    """Every problem of one Markdown page (`folder`: where its relative links start)."""
    problems = []
    blocks, spans, prose = split_page(text)
    for lang, n, line in blocks:
        if lang in ("", "bash", "sh", "shell", "console", "text"):
            for cmd in commands(line):
                problems += check_command(cmd, f"{name}:{n}", inline=False)
            problems += check_flag_mentions(line, f"{name}:{n}")
    for n, span in spans:
        for cmd in commands(span) if re.match(r"(\S+=\S+ )*(\.venv/bin/)?(ryzanstein|python3?)\b", span) else []:
            problems += check_command(cmd, f"{name}:{n}", inline=True)
        problems += check_flag_mentions(span, f"{name}:{n}")
        exists = resolve_repo_path(span)
        if exists is False:
            problems.append(f"{name}:{n}: `{span}` names a path that does not exist")
    problems += check_env(text, name)
    for n, line in prose:
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (folder / path).resolve() if path else None
            if file is not None and not file.exists():
                problems.append(f"{name}:{n}: the link {target} points at nothing")
            elif anchor and (file is None or file.suffix == ".md"):
                page_text = text if file is None else file.read_text()
                if anchor not in anchors(page_text):
                    problems.append(f"{name}:{n}: the link {target}: no heading has the anchor #{anchor}")
    return problems


def diary_marks(text: str) -> list[str]:
    """Commit hashes and work-item numbers (a sha256 shown in an error message is neither)."""
    marks = []
    for m in re.finditer(r"\b[0-9a-f]{7,40}\b", text):
        word = m.group(0)
        if re.search(r"[a-f]", word) and re.search(r"\d", word) and not re.search(
                r"(sha256|expected)\s*$", text[max(0, m.start() - 12):m.start()]):
            marks.append(word)
    marks += re.findall(r"(?i)\b(?:issues?|defects?|work items?|PR)\s+#?\d+|(?<![\w&/])#\d+\b", text)
    return marks


# --- the tests --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_what_the_page_shows_is_what_the_code_accepts(page):
    problems = check_page(str(page.relative_to(ROOT)), page.read_text(), page.parent)
    assert not problems, "\n".join(problems)


def test_readme_is_short_and_links_every_docs_page():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if f"](docs/{p.name}" not in text]
    assert not missing, f"README.md does not link {', '.join(missing)}"


@pytest.mark.parametrize("page", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_commit_hashes_or_work_item_numbers(page):
    marks = diary_marks(page.read_text())
    assert not marks, f"{page.name} holds {marks}: the commit message is where a number's history lives"


def test_every_benchmark_script_exposes_its_parser():
    missing = [p.name for p in sorted((ROOT / "benchmarks").glob("*.py"))
               if script_parser(str(p.relative_to(ROOT))) is None]
    assert not missing, f"no parser() in {', '.join(missing)}"


BAD = """\
```bash
ryzanstein generate "Hi" --no-such-flag 3
ryzanstein bench --backend vulkan
.venv/bin/python benchmarks/pool.py --nope a.json
```

Force one with `RYZANSTEIN_NATIVE_ISA=avx9` or set `RYZANSTEIN_NO_SUCH_VAR=1`; `--policy auto|greedy` chooses K.
See [the guide](no-such-page.md), [a section](#no-such-heading) and `src/ryzanstein/no_such_file.py`.
Fixed in 0123abc (issue 14).

## A heading
"""

GOOD = """\
```bash
ryzanstein generate "Write a haiku" --backend native --k 4 --policy fixed
ryzanstein bench --drafts ngram --ks auto --reps 3 --lockstep
.venv/bin/python benchmarks/pool.py a.json b.json --config ngram:auto
```

`ryzanstein generate PROMPT [--model M] [--backend native|llama.cpp|torch]`, `RYZANSTEIN_NATIVE_ISA=avx2`,
`ryzanstein models pull NAME`, `ryzanstein generate`; [a section](#a-heading), `speculative/loop.py`.

## A heading
"""


def test_the_checker_reports_each_kind_of_stale_doc():
    problems = "\n".join(check_page("bad.md", BAD, ROOT / "docs"))
    for expected in ("--no-such-flag", "--backend: invalid choice: 'vulkan'", "--nope", "avx9",
                     "RYZANSTEIN_NO_SUCH_VAR", "--policy does not accept greedy", "no-such-page.md",
                     "#no-such-heading", "src/ryzanstein/no_such_file.py"):
        assert expected in problems, f"the checker missed {expected!r}:\n{problems}"
    assert set(diary_marks(BAD)) == {"0123abc", "issue 14"}


def test_the_checker_passes_a_good_snippet():
    assert check_page("good.md", GOOD, ROOT / "docs") == []
    assert diary_marks(GOOD) == []
