"""The export cache: artifacts kept by the key of everything that determines them, so that another run directory of
the same model (or `make demo` run again) copies them instead of exporting them again.

CACHE/exports/KEY/ holds the artifact's files under files/ and entry.json (its manifest entry, paths relative to its
folder). An entry is written under a temporary name and renamed, so a half-stored one is never found; every file's
sha256 is checked before it is used, and a damaged entry is dropped.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

from deploycmp.core.rundir import read_json, sha256_file, write_json
from deploycmp.core.schema import relative_path_problem

def default_dir() -> Path | None:
    """$DEPLOYCMP_CACHE (`off`: no cache), else $XDG_CACHE_HOME/deploycmp, else ~/.cache/deploycmp."""
    if os.environ.get("DEPLOYCMP_CACHE") == "off":
        return None
    if os.environ.get("DEPLOYCMP_CACHE"):
        return Path(os.environ["DEPLOYCMP_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deploycmp"


def digest(obj) -> str:
    """sha256 of a JSON-able description (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


@functools.cache
def code_digest() -> str:
    """sha256 of deploycmp's own code (toolkit, exporters, runtimes): a change to it may change what it makes."""
    import importlib.util

    # the exporters and runtimes folders found without importing them (they are layers above this one)
    others = [Path(importlib.util.find_spec(f"deploycmp.{p}").origin).parent for p in ("exporters", "runtimes")]
    return folders_digest([Path(__file__).parent.parent, *others])


def folders_digest(folders: list[Path]) -> str:
    """sha256 of every .py file under the folders, subfolders too, each with its path inside its folder."""
    h = hashlib.sha256()
    for folder in folders:
        for p in sorted(folder.rglob("*.py")):
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


class ExportCache:
    """Artifacts by key under `root`; root None is the disabled cache (--no-cache)."""

    def __init__(self, root: Path | None):
        self.root = Path(root).expanduser() if root is not None else None
        self.warnings: list[str] = []

    def _dir(self, key: str) -> Path:
        return self.root / "exports" / key

    def fetch(self, key: str, folder: Path) -> dict | None:
        """Copy the cached artifact into `folder` (replaced) and return its entry (paths relative to the folder),
        or None when the cache has no sound entry for `key`."""
        if self.root is None:
            return None
        src = self._dir(key)
        try:
            stored = read_json(src / "entry.json")
            if not isinstance(stored.get("main_file"), str) or relative_path_problem(stored["main_file"]):
                raise ValueError("no main file")
            for f in stored["files"]:
                if relative_path_problem(f["path"]) or sha256_file(src / "files" / f["path"]) != f["sha256"]:
                    raise ValueError(f"{f['path']} changed in the cache")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            if src.exists():
                shutil.rmtree(src, ignore_errors=True)  # damaged: export again and store it anew
            return None
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src / "files", folder)
        return stored

    def store(self, key: str, folder: Path, entry: dict, files: list[dict]) -> None:
        """Keep a finished artifact (its folder, its entry and its files relative to the folder). A cache that
        cannot be written (full, read-only) costs a warning, not the export."""
        if self.root is None or self._dir(key).is_dir():
            return
        tmp = self.root / "exports" / f".{key}.{os.getpid()}.tmp"
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(folder, tmp / "files")
            write_json(tmp / "entry.json", {**entry, "key": key, "files": files})
            os.rename(tmp, self._dir(key))
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self._dir(key).is_dir():  # another deploycmp stored the same key first: fine
                self.warnings.append(f"export cache {self.root} not written: {e.strerror or e}")
