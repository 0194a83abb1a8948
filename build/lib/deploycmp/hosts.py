"""Which machine measured a row, in a few words, and rows grouped by host (merged runs hold several)."""
from __future__ import annotations


def describe_host(row: dict) -> str:
    """The machine a row ran on, in a few words: CPU and the ISA extensions that decide int8/bf16 speed, cores,
    memory, GPU, OS."""
    h = row.get("host") or {}
    count, usable = h.get("cpu_count"), h.get("usable_cpus")
    cores = f"{usable} of {count} CPUs usable" if usable and count and usable != count else count and f"{count} CPUs"
    gpu = ((row.get("observed") or {}).get("gpu") or {}).get("name")
    isa = h.get("isa")
    cpu = f"{h.get('cpu')} ({' '.join(isa) if isa else 'ISA extensions not recorded'})" if h.get("cpu") else None
    return ", ".join(str(v) for v in (cpu, cores, h.get("memory_gb") and f"{h['memory_gb']} GB", gpu,
                                      h.get("os")) if v)


def targets_of(rows: list[dict]) -> dict:
    """Each target in the rows, in plain words ("host CPU limited to 1 core ...")."""
    return {r["target"]: r.get("target_description") for r in rows}


def hostname(row: dict) -> str:
    return (row.get("host") or {}).get("hostname") or "unknown host"


def hosts_of(rows: list[dict], first: str | None = None) -> dict[str, list[dict]]:
    """Rows by the host that measured them, in order of appearance; `first` (the run's own host) leads."""
    groups: dict[str, list[dict]] = {} if first is None else {first: []}
    for row in rows:
        groups.setdefault(hostname(row), []).append(row)
    return {host: group for host, group in groups.items() if group}
