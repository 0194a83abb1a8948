"""bench --repeat: combining several worker processes' measurements of one row."""
import numpy as np
import pytest

from deploycmp.measure.latency import quantile_ci95
from deploycmp.measure.repeats import bootstrap_ci95, combine


def _calls(center, n=60, seed=0):
    return list(center + np.random.default_rng(seed).normal(0, 0.1, n))


def test_scatter_between_processes_widens_the_interval():
    steady = [_calls(10.0, seed=i) for i in range(4)]
    apart = [_calls(10.0 + 0.25 * i, seed=i) for i in range(5)]  # each process a little slower than the last
    lo, hi = bootstrap_ci95(steady, 0.5)
    assert lo < 10.0 < hi and hi - lo < 0.2
    lo, hi = bootstrap_ci95(apart, 0.5)
    pooled = quantile_ci95(np.sort(np.concatenate(apart)), 0.5)  # what one process's method would say of the pool
    assert hi - lo > 0.5 > 0.2 > pooled[1] - pooled[0]
    assert bootstrap_ci95(apart, 0.5) == [lo, hi]  # seeded: the same numbers every time


def _worker_result(center, cold, rss, seed):
    calls = _calls(center, seed=seed)
    return {"latency_ms": {"p50": float(np.median(calls)), "per_call": calls}, "drift": {"sqnr_db": 40.0 + seed},
            "cold_start_ms": {"import": cold, "load": 1.0, "first_inference": 2.0, "total": cold + 3.0},
            "peak_rss_mb": rss, "model_memory_mb": rss / 2,
            "timing": {"warmup_runs": 1, "timed_runs": len(calls), "timed_seconds": sum(calls) / 1e3, "clock": "perf"}}


def test_combine_pools_calls_and_keeps_each_process_in_view():
    results = [_worker_result(10.0, 100.0, 300.0, 0), _worker_result(11.0, 300.0, 200.0, 1),
               _worker_result(12.0, 200.0, 250.0, 2)]
    row = combine(results, batch=2)
    lat = row["latency_ms"]
    assert lat["runs"] == 180 and len(lat["per_call"]) == 180 and lat["processes"] == 3
    assert lat["p50"] == pytest.approx(11.0, abs=0.1) and row["latency_per_item_ms"] == lat["p50"] / 2
    assert lat["p50_per_process"] == [r["latency_ms"]["p50"] for r in results]
    assert lat["ci95_p50"][0] < lat["p50"] < lat["ci95_p50"][1] and "bootstrap" in lat["ci_method"]
    assert row["cold_start_ms"]["import"] == 200.0 and row["cold_start_ms"]["total_per_process"] == [103.0, 303.0, 203.0]
    assert row["peak_rss_mb"] == 300.0 and row["model_memory_mb"] == 150.0
    assert row["timing"]["timed_runs"] == 180 and row["timing"]["processes"] == 3
    assert row["drift"] == results[0]["drift"]  # outputs do not depend on the process: the first one's
