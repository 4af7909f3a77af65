"""The documents: every command they quote parses, every script and make target they name exists,
and the README stays a short user's document.

Commands are taken from fenced code blocks (continuation lines joined, ``# comments`` dropped) and
from inline code that starts with ``asrbench ``. Each ``asrbench`` command's subcommand path must
exist (its ``--help`` runs), and every ``--flag`` it uses must be listed in that ``--help``.
Placeholders (``DIR``, ``...``, ``[--beam K]``, ``a|b``) are allowed anywhere a value goes.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from asrbench.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "results").glob("*/RESULTS.md")),
]
README_LIMIT = 15 * 1024  # bytes: internals go to docs/, results to results/
INLINE = re.compile(r"`([^`]+)`")
SEPARATORS = {"&&", "||", ";", "|", "&", ">", ">>", "2>&1"}
PLACEHOLDERS = {"...", "…"}
FLAG = re.compile(r"^--?[A-Za-z][\w-]*")
SCRIPT = re.compile(r"\bbenchmarks/[\w./-]+\.py\b")
MAKE = re.compile(r"(?:^|\s)make\s+([A-Za-z][\w.-]*)")


def code_lines(markdown: str) -> list[tuple[str, bool]]:
    """(line, fenced) for every line of code: fenced lines with ``\\`` continuations joined and
    comments removed, and every inline code span (``fenced`` False), which may wrap onto the next
    line of its paragraph."""
    lines: list[tuple[str, bool]] = []
    fenced, pending, paragraph = False, "", []

    def inline_spans() -> None:
        text = " ".join(line.strip() for line in paragraph)
        lines.extend((" ".join(span.replace("\\|", "|").split()), False) for span in INLINE.findall(text))
        paragraph.clear()

    for raw in markdown.splitlines():
        if raw.lstrip().startswith(("```", "~~~")):
            inline_spans()
            fenced, pending = not fenced, ""
            continue
        if fenced:
            line = pending + raw.strip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            line = re.sub(r"(^|\s)#.*$", "", line).strip()  # a shell comment
            if line:
                lines.append((line, True))
        elif raw.strip():
            paragraph.append(raw)
        else:
            inline_spans()
    inline_spans()
    return lines


def asrbench_commands(markdown: str) -> list[list[str]]:
    """The argument lists (after ``asrbench``) of the asrbench commands a Markdown text quotes.

    Fenced lines count when they start with ``asrbench`` (or a path ending in ``/asrbench``), or
    run it as ``... -m asrbench`` (torchrun, python); inline code counts when it starts with
    ``asrbench ``. Square brackets of optional parts are dropped; a command ends at a shell
    separator (``&&``, ``|``, ``;``, ``&``, a redirection)."""
    commands = []
    for line, fenced in code_lines(markdown):
        tokens = [token for token in line.replace("[", " ").replace("]", " ").split() if token]
        if tokens and tokens[0] == "$":
            tokens = tokens[1:]
        if not fenced and not line.startswith("asrbench "):
            continue
        starts = [
            i
            for i, token in enumerate(tokens)
            if (token == "asrbench" or token.endswith("/asrbench"))
            and (i == 0 or tokens[i - 1] == "-m" or tokens[i - 1] in SEPARATORS)
        ]
        for start in starts:
            arguments = []
            for token in tokens[start + 1 :]:
                if token in SEPARATORS:
                    break
                arguments.append(token)
            commands.append(arguments)
    return commands


@functools.cache
def help_options(path: tuple[str, ...]) -> frozenset[str] | str:
    """The option names ``asrbench PATH --help`` lists (its option column), or the error output."""
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200, env={"COLUMNS": "200"})
    if result.exit_code != 0:
        return result.output.strip()
    names = set()
    for line in result.output.splitlines():
        for token in line.strip().strip("│").split():  # a row: [*] --name[,--alias] [-x] <metavar> help
            if token == "*":
                continue
            if not token.startswith("-"):
                break
            names.update(name for name in token.split(",") if name)
    return frozenset(names)


def problems_of(arguments: list[str], command=None, path: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with one quoted ``asrbench`` command: a subcommand that does not exist, or a
    flag that its ``--help`` does not list. Empty when it parses."""
    command = command or typer.main.get_command(app)
    options = help_options(path)
    shown = " ".join(("asrbench", *path))
    if isinstance(options, str):
        return [f"{shown} --help fails: {options}"]
    problems = []
    subcommands = getattr(command, "commands", None)
    index = 0
    if subcommands is not None:  # a group: its own options, then one of its subcommands
        while index < len(arguments) and arguments[index].startswith("-"):
            problems += [
                f"{shown}: no option {flag}" for flag in _flags(arguments[index : index + 1]) if flag not in options
            ]
            index += 1
        if index == len(arguments) or arguments[index] in PLACEHOLDERS:
            return problems
        for name in arguments[index].split("|"):  # `data prepare|synth|download`
            if name not in subcommands:
                problems.append(f"{shown}: no such command {name!r} (valid: {', '.join(sorted(subcommands))})")
                continue
            problems += problems_of(arguments[index + 1 :], subcommands[name], (*path, name))
        return problems
    return [f"{shown}: no option {flag}" for flag in _flags(arguments) if flag not in options]


