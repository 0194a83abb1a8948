"""deploycmp merge: rows measured on other machines (a GPU host, a board) join a run, each keeping its own host.

A row joins only when it was measured on the very same artifact files as this run's (the artifact's sha256 digest).
A merged row's id gets "@HOST" so that it sits beside this machine's row for the same path, runtime and target.
Everything is checked before anything is written: a file with one foreign row merges nothing. Another machine's file
is input like a model file: its rows pass deploycmp.core.schema (types, ranges, safe ids and hostnames) on the way in.
"""
from __future__ import annotations

from pathlib import Path

from deploycmp.core.errors import UsageError
from deploycmp.core.hosts import compiled_for_another_cpu, hostname
from deploycmp.core.rundir import RESULTS, artifact_sha256, load_manifest, read_results_file, result_path, write_json
from deploycmp.core.schema import check_name


def read_other(path) -> tuple[Path, list[dict]]:
    """The rows of another machine's results.json (or of a run directory holding one)."""
    path = Path(path)
    file = path / RESULTS if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"{path}: no such results file (give another machine's {RESULTS} or its run directory)")
    return file, check_schema(read_results_file(file, str(file)), str(file))["rows"]


def check_schema(results: dict, label: str) -> dict:
    """A results file of a run directory schema this deploycmp reads."""
    from deploycmp import READABLE_SCHEMAS

    if results.get("schema") not in READABLE_SCHEMAS:
        raise UsageError(f"{label} is of results schema {results.get('schema', '?')!r}; this deploycmp reads schemas "
                         f"{', '.join(map(str, READABLE_SCHEMAS))}")
    return results


def check_merged_row(row: dict, manifest: dict, digests: dict, file: Path) -> None:
    where = f"{file}: row {row.get('id', '?')}"
    if row.get("model") != manifest["model"]["name"]:
        raise UsageError(f"{where} is of model {row.get('model')!r}, this run is {manifest['model']['name']!r}")
    if row.get("artifact") not in digests:
        raise UsageError(f"{where}: artifact {row.get('artifact')!r} is not in this run")
    if not row.get("artifact_sha256"):
        raise UsageError(f"{where} records no artifact sha256 (measured by an older deploycmp): cannot tell "
                         "whether it ran on this run's files")
    if (why := compiled_for_another_cpu(row)) and row.get("status") == "ok":
        raise UsageError(f"{where}: {why}")
    if row["artifact_sha256"] != digests[row["artifact"]]:
        raise UsageError(f"{where} was measured on other files than this run's {row['artifact']} (sha256 differs): "
                         "bench a copy of this run directory on that machine")


def merge(run_dir, others) -> dict:
    """Add other machines' rows to RUN_DIR; returns {host: number of rows merged} and the rows skipped."""
    from deploycmp.core.results import load_results, write_results

    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    results = load_results(run_dir)
    digests = {a["id"]: artifact_sha256(a) for a in manifest["artifacts"]}
    present = {(r.get("source_id", r["id"]), hostname(r)) for r in results["rows"]}
    incoming: dict[str, dict] = {}
    came_from: dict[str, Path] = {}
    skipped = 0
    for other in others:
        file, rows = read_other(other)
        for row in rows:
            key = (row.get("source_id", row["id"]), hostname(row))
            if key in present:  # this machine's own rows, copied along with the run directory
                skipped += 1
                continue
            check_merged_row(row, manifest, digests, file)
            source_id = row.get("source_id", row["id"])
            row_id = check_name(f"{source_id}@{key[1]}", f"{file}: row {source_id} measured on {key[1]}: its merged id")
            if row_id in incoming:  # the same row of the same host twice: which one holds is no guess to make
                raise UsageError(f"{file}: row {source_id} measured on {key[1]} is given twice"
                                 + (f" (also in {came_from[row_id]})" if came_from[row_id] != file else "")
                                 + ": merge one of them")
            incoming[row_id] = {**row, "id": row_id, "source_id": source_id, "merged_from": str(file)}
            came_from[row_id] = file
    for row_id, row in incoming.items():
        write_json(result_path(run_dir, row_id), row)
    merged = write_results(run_dir, [r["id"] for r in results["rows"]] + list(incoming), results.get("environment"))
    hosts: dict[str, int] = {}
    for row in incoming.values():
        hosts[hostname(row)] = hosts.get(hostname(row), 0) + 1
    return {"results": merged, "hosts": hosts, "skipped": skipped}
