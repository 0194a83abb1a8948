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


def machine(row: dict) -> str:
    """The host that measured a row; for a row measured through Ray (bench --ray), its node too: one host may run
    several nodes."""
    node = row.get("node") or {}
    return f"{hostname(row)} (Ray node {node['id'][:8]})" if node.get("id") else hostname(row)


def hosts_of(rows: list[dict], first: str | None = None) -> dict[str, list[dict]]:
    """Rows by the host (and Ray node) that measured them, in order of appearance; `first` (the run's own host)
    leads."""
    groups: dict[str, list[dict]] = {} if first is None else {first: []}
    for row in rows:
        groups.setdefault(machine(row), []).append(row)
    return {host: group for host, group in groups.items() if group}


def compiled_for_another_cpu(row: dict, host_isa=None) -> str | None:
    """Why a row of a package compiled for one CPU (AOTInductor: -march=native) does not compare with a host of other
    ISA extensions (`host_isa`, default the row's own host), or None. Rows of portable artifacts give None."""
    built = ((row.get("runtime_info") or {}).get("built_for") or {})
    if built.get("device", "cpu") != "cpu" or built.get("isa") is None:
        return None
    host_isa = (row.get("host") or {}).get("isa") if host_isa is None else host_isa
    if host_isa is None or set(host_isa) == set(built["isa"]):
        return None
    differ = sorted(set(host_isa) ^ set(built["isa"]))
    return (f"{row.get('artifact', row.get('id'))} is compiled for a CPU with other ISA extensions (differing: "
            f"{' '.join(differ)}); export it on that host to compare")
