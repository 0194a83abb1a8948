"""results.json: every row of a run in one file, written from the per-row files; read back for reports."""
from __future__ import annotations

from pathlib import Path

from deploycmp import SCHEMA
from deploycmp.core.environment import environment
from deploycmp.core.errors import UsageError
from deploycmp.core.rundir import RESULTS, load_manifest, load_rows, read_results_file, write_json
from deploycmp.core.schema import failed


def write_results(run_dir: Path, order: list[str], env: dict | None = None) -> dict:
    """results.json: the planned rows in plan order, then any other row files in the run directory."""
    by_id = {r["id"]: r for r in load_rows(run_dir)}
    ordered = [by_id.pop(i) for i in order if i in by_id] + list(by_id.values())
    results = {"schema": SCHEMA, "rows": ordered, "environment": env or environment()}
    write_json(Path(run_dir) / RESULTS, results)
    return results


def load_results(run_dir) -> dict:
    run_dir = Path(run_dir)
    load_manifest(run_dir)
    path = run_dir / RESULTS
    if not path.is_file():
        raise UsageError(f"{run_dir} has no {RESULTS} yet: run 'deploycmp bench {run_dir}' first")
    return read_results_file(path, str(path))


def exit_status(rows: list[dict]) -> int:
    return 1 if any(failed(r) for r in rows) else 0


def runtime_label(row: dict) -> str:
    """The runtime, marked when bench --tune chose its settings."""
    return row["runtime"] + (" (tuned)" if row.get("tuned") else "")
