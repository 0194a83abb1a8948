"""The run directory: the contract between export, bench and report (plain JSON and files, schema-versioned)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from deploycmp import READABLE_SCHEMAS, SCHEMA
from deploycmp.core.errors import UsageError
from deploycmp.core.specs import BATCH, export_point

MANIFEST = "manifest.json"
REFERENCE = "reference.npz"
CALIBRATION = "calibration.npz"
RESULTS = "results.json"
IDENTITY = "identity.json"  # what an export was asked for, with which versions: a resumed run must match it


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file so that a reader sees either the old content or the whole new one, never a half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it 0600; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


def read_outside_json(path: Path, label: str):
    """A JSON file deploycmp did not just write (a manifest, a results file, a row): one clear line when it is too
    big to be one, unreadable or no JSON."""
    from deploycmp.core.schema import MAX_FILE_BYTES

    try:
        if Path(path).stat().st_size > MAX_FILE_BYTES:
            raise UsageError(f"{label} is {Path(path).stat().st_size / 2**20:,.0f} MB: no deploycmp file is that big")
        return read_json(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"{label} is not readable JSON: {e}") from e


def read_results_file(file: Path, label: str) -> dict:
    """A results.json given by the user (a baseline, another machine's rows): one clear error when it is not one."""
    from deploycmp.core.schema import check_rows

    results = read_outside_json(file, label)
    rows = results.get("rows") if isinstance(results, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "id" in r and "status" in r for r in rows):
        raise UsageError(f"{label} is not a deploycmp results file (no rows with an id and a status)")
    check_rows(rows, label)
    return results


def save_feed(path: Path, feed: dict, outputs: dict | None = None, labels=None) -> None:
    """A feed (input/NAME), golden outputs (output/NAME) and labels in one .npz, written atomically."""
    arrays = {f"input/{k}": a for k, a in feed.items()}
    arrays.update({f"output/{k}": a for k, a in (outputs or {}).items()})
    if labels is not None:
        arrays["labels"] = labels
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())


def read_feed(path: Path) -> tuple[dict, dict, np.ndarray | None]:
    """(inputs, golden outputs, labels or None) of a reference or calibration .npz."""
    with np.load(path) as f:
        inputs = {k[len("input/"):]: f[k] for k in f.files if k.startswith("input/")}
        outputs = {k[len("output/"):]: f[k] for k in f.files if k.startswith("output/")}
        labels = f["labels"] if "labels" in f.files else None
    return inputs, outputs, labels


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gzip_size(path: Path) -> int:
    """Bytes of the file once gzipped (level 6), counted without keeping the compressed copy."""
    counter = _CountingSink()
    with open(path, "rb") as src, gzip.GzipFile(fileobj=counter, mode="wb", compresslevel=6, mtime=0) as gz:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            gz.write(chunk)
    return counter.n


class _CountingSink:
    def __init__(self):
        self.n = 0

    def write(self, b):
        self.n += len(b)
        return len(b)

    def flush(self):
        pass


def describe_files(run_dir: Path, folder: Path) -> dict:
    """Every file an artifact needs (an ONNX file's external data too), with sizes and hashes."""
    files = []
    for p in sorted(q for q in Path(folder).rglob("*") if q.is_file()):
        files.append({
            "path": str(p.relative_to(run_dir)),
            "bytes": p.stat().st_size,
            "sha256": sha256_file(p),
        })
    return {
        "files": files,
        "size_bytes": sum(f["bytes"] for f in files),
        "size_gzip_bytes": sum(gzip_size(run_dir / f["path"]) for f in files),
    }


def changed_files(run_dir: Path, artifact: dict) -> list[str]:
    """Files of an artifact that are missing or no longer match the sha256 recorded at export."""
    bad = []
    for f in artifact.get("files", []):
        p = Path(run_dir) / f["path"]
        if not p.is_file() or p.stat().st_size != f["bytes"] or sha256_file(p) != f["sha256"]:
            bad.append(f["path"])
    return bad


