"""The package's layering, from its source: the module-level import graph, cycles, layer rules,
imports inside functions, and functions longer than ~80 lines.

A function's length is its body's: from its first statement (its docstring, when it has one) to its
last line. The signature does not count: a CLI command's signature is the list of its options.

    python tools/layering.py            # the import graph as a listing, then every check
    python tools/layering.py --check    # only the checks; exit code 1 if one fails

Only imports at a module's top level count as edges (what runs when the module is imported);
imports inside functions are listed separately, each with the comment that says why it is there.
tests/test_layering.py runs the checks.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "asrbench"

# The stages, in the order data flows through them: a module of one stage imports only the leaf
# utilities at the top level and modules of its own or an earlier stage (asrbench/<stage>/__init__.py
# says what enters and leaves each). The CLI comes last and may import anything.
STAGES = (
    "asrbench.recipe",  # YAML -> validated config dataclasses
    "asrbench.data",  # corpus -> manifest -> features -> batches
    "asrbench.scoring",  # texts -> error rates, CIs (pure: no models, no run dirs)
    "asrbench.models",  # encoders x heads: features -> outputs and losses
    "asrbench.runs",  # the run dir and its checkpoints
    "asrbench.decoding",  # search, LM, decode a run dir, tune
    "asrbench.training",  # the trainer: a recipe -> a run dir
    "asrbench.studies",  # compare, bench, studies, report: several runs' results
    "asrbench.deploy",  # transcribe, export, the ONNX runtime
    "asrbench.cli",
)
# The top level keeps the CLI, the errors and a few leaf utilities (issue 29: at most 10 modules).
UTILITIES = (
    "asrbench",
    "asrbench.errors",
    "asrbench.fileio",
    "asrbench.env",
    "asrbench.version",
    "asrbench.progress",
    "asrbench.text",
    "asrbench.torchaudio_compat",
)
TOP_LEVEL = (*UTILITIES, "asrbench.__main__", "asrbench.cli")
MAX_TOP_LEVEL = 10
# Rules on top of the stage order: a module under the key's prefix never imports one under these.
FORBIDDEN = {
    # Models never read files and know nothing of search: no data layer (manifests, features, audio),
    # no file helpers, no scoring; search is chosen in asrbench.decoding.
    "asrbench.models": ("asrbench.data", "asrbench.scoring", "asrbench.fileio"),
    "asrbench.errors": ("asrbench.",),
}
MAX_FUNCTION_LINES = 80  # STYLE.md habit 1: no function over ~80 lines without a comment saying why
# A longer function must say why in a comment containing this, on its def line or in its docstring's
# first lines ("the hot loop: ..."), as the issue allows for hot loops.
LONG_REASON = "hot loop"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(node: ast.ImportFrom | ast.Import, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The asrbench modules an import statement names."""
    targets = []
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name.split(".")[0] == "asrbench"]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([base] if base else []))
    if base.split(".")[0] != "asrbench":
        return []
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        targets.append(candidate if candidate in known else base)
    return targets


@dataclass
class Scan:
    graph: dict[str, set[str]]  # module -> asrbench modules it imports at its top level
    local_imports: list[tuple[str, int, str, str]]  # (module, line, imported module, the comment above or on it)
    long_functions: list[tuple[str, str, int, bool]]  # (module, function, lines, says why)


