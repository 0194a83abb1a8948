import numpy as np
import pytest

from deploycmp.measure.latency import median_ci95, quantile_ci95, summarize


def test_percentiles_and_spread_by_hand():
    s = summarize([i / 1000 for i in range(1, 101)], batch=4)  # 1..100 ms
    lat = s["latency_ms"]
    assert lat["p50"] == pytest.approx(50.5)
    assert lat["p90"] == pytest.approx(90.1)
    assert lat["p99"] == pytest.approx(99.01)
    assert lat["mean"] == pytest.approx(50.5)
    assert lat["min"] == pytest.approx(1.0)
    assert lat["std"] == pytest.approx(np.std(np.arange(1, 101), ddof=1))
    assert lat["runs"] == 100
    assert s["throughput_per_s"] == pytest.approx(4 * 1000 / 50.5)


def test_median_ci_uses_order_statistics():
    # n=100: ranks floor(50 - 9.8) = 40 and ceil(50 + 9.8 + 1) = 61 (1-based)
    assert median_ci95(np.arange(1.0, 101.0)) == [40.0, 61.0]
    # a tiny sample: the interval is the whole sample
    assert median_ci95(np.array([1.0, 2.0, 3.0])) == [1.0, 3.0]


def test_p99_ci_and_every_call_kept_in_order():
    # n=1000, q=0.99: ranks floor(990 - 6.17) = 983 and ceil(990 + 6.17 + 1) = 998
    assert quantile_ci95(np.arange(1.0, 1001.0), 0.99) == [983.0, 998.0]
    s = summarize([0.003, 0.001, 0.002], batch=1)["latency_ms"]
    assert s["per_call"] == [3.0, 1.0, 2.0]
    assert s["ci95_p99"] == [2.0, 3.0]


def test_no_runs_is_an_error():
    with pytest.raises(ValueError):
        summarize([], batch=1)
