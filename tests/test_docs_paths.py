"""Every path the README and docs/ cite exists: relative links, repository paths and file names in backticks, and
deploycmp module names (a module, or a name a module defines)."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "examples" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".git")} | {"deploycmp"}  # deploycmp/: never a folder
PACKAGES = {"deploycmp": ROOT / "toolkit", "deploycmp.exporters": ROOT / "exporters",
            "deploycmp.runtimes": ROOT / "runtimes"}
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
CODE = re.compile(r"`([^`\n]+)`")
FILE_NAME = re.compile(r"^[A-Za-z0-9_]+\.py$")


def _repo_files() -> set[str]:
    return {p.name for p in ROOT.rglob("*.py") if ".venv" not in p.parts and "node_modules" not in p.parts}


def module_file(name: str) -> Path | None:
    """The file of a deploycmp module or package, None when there is none."""
    base = max((p for p in PACKAGES if name == p or name.startswith(p + ".")), key=len, default=None)
    if base is None:
        return None
    folder = PACKAGES[base].joinpath(*name.removeprefix(base).lstrip(".").split(".")) if name != base \
        else PACKAGES[base]
    for candidate in (folder.with_suffix(".py"), folder / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def defines(path: Path, attribute: str) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == attribute:
            return True
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == attribute for t in targets):
            return True
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == attribute for a in node.names):
            return True
    return False


def problems(doc: Path, text: str, repo_files: set[str]) -> list[str]:
    found = []
    for target in LINK.findall(text):
        if "://" not in target and not target.startswith("mailto:") and not (doc.parent / target).exists():
            found.append(f"link {target}")
    for code in CODE.findall(text):
        token = code.split()[0] if code.split() else code
        if "<" in token:  # a pattern (exporters/<format>.py), not a path
            continue
        if token.startswith("deploycmp.") or token == "deploycmp":
            parts = token.rstrip(".").split(".")
            known = next((i for i in range(len(parts), 0, -1) if module_file(".".join(parts[:i]))), 0)
            rest = parts[known:]
            if not known or len(rest) > 1 or (rest and not defines(module_file(".".join(parts[:known])), rest[0])):
                found.append(f"module {token}")
        elif "/" in token and token.split("/")[0] in TOP:
            if not (ROOT / token.split(":")[0]).exists():
                found.append(f"path {token}")
        elif FILE_NAME.match(token) and token not in repo_files:
            found.append(f"file {token}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_doc_cites_exists(doc):
    assert problems(doc, doc.read_text(), _repo_files()) == []


def test_a_path_that_moved_is_found(tmp_path):
    doc = tmp_path / "x.md"
    text = ("See [gone](gone.md), `deploycmp/explain.py`, `toolkit/measure_row.py`, `measure_row.py`, "
            "`deploycmp.core.errors.Nowhere`, `deploycmp.toolkit.latency`; fine: `deploycmp.core.errors.Unavailable`, "
            "`runtimes/base.py`, `deploycmp.measure.row_worker`, `manifest.json`, [a site](https://example.org).")
    assert problems(doc, text, _repo_files()) == [
        "link gone.md", "path deploycmp/explain.py", "path toolkit/measure_row.py", "file measure_row.py",
        "module deploycmp.core.errors.Nowhere", "module deploycmp.toolkit.latency"]
