"""deploycmp's own import graph, read from the source (every import, at module level or inside a function): the
modules, what each imports, its cycles and its depth. `python -m tests.import_graph` prints the map."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the package deploycmp is toolkit/, with exporters/ and runtimes/ as its subpackages (setup.cfg's package_dir)
PACKAGES = {"deploycmp": ROOT / "toolkit", "deploycmp.exporters": ROOT / "exporters",
            "deploycmp.runtimes": ROOT / "runtimes"}


def modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            out[name.removesuffix(".__init__")] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The deploycmp modules this file imports (a `from P import m` of a submodule m counts as P.m)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            subs = {f"{base}.{a.name}" for a in node.names} & known
            found.update(subs or {base})  # `from deploycmp import models` imports deploycmp.sources
    return {m for m in found if m in known and m != name}


# the layers, lowest first: a module may import its own layer and the layers below it, never one above
LAYERS = ("core", "sources", "runtimes", "exporters", "export", "measure", "gate", "report", "cli")


def layer(name: str) -> int:
    """The layer of a deploycmp module: its subpackage; the package's face (deploycmp: the schema version) is
    core, the CLI the top; -1: a module in no layer."""
    top = name.removeprefix("deploycmp").lstrip(".").partition(".")[0]
    return 0 if not top else LAYERS.index(top) if top in LAYERS else -1


def upward(g: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher layer, as 'importer -> imported'."""
    return sorted(f"{m} -> {d}" for m, deps in g.items() for d in deps if layer(d) > layer(m))


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, name, set(mods)) for name, path in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return sorted(out)


def depth(g: dict[str, set[str]]) -> int:
    """The longest chain of imports (modules in it), counting each cycle once as one module."""
    comp_of = {}
    for c in cycles(g):
        for m in c:
            comp_of[m] = c[0]
    node = {m: comp_of.get(m, m) for m in g}
    dag: dict[str, set[str]] = {}
    for m, deps in g.items():
        dag.setdefault(node[m], set()).update(node[d] for d in deps if node[d] != node[m])
    memo: dict[str, int] = {}

    def longest(v):
        if v not in memo:
            memo[v] = 1 + max((longest(w) for w in dag.get(v, ())), default=0)
        return memo[v]

    return max(longest(v) for v in dag)


def main() -> None:
    g = graph()
    lines = {name: ROOT.joinpath(path).read_text().count("\n") for name, path in modules().items()}
    for name in sorted(g):
        print(f"{name:<42} {lines[name]:>5} lines  imports {', '.join(sorted(d.removeprefix('deploycmp.') for d in g[name])) or '-'}")
    found, up = cycles(g), upward(g)
    print(f"\n{len(g)} modules, {sum(lines.values())} lines, import depth {depth(g)}, {len(found)} import cycle(s), "
          f"{len(up)} import(s) from a higher layer")
    for c in found:
        print("  cycle: " + " <-> ".join(m.removeprefix("deploycmp.") for m in c))
    for u in up:
        print("  upward: " + u.replace("deploycmp.", ""))
    by_layer: dict[str, list[str]] = {}
    for name in g:
        by_layer.setdefault(LAYERS[layer(name)], []).append(name)
    print("\nlayers, lowest first: " + " < ".join(f"{k} ({len(by_layer.get(k, []))})" for k in LAYERS))


if __name__ == "__main__":
    main()
