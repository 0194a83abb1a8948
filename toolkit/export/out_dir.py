"""The folder --out names, as export finds it: a new folder, a run directory to resume (only one of the same
identity: model, weights, data, inputs, versions), or one --force replaces (only what deploycmp writes there)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from deploycmp.core.cache import digest
from deploycmp.core.environment import versions
from deploycmp.core.errors import UsageError
from deploycmp.core.lock import LOCK
from deploycmp.core.rundir import FOLDERS, IDENTITY, MANIFEST, RESULTS, read_json, sha256_file, write_json
from deploycmp.core.specs import to_dicts
from deploycmp.exporters import EXPORTERS
from deploycmp.exporters.llm import FORMATS as LLM_FORMATS, NOT_YET


def identity(opts) -> dict:
    """What makes a run directory's results what they are, short of the formats asked for: model, weights, data,
    input specs and versions. A run directory is resumed only with the same identity."""
    def content(spec: str) -> str | None:
        p = Path(spec)
        if p.is_file():
            return sha256_file(p)
        if p.is_dir():  # a SavedModel or image folder: its files' names and sizes
            return digest(sorted((str(q.relative_to(p)), q.stat().st_size) for q in p.rglob("*") if q.is_file()))
        return None

    ident = {"model": opts.model, "model_content": content(opts.model), "weights": opts.weights,
             "weights_content": content(opts.weights), "inputs": to_dicts(opts.inputs), "value_ranges": opts.value_ranges,
             "data": opts.data, "data_content": None if opts.data in ("random", "digits") else content(opts.data),
             "samples": opts.samples, "calibration_samples": opts.calibration_samples, "num_classes": opts.num_classes,
             "preprocess": opts.preprocess, "layout": opts.layout, "task": opts.task, "versions": versions()}
    return json.loads(json.dumps(ident, default=str))  # as identity.json holds it (tuples as lists), to compare


_IDENTITY_WORDS = {"model": "model", "model_content": "model file", "weights": "weights", "weights_content": "weights file",
                   "data_content": "data file", "versions": "framework versions"}


# what deploycmp writes at the top of a run directory (besides the folders of rundir.FOLDERS)
OWN_FILES = (MANIFEST, IDENTITY, LOCK, RESULTS, "report.md", "report.csv", "report.json", "report.html")
OWN_PATTERNS = ("reference.npz", "calibration.npz", "reference.*.npz", "calibration.*.npz", ".*.tmp")
# what it writes inside each of those folders (artifacts/: a folder and an entry per artifact, named by its format)
OWN_INSIDE = {"artifacts": tuple(f"{fmt}-*{end}" for fmt in ("eager", *EXPORTERS, *LLM_FORMATS, *NOT_YET) for end in (".json", "/")),
              "results": ("*.json", "*.npz", ".*.tmp"), "logs": ("*.log",),
              "tuning": ("*", "*/")}


def check_out(out: Path) -> bool:
    """Whether `out` holds a run already (False: it is new or empty); refuses a file, a path through a file, and a
    folder that is not a run directory. A run directory is one holding deploycmp's own marker (manifest.json or
    identity.json, which export writes before anything else)."""
    out = Path(out)
    for above in [out, *out.parents]:
        if above.exists() and not above.is_dir():
            raise UsageError(f"--out {out}: {above} " + ("exists and is not a directory" if above == out
                                                        else "is a file, not a directory"))
    if not out.is_dir() or all(p.name == LOCK for p in out.iterdir()):
        return False
    if not any((out / f).is_file() for f in (MANIFEST, IDENTITY)):
        raise UsageError(f"--out {out} is a non-empty directory that is not a run directory (no {MANIFEST} or "
                         f"{IDENTITY}); choose another")
    return True


def foreign_entry(out: Path) -> Path | None:
    """The first file or folder in run directory `out` that deploycmp does not write (a user's own), or None."""
    from fnmatch import fnmatch

    def own(p: Path, patterns) -> bool:
        return any(fnmatch(p.name, pat.rstrip("/")) and (p.is_dir() and not p.is_symlink()) == pat.endswith("/")
                   for pat in patterns)

    for p in sorted(out.iterdir()):
        if p.name in FOLDERS and p.is_dir() and not p.is_symlink():
            bad = next((q for q in sorted(p.iterdir()) if not own(q, OWN_INSIDE[p.name])), None)
            if bad is not None:
                return bad
        elif not (p.name in OWN_FILES or own(p, OWN_PATTERNS)):
            return p
    return None


def prepare_out(out: Path, force: bool, ident: dict) -> None:
    """Make `out` ready: new, replaced (--force), or resumed when it holds an earlier export of the same identity.
    --force removes only what deploycmp writes, and refuses a run directory holding anything else."""
    if check_out(out):
        if force:
            if (foreign := foreign_entry(out)) is not None:
                raise UsageError(f"--out {out} holds {foreign.relative_to(out)}, which deploycmp does not write: "
                                 "--force replaces only a run directory's own files; move it away or choose another --out")
            (out / MANIFEST).unlink(missing_ok=True)  # first, so a half-replaced run never looks complete
            for sub in FOLDERS:
                shutil.rmtree(out / sub, ignore_errors=True)
            for f in [out / name for name in OWN_FILES if name not in (MANIFEST, LOCK)]:
                f.unlink(missing_ok=True)
            for f in [q for pattern in OWN_PATTERNS for q in out.glob(pattern)]:
                f.unlink(missing_ok=True)
        elif (out / MANIFEST).exists() or any((out / "artifacts").glob("*.json")):  # something finished to resume
            check_identity(out, ident)
            (out / MANIFEST).unlink(missing_ok=True)  # written again when the resumed export is complete
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / IDENTITY, ident)


def check_identity(out: Path, ident: dict) -> None:
    try:
        before = read_json(out / IDENTITY)
    except (OSError, ValueError):
        raise UsageError(f"--out {out} holds a run this deploycmp cannot resume (no readable {IDENTITY}); pass --force "
                         f"to replace it or choose another --out") from None
    for key, now in ident.items():
        if before.get(key) != now:
            what = _IDENTITY_WORDS.get(key, "--" + key.replace("_", "-"))
            shown = "" if key.endswith("_content") or key == "versions" else f" ({before.get(key)!r} there, {now!r} now)"
            if key == "versions":
                changed = sorted(k for k in {*now, *(before.get(key) or {})} if now.get(k) != (before.get(key) or {}).get(k))
                shown = f" ({', '.join(changed)} changed)"
            raise UsageError(f"--out {out} holds a run of another {what}{shown}; pass --force to replace it or "
                             f"choose another --out")
