"""Latency statistics over timed runs: percentiles, spread, throughput and a distribution-free CI of the median."""
from __future__ import annotations

import math

import numpy as np


def median_ci95(sorted_ms: np.ndarray) -> list[float]:
    """95% confidence interval of the median from order statistics (no normality assumed).

    Ranks n/2 -/+ 1.96*sqrt(n)/2 (1-based, rounded outward), clamped to the sample.
    """
    n = len(sorted_ms)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(1, math.floor(n / 2 - half))
    hi = min(n, math.ceil(n / 2 + half + 1))
    return [float(sorted_ms[lo - 1]), float(sorted_ms[hi - 1])]


def summarize(seconds: list[float], batch: int) -> dict:
    """Statistics of per-call wall times (seconds in, milliseconds out)."""
    if not seconds:
        raise ValueError("no timed runs")
    ms = np.sort(np.asarray(seconds, dtype=np.float64) * 1e3)
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
            "runs": int(len(ms)),
        },
        "throughput_per_s": batch * 1e3 / p50 if p50 > 0 else None,
    }
