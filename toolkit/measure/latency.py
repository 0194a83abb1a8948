"""Latency statistics over timed runs: percentiles, spread, throughput and distribution-free CIs of quantiles."""
from __future__ import annotations

import math

import numpy as np


def quantile_ci95(sorted_ms, q: float) -> list[float]:
    """95% confidence interval of the q-quantile from order statistics (no normality assumed).

    Ranks n*q -/+ 1.96*sqrt(n*q*(1-q)) (1-based, rounded outward), clamped to the sample.
    """
    n = len(sorted_ms)
    half = 1.96 * math.sqrt(n * q * (1 - q))
    lo = max(1, math.floor(n * q - half))
    hi = min(n, math.ceil(n * q + half + 1))
    return [float(sorted_ms[lo - 1]), float(sorted_ms[hi - 1])]


def median_ci95(sorted_ms) -> list[float]:
    return quantile_ci95(sorted_ms, 0.5)


def summarize(seconds: list[float], batch: int) -> dict:
    """Statistics of per-call wall times (seconds in, milliseconds out); `per_call` keeps every call in order."""
    if not seconds:
        raise ValueError("no timed runs")
    per_call = np.asarray(seconds, dtype=np.float64) * 1e3
    ms = np.sort(per_call)
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    return {
        "latency_ms": {
            "p50": p50,
            "p90": p90,
            "p99": p99,
            "mean": float(ms.mean()),
            "std": float(ms.std(ddof=1)) if len(ms) > 1 else 0.0,
            "min": float(ms[0]),
            "max": float(ms[-1]),
            "ci95_p50": median_ci95(ms),
            "ci95_p99": quantile_ci95(ms, 0.99),
            "runs": int(len(ms)),
            "per_call": [round(float(v), 5) for v in per_call],
        },
        "throughput_per_s": batch * 1e3 / p50 if p50 > 0 else None,
    }
