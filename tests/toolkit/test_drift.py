import math

import numpy as np
import pytest

from deploycmp.drift import drift, samples_to_look_at


def test_metrics_match_hand_computation():
    ref = np.array([[1.0, 2.0, 3.0], [3.0, 0.0, 4.0]], dtype=np.float32)
    out = np.array([[1.0, 2.0, 4.0], [3.0, 0.0, 4.0]], dtype=np.float32)
    d = drift([ref], [out])
    # error is 1 in one of 6 elements
    assert d["max_abs"] == 1.0
    assert d["mean_abs"] == pytest.approx(1 / 6)
    # ||err|| = 1, ||ref|| = sqrt(1+4+9+9+16) = sqrt(39)
    assert d["rel_l2"] == pytest.approx(1 / math.sqrt(39))
    assert d["sqnr_db"] == pytest.approx(10 * math.log10(39))
    # sample 0: cos = (1+4+12)/(sqrt(14)*sqrt(21)); sample 1 identical
    c0 = 17 / (math.sqrt(14) * math.sqrt(21))
    assert d["cosine_min"] == pytest.approx(c0)
    assert d["cosine_mean"] == pytest.approx((c0 + 1) / 2)
    assert d["top1_agreement"] == 1.0  # argmax 2 and 2
    assert d["top5_overlap"] == 1.0  # only 3 classes: top-3 sets are equal
    assert d["identical"] is False and d["samples"] == 2


def test_top1_and_top5_disagreement():
    ref = np.array([[6, 5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5, 6]], dtype=np.float32)
    out = ref.copy()
    out[0] = [0, 5, 4, 3, 2, 1, 6]  # top-1 moves from class 0 to 6; top-5 loses class 0, gains 6
    d = drift([ref], [out])
    assert d["top1_agreement"] == 0.5
    assert d["top5_overlap"] == pytest.approx((4 / 5 + 1) / 2)


def test_identical_outputs_have_no_finite_sqnr():
    ref = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    d = drift([ref], [ref.copy()])
    assert d["identical"] is True and d["sqnr_db"] is None
    assert d["max_abs"] == 0.0 and d["rel_l2"] == 0.0 and d["cosine_min"] == pytest.approx(1.0)


def test_several_outputs_are_compared_together():
    a, b = np.ones((2, 3), np.float32), np.zeros((2, 1), np.float32)
    d = drift([a, b], [a, b + 2])
    assert d["max_abs"] == 2.0
    assert d["mean_abs"] == pytest.approx(2 * 2 / 8)


def test_bad_outputs_raise():
    ref = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="shape"):
        drift([ref], [np.ones((2, 4), np.float32)])
    with pytest.raises(ValueError, match="count"):
        drift([ref], [ref, ref])
    with pytest.raises(ValueError, match="non-finite"):
        drift([ref], [np.full((2, 3), np.nan, np.float32)])


def test_accuracy_against_hand_made_labels():
    ref = [np.array([[3.0, 1, 0], [0, 2, 1], [1, 0, 2], [2, 1, 0]])]
    out = [np.array([[3.0, 1, 0], [0, 2, 3], [1, 0, 2], [0, 3, 0]])]  # sample 1 flips 1 -> 2, sample 3 flips 0 -> 1
    labels = np.array([0, 1, 2, 1])
    d = drift(ref, out, labels)
    assert d["reference_accuracy"] == 0.75 and d["accuracy"] == 0.75  # loses sample 1, gains sample 3
    assert d["accuracy_delta_pp"] == 0.0 and d["top1_agreement"] == 0.5
    d = drift(ref, out, np.array([0, 1, 2, 0]))
    assert d["reference_accuracy"] == 1.0 and d["accuracy"] == 0.5 and d["accuracy_delta_pp"] == -50.0
    assert "accuracy" not in drift(ref, out)
    seen = samples_to_look_at(ref, out, labels, largest=2)
    assert seen["flipped"] == [{"index": 1, "reference_top1": 1, "top1": 2, "label": 1},
                               {"index": 3, "reference_top1": 0, "top1": 1, "label": 1}]
    assert [e["index"] for e in seen["largest_drift"]] == [3, 1]
