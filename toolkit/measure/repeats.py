"""bench --repeat N: one row measured in N fresh worker processes, combined into one row.

Timings scatter between processes (where the allocator put the weights, which cores and caches the process got,
what ran beside it) more than between the calls of one process, so confidence intervals from one process's calls
are too narrow to compare runs (pyperf measures in many processes for the same reason). Here the per-call timings
of all processes are pooled for the percentiles, and the 95% CIs of p50 and p99 come from a two-level bootstrap:
resample the processes, then the calls within each, so that the scatter between processes widens them.
"""
from __future__ import annotations

import numpy as np

from deploycmp.measure.latency import summarize

BOOTSTRAP = 1000
CI_METHOD = "two-level bootstrap over worker processes and their calls (95%)"


def bootstrap_ci95(per_process: list[list[float]], q: float, seed: int = 0) -> list[float]:
    """95% CI of the q-quantile of the pooled calls, resampling processes, then calls within each process."""
    rng = np.random.default_rng(seed)
    calls = [np.asarray(c, dtype=np.float64) for c in per_process]
    stats = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        picked = rng.integers(0, len(calls), len(calls))
        sample = np.concatenate([rng.choice(calls[i], len(calls[i])) for i in picked])
        stats[b] = np.percentile(sample, q * 100)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return [float(lo), float(hi)]


def combine(results: list[dict], batch: int) -> dict:
    """One row from the worker results of N processes that measured it (the same artifact, inputs and settings).

    Drift, samples and runtime details are the first process's (the outputs do not depend on the process);
    latency pools every call; cold start is the median per phase; memory the largest any process used."""
    row = dict(results[0])
    per_process = [r["latency_ms"]["per_call"] for r in results]
    row.update(summarize([ms / 1e3 for calls in per_process for ms in calls], batch))
    lat = row["latency_ms"]
    lat.update(ci95_p50=bootstrap_ci95(per_process, 0.5), ci95_p99=bootstrap_ci95(per_process, 0.99),
               ci_method=CI_METHOD, processes=len(results), p50_per_process=[r["latency_ms"]["p50"] for r in results])
    row["latency_per_item_ms"] = lat["p50"] / batch
    cold = results[0]["cold_start_ms"]
    row["cold_start_ms"] = {k: float(np.median([r["cold_start_ms"][k] for r in results])) for k in cold}
    row["cold_start_ms"]["total_per_process"] = [r["cold_start_ms"]["total"] for r in results]
    for key in ("peak_rss_mb", "model_memory_mb", "device_memory_mb"):
        values = [r[key] for r in results if r.get(key) is not None]
        if values:
            row[key] = max(values)
    row["timing"] = {**results[0]["timing"], "processes": len(results),
                     **{k: sum(r["timing"][k] for r in results) for k in ("warmup_runs", "timed_runs", "timed_seconds")}}
    return row
