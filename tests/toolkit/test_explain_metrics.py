"""explain's own error of one tensor (deploycmp.gate.explain.own_error) and its ranking, on arrays made here: the values
rounded to the int8 grid a scale and zero point give, everything before them float."""
import numpy as np
import pytest

from deploycmp.gate.explain import own_db, own_error, ranked


def _grid(scale: float, zero: int, lo: int = -128, hi: int = 127) -> dict:
    return {"scale": scale, "zero_point": zero, "range": [(lo - zero) * scale, (hi - zero) * scale]}


def test_an_outlier_channel_crushes_the_others_while_the_whole_tensor_looks_fine():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 4, 8, 8))
    x[:, 0] = 1000.0  # one channel sets the scale
    q = _grid(1000.0 / 255, -128)
    out = own_error([x[:1], x[1:]], q, channel_axis=1)
    assert out["own_sqnr_db"] > 50  # dominated by the outlier, represented exactly
    assert out["own_channel_sqnr_db"] < 3 and out["own_worst_channel"] != 0  # the others: about one step, rounded
    assert out["own_channel_mean_sqnr_db"] < 3  # most channels are crushed, so their mean is too


def test_one_weak_channel_does_not_make_a_tensor_the_cause():
    rng = np.random.default_rng(0)
    even = rng.uniform(0, 1, (1, 64, 8, 8))  # 64 channels of the same size: noise spread evenly
    weak = even.copy()
    weak[:, 5] *= 0.002  # one channel below the step: crushed, its worst-channel SQNR about 0 dB
    q = _grid(1.0 / 255, -128)
    layers = [{"tensor": name, **own_error([a], q, 1)} for name, a in (("weak", weak), ("even", even))]
    assert layers[0]["own_channel_sqnr_db"] < 3 < 40 < layers[1]["own_channel_sqnr_db"]
    assert layers[0]["own_channel_mean_sqnr_db"] > layers[1]["own_channel_mean_sqnr_db"] - 1  # one channel in 64
    coarse = {"tensor": "coarse", **own_error([even], _grid(8.0 / 255, -128), 1)}  # every channel a little worse
    assert coarse["own_channel_sqnr_db"] > layers[0]["own_channel_sqnr_db"]
    assert own_db(coarse) < own_db(layers[0])
    assert [x["tensor"] for x in ranked([*layers, coarse])] == ["coarse", "weak", "even"]


def test_the_rounding_is_the_quantizers():
    # the values on the grid come back exact; half a step off rounds to even like ONNX Runtime; outside the range
    # they clip to its ends
    q = _grid(0.5, 3)
    x = np.array([[0.0, 1.0, -2.5, 0.25, 100.0, -100.0]])
    out = own_error([x], q, channel_axis=None)
    rounded = np.clip(np.round(x / 0.5) * 0.5, (-128 - 3) * 0.5, (127 - 3) * 0.5)
    noise = float(((x - rounded) ** 2).sum())
    assert out["own_sqnr_db"] == pytest.approx(10 * np.log10(float((x ** 2).sum()) / noise))
    assert rounded.tolist() == [[0.0, 1.0, -2.5, 0.0, 62.0, -65.5]]


def test_exact_and_float_tensors_have_no_own_error_and_are_not_ranked():
    on_grid = [np.array([[0.5, 1.0, -1.5]])]
    assert own_error(on_grid, _grid(0.5, 0), None)["own_sqnr_db"] is None  # no noise: exact
    left_float = own_error(on_grid, {"scale": None, "range": [0.0, 1.0]}, None)
    assert set(left_float.values()) == {None}
    layers = [{"tensor": "a", "own_sqnr_db": 40.0, "own_channel_mean_sqnr_db": 12.0, "own_channel_sqnr_db": 2.0},
              {"tensor": "b", "own_sqnr_db": None, "own_channel_mean_sqnr_db": None},
              {"tensor": "c", "own_sqnr_db": 20.0, "own_channel_mean_sqnr_db": 18.0, "own_channel_sqnr_db": 1.0},
              {"tensor": "d", "own_sqnr_db": 9.0, "own_channel_mean_sqnr_db": None}]
    assert [own_db(x) for x in layers] == [12.0, None, 18.0, 9.0]  # the worst channel is not the ranking
    assert [x["tensor"] for x in ranked(layers)] == ["d", "a", "c"]