def _flags(arguments: list[str]) -> list[str]:
    """``--flag`` and ``-x`` names among the arguments (``--flag=value`` gives ``--flag``)."""
    return [FLAG.match(argument).group(0) for argument in arguments if FLAG.match(argument)]


def missing_paths(markdown: str) -> list[str]:
    """``benchmarks/...py`` scripts named in code that do not exist."""
    return sorted(
        {script for line, _ in code_lines(markdown) for script in SCRIPT.findall(line) if not (ROOT / script).is_file()}
    )


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return {match.group(1) for match in re.finditer(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, flags=re.M)}


def missing_make_targets(markdown: str) -> list[str]:
    """``make TARGET`` quoted in code (fenced lines, or inline code starting with ``make ``) whose
    target the Makefile does not define."""
    targets = makefile_targets()
    quoted = {
        match
        for line, fenced in code_lines(markdown)
        if fenced or line.startswith("make ")
        for match in MAKE.findall(line)
    }
    return sorted(quoted - targets)


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_quoted_asrbench_command_parses(document: Path) -> None:
    markdown = document.read_text(encoding="utf-8")
    problems = [
        f"asrbench {' '.join(arguments)}: {problem}"
        for arguments in asrbench_commands(markdown)
        for problem in problems_of(arguments)
    ]
    assert problems == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_quoted_script_and_make_target_exists(document: Path) -> None:
    markdown = document.read_text(encoding="utf-8")
    assert missing_paths(markdown) == []
    assert missing_make_targets(markdown) == []


def test_the_documents_quote_commands_at_all() -> None:
    """A broken extractor would pass the tests above on nothing."""
    commands = [
        arguments for document in DOCUMENTS for arguments in asrbench_commands(document.read_text(encoding="utf-8"))
    ]
    assert len(commands) >= 30
    assert {arguments[0] for arguments in commands if arguments} >= {
        "data",
        "models",
        "train",
        "decode",
        "tune",
        "lm",
        "score",
        "compare",
        "bench",
    }


def test_readme_is_short() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; move internals to docs/, results to results/"


BAD = """
Decode with a beam:

```bash
asrbench decode runs/an4/conformer --beem 10 \\
    [--tag NAME] [--lexicon train|FILE] ...   # a comment: --not-a-flag
torchrun --nproc_per_node 2 -m asrbench train yesno --model cnn --out DIR --epoch 3
python benchmarks/no_such_script.py --out runs/x
make no-such-target
```

Then `asrbench decod runs/an4/conformer` and `asrbench data prepare|synth|download`, and `asrbench
compare runs/* [--format markdown|csv|json] [-o FILE]` (wrapped); prose `--notchecked` is ignored.
"""


def test_the_extractor_joins_continuations_and_drops_brackets_and_comments() -> None:
    commands = asrbench_commands(BAD)
    assert commands[0] == [
        "decode",
        "runs/an4/conformer",
        "--beem",
        "10",
        "--tag",
        "NAME",
        "--lexicon",
        "train|FILE",
        "...",
    ]
    assert commands[1][:2] == ["train", "yesno"]  # from torchrun's -m asrbench
    assert [arguments[0] for arguments in commands[2:]] == ["decod", "data", "compare"]


def test_a_nonexistent_flag_or_subcommand_is_reported() -> None:
    problems = [problem for arguments in asrbench_commands(BAD) for problem in problems_of(arguments)]
    assert problems[:2] == ["asrbench decode: no option --beem", "asrbench train: no option --epoch"]
    assert len(problems) == 3 and problems[2].startswith("asrbench: no such command 'decod' (valid: bench, ")
    assert problems_of(["data", "prepare|synth|downlaod", "x"])[0].startswith(
        "asrbench data: no such command 'downlaod'"
    )


def test_a_missing_script_or_make_target_is_reported() -> None:
    assert missing_paths(BAD) == ["benchmarks/no_such_script.py"]
    assert missing_make_targets(BAD) == ["no-such-target"]
    assert missing_make_targets("```\nmake demo   # and make test\n```\n`make bench`") == []
