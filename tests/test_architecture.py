"""The package's own import graph, read with `ast` (no module is imported): no cycle between files, imports point
one way (cli -> distill -> server / bench -> engine -> batching -> speculative -> models -> config / errors / machine), distill
takes only models, config, errors and the bench prompts, argparse only in cli/, and an import inside a function
only for a heavy or optional dependency, with its reason beside it."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "src" / "ryzanstein"

# The layers, bottom first. A module may import any lower layer's modules and its own package's; in the bottom
# layer the modules may import each other (no cycle).
LAYERS = [
    {"config", "errors", "machine", "progress"},
    {"models"},
    {"speculative"},
    {"batching"},  # continuous batching: slots, the step scheduler (the engine builds it)
    {"engine"},
    {"__init__"},  # the public API: `from ryzanstein import Engine, ...`
    {"bench", "server"},  # side by side, neither imports the other
    {"distill"},  # training a draft head: only the cli imports it
    {"cli"},
]
# What distill may import of the package (a module or anything below it), besides its own modules.
DISTILL_IMPORTS = ("ryzanstein.models", "ryzanstein.config", "ryzanstein.errors", "ryzanstein.bench.prompts")
# What may be imported inside a function: heavy (seconds, or a native library) or optional (an extra), and the
# package modules that import one of those at their top.
LAZY = {"torch", "transformers", "matplotlib", "llama_cpp", "uvicorn", "gguf", "jinja2", "unicodedata2",
        "readline",  # changes how input() reads a terminal, process-wide: only `ryzanstein chat` loads it
        "ryzanstein.models.torch_model", "ryzanstein.models.gguf_convert", "ryzanstein.server.app",
        "ray", "ryzanstein.server.cluster", "ryzanstein.server.replica_pool",  # Ray Serve: the cluster extra
        "ryzanstein.server.cluster_local",
        "ryzanstein.models._native",
        "ryzanstein.distill.fit"}  # distill.fit trains with torch
# Compiled extensions (setup.py): modules without a .py file, imported like one.
EXTENSIONS = {"ryzanstein.models._native"}


def module_name(path: Path) -> str:
    parts = ["ryzanstein", *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (PKG.parent / name.replace(".", "/") / "__init__.py").is_file()


def room(name: str) -> str:
    """The top-level part of the package a module belongs to: `speculative`, `engine`, ..., `__init__` for the root."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(name: str) -> int:
    return next(i for i, rooms in enumerate(LAYERS) if room(name) in rooms)


def imports(path: Path) -> list[tuple[str, ast.AST, bool]]:
    """(imported module, node, inside a function) for every import in the file, absolute names."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path)
    base = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]  # what `from .` means here
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, child, inside) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    pkg = base.rsplit(".", child.level - 1)[0] if child.level > 1 else base
                    mod = f"{pkg}.{child.module}" if child.module else pkg
                else:
                    mod = child.module
                for a in child.names:  # `from . import store` imports the module ryzanstein.x.store
                    sub = f"{mod}.{a.name}"
                    is_mod = ((PKG.parent / (sub.replace(".", "/") + ".py")).is_file() or is_package(sub)
                              or sub in EXTENSIONS)
                    out.append((sub if is_mod else mod, child, inside))
            visit(child, inside)

    visit(tree, False)
    return out


FILES = sorted(PKG.rglob("*.py"))
GRAPH = {module_name(p): {m for m, _, _ in imports(p) if m.startswith("ryzanstein") and m != module_name(p)}
         for p in FILES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (found := dfs(m)):
                return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := dfs(n)):
            return found
    return None


def test_the_graph_is_read():
    assert len(GRAPH) > 30 and "ryzanstein.models.base" in GRAPH["ryzanstein.speculative.loop"]
    assert "ryzanstein.engine" in GRAPH["ryzanstein.cli.generate"]


def test_no_import_cycle_between_files():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    wrong = [m for m in GRAPH[module]
             if not (layer(m) < layer(module) or room(m) == room(module) or layer(m) == layer(module) == 0)]
    assert not wrong, f"{module} (layer {layer(module)}) imports {wrong}"


def test_distill_takes_only_models_config_errors_and_the_bench_prompts():
    wrong = {n: sorted(d for d in deps if room(d) != "distill"
                       and not any(d == a or d.startswith(a + ".") for a in DISTILL_IMPORTS))
             for n, deps in GRAPH.items() if room(n) == "distill"}
    assert wrong and not any(wrong.values()), wrong


def test_argparse_only_in_the_cli_package():
    users = {module_name(p) for p in FILES for m, _, _ in imports(p) if m == "argparse"}
    assert users and all(room(u) == "cli" for u in users), sorted(users)
    outside = {n for n, deps in GRAPH.items() if room(n) != "cli" and any(room(d) == "cli" for d in deps)}
    assert not outside, f"outside cli/, these import it: {sorted(outside)}"


def reason_lines(lines: list[str], lineno: int) -> str:
    """The import's line and the lines above it up to a blank line or the function's `def`: where its reason is."""
    out, i = [], lineno - 1
    while i >= 0 and lines[i].strip() and not lines[i].lstrip().startswith(("def ", "async def ")):
        out.append(lines[i])
        i -= 1
    return "\n".join(out)


def test_imports_inside_functions_are_heavy_or_optional_and_say_why():
    wrong = []
    for path in FILES:
        lines = path.read_text().splitlines()
        for mod, node, inside in imports(path):
            where = f"{path.relative_to(PKG.parent)}:{node.lineno} imports {mod}"
            if inside and not (mod.split(".")[0] in LAZY or mod in LAZY):
                wrong.append(where + " inside a function: import it at the top")
            elif inside and "#" not in reason_lines(lines, node.lineno):
                wrong.append(where + " inside a function without a comment saying why")
    assert not wrong, "\n".join(wrong)