def artifact_sha256(artifact: dict) -> str | None:
    """One digest for all the files of an artifact (each file's path and sha256), None when it has no files.
    Rows carry it so that results measured elsewhere can be matched to the very same files."""
    files = sorted((f["path"], f["sha256"]) for f in artifact.get("files", []))
    if not files:
        return None
    return hashlib.sha256("\n".join(f"{p} {h}" for p, h in files).encode()).hexdigest()


def load_manifest(run_dir, for_measuring: bool = False) -> dict:
    """The run's manifest. Reports and validate read older schemas; measuring (bench) needs the current one."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a directory (expected a run directory made by 'deploycmp export')")
    if not path.is_file():
        raise UsageError(f"{run_dir} is not a run directory: no {MANIFEST} (make one with 'deploycmp export')")
    manifest = read_outside_json(path, str(path))
    schema = manifest.get("schema") if isinstance(manifest, dict) else None
    if schema not in READABLE_SCHEMAS:
        raise UsageError(f"{path}: unsupported manifest schema {schema if schema is not None else '?'} (this deploycmp "
                         f"reads schemas {', '.join(map(str, READABLE_SCHEMAS))})")
    if for_measuring and schema != SCHEMA:
        raise UsageError(f"{run_dir} was made by an older deploycmp (run directory schema {schema}): report and "
                         f"validate read it, but to measure it again export it anew (deploycmp export ... --out NEW_DIR)")
    from deploycmp.core.schema import check_manifest

    check_manifest(manifest, str(path))
    check_layout(run_dir)
    return manifest


# the folders deploycmp writes into: a received run directory may not make them links to elsewhere
FOLDERS = ("artifacts", "results", "logs", "tuning")


def check_layout(run_dir: Path) -> None:
    """Refuses a run directory whose own folders (results/, logs/ ...) lead outside it: writes there would land
    elsewhere."""
    root = Path(run_dir).resolve()
    for name in FOLDERS:
        p = Path(run_dir) / name
        if p.is_symlink() or (p.exists() and not p.resolve().is_relative_to(root)):
            raise UsageError(f"{p} is a link to {p.resolve()}: a run directory's {name}/ must be a folder inside it")


def inside(run_dir: Path, relative) -> Path:
    """RUN_DIR/relative, refused (one line) when it would lead outside the run directory: every path a manifest or
    row names goes through here before deploycmp reads or writes it."""
    from deploycmp.core.schema import relative_path_problem

    if (why := relative_path_problem(str(relative))):
        raise UsageError(f"{run_dir}: {why}")
    path = Path(run_dir) / relative
    if not path.parent.resolve().is_relative_to(Path(run_dir).resolve()):
        raise UsageError(f"{run_dir}: {relative} leads outside the run directory (through a link)")
    return path


def result_path(run_dir: Path, row_id: str) -> Path:
    from deploycmp.core.schema import check_name

    return Path(run_dir) / "results" / f"{check_name(row_id, 'row id')}.json"


def load_rows(run_dir: Path) -> list[dict]:
    """Rows measured so far, in the order of results.json when present, else by row id."""
    run_dir = Path(run_dir)
    from deploycmp.core.schema import Invalid, check_row

    rows = {}
    for p in sorted((run_dir / "results").glob("*.json")):
        try:
            row = read_json(p)
        except (OSError, ValueError):
            continue
        if not isinstance(row, dict) or "id" not in row:
            continue  # not a row: a row's explain or repair record
        try:
            check_row(row)
        except Invalid as e:
            raise UsageError(f"{p}: {e.field} {e.why}") from None
        rows[row["id"]] = row
    return list(rows.values())


def reference_for(manifest: dict, dims: dict) -> dict:
    """The manifest's reference entry for a shape point (file, degenerate outputs ...)."""
    rest = {k: v for k, v in dims.items() if k != BATCH}
    return next((r for r in manifest.get("references", []) if r["dims"] == rest), {"file": REFERENCE})


def fp32_twin(artifact: dict, manifest: dict) -> dict | None:
    """The ok fp32 artifact of an int8 one's format, exported at the same shape point (what recipes start from)."""
    return next((a for a in manifest["artifacts"] if a["format"] == artifact["format"] and a["quantization"] == "none"
                 and a["status"] == "ok" and export_point(a) == export_point(artifact)), None)