def scan() -> Scan:
    known = set(modules())
    graph: dict[str, set[str]] = {name: set() for name in known}
    local: list[tuple[str, int, str, str]] = []
    long: list[tuple[str, str, int, bool]] = []
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        tree = ast.parse(source)
        is_package = path.name == "__init__.py"
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name].update(t for t in _resolve(node, name, is_package, known) if t != name)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        for target in _resolve(inner, name, is_package, known):
                            above = lines[inner.lineno - 2].strip() if inner.lineno >= 2 else ""
                            here = lines[inner.lineno - 1]
                            comment = (
                                here.split("#", 1)[1].strip()
                                if "#" in here
                                else (above[1:].strip() if above.startswith("#") else "")
                            )
                            local.append((name, inner.lineno, target, comment))
                start = node.body[0].lineno  # the body's first line: the signature does not count
                length = (node.end_lineno or node.lineno) - start + 1
                if length > MAX_FUNCTION_LINES:
                    head = " ".join(lines[node.lineno - 1 : start + 4])  # the def and the docstring's start
                    long.append((name, node.name, length, LONG_REASON in head))
    return Scan(graph, local, long)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each once (as the strongly connected components of more than one module)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def stage_of(module: str) -> int | None:
    """The stage's index in STAGES; None for the leaf utilities (and modules outside the package)."""
    if module == "asrbench.__main__":
        return len(STAGES) - 1
    for index, stage in enumerate(STAGES):
        if module == stage or module.startswith(stage + "."):
            return index
    return None


def violations(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        here = stage_of(module)
        for target in sorted(targets):
            there = stage_of(target)
            if there is not None and (here is None or there > here):
                where = "a leaf utility" if here is None else STAGES[here]
                problems.append(f"{module} imports {target} (stage order: {where} comes before {STAGES[there]})")
        for prefix, forbidden in FORBIDDEN.items():
            if module != prefix and not module.startswith(prefix + "."):
                continue
            for target in sorted(targets):
                if any(
                    target == bad.rstrip(".") or target.startswith(bad if bad.endswith(".") else bad + ".")
                    for bad in forbidden
                ):
                    problems.append(f"{module} imports {target} (layer rule for {prefix})")
    return problems


def unplaced(names: set[str]) -> list[str]:
    """Modules at the package's top level that are neither a stage nor a listed utility, and the
    count rule."""
    top = sorted(
        name
        for name in names
        if name.count(".") == 1
        and stage_of(name) is None
        and name not in TOP_LEVEL
        and (PACKAGE / f"{name.split('.')[1]}.py").is_file()
    )
    problems = [f"{name}: a module at the top level that is no leaf utility: move it into its stage" for name in top]
    count = sum(1 for path in PACKAGE.glob("*.py"))
    if count > MAX_TOP_LEVEL:
        problems.append(f"asrbench/ holds {count} modules at its top level (at most {MAX_TOP_LEVEL})")
    return problems


def checks(result: Scan) -> list[str]:
    """Everything wrong with the layering, one line each ([] when it is clean)."""
    problems = [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(result.graph)]
    problems += violations(result.graph)
    problems += unplaced(set(result.graph))
    problems += [
        f"{module}:{line}: import of {target} inside a function without a comment saying why"
        for module, line, target, comment in result.local_imports
        if module != "asrbench.cli" and not comment
    ]
    problems += [
        f"{module}.{function}: {length} lines (over {MAX_FUNCTION_LINES}) without saying why ('{LONG_REASON}')"
        for module, function, length, why in result.long_functions
        if not why
    ]
    return problems


def listing(result: Scan) -> str:
    lines = ["# asrbench module-level imports (module: the asrbench modules it imports)"]
    for module in sorted(result.graph):
        targets = sorted(result.graph[module])
        lines.append(f"{module}: {', '.join(targets) if targets else '-'}")
    lines.append("")
    lines.append(
        "# imports inside functions (asrbench.cli imports each command's module when it runs, so "
        "`asrbench --help` stays fast)"
    )
    for module, line, target, comment in result.local_imports:
        if module != "asrbench.cli":
            lines.append(f"{module}:{line}: {target}  # {comment}")
    lines.append("")
    lines.append(f"# functions over {MAX_FUNCTION_LINES} lines")
    lines += [f"{module}.{function}: {length} lines" for module, function, length, _ in result.long_functions]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only the checks.")
    args = parser.parse_args()
    result = scan()
    if not args.check:
        print(listing(result))
        print()
    problems = checks(result)
    print("\n".join(problems) if problems else "layering: no cycle, every layer rule holds")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
